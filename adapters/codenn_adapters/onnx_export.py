"""ONNX export of a path, split the way providers serve it.

A path is cut into *parts*: maximal runs of consecutive operations (blocks and links) that one
provider executes. Links follow :attr:`codenn.paths.Path.link_sides` (paper, Section III-C): a
skip link runs on the local provider, every link touching a host runs on that host. So

- a skip path ``a[:2] > a[5:]`` is one local part (``local.onnx``);
- a cross path ``a[:1] > h[1:4] > a[5:]`` is ``local-0.onnx`` (local blocks 0..0, the tensor the
  local provider sends), ``host-h.onnx`` (entry link, host blocks 1..3, exit link: what the host
  serves) and ``local-1.onnx`` (local blocks 5.., from the tensor the host returns).

``merged.onnx`` runs the whole path in one file, for single-machine benchmarking: the part files
composed with ``onnx.compose`` (so it is exactly what the providers serve, chained), or the whole
path exported directly when composition is impossible.

Every file is exported with ``torch.onnx.export(..., dynamo=True)`` (the TorchScript exporter
only when the dynamo exporter fails; the manifest records which one and why), opset >= 18, a
dynamic batch dimension, input ``"input"`` and output ``"output"``. Every file is checked with
``onnx.checker.check_model(full_check=True)``, run in ONNX Runtime (CPU) at batch 1 and 5 on
fresh random inputs and on real inputs, and compared with PyTorch; every file is searched for
another provider's tensors. A failing check raises :class:`codenn.errors.ExportError` and removes
what this export wrote: an export never leaves a silently wrong file behind.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import io
import json
import os
import re
import shutil
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path as FsPath
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from codenn.blocks import BoundarySpec
from codenn.errors import ConfigError, ExportError

if TYPE_CHECKING:
    import onnx

    from codenn.paths import Path

OPSET = 18
"""Default ONNX opset (the lowest accepted: the dynamo exporter targets 18 and above)."""

FP32_TOLERANCE = 1e-4
"""fp32 parity: max |onnxruntime - torch| / max |torch| must not exceed this."""

FP16_TOLERANCE = 2e-2
"""fp16 parity, against the fp32 torch reference."""

PARITY_BATCHES = (1, 5)
"""Batch sizes of the fresh random inputs (two sizes prove the batch dimension is dynamic)."""

INPUT_NAME, OUTPUT_NAME = "input", "output"
MANIFEST = "export.json"

_EXTERNAL_DATA_BYTES = 1_800_000_000  # protobuf's 2 GiB limit, with a margin


# --------------------------------------------------------------------------------------------
# Splitting a path into the parts each provider runs
# --------------------------------------------------------------------------------------------
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
    services' own :class:`codenn.blocks.FrozenBlock` modules (shared, not copied), run directly
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


def path_ops(path: Path) -> list[tuple[Op, nn.Module]]:
    """Every block and link of ``path`` in execution order, each with the provider running it."""
    segs = path.spec.segments
    out: list[tuple[Op, nn.Module]] = []
    for i, seg in enumerate(segs):
        if i > 0:
            src, dst = path.link_specs[i - 1]
            out.append((Op(path.link_sides[i - 1], f"link{i - 1}", "link", src, dst), path.links[i - 1]))
        svc = path.services[seg.service]
        card = svc.card  # type: ignore[union-attr]
        for b in seg.blocks(svc.num_blocks):  # type: ignore[union-attr]
            out.append((Op(seg.service, f"{seg.service}.block{b}", "block", card.input_of(b), card.output_of(b)),
                        svc.blocks[b]))  # type: ignore[index]
    return out


def split_path(path: Path) -> list[PathPart]:
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


def merged_part(path: Path) -> PathPart:
    """The whole path as one module (what ``merged.onnx`` computes)."""
    return PathPart("merged", "merged", path.spec.local, path_ops(path))


def provider_tensors(path: Path) -> dict[str, dict[str, torch.Tensor]]:
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


# --------------------------------------------------------------------------------------------
# Reports
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Parity:
    """ONNX Runtime vs PyTorch on one input batch.

    ``rel = max_abs / scale`` where ``scale`` is the largest absolute value of the PyTorch output;
    ``ok`` when ``rel <= tolerance``. ``inputs`` is ``"random"`` (fresh normal samples) or
    ``"real"`` (the task's images, propagated through the preceding parts in PyTorch). ``file``
    is a file name, or ``"chain(local-0 > host-h > local-1)"`` for the part files run one after
    the other in ONNX Runtime against the whole path in PyTorch.
    """

    file: str
    inputs: str
    batch: int
    max_abs: float
    scale: float
    rel: float
    tolerance: float
    ok: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


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


@dataclass(frozen=True)
class ExportedFile:
    """One ONNX file of an export and what it holds."""

    name: str  # file name inside the output directory
    role: str  # local | host | merged
    provider: str
    ops: tuple[str, ...]
    input: BoundarySpec
    output: BoundarySpec
    exporter: str  # dynamo | torchscript | compose (merged from the part files) | copy
    opset: int
    dtype: str
    bytes: int
    sha256: str
    parameters: int
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["ops"] = list(self.ops)
        d["input"], d["output"] = self.input.to_dict(), self.output.to_dict()
        return d


@dataclass
class ExportResult:
    """Everything one :func:`export_path` call wrote and measured (also in ``export.json``)."""

    spec: str
    kind: str
    out_dir: str
    dtype: str
    opset: int
    files: list[ExportedFile] = field(default_factory=list)
    parity: list[Parity] = field(default_factory=list)
    leaks: list[LeakCheck] = field(default_factory=list)
    exporter: str = ""
    fallbacks: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    versions: dict[str, str] = field(default_factory=dict)

    def file(self, role_or_name: str) -> ExportedFile:
        """A file by name (``host-h.onnx``), part name (``host-h``) or role (first match)."""
        for f in self.files:
            if role_or_name in (f.name, f.name.removesuffix(".onnx")):
                return f
        for f in self.files:
            if f.role == role_or_name:
                return f
        raise KeyError(f"no exported file {role_or_name!r}; files: {[f.name for f in self.files]}")

    def path_of(self, role_or_name: str) -> str:
        return os.path.join(self.out_dir, self.file(role_or_name).name)

    def worst(self, file: str | None = None) -> Parity:
        rows = [p for p in self.parity if file is None or p.file == file]
        return max(rows, key=lambda p: p.rel)

    @property
    def ok(self) -> bool:
        return all(p.ok for p in self.parity) and all(c.ok for c in self.leaks)

    def to_dict(self) -> dict[str, Any]:
        return {
            "spec": self.spec, "kind": self.kind, "dtype": self.dtype, "opset": self.opset,
            "exporter": self.exporter, "fallbacks": dict(self.fallbacks), "seconds": round(self.seconds, 2),
            "input_name": INPUT_NAME, "output_name": OUTPUT_NAME,
            "files": [f.to_dict() for f in self.files],
            "parity": [p.to_dict() for p in self.parity],
            "leak_checks": [c.to_dict() for c in self.leaks],
            "versions": dict(self.versions),
        }


# --------------------------------------------------------------------------------------------
# Exporting one module
# --------------------------------------------------------------------------------------------
def _state_bytes(module: nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in module.state_dict().values())


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _short(exc: BaseException, limit: int = 400) -> str:
    """One line: the exception's first line and, when it wraps another, the root cause's."""
    def line(e: BaseException) -> str:
        text = _ANSI.sub("", str(e)).strip()
        return f"{type(e).__name__}: {text.splitlines()[0] if text else ''}"

    root = exc
    while root.__cause__ is not None and root.__cause__ is not root:
        root = root.__cause__
    text = line(exc) if root is exc else f"{line(exc)} (cause: {line(root)})"
    return text if len(text) <= limit else text[: limit - 3] + "..."


@contextlib.contextmanager
def _quiet() -> Iterator[io.StringIO]:
    """Silence the exporters' progress prints and warnings; keep them for error messages."""
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield buf


def export_module(
    module: nn.Module,
    example: torch.Tensor,
    file: str | os.PathLike[str],
    *,
    opset: int = OPSET,
    exporter: str = "auto",
) -> tuple[str, str]:
    """Export ``module`` (one tensor in, one tensor out) to ``file`` with a dynamic batch.

    ``exporter``: ``"dynamo"`` (``torch.onnx.export(..., dynamo=True)``), ``"torchscript"`` or
    ``"auto"`` (dynamo, then TorchScript if dynamo fails). Returns (exporter used, why dynamo
    was not used or ""). Raises :class:`ExportError` when no exporter succeeds.
    """
    if exporter not in ("auto", "dynamo", "torchscript"):
        raise ConfigError(f"exporter {exporter!r} is invalid; valid values: 'auto', 'dynamo', 'torchscript'")
    if opset < OPSET:
        raise ConfigError(f"opset {opset} is too old; codenn exports opset {OPSET} or newer")
    file = os.fspath(file)
    external = _state_bytes(module) > _EXTERNAL_DATA_BYTES
    module.eval()
    errors: dict[str, str] = {}
    if exporter in ("auto", "dynamo"):
        try:
            with _quiet():
                torch.onnx.export(
                    module, (example,), file, dynamo=True, opset_version=opset,
                    input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                    dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=65536)},),
                    external_data=external, optimize=True, verbose=False,
                )
            return "dynamo", ""
        except Exception as exc:  # torch.export / onnxscript raise many types
            errors["dynamo"] = _short(exc)
    if exporter in ("auto", "torchscript"):
        try:
            with _quiet():
                torch.onnx.export(
                    module, (example,), file, dynamo=False, opset_version=opset,
                    input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                    dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
                    do_constant_folding=True,
                )
            return "torchscript", errors.get("dynamo", "")
        except Exception as exc:
            errors["torchscript"] = _short(exc)
    tried = "; ".join(f"{k} exporter: {v}" for k, v in errors.items())
    raise ExportError(f"cannot export {getattr(module, 'name', type(module).__name__)!r} to ONNX ({tried})")


