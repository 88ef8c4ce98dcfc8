"""The export of a whole path: every part file, ``merged.onnx`` and ``export.json``, all checked.

This is where the pieces meet (partition, export, checks, leak search, composition) and where
the all-or-nothing rule lives: a failing check removes every file this export wrote.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from codenn.errors import ConfigError, ExportError
from codenn.fileio import atomic_write
from codenn.model.blocks import BoundarySpec

from .checks import check_file, compare, ort_run, ort_session
from .compose import compose_files
from .contract import FP16_TOLERANCE, FP32_TOLERANCE, MANIFEST, OPSET, PARITY_BATCHES
from .export import export_module, short_error
from .leaks import check_separation, find_leaks
from .partition import PathPart, merged_part, provider_tensors, split_path
from .result import ExportResult, file_entry, sha256_of

if TYPE_CHECKING:
    import onnx

    from codenn.paths.composed import ComposedPath

_Trace = dict[str, list[torch.Tensor]]
"""Per input batch ("random1", "random5", "real"): the path's input, then each part's output."""


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
    import onnx
    import onnxruntime

    if merged not in ("compose", "export"):
        raise ConfigError(f"merged={merged!r} is invalid; valid values: 'compose', 'export'")
    say = log or (lambda _m: None)
    t0 = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tol = tolerance if tolerance is not None else (FP16_TOLERANCE if fp16 else FP32_TOLERANCE)
    device = next((p.device for p in path.parameters()), torch.device("cpu"))
    if real_inputs is not None:
        real_inputs = real_inputs[:8].to(device, torch.float32)
        path.local.input_spec.check(real_inputs, "real_inputs")
    parts = split_path(path)
    whole = merged_part(path)
    owned = provider_tensors(path)
    result = ExportResult(str(path.spec), path.spec.kind, str(out), "float16" if fp16 else "float32", opset,
                          versions={"torch": torch.__version__, "onnx": onnx.__version__,
                                    "onnxruntime": onnxruntime.__version__})
    written: list[Path] = []
    used: set[str] = set()

    def export_one(module: nn.Module, x: torch.Tensor, target: Path) -> str:
        """Export ``module`` (a half copy when fp16) traced on ``x`` repeated to batch 2."""
        if fp16:
            module = copy.deepcopy(module).half()
        example = x.repeat(2, *[1] * (x.dim() - 1))
        how, why = export_module(module, example.to(torch.float16 if fp16 else torch.float32), target,
                                 opset=opset, exporter=exporter)
        if why:
            result.fallbacks[target.name] = why
        used.add(how)
        return how

    was_training = path.training
    path.eval()
    try:
        for part in parts:  # before any work: a part must not hold another provider's tensor
            check_separation(part, owned)
        # 1. PyTorch references: each part's input and output, random and real
        trace, fresh, fresh_ref = _references(path, parts, real_inputs, device)
        # 2. export and check each part
        models: list[onnx.ModelProto] = []
        sessions: list[Any] = []
        for i, part in enumerate(parts):
            target = out / part.file_name
            say(f"exporting {part.file_name}: {part.describe()}")
            written.append(target)
            how = export_one(part, trace["random1"][i], target)
            model = check_file(target, opset)
            session = ort_session(str(target), threads)
            for b in PARITY_BATCHES:
                got = ort_run(session, fresh[(i, b)])
                result.parity.append(compare(part.file_name, "random", fresh_ref[(i, b)], got, tol))
            if "real" in trace:
                got = ort_run(session, trace["real"][i])
                result.parity.append(compare(part.file_name, "real", trace["real"][i + 1], got, tol))
            sessions.append(session)
            foreign = {k: v for p, d in owned.items() if p != part.provider for k, v in d.items()}
            result.leaks.append(find_leaks(model, part.provider, foreign, name=part.file_name))
            result.files.append(file_entry(target, model, part, how, result.dtype))
            models.append(model)
        # 3. the parts chained in onnxruntime (only meaningful with several parts)
        if len(parts) > 1:
            chain = "chain(" + " > ".join(p.name for p in parts) + ")"
            for key, acts in trace.items():
                y = acts[0]
                for s in sessions:
                    y = ort_run(s, y)
                result.parity.append(compare(chain, _inputs_kind(key), acts[-1], y, tol))
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
            if sha256_of(str(target)) != result.files[0].sha256:
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
                    note = f"onnx.compose failed ({short_error(exc, 200)}); exported directly"
            if not how:
                how = export_one(whole, trace["random1"][0], target)
            model = check_file(target, opset)
            session = ort_session(str(target), threads)
            for key, acts in trace.items():
                got = ort_run(session, acts[0])
                result.parity.append(compare("merged.onnx", _inputs_kind(key), acts[-1], got, tol))
            del session
        result.files.append(file_entry(target, model, whole, how, result.dtype, note))
        models.clear()
        result.exporter = "+".join(sorted(used))
        result.seconds = time.perf_counter() - t0
        failures = _failures(result)
        if failures:
            raise ExportError(f"export of {path.spec} failed its checks; nothing was kept: " + "; ".join(failures))
        manifest = out / MANIFEST
        written.append(manifest)
        atomic_write(manifest, json.dumps(result.to_dict(), indent=2).encode())
        return result
    except BaseException:
        for f in written:
            for victim in (f, f.with_name(f.name + ".data")):
                victim.unlink(missing_ok=True)
        raise
    finally:
        path.train(was_training)


def _random(spec: BoundarySpec, batch: int, seed: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn((batch, *spec.shape), generator=g, dtype=dtype)


def _references(
    path: ComposedPath, parts: Sequence[PathPart], real_inputs: torch.Tensor | None, device: torch.device
) -> tuple[_Trace, dict[tuple[int, int], torch.Tensor], dict[tuple[int, int], torch.Tensor]]:
    """The PyTorch side of every parity check, computed once before any export.

    Returns the trace of the path's inputs through the parts, and per (part index, batch) a
    fresh random input of that part with its PyTorch output: a part is also checked on inputs
    the preceding parts would never produce.
    """
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
    return trace, fresh, fresh_ref


def _inputs_kind(key: str) -> str:
    return "real" if key == "real" else "random"


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
