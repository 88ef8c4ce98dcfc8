"""Provider separation: no file may hold another provider's parameters.

A provider shares only boundary tensors, never weights; :func:`check_separation` refuses a part
before it is exported, and :func:`find_leaks` searches the written file, since an exporter may
fold or reorder tensors (a transposed weight is still a leak).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import torch

from codenn.errors import ExportError
from codenn.paths.parts import PathPart

if TYPE_CHECKING:
    import onnx


@dataclass(frozen=True)
class LeakCheck:
    """The search of one file for tensors of providers that do not serve it.

    ``tensors_checked`` counts the file's initializers and constants; ``forbidden`` the other
    providers' tensors compared with them (constant-valued tensors, e.g. fresh batch-norm
    statistics, carry nothing and are skipped on both sides). A match is the same bytes, or the
    same values in another order (a transposed weight). ``leaks`` names the matches.
    """

    file: str
    provider: str
    tensors_checked: int
    forbidden: int
    leaks: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.leaks

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "leaks": list(self.leaks), "ok": self.ok}


def _key_tensors(tensors: Mapping[str, torch.Tensor]) -> dict[int, list[tuple[str, torch.Tensor]]]:
    """Informative tensors by element count (constant-valued ones carry nothing: skipped)."""
    out: dict[int, list[tuple[str, torch.Tensor]]] = {}
    for name, t in tensors.items():
        t = t.detach()
        if t.numel() < 2 or not (t.is_floating_point() or t.dtype in (torch.int64, torch.int32)):
            continue
        flat = t.reshape(-1)
        if bool((flat == flat[0]).all()):
            continue
        out.setdefault(t.numel(), []).append((name, t.cpu()))
    return out


def file_tensors(file: str | onnx.ModelProto) -> dict[str, torch.Tensor]:
    """Every initializer and Constant-node tensor of an ONNX model or file (subgraphs included)."""
    import onnx
    from onnx import numpy_helper

    model = file if isinstance(file, onnx.ModelProto) else onnx.load(file)
    out: dict[str, torch.Tensor] = {}

    def visit(graph: onnx.GraphProto) -> None:
        for init in graph.initializer:
            out[init.name] = torch.from_numpy(numpy_helper.to_array(init).copy())
        for node in graph.node:
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.TENSOR:
                    out[f"{node.name or node.output[0]}.{attr.name}"] = torch.from_numpy(
                        numpy_helper.to_array(attr.t).copy())
                elif attr.type == onnx.AttributeProto.GRAPH:
                    visit(attr.g)
                elif attr.type == onnx.AttributeProto.GRAPHS:
                    for g in attr.graphs:
                        visit(g)

    visit(model.graph)
    for fn in model.functions:
        for node in fn.node:
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.TENSOR:
                    out[f"{fn.name}.{node.output[0]}.{attr.name}"] = torch.from_numpy(numpy_helper.to_array(attr.t).copy())
    return out


def find_leaks(file: str | onnx.ModelProto, provider: str, forbidden: Mapping[str, torch.Tensor],
               name: str | None = None) -> LeakCheck:
    """Search ``file`` (a path or a loaded model) for any of ``forbidden`` (other providers'
    tensors): same bytes in the file's dtype, or the same values in another order."""
    found = _key_tensors(file_tensors(file))
    bad = _key_tensors(forbidden)
    leaks: list[str] = []
    for numel, items in found.items():
        for init_name, t in items:
            flat = t.reshape(-1)
            sorted_t: torch.Tensor | None = None
            for ref_name, ref in bad.get(numel, []):
                if ref.is_floating_point() != flat.is_floating_point():
                    continue
                r = ref.reshape(-1).to(flat.dtype)
                if torch.equal(r, flat):
                    leaks.append(f"{init_name} == {ref_name}")
                    continue
                if flat.is_floating_point():
                    if sorted_t is None:
                        sorted_t = flat.sort().values
                    if torch.equal(r.sort().values, sorted_t):
                        leaks.append(f"{init_name} ~ {ref_name} (same values, reordered)")
    label = name or (os.path.basename(file) if isinstance(file, (str, os.PathLike)) else "model")
    return LeakCheck(label, provider, sum(len(v) for v in found.values()),
                     sum(len(v) for v in bad.values()), tuple(leaks))


def check_separation(part: PathPart, owned: Mapping[str, Mapping[str, torch.Tensor]]) -> None:
    """Before exporting: the part's module holds no tensor (by storage) of another provider."""
    foreign = {
        t.untyped_storage().data_ptr(): (prov, name)
        for prov, tensors in owned.items() if prov != part.provider
        for name, t in tensors.items() if t.numel()
    }
    for name, t in part.state_dict(keep_vars=True).items():
        if t.numel() and t.untyped_storage().data_ptr() in foreign:
            prov, theirs = foreign[t.untyped_storage().data_ptr()]
            raise ExportError(
                f"part {part.name!r} (served by {part.provider!r}) would contain {theirs!r} of provider "
                f"{prov!r} (as {name!r}); a provider's file may hold only its own blocks and links. "
                "Does a link module wrap another provider's block?"
            )
