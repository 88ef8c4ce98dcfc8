"""ComposedPath: an nn.Module that runs a PathSpec through frozen service blocks and trainable links.

Link placement follows the paper (Section III-C): a skip link lives with the local provider;
every link that touches a host (entry, exit, host-to-host) lives on a host, so a local provider
never holds a host's parameters and vice versa. :attr:`ComposedPath.link_sides` records each link's side.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from codenn.config.search import DEFAULT_LINK
from codenn.errors import ConfigError, FrozenParameterError
from codenn.model.blocks import BoundarySpec, count_flops, parameter_count
from codenn.model.service import Service, services_by_name
from codenn.model.typed_modules import ModulesByName
from codenn.paths.links import build_link, check_link
from codenn.paths.spec import PathSpec, Segment

if TYPE_CHECKING:
    from codenn.contracts.plugins import Plugins


@dataclass(frozen=True)
class PathStats:
    """The quantities of eq. (1) and Figs. 4b/5b/5d that depend on structure, not on timing.

    Parameters and FLOPs are per sample (FLOPs as :data:`codenn.model.service.FLOPS_UNIT`). ``local_*``
    counts what runs on the local provider (its blocks and skip links); ``host_*`` what runs on
    hosts (their blocks and every cross-connection link).
    """

    spec: str
    kind: str
    local_blocks_used: tuple[int, ...]
    local_blocks_skipped: tuple[int, ...]
    host_blocks_used: dict[str, tuple[int, ...]]
    link_params: int
    local_link_params: int
    host_link_params: int
    local_params: int
    skipped_params: int
    host_params: int
    local_flops: int
    host_flops: int
    boundary_bytes: tuple[int, ...]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["host_blocks_used"] = {k: list(v) for k, v in self.host_blocks_used.items()}
        return d


class ComposedPath(nn.Module):
    """A new inference path. Its only trainable parameters are its links."""

    def __init__(
        self,
        spec: PathSpec | str,
        services: Mapping[str, Service] | Sequence[Service],
        *,
        link: str | Sequence[str] = DEFAULT_LINK,
        link_options: Mapping[str, Any] | None = None,
        links: Sequence[nn.Module] | None = None,
        plugins: Plugins | None = None,
    ) -> None:
        super().__init__()
        by_name = services_by_name(services)
        parsed = PathSpec.parse(spec) if isinstance(spec, str) else spec
        self.spec = parsed.resolve({n: s.num_blocks for n, s in by_name.items()})
        used = {s.service for s in self.spec.segments}
        self.services: ModulesByName[Service] = ModulesByName({n: by_name[n] for n in sorted(used)})
        pairs = list(zip(self.spec.segments, self.spec.segments[1:]))
        self.link_specs: tuple[tuple[BoundarySpec, BoundarySpec], ...] = tuple(
            (self._service(a.service).card.output_of(a.end(self._n(a)) - 1), self._service(b.service).card.input_of(b.start))
            for a, b in pairs
        )
        self.link_sides: tuple[str, ...] = tuple(self._side(a, b) for a, b in pairs)
        if links is not None:
            if len(links) != len(pairs):
                raise ConfigError(f"path {self.spec} needs {len(pairs)} links, got {len(links)}")
            for i, (lk, (src, dst)) in enumerate(zip(links, self.link_specs)):
                check_link(lk, src, dst, factory=f"links[{i}]")
            built = list(links)
        else:
            names = [link] * len(pairs) if isinstance(link, str) else list(link)
            if len(names) != len(pairs):
                raise ConfigError(f"path {self.spec} needs {len(pairs)} link factory names, got {len(names)}: {names}")
            built = [
                build_link(src, dst, name, plugins=plugins, **dict(link_options or {}))
                for name, (src, dst) in zip(names, self.link_specs)
            ]
        self.link_factories: tuple[str, ...] = (
            tuple(["custom"] * len(pairs)) if links is not None else tuple(names)
        )
        self.links = nn.ModuleList(built)

    # -- structure ----------------------------------------------------------------------------
    def _service(self, name: str) -> Service:
        return self.services[name]

    def _n(self, seg: Segment) -> int:
        return self._service(seg.service).num_blocks

    def _side(self, a: Segment, b: Segment) -> str:
        local = self.spec.local
        if a.service == local and b.service == local:
            return local
        return a.service if b.service == local else b.service

    @property
    def local(self) -> Service:
        return self._service(self.spec.local)

    def trainable_parameters(self) -> Iterator[nn.Parameter]:
        return self.links.parameters()

    def links_on(self, side: str) -> list[nn.Module]:
        """The links a given provider (service name) holds."""
        return [lk for lk, s in zip(self.links, self.link_sides) if s == side]

    # -- running ------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_after_prefix(self.run_prefix(x))

    def run_prefix(self, x: torch.Tensor) -> torch.Tensor:
        """The first segment (local blocks 0..lout): frozen, so its output can be cached."""
        first = self.spec.segments[0]
        return self.local.run(x, 0, first.end(self.local.num_blocks))

    def forward_after_prefix(self, h: torch.Tensor, upto_link: int | None = None) -> torch.Tensor:
        """Everything after the first segment, from its output ``h``.

        With ``upto_link=i``, stop just before link ``i`` and return the tensor that enters it
        (least-squares initialisation fits each link on exactly that tensor).
        """
        segs = self.spec.segments
        for i, link in enumerate(self.links):
            if upto_link is not None and i == upto_link:
                return h
            h = link(h)
            seg = segs[i + 1]
            h = self._service(seg.service).run(h, seg.start, seg.end(self._n(seg)))
        return h

    def train(self, mode: bool = True) -> ComposedPath:
        """Links follow ``mode``; services stay in eval mode (see FrozenBlock)."""
        self.training = mode
        self.links.train(mode)
        for s in self.services.values():
            s.train(False)
        return self

    def check_frozen(self) -> None:
        """Raise if any frozen service parameter changed or became trainable."""
        for s in self.services.values():
            s.verify_frozen()
            if any(p.requires_grad for p in s.parameters()):
                raise FrozenParameterError(f"service {s.name!r} has parameters with requires_grad=True")

    # -- accounting ---------------------------------------------------------------------------
    def stats(self) -> PathStats:
        spec, local = self.spec, self.local
        local_n = local.num_blocks
        local_used = sorted({b for s in spec.segments if s.service == spec.local for b in s.blocks(local_n)})
        skipped = [b for b in range(local_n) if b not in local_used]
        host_used: dict[str, list[int]] = {}
        for s in spec.segments:
            if s.service != spec.local:
                host_used.setdefault(s.service, []).extend(s.blocks(self._n(s)))
        lcard = local.card.blocks
        link_p = [parameter_count(lk) for lk in self.links]
        local_links = sum(p for p, side in zip(link_p, self.link_sides) if side == spec.local)
        host_links = sum(link_p) - local_links
        link_f = [count_flops(lk, src.example(batch=1)) for lk, (src, _) in zip(self.links, self.link_specs)]
        local_link_f = sum(f for f, side in zip(link_f, self.link_sides) if side == spec.local)
        host_block_p = sum(self._service(h).card.blocks[b].params for h, bs in host_used.items() for b in bs)
        host_block_f = sum(self._service(h).card.blocks[b].flops for h, bs in host_used.items() for b in bs)
        return PathStats(
            spec=str(spec),
            kind=spec.kind,
            local_blocks_used=tuple(local_used),
            local_blocks_skipped=tuple(skipped),
            host_blocks_used={h: tuple(bs) for h, bs in host_used.items()},
            link_params=sum(link_p),
            local_link_params=local_links,
            host_link_params=host_links,
            local_params=sum(lcard[b].params for b in local_used) + local_links,
            skipped_params=sum(lcard[b].params for b in skipped),
            host_params=host_block_p + host_links,
            local_flops=sum(lcard[b].flops for b in local_used) + local_link_f,
            host_flops=host_block_f + sum(link_f) - local_link_f,
            boundary_bytes=self.transfer_bytes(),
        )

    def transfer_bytes(self) -> tuple[int, ...]:
        """Bytes per sample sent between providers, one entry per provider change.

        A link runs on its side, so what crosses is the link's input when the link sits on the
        receiving side and its output when it sits on the sending side.
        """
        out = []
        for (src, dst), side, (a, b) in zip(self.link_specs, self.link_sides, zip(self.spec.segments, self.spec.segments[1:])):
            if a.service != b.service:
                out.append(src.nbytes if side == b.service else dst.nbytes)
        return tuple(out)

    def extra_repr(self) -> str:
        return f"spec='{self.spec}'"
