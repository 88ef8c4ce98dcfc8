"""The export of a whole path: every part file, ``merged.onnx`` and ``export.json``, all checked.

This is where the pieces meet (partition, export, checks, leak search, composition) and where
the all-or-nothing rule lives: a failing check removes every file this export wrote.

:func:`export_path` runs the stages in order; :class:`_PathExport` holds what they share (the
output directory, the options, the report being filled, the files written so far):

1. arguments: :func:`_check_merged`, :func:`_real_batch`, :func:`_tolerance`;
2. the PyTorch references of every parity check: :func:`_references`;
3. each part file: :meth:`_PathExport.part_files` (export, checker, parity, leak search);
4. the part files chained in ONNX Runtime: :meth:`_PathExport.chain_parity`;
5. ``merged.onnx``: :meth:`_PathExport.merged_file` (a copy, composed, or exported again);
6. the verdict and ``export.json``: :meth:`_PathExport.finish`; on any error
   :meth:`_PathExport.remove_written`.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from codenn.errors import ConfigError, ExportError
from codenn.fileio import atomic_write
from codenn.model.blocks import BoundarySpec
from codenn.paths.parts import PathPart, merged_part, provider_tensors, split_path

from .checks import check_file, compare, ort_run, ort_session
from .compose import compose_files
from .contract import FP16_TOLERANCE, FP32_TOLERANCE, MANIFEST, OPSET, PARITY_BATCHES
from .export import export_module, short_error
from .leaks import LeakCheck, check_separation, find_leaks
from .result import ExportResult, file_entry, sha256_of

if TYPE_CHECKING:
    import onnx

    from codenn.paths.composed import ComposedPath

_Trace = dict[str, list[torch.Tensor]]
"""Per input batch ("random1", "random5", "real"): the path's input, then each part's output."""

_Owned = Mapping[str, Mapping[str, torch.Tensor]]
"""Per provider, its tensors by name (:func:`provider_tensors`)."""


def export_path(
    path: ComposedPath,
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
    versions = _versions()
    _check_merged(merged)
    t0 = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    device = next((p.device for p in path.parameters()), torch.device("cpu"))
    real_inputs = _real_batch(path, real_inputs, device)
    parts, whole, owned = split_path(path), merged_part(path), provider_tensors(path)
    result = ExportResult(str(path.spec), path.spec.kind, str(out), "float16" if fp16 else "float32", opset,
                          versions=versions)
    job = _PathExport(out, result, fp16=fp16, opset=opset, exporter=exporter, threads=threads,
                      tolerance=_tolerance(tolerance, fp16), say=log or (lambda _m: None))
    was_training = path.training
    path.eval()
    try:
        for part in parts:  # before any work: a part must not hold another provider's tensor
            check_separation(part, owned)
        refs = _references(path, parts, real_inputs, device)
        models, sessions = job.part_files(parts, refs, owned)
        job.chain_parity(parts, sessions, refs.trace)
        sessions.clear()  # the part sessions are not needed for merged.onnx
        job.merged_file(parts, whole, models, refs.trace, merged)
        models.clear()
        job.finish(path.spec, t0)
        return result
    except BaseException:
        job.remove_written()
        raise
    finally:
        path.train(was_training)


# ----------------------------------------------------------------------------------------------
# 1. Arguments
# ----------------------------------------------------------------------------------------------
def _versions() -> dict[str, str]:
    """The versions recorded in ``export.json`` (importing ONNX and ONNX Runtime, which the export needs)."""
    import onnx
    import onnxruntime

    return {"torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__}


def _check_merged(merged: str) -> None:
    if merged not in ("compose", "export"):
        raise ConfigError(f"merged={merged!r} is invalid; valid values: 'compose', 'export'")


def _real_batch(path: ComposedPath, real_inputs: torch.Tensor | None, device: torch.device) -> torch.Tensor | None:
    """At most 8 real inputs, fp32 on the path's device, checked against the local input spec."""
    if real_inputs is None:
        return None
    real_inputs = real_inputs[:8].to(device, torch.float32)
    path.local.input_spec.check(real_inputs, "real_inputs")
    return real_inputs


def _tolerance(tolerance: float | None, fp16: bool) -> float:
    """The parity tolerance: the one asked for, else :data:`FP16_TOLERANCE` or :data:`FP32_TOLERANCE`."""
    if tolerance is not None:
        return tolerance
    return FP16_TOLERANCE if fp16 else FP32_TOLERANCE


# ----------------------------------------------------------------------------------------------
# 2. PyTorch references
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _References:
    """The PyTorch side of every parity check, computed once before any export.

    ``trace``: the path's inputs through the parts. ``fresh``: per (part index, batch) a fresh
    random input of that part, ``fresh_ref`` its PyTorch output: a part is also checked on inputs
    the preceding parts would never produce.
    """

    trace: _Trace
    fresh: dict[tuple[int, int], torch.Tensor]
    fresh_ref: dict[tuple[int, int], torch.Tensor]


