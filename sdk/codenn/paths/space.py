"""Path-space enumeration: every candidate path between a local service and its hosts.

Only block counts are needed, so enumeration works from published service cards alone.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from itertools import permutations
from typing import Any, Protocol

from codenn.config.search import SpaceConfig
from codenn.errors import ConfigError
from codenn.paths.spec import PathSpec, Segment


class HasBlocks(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def num_blocks(self) -> int: ...


@dataclass(frozen=True)
class PathSpace:
    """The candidate paths from ``local`` through up to ``config.max_hosts`` of ``hosts``, as
    :class:`~codenn.config.search.SpaceConfig` says (``min_skipped`` local blocks skipped by every
    candidate; ``hin``/``hout`` fixed when given, as the paper's experiments do)."""

    local: str
    local_blocks: int
    hosts: tuple[tuple[str, int], ...] = ()
    config: SpaceConfig = field(default_factory=SpaceConfig)

    @classmethod
    def between(cls, local: HasBlocks, hosts: Sequence[HasBlocks] = (), config: SpaceConfig | None = None,
                **fields: Any) -> PathSpace:
        """The space between services (or their cards), from ``config`` or from SpaceConfig's fields."""
        names = [local.name, *(h.name for h in hosts)]
        if len(set(names)) != len(names):
            raise ConfigError(f"service names must be distinct, got {names}")
        if config is not None and fields:
            raise ConfigError(f"give a SpaceConfig or its fields, not both (got config and {sorted(fields)})")
        try:
            space = config or SpaceConfig(**fields)
        except TypeError as exc:
            raise ConfigError(f"path space: {exc}; fields: skip, cross, min_skipped, max_hosts, hin, hout") from None
        return cls(local.name, local.num_blocks, tuple((h.name, h.num_blocks) for h in hosts), space)

    def __post_init__(self) -> None:
        if self.local_blocks < 2:
            raise ConfigError(f"the local service needs at least 2 blocks to form a path, got {self.local_blocks}")

    def __iter__(self) -> Iterator[PathSpec]:
        n = self.local_blocks
        for lout in range(n - 1):
            for lin in range(lout + 1, n):
                skipped = lin - lout - 1
                if skipped < self.config.min_skipped:
                    continue
                head = Segment(self.local, 0, lout + 1)
                tail = Segment(self.local, lin, None)
                if self.config.skip and skipped >= 1:
                    yield PathSpec((head, tail))
                if self.config.cross:
                    for middle in self._host_chains():
                        yield PathSpec((head, *middle, tail))

    def _host_ranges(self, blocks: int) -> Iterator[tuple[int, int]]:
        for hin in range(blocks):
            if self.config.hin is not None and hin != self.config.hin:
                continue
            for hout in range(hin, blocks):
                if self.config.hout is not None and hout != self.config.hout:
                    continue
                yield hin, hout

    def _host_chains(self) -> Iterator[tuple[Segment, ...]]:
        for k in range(1, self.config.max_hosts + 1):
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
