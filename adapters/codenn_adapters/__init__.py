"""codenn adapters: ONNX export of paths and the runtimes that run them.

- :mod:`codenn_adapters.onnx_export`: split a path into the parts each provider serves, export
  them (and the merged path) to ONNX, check them (onnx.checker, parity with PyTorch, no other
  provider's tensors in a file). ``codenn export`` is its command line.
- :mod:`codenn_adapters.runtimes`: torch eager, torch CUDA graphs, ONNX Runtime CPU and CUDA
  (IO binding, CUDA graphs), registered through the ``codenn_register_runtimes`` hook.
- :mod:`codenn_adapters.host_segment`, :mod:`codenn_adapters.host_server`,
  :mod:`codenn_adapters.oip`, :mod:`codenn_adapters.transports`: a host provider's served
  segments, its Open Inference Protocol server, and the ``in-process`` / ``http`` transports
  (``codenn_register_transports``). See docs/deployment.md.

Names are imported lazily: codenn loads :mod:`codenn_adapters.runtimes` with every plugin set,
and neither onnx nor onnxruntime should be imported for that.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "export_path": "onnx_export",
    "export_module": "onnx_export",
    "split_path": "onnx_export",
    "merged_part": "onnx_export",
    "load_run_path": "onnx_export",
    "find_leaks": "onnx_export",
    "ExportResult": "onnx_export",
    "ExportedFile": "onnx_export",
    "Parity": "onnx_export",
    "LeakCheck": "onnx_export",
    "PathPart": "onnx_export",
    "Runtime": "runtimes",
    "TorchEager": "runtimes",
    "TorchCudaGraph": "runtimes",
    "OrtCpu": "runtimes",
    "OrtCuda": "runtimes",
    "make_runtime": "runtimes",
    "time_runtime": "runtimes",
    "Timing": "runtimes",
    "DeviceUnavailableError": "runtimes",
    "RuntimeFailure": "runtimes",
    "HostSegment": "host_segment",
    "segments_from_run": "host_segment",
    "create_app": "host_server",
    "InProcessTransport": "transports",
    "HttpTransport": "transports",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'codenn_adapters' has no attribute {name!r}")
    return getattr(import_module(f"codenn_adapters.{module}"), name)