def _random(spec: BoundarySpec, batch: int, seed: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn((batch, *spec.shape), generator=g, dtype=dtype)


def _references(
    path: ComposedPath, parts: Sequence[PathPart], real_inputs: torch.Tensor | None, device: torch.device
) -> _References:
    """The trace of the path's random (and real) inputs through the parts, and the fresh part inputs."""
    batches = {f"random{b}": _random(path.local.input_spec, b, seed=100 + b).to(device) for b in PARITY_BATCHES}
    if real_inputs is not None:
        batches["real"] = real_inputs
    trace: _Trace = {}
    with torch.no_grad():
        for key, x in batches.items():
            acts = [x]
            for part in parts:
                acts.append(part(acts[-1]))
            trace[key] = acts
        fresh = {(i, b): _random(part.input_spec, b, seed=1000 * i + b).to(device)
                 for i, part in enumerate(parts) for b in PARITY_BATCHES}
        fresh_ref = {k: parts[k[0]](x) for k, x in fresh.items()}
    return _References(trace, fresh, fresh_ref)


def _inputs_kind(key: str) -> str:
    return "real" if key == "real" else "random"


# ----------------------------------------------------------------------------------------------
# 3.-6. The files, their checks, the verdict
# ----------------------------------------------------------------------------------------------
@dataclass
class _PathExport:
    """One :func:`export_path` call: its options, the report it fills and the files it wrote."""

    out: Path
    result: ExportResult
    fp16: bool
    opset: int
    exporter: str
    threads: int | None
    tolerance: float
    say: Callable[[str], None]
    written: list[Path] = field(default_factory=list)  # removed again when the export fails
    used: set[str] = field(default_factory=set)  # the exporters that wrote a file

    def export(self, module: nn.Module, x: torch.Tensor, target: Path) -> str:
        """Export ``module`` (a half copy when fp16) traced on ``x`` repeated to batch 2: dynamo,
        or TorchScript when dynamo fails (the reason is recorded in ``fallbacks``)."""
        if self.fp16:
            module = copy.deepcopy(module).half()
        example = x.repeat(2, *[1] * (x.dim() - 1))
        how, why = export_module(module, example.to(torch.float16 if self.fp16 else torch.float32), target,
                                 opset=self.opset, exporter=self.exporter)
        if why:
            self.result.fallbacks[target.name] = why
        self.used.add(how)
        return how

    def compare(self, file: str, inputs: str, ref: torch.Tensor, got: torch.Tensor) -> None:
        """Record the parity of ``got`` (ONNX Runtime) with ``ref`` (PyTorch)."""
        self.result.parity.append(compare(file, inputs, ref, got, self.tolerance))

    def part_files(self, parts: Sequence[PathPart], refs: _References,
                   owned: _Owned) -> tuple[list[onnx.ModelProto], list[Any]]:
        """Every part file (:meth:`part_file`) in path order: the loaded models and their sessions."""
        models: list[onnx.ModelProto] = []
        sessions: list[Any] = []
        for i, part in enumerate(parts):
            model, session = self.part_file(i, part, refs, owned)
            models.append(model)
            sessions.append(session)
        return models, sessions

    def part_file(self, i: int, part: PathPart, refs: _References, owned: _Owned) -> tuple[onnx.ModelProto, Any]:
        """Part ``i``'s file: exported, checked (``onnx.checker``, parity, leaks) and entered in the
        report. Returns the loaded model and its ONNX Runtime session."""
        target = self.out / part.file_name
        self.say(f"exporting {part.file_name}: {part.describe()}")
        self.written.append(target)
        how = self.export(part, refs.trace["random1"][i], target)
        model = check_file(target, self.opset)
        session = ort_session(str(target), self.threads)
        self.part_parity(i, part.file_name, session, refs)
        self.result.leaks.append(_leak_check(model, part, owned))
        self.result.files.append(file_entry(target, model, part, how, self.result.dtype))
        return model, session

    def part_parity(self, i: int, name: str, session: Any, refs: _References) -> None:
        """Part ``i``'s file against PyTorch: on fresh random inputs at each parity batch, then on the real inputs."""
        for b in PARITY_BATCHES:
            got = ort_run(session, refs.fresh[(i, b)])
            self.compare(name, "random", refs.fresh_ref[(i, b)], got)
        if "real" in refs.trace:
            got = ort_run(session, refs.trace["real"][i])
            self.compare(name, "real", refs.trace["real"][i + 1], got)

    def chain_parity(self, parts: Sequence[PathPart], sessions: Sequence[Any], trace: _Trace) -> None:
        """The part files run one after the other in ONNX Runtime against the whole path in PyTorch
        (only meaningful with several parts)."""
        if len(parts) <= 1:
            return
        chain = "chain(" + " > ".join(p.name for p in parts) + ")"
        for key, acts in trace.items():
            y = acts[0]
            for s in sessions:
                y = ort_run(s, y)
            self.compare(chain, _inputs_kind(key), acts[-1], y)

    def merged_file(self, parts: Sequence[PathPart], whole: PathPart, models: Sequence[onnx.ModelProto],
                    trace: _Trace, merged: str) -> None:
        """``merged.onnx``: a copy of the one part file of a skip path; else built (:meth:`build_merged`)
        and checked like a part file."""
        target = self.out / "merged.onnx"
        self.written.append(target)
        if len(parts) == 1:
            how, note = self.copy_merged(parts[0], target)
            model = models[0]
        else:
            how, note = self.build_merged(whole, models, trace, target, merged)
            model = self.check_merged(target, trace)
        self.result.files.append(file_entry(target, model, whole, how, self.result.dtype, note))

    def copy_merged(self, part: PathPart, target: Path) -> tuple[str, str]:
        """A skip path runs on one provider: merged.onnx is its file, byte for byte, so that file's
        checks hold for it unchanged (and are recorded for it too)."""
        shutil.copyfile(self.out / part.file_name, target)
        if sha256_of(str(target)) != self.result.files[0].sha256:
            raise ExportError(f"copying {part.file_name} to merged.onnx changed its bytes")
        parity = self.result.parity
        parity += [replace(p, file="merged.onnx") for p in parity if p.file == part.file_name]
        return "copy", f"identical to {part.file_name} (a skip path runs on one provider)"

    def build_merged(self, whole: PathPart, models: Sequence[onnx.ModelProto], trace: _Trace, target: Path,
                     merged: str) -> tuple[str, str]:
        """The part files composed with ``onnx.compose`` (``merged="compose"``), or the whole path
        exported (``"export"``, or when composing fails). Returns (how, note)."""
        note = ""
        if merged == "compose":
            try:
                compose_files(models, str(target))
                return "compose", "the part files chained with onnx.compose"
            except Exception as exc:  # incompatible opsets / IR versions between parts
                note = f"onnx.compose failed ({short_error(exc, 200)}); exported directly"
        return self.export(whole, trace["random1"][0], target), note

    def check_merged(self, target: Path, trace: _Trace) -> onnx.ModelProto:
        """``onnx.checker`` and parity with the whole path on every traced input; returns the model."""
        model = check_file(target, self.opset)
        session = ort_session(str(target), self.threads)
        for key, acts in trace.items():
            got = ort_run(session, acts[0])
            self.compare("merged.onnx", _inputs_kind(key), acts[-1], got)
        return model

    def finish(self, spec: object, t0: float) -> None:
        """Complete the report; raise :class:`ExportError` when a check failed, else write ``export.json``."""
        self.result.exporter = "+".join(sorted(self.used))
        self.result.seconds = time.perf_counter() - t0
        failures = _failures(self.result)
        if failures:
            raise ExportError(f"export of {spec} failed its checks; nothing was kept: " + "; ".join(failures))
        manifest = self.out / MANIFEST
        self.written.append(manifest)
        atomic_write(manifest, json.dumps(self.result.to_dict(), indent=2).encode())

    def remove_written(self) -> None:
        """Remove every file this export wrote (and its external data): nothing half-checked stays."""
        for f in self.written:
            for victim in (f, f.with_name(f.name + ".data")):
                victim.unlink(missing_ok=True)


def _leak_check(model: onnx.ModelProto, part: PathPart, owned: _Owned) -> LeakCheck:
    """Search ``part``'s file for the tensors of every provider that does not serve it."""
    foreign = {k: v for p, d in owned.items() if p != part.provider for k, v in d.items()}
    return find_leaks(model, part.provider, foreign, name=part.file_name)


def _failures(result: ExportResult) -> list[str]:
    """One line per failed parity or leak check, plus every TorchScript fallback that may explain it."""
    bad = [p for p in result.parity if not p.ok]
    leaky = [c for c in result.leaks if not c.ok]
    if not (bad or leaky):
        return []
    lines = [f"{p.file} on {p.inputs} inputs (batch {p.batch}): max abs diff {p.max_abs:.3g}, "
             f"relative {p.rel:.3g} > {p.tolerance:g}" for p in bad]
    lines += [f"{c.file} (served by {c.provider!r}) holds another provider's tensors: "
              f"{', '.join(c.leaks[:5])}" for c in leaky]
    lines += [f"{name} was exported by the TorchScript exporter because the dynamo exporter failed: {why}"
              for name, why in result.fallbacks.items()]
    return lines
