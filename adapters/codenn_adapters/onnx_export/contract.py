"""What every exported file promises: its input and output names, opset and parity tolerances.

Kept in one place so the exporter, the checks, the composer and ``export.json`` agree on them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import onnx

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

EXTERNAL_DATA_BYTES = 1_800_000_000
"""Above this size a model keeps its weights in a ``.data`` file (protobuf's 2 GiB limit, with a margin)."""


def opset_of(model: onnx.ModelProto) -> int:
    """The default-domain opset a model declares (0 when it declares none)."""
    return max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)