def check_file(file: str | os.PathLike[str], opset: int = OPSET) -> onnx.ModelProto:
    """``onnx.checker.check_model(full_check=True)``, the opset, one input and one output, and
    a symbolic batch dimension on both. Returns the loaded model (weights included)."""
    import onnx

    file = os.fspath(file)
    try:
        model = onnx.load(file)
        # a model over protobuf's 2 GiB limit is checked from its path (external data)
        onnx.checker.check_model(model if model.ByteSize() < _EXTERNAL_DATA_BYTES else file, full_check=True)
    except Exception as exc:
        raise ExportError(f"{os.path.basename(file)} fails onnx.checker (full_check): {_short(exc, 600)}") from exc
    got = _opset_of(model)
    if got < opset:
        raise ExportError(f"{os.path.basename(file)} has opset {got}; opset {opset} or newer was asked for")
    for kind, values in (("input", model.graph.input), ("output", model.graph.output)):
        if len(values) != 1:
            raise ExportError(f"{os.path.basename(file)} has {len(values)} graph {kind}s; a path part has exactly one")
        dims = values[0].type.tensor_type.shape.dim
        if not dims or dims[0].HasField("dim_value"):
            raise ExportError(
                f"{os.path.basename(file)}: the batch dimension of {kind} {values[0].name!r} is fixed "
                f"({dims[0].dim_value if dims else 'no shape'}); the exporter could not keep it dynamic"
            )
    return model


