"""Checks of an exported file: ``onnx.checker``, the file contract, and parity with PyTorch.

An exported file is only kept after it passes these, so a wrong file fails at export time
rather than silently in a provider's server.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import torch

from codenn.errors import ExportError

from .contract import EXTERNAL_DATA_BYTES, OPSET, opset_of
from .export import short_error

if TYPE_CHECKING:
    import onnx


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


def check_file(file: str | os.PathLike[str], opset: int = OPSET) -> onnx.ModelProto:
    """``onnx.checker.check_model(full_check=True)``, the opset, one input and one output, and
    a symbolic batch dimension on both. Returns the loaded model (weights included)."""
    import onnx

    file = os.fspath(file)
    try:
        model = onnx.load(file)
        # a model over protobuf's 2 GiB limit is checked from its path (external data)
        onnx.checker.check_model(model if model.ByteSize() < EXTERNAL_DATA_BYTES else file, full_check=True)
    except Exception as exc:
        raise ExportError(f"{os.path.basename(file)} fails onnx.checker (full_check): {short_error(exc, 600)}") from exc
    got = opset_of(model)
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


def ort_session(file: str, threads: int | None = None) -> Any:
    """An ONNX Runtime CPU session (the parity checks run on CPU whatever the target device)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
    opts.log_severity_level = 3
    return ort.InferenceSession(file, opts, providers=["CPUExecutionProvider"])


def ort_run(session: Any, x: torch.Tensor) -> torch.Tensor:
    """Run ``session`` on ``x`` in the file's input dtype; the output comes back as fp32 on CPU."""
    inp = session.get_inputs()[0]
    dtype = {"tensor(float16)": torch.float16, "tensor(float)": torch.float32}.get(inp.type, torch.float32)
    y = session.run(None, {inp.name: x.detach().to("cpu", dtype).contiguous().numpy()})[0]
    return torch.from_numpy(y).float()


def compare(file: str, inputs: str, ref: torch.Tensor, got: torch.Tensor, tolerance: float) -> Parity:
    """The parity row of ``got`` (ONNX Runtime) against ``ref`` (PyTorch); raises on a shape mismatch."""
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
