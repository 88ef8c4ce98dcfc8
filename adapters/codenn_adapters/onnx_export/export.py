"""Exporting one module (one tensor in, one tensor out) to one ONNX file.

The dynamo exporter is preferred; the TorchScript exporter is the fallback for modules dynamo
cannot trace, and the caller records why it was needed so a fallback is never silent.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import warnings
from collections.abc import Iterator

import torch
from torch import nn

from codenn.errors import ConfigError, ExportError

from .contract import EXTERNAL_DATA_BYTES, INPUT_NAME, OPSET, OUTPUT_NAME

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def short_error(exc: BaseException, limit: int = 400) -> str:
    """One line: the exception's first line and, when it wraps another, the root cause's."""
    def line(e: BaseException) -> str:
        text = _ANSI.sub("", str(e)).strip()
        return f"{type(e).__name__}: {text.splitlines()[0] if text else ''}"

    root = exc
    while root.__cause__ is not None and root.__cause__ is not root:
        root = root.__cause__
    text = line(exc) if root is exc else f"{line(exc)} (cause: {line(root)})"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _state_bytes(module: nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in module.state_dict().values())


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
    external = _state_bytes(module) > EXTERNAL_DATA_BYTES
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
            errors["dynamo"] = short_error(exc)
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
            errors["torchscript"] = short_error(exc)
    tried = "; ".join(f"{k} exporter: {v}" for k, v in errors.items())
    raise ExportError(f"cannot export {getattr(module, 'name', type(module).__name__)!r} to ONNX ({tried})")
