"""Chaining the part files into ``merged.onnx`` with ``onnx.compose``.

Composing the very files the providers serve (rather than exporting the whole path again) makes
the single-machine benchmark run exactly what the deployment runs, chained.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

from .contract import EXTERNAL_DATA_BYTES, INPUT_NAME, OUTPUT_NAME

if TYPE_CHECKING:
    import onnx


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
    if merged.ByteSize() > EXTERNAL_DATA_BYTES:
        onnx.save(merged, out, save_as_external_data=True, location=os.path.basename(out) + ".data")
    else:
        onnx.save(merged, out)
    return merged


def _rename_value(graph: onnx.GraphProto, old: str, new: str) -> None:
    """Give the composed graph the contract's input/output names (compose prefixed them)."""
    for v in (*graph.input, *graph.output, *graph.value_info):
        if v.name == old:
            v.name = new
    for node in graph.node:
        node.input[:] = [new if n == old else n for n in node.input]
        node.output[:] = [new if n == old else n for n in node.output]