def _sha256(file: str) -> str:
    h = hashlib.sha256()
    with open(file, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _opset_of(model: onnx.ModelProto) -> int:
    return max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)


# --------------------------------------------------------------------------------------------
# Composing the part files into merged.onnx
# --------------------------------------------------------------------------------------------
def compose_files(files: Sequence[str | onnx.ModelProto], out: str) -> onnx.ModelProto:
    """Chain single-input single-output ONNX models or files (output of one -> input of the
    next) into one file ``out``; returns the composed model."""
    import onnx
    from onnx import compose

    models = [f if isinstance(f, onnx.ModelProto) else onnx.load(f) for f in files]
    merged = compose.add_prefix(models[0], "p0_")
    for k, nxt in enumerate(models[1:], 1):
        nxt = compose.add_prefix(nxt, f"p{k}_")
        merged = compose.merge_models(merged, nxt, io_map=[(merged.graph.output[0].name, nxt.graph.input[0].name)])
    _rename_value(merged.graph, merged.graph.input[0].name, INPUT_NAME)
    _rename_value(merged.graph, merged.graph.output[0].name, OUTPUT_NAME)
    merged.producer_name = "codenn (onnx.compose of the path's part files)"
    if merged.ByteSize() > _EXTERNAL_DATA_BYTES:
        onnx.save(merged, out, save_as_external_data=True, location=os.path.basename(out) + ".data")
    else:
        onnx.save(merged, out)
    return merged


