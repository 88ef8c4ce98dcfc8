"""Splitting a path into the parts each provider serves (what ONNX export writes one file for).

A part is a maximal run of consecutive operations (blocks and links) that one provider executes;
links follow :attr:`codenn.paths.ComposedPath.link_sides`. Each part is exported to its own file, so this
split is what decides which provider's parameters a file may hold.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from codenn.errors import ExportError
from codenn.model.blocks import BoundarySpec

if TYPE_CHECKING:
    from codenn.paths.composed import ComposedPath


@dataclass(frozen=True)
class Op:
    """One operation of a path: a frozen block or a link, and the provider that runs it."""

    provider: str
    label: str  # "alexnet.block0", "link1"
    kind: str  # "block" | "link"
    input: BoundarySpec
    output: BoundarySpec


class PathPart(nn.Module):
    """A contiguous piece of a path that one provider runs: its blocks and links, in order.

    ``role`` is ``"local"``, ``"host"`` or ``"merged"`` (the whole path). The blocks are the
    services' own :class:`codenn.model.blocks.FrozenBlock` modules (shared, not copied), run directly
    without the Python shape checks of :meth:`codenn.Service.run`, so the exporter can trace them.
    """

    def __init__(self, name: str, role: str, provider: str, ops: Sequence[tuple[Op, nn.Module]]) -> None:
        super().__init__()
        if not ops:
            raise ExportError(f"path part {name!r} has no operation to export")
        self.name = name
        self.role = role
        self.provider = provider
        self.ops: tuple[Op, ...] = tuple(op for op, _ in ops)
        self.steps = nn.ModuleList(m for _, m in ops)

    @property
    def input_spec(self) -> BoundarySpec:
        return self.ops[0].input

    @property
    def output_spec(self) -> BoundarySpec:
        return self.ops[-1].output

    @property
    def file_name(self) -> str:
        return f"{self.name}.onnx"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for step in self.steps:
            x = step(x)
        return x

    def describe(self) -> str:
        return " > ".join(op.label for op in self.ops)

    def extra_repr(self) -> str:
        return f"name={self.name!r}, provider={self.provider!r}, ops={self.describe()!r}"


def path_ops(path: ComposedPath) -> list[tuple[Op, nn.Module]]:
    """Every block and link of ``path`` in execution order, each with the provider running it."""
    segs = path.spec.segments
    out: list[tuple[Op, nn.Module]] = []
    for i, seg in enumerate(segs):
        if i > 0:
            src, dst = path.link_specs[i - 1]
            out.append((Op(path.link_sides[i - 1], f"link{i - 1}", "link", src, dst), path.links[i - 1]))
        svc = path.services[seg.service]
        card = svc.card
        for b in seg.blocks(svc.num_blocks):
            out.append((Op(seg.service, f"{seg.service}.block{b}", "block", card.input_of(b), card.output_of(b)),
                        svc.blocks[b]))
    return out


def split_path(path: ComposedPath) -> list[PathPart]:
    """The parts of ``path``: runs of consecutive operations on one provider, in order.

    Names: ``local`` (a skip path's single part) or ``local-0``, ``local-1``, ... when a host
    runs in between; ``host-NAME`` (``host-NAME-0``, ``host-NAME-1`` if a host is visited twice).
    """
    groups: list[tuple[str, list[tuple[Op, nn.Module]]]] = []
    for op, module in path_ops(path):
        if groups and groups[-1][0] == op.provider:
            groups[-1][1].append((op, module))
        else:
            groups.append((op.provider, [(op, module)]))
    local = path.spec.local
    visits: dict[str, int] = {}
    for provider, _ in groups:
        visits[provider] = visits.get(provider, 0) + 1
    seen: dict[str, int] = {}
    parts = []
    for provider, ops in groups:
        k = seen.get(provider, 0)
        seen[provider] = k + 1
        base = "local" if provider == local else f"host-{provider}"
        name = base if visits[provider] == 1 else f"{base}-{k}"
        parts.append(PathPart(name, "local" if provider == local else "host", provider, ops))
    return parts


def merged_part(path: ComposedPath) -> PathPart:
    """The whole path as one module (what ``merged.onnx`` computes)."""
    return PathPart("merged", "merged", path.spec.local, path_ops(path))


def provider_tensors(path: ComposedPath) -> dict[str, dict[str, torch.Tensor]]:
    """Every tensor each provider owns in ``path``: its whole service (parameters and buffers,
    including blocks the path skips) and the links it holds. Keys are ``"service.name"`` /
    ``"linkI.name"``."""
    out: dict[str, dict[str, torch.Tensor]] = {}
    seen: set[tuple[int, int, torch.dtype]] = set()  # a service reaches each tensor twice (model.*, blocks.*)

    def add(provider: str, key: str, t: torch.Tensor) -> None:
        ident = (t.data_ptr(), t.numel(), t.dtype)
        if t.numel() and ident in seen:
            return
        seen.add(ident)
        out.setdefault(provider, {})[key] = t

    for name, svc in path.services.items():
        out.setdefault(name, {})
        for key, t in svc.state_dict(keep_vars=True).items():
            add(name, f"{name}.{key}", t)
    for i, (link, side) in enumerate(zip(path.links, path.link_sides)):
        out.setdefault(side, {})
        for key, t in link.state_dict(keep_vars=True).items():
            add(side, f"link{i}.{key}", t)
    return out
