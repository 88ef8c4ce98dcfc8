"""codenn adapters: what needs a third-party runtime or server library, as thin shells over the core.

- :mod:`codenn_adapters.onnx_export`: a path to ONNX files per provider side and merged, checked
  (onnx.checker, parity with PyTorch, no other provider's tensors in a file); ``codenn export``.
- :mod:`codenn_adapters.runtimes`: torch eager, torch CUDA graphs, ONNX Runtime CPU and CUDA
  (IO binding, CUDA graphs), registered through the ``codenn_register_runtimes`` hook.
- :mod:`codenn_adapters.host_server`, :mod:`codenn_adapters.oip`, :mod:`codenn_adapters.server_limits`:
  the FastAPI/uvicorn shell of both servers over :class:`codenn.remote.dataplane.DataPlane`, the
  Open Inference Protocol messages, uvicorn's header deadline.
- :mod:`codenn_adapters.transports`: the ``in-process`` and ``http`` (httpx) transports
  (``codenn_register_transports``).
- :mod:`codenn_adapters.ray_host`, :mod:`codenn_adapters.ray_search`: a host on Ray Serve replicas
  and the ``ray`` search executor (optional extra ``codenn[ray]``).
- :mod:`codenn_adapters.commands`: ``codenn export``, ``serve-host`` and ``serve``
  (``codenn_register_commands``).

The host's part of a path, split-training state, access rights and the local server's model are
in :mod:`codenn.remote`: they need only torch. Names are imported lazily: codenn loads
:mod:`codenn_adapters.runtimes` with every plugin set, and neither onnx nor onnxruntime should be
imported for that.
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
    "HostServer": "host_server",
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
