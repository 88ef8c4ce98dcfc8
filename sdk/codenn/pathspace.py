"""Path-space enumeration: every candidate path between a local service and its hosts.

Only block counts are needed, so enumeration works from published service cards alone.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import permutations
from typing import Any, Protocol

from codenn.errors import ConfigError
from codenn.pathspec import PathSpec, Segment


class HasBlocks(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def num_blocks(self) -> int: ...


@dataclass(frozen=True)
class PathSpace:
    """The candidate paths from ``local`` through up to ``max_hosts`` of ``hosts``.

    ``min_skipped`` local blocks must be skipped by every candidate (the paper always skips at
    least one; 0 also admits cross paths that only insert host blocks). ``hin``/``hout`` fix the
    host indices when given, as the paper's experiments do.
    """

    local: str
    local_blocks: int
    hosts: tuple[tuple[str, int], ...] = ()
    skip: bool = True
    cross: bool = True
    min_skipped: int = 1
    max_hosts: int = 1
    hin: int | None = None
    hout: int | None = None

    @classmethod
    def between(cls, local: HasBlocks, hosts: Sequence[HasBlocks] = (), **options: Any) -> PathSpace:
        names = [local.name, *(h.name for h in hosts)]
        if len(set(names)) != len(names):
            raise ConfigError(f"service names must be distinct, got {names}")
        return cls(local.name, local.num_blocks, tuple((h.name, h.num_blocks) for h in hosts), **options)

    def __post_init__(self) -> None:
        if self.local_blocks < 2:
            raise ConfigError(f"the local service needs at least 2 blocks to form a path, got {self.local_blocks}")
        if self.min_skipped < 0 or self.max_hosts < 0:
            raise ConfigError(f"min_skipped and max_hosts must be >= 0, got {self.min_skipped}, {self.max_hosts}")

    def __iter__(self) -> Iterator[PathSpec]:
        n = self.local_blocks
        for lout in range(n - 1):
            for lin in range(lout + 1, n):
                skipped = lin - lout - 1
                if skipped < self.min_skipped:
                    continue
                head = Segment(self.local, 0, lout + 1)
                tail = Segment(self.local, lin, None)
                if self.skip and skipped >= 1:
                    yield PathSpec((head, tail))
                if self.cross:
                    for middle in self._host_chains():
                        yield PathSpec((head, *middle, tail))

    def _host_ranges(self, blocks: int) -> Iterator[tuple[int, int]]:
        for hin in range(blocks):
            if self.hin is not None and hin != self.hin:
                continue
            for hout in range(hin, blocks):
                if self.hout is not None and hout != self.hout:
                    continue
                yield hin, hout

    def _host_chains(self) -> Iterator[tuple[Segment, ...]]:
        for k in range(1, self.max_hosts + 1):
            for order in permutations(self.hosts, k):
                yield from self._chain(order)

    def _chain(self, order: Sequence[tuple[str, int]]) -> Iterator[tuple[Segment, ...]]:
        if not order:
            yield ()
            return
        (name, blocks), rest = order[0], order[1:]
        for hin, hout in self._host_ranges(blocks):
            seg = Segment(name, hin, hout + 1)
            for tail in self._chain(rest):
                yield (seg, *tail)

    def counts(self) -> dict[str, int]:
        out = {"skip": 0, "cross": 0}
        for spec in self:
            out[spec.kind] += 1
        out["total"] = out["skip"] + out["cross"]
        return out