def _rename_value(graph: onnx.GraphProto, old: str, new: str) -> None:
    for v in (*graph.input, *graph.output, *graph.value_info):
        if v.name == old:
            v.name = new
    for node in graph.node:
        node.input[:] = [new if n == old else n for n in node.input]
        node.output[:] = [new if n == old else n for n in node.output]


# --------------------------------------------------------------------------------------------
# Checks: parity and leaks
# --------------------------------------------------------------------------------------------
def ort_session(file: str, threads: int | None = None) -> Any:
    """An ONNX Runtime CPU session (the parity checks run on CPU whatever the target device)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
    opts.log_severity_level = 3
    return ort.InferenceSession(file, opts, providers=["CPUExecutionProvider"])


def _ort_run(session: Any, x: torch.Tensor) -> torch.Tensor:
    inp = session.get_inputs()[0]
    dtype = {"tensor(float16)": torch.float16, "tensor(float)": torch.float32}.get(inp.type, torch.float32)
    y = session.run(None, {inp.name: x.detach().to("cpu", dtype).contiguous().numpy()})[0]
    return torch.from_numpy(y).float()


def compare(file: str, inputs: str, ref: torch.Tensor, got: torch.Tensor, tolerance: float) -> Parity:
    ref = ref.detach().float().cpu()
    if tuple(got.shape) != tuple(ref.shape):
        raise ExportError(f"{file}: onnxruntime returned shape {tuple(got.shape)} on {inputs} inputs, "
                          f"PyTorch {tuple(ref.shape)}")
    max_abs = float((got - ref).abs().max()) if ref.numel() else 0.0
    scale = float(ref.abs().max()) if ref.numel() else 0.0
    rel = max_abs / scale if scale > 0 else (0.0 if max_abs == 0 else float("inf"))
    if not torch.isfinite(got).all():
        rel = float("inf")
    return Parity(file, inputs, int(ref.shape[0]), max_abs, scale, rel, tolerance, rel <= tolerance)


def _random(spec: BoundarySpec, batch: int, seed: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn((batch, *spec.shape), generator=g, dtype=dtype)


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


def _check_separation(part: PathPart, owned: Mapping[str, Mapping[str, torch.Tensor]]) -> None:
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


# --------------------------------------------------------------------------------------------
# The export
# --------------------------------------------------------------------------------------------
def export_path(
    path: Path,
    out_dir: str | os.PathLike[str],
    *,
    real_inputs: torch.Tensor | None = None,
    fp16: bool = False,
    opset: int = OPSET,
    exporter: str = "auto",
    merged: str = "compose",
    tolerance: float | None = None,
    threads: int | None = None,
    log: Callable[[str], None] | None = None,
) -> ExportResult:
    """Export ``path`` to ``out_dir``: one file per part, ``merged.onnx`` and ``export.json``.

    ``real_inputs`` (a batch of the local task's inputs; at most 8 are used) adds the real-input
    parity checks. ``fp16`` exports half-precision files (fp16 input and output; parity against
    the fp32 PyTorch path, tolerance :data:`FP16_TOLERANCE`). ``merged="compose"`` builds
    ``merged.onnx`` from the part files, ``"export"`` exports the whole path again.
    Raises :class:`ExportError` (and removes every file it wrote) when a check fails.
    """
    import onnx
    import onnxruntime

    if merged not in ("compose", "export"):
        raise ConfigError(f"merged={merged!r} is invalid; valid values: 'compose', 'export'")
    say = log or (lambda _m: None)
    t0 = time.perf_counter()
    out = FsPath(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    dtype = torch.float16 if fp16 else torch.float32
    tol = tolerance if tolerance is not None else (FP16_TOLERANCE if fp16 else FP32_TOLERANCE)
    device = next((p.device for p in path.parameters()), torch.device("cpu"))
    if real_inputs is not None:
        real_inputs = real_inputs[:8].to(device, torch.float32)
        path.local.input_spec.check(real_inputs, "real_inputs")  # type: ignore[union-attr]
    parts = split_path(path)
    whole = merged_part(path)
    owned = provider_tensors(path)
    result = ExportResult(str(path.spec), path.spec.kind, str(out), "float16" if fp16 else "float32", opset,
                          versions={"torch": torch.__version__, "onnx": onnx.__version__,
                                    "onnxruntime": onnxruntime.__version__})
    written: list[FsPath] = []
    was_training = path.training
    path.eval()
    try:
        for part in parts:  # before any work: a part must not hold another provider's tensor
            _check_separation(part, owned)
        # 1. PyTorch references: each part's input and output, random and real
        batches = {f"random{b}": _random(path.local.input_spec, b, seed=100 + b).to(device)  # type: ignore[union-attr]
                   for b in PARITY_BATCHES}
        if real_inputs is not None:
            batches["real"] = real_inputs
        trace: dict[str, list[torch.Tensor]] = {}
        with torch.no_grad():
            for key, x in batches.items():
                acts = [x]
                for part in parts:
                    acts.append(part(acts[-1]))
                trace[key] = acts
            fresh = {(i, b): _random(part.input_spec, b, seed=1000 * i + b).to(device)
                     for i, part in enumerate(parts) for b in PARITY_BATCHES}
            fresh_ref = {k: parts[k[0]](x) for k, x in fresh.items()}
        # 2. export and check each part
        used: set[str] = set()
        models: list[onnx.ModelProto] = []
        sessions: list[Any] = []
        for i, part in enumerate(parts):
            target = out / part.file_name
            say(f"exporting {part.file_name}: {part.describe()}")
            module: nn.Module = part
            if fp16:
                module = copy.deepcopy(part).half()
            example = trace["random1"][i].repeat(2, *[1] * (trace["random1"][i].dim() - 1))  # batch 2
            written.append(target)
            how, why = export_module(module, example.to(dtype), target, opset=opset, exporter=exporter)
            if why:
                result.fallbacks[part.file_name] = why
            used.add(how)
            model = check_file(target, opset)
            session = ort_session(str(target), threads)
            for b in PARITY_BATCHES:
                got = _ort_run(session, fresh[(i, b)])
                result.parity.append(compare(part.file_name, "random", fresh_ref[(i, b)], got, tol))
            if "real" in trace:
                got = _ort_run(session, trace["real"][i])
                result.parity.append(compare(part.file_name, "real", trace["real"][i + 1], got, tol))
            sessions.append(session)
            foreign = {k: v for p, d in owned.items() if p != part.provider for k, v in d.items()}
            result.leaks.append(find_leaks(model, part.provider, foreign, name=part.file_name))
            result.files.append(_file_entry(target, model, part, how, result.dtype))
            models.append(model)
        # 3. the parts chained in onnxruntime (only meaningful with several parts)
        if len(parts) > 1:
            chain = "chain(" + " > ".join(p.name for p in parts) + ")"
            for key, acts in trace.items():
                y = acts[0]
                for s in sessions:
                    y = _ort_run(s, y)
                result.parity.append(compare(chain, "real" if key == "real" else "random", acts[-1], y, tol))
        sessions.clear()
        # 4. merged.onnx
        target = out / "merged.onnx"
        written.append(target)
        note = ""
        if len(parts) == 1:
            # a skip path runs on one provider: merged.onnx is local.onnx, byte for byte, so
            # local.onnx's checks hold for it unchanged
            shutil.copyfile(out / parts[0].file_name, target)
            how = "copy"
            note = f"identical to {parts[0].file_name} (a skip path runs on one provider)"
            if _sha256(str(target)) != result.files[0].sha256:
                raise ExportError(f"copying {parts[0].file_name} to merged.onnx changed its bytes")
            result.parity += [replace(p, file="merged.onnx") for p in result.parity if p.file == parts[0].file_name]
            model = models[0]
        else:
            how = ""
            if merged == "compose":
                try:
                    compose_files(models, str(target))
                    how, note = "compose", "the part files chained with onnx.compose"
                except Exception as exc:  # incompatible opsets / IR versions between parts
                    note = f"onnx.compose failed ({_short(exc, 200)}); exported directly"
            if not how:
                module = copy.deepcopy(whole).half() if fp16 else whole
                example = trace["random1"][0].repeat(2, *[1] * (trace["random1"][0].dim() - 1))
                how, why = export_module(module, example.to(dtype), target, opset=opset, exporter=exporter)
                if why:
                    result.fallbacks["merged.onnx"] = why
                used.add(how)
            model = check_file(target, opset)
            session = ort_session(str(target), threads)
            for key, acts in trace.items():
                got = _ort_run(session, acts[0])
                result.parity.append(compare("merged.onnx", "real" if key == "real" else "random", acts[-1], got, tol))
            del session
        result.files.append(_file_entry(target, model, whole, how, result.dtype, note))
        models.clear()
        result.exporter = "+".join(sorted(used))
        result.seconds = time.perf_counter() - t0
        bad = [p for p in result.parity if not p.ok]
        leaky = [c for c in result.leaks if not c.ok]
        if bad or leaky:
            lines = [f"{p.file} on {p.inputs} inputs (batch {p.batch}): max abs diff {p.max_abs:.3g}, "
                     f"relative {p.rel:.3g} > {p.tolerance:g}" for p in bad]
            lines += [f"{c.file} (served by {c.provider!r}) holds another provider's tensors: "
                      f"{', '.join(c.leaks[:5])}" for c in leaky]
            lines += [f"{name} was exported by the TorchScript exporter because the dynamo exporter failed: {why}"
                      for name, why in result.fallbacks.items()]
            raise ExportError(f"export of {path.spec} failed its checks; nothing was kept: " + "; ".join(lines))
        manifest = out / MANIFEST
        written.append(manifest)
        manifest.write_text(json.dumps(result.to_dict(), indent=2))
        return result
    except BaseException:
        for f in written:
            for victim in (f, f.with_name(f.name + ".data")):
                victim.unlink(missing_ok=True)
        raise
    finally:
        path.train(was_training)


def _file_entry(target: FsPath, model: onnx.ModelProto, part: PathPart, how: str, dtype: str,
                note: str = "") -> ExportedFile:
    from codenn.blocks import parameter_count

    return ExportedFile(
        name=target.name, role=part.role, provider=part.provider, ops=tuple(op.label for op in part.ops),
        input=part.input_spec, output=part.output_spec, exporter=how, opset=_opset_of(model), dtype=dtype,
        bytes=target.stat().st_size, sha256=_sha256(str(target)), parameters=parameter_count(part), note=note,
    )


# --------------------------------------------------------------------------------------------
# Where a path comes from: a search run directory
# --------------------------------------------------------------------------------------------
def load_run_path(
    run_dir: str | os.PathLike[str], spec: str | None = None, *, log: Callable[[str], None] = print
) -> tuple[Path, torch.Tensor]:
    """Rebuild a trained path of a ``codenn search`` run: its services (base models from the
    cache, trained on first use), its links from ``RUN/links``. ``spec`` defaults to the run's
    selected path. Returns the path (eval mode) and a batch of the local task's test inputs."""
    from codenn.data import tensors
    from codenn.evaluate import load_run, trained_path
    from codenn.pathspec import PathSpec

    store, run_json, scenario = load_run(run_dir, log)
    trained = {r["spec"]: r for r in store.rows() if r.get("status") == "trained"}
    if spec is None:
        selected = run_json.get("selected") or {}
        spec = selected.get("spec")
        if not spec:
            raise ExportError(
                f"run {os.fspath(run_dir)!r} selected no path (decision: {run_json.get('decision')!r}); "
                f"choose one with --spec. Trained paths: {sorted(trained) or 'none'}")
    services = {scenario.local.name: scenario.local, **{h.name: h for h in scenario.hosts}}
    try:
        canonical = str(PathSpec.parse(spec).resolve({n: s.num_blocks for n, s in services.items()}))
    except KeyError as exc:
        raise ExportError(f"path {spec!r} names a service the run does not have: {exc}; services: "
                          f"{sorted(services)}") from exc
    if canonical not in trained:
        raise ExportError(f"run {os.fspath(run_dir)!r} has no trained links for {spec!r}; trained paths: "
                          f"{sorted(trained) or 'none'}")
    row = trained[canonical]
    path = trained_path(store, canonical, services)
    x, _ = tensors(scenario.splits.test, limit=8)
    log(f"loaded {canonical} from {os.fspath(run_dir)} (test accuracy {row.get('test_accuracy', float('nan')):.3f})")
    return path.eval(), x
