"""ONNX export of a path, split the way providers serve it.

A path is cut into *parts*: maximal runs of consecutive operations (blocks and links) that one
provider executes. Links follow :attr:`codenn.paths.ComposedPath.link_sides` (paper, Section III-C): a
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

Modules: :mod:`codenn.paths.parts` (the parts, in the core), :mod:`.export` (one module to one file),
:mod:`.compose` (``merged.onnx``), :mod:`.checks` (checker, parity), :mod:`.leaks` (provider
separation), :mod:`.result` (``export.json``) and :mod:`.pipeline` (:func:`export_path`); a path
from a run directory is :func:`codenn.search.store.load_run_path`. Every public name is re-exported here.
"""

from __future__ import annotations

from codenn.paths.parts import Op, PathPart, merged_part, path_ops, provider_tensors, split_path
from codenn.search.store import load_run_path

from .checks import Parity, check_file, compare, ort_session
from .compose import compose_files
from .contract import FP16_TOLERANCE, FP32_TOLERANCE, INPUT_NAME, MANIFEST, OPSET, OUTPUT_NAME, PARITY_BATCHES
from .export import export_module
from .leaks import LeakCheck, file_tensors, find_leaks
from .pipeline import export_path
from .result import ExportedFile, ExportResult

__all__ = [
    "FP16_TOLERANCE",
    "FP32_TOLERANCE",
    "INPUT_NAME",
    "MANIFEST",
    "OPSET",
    "OUTPUT_NAME",
    "PARITY_BATCHES",
    "ExportResult",
    "ExportedFile",
    "LeakCheck",
    "Op",
    "Parity",
    "PathPart",
    "check_file",
    "compare",
    "compose_files",
    "export_module",
    "export_path",
    "file_tensors",
    "find_leaks",
    "load_run_path",
    "merged_part",
    "ort_session",
    "path_ops",
    "provider_tensors",
    "split_path",
]
