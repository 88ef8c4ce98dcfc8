"""Open Inference Protocol (v2) tensor messages, with the binary tensor data extension.

One small module that both the host server and the HTTP transport use, so the two cannot drift
apart. A message is a JSON header, optionally followed by raw tensor bytes; when bytes follow,
the ``Inference-Header-Content-Length`` HTTP header gives the JSON header's length and each
binary tensor says its byte count in ``parameters.binary_data_size`` (little-endian, row-major),
as KServe and Triton define it. Plain JSON ``data`` (flat or nested lists) is accepted too.

The JSON header is validated with pydantic; every malformed message raises
:class:`ProtocolError` with the HTTP status a server should answer (400 malformed, 422 invalid).
Tensors are never pickled.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, ValidationError

from codenn.errors import BoundaryMismatchError, CodennError
from codenn.remote.served_model import OIP_DATATYPES, oip_datatype

HEADER_LENGTH = "Inference-Header-Content-Length"
"""HTTP header naming the JSON header's byte length when binary tensor data follows it."""

JSON_TYPE = "application/json"
BINARY_TYPE = "application/octet-stream"

DATATYPES = OIP_DATATYPES
MAX_DIMS = 8
MAX_DIM_SIZE = 2**31 - 1


class ProtocolError(CodennError):
    """A message that does not follow the protocol; ``status`` is the HTTP answer it deserves."""

    def __init__(self, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.status = status


class TensorHeader(BaseModel):
    """One input or output tensor in a JSON header."""

    model_config = ConfigDict(extra="allow")
    name: str
    shape: list[int]
    datatype: str
    parameters: dict[str, Any] | None = None
    data: list[Any] | None = None


class RequestedOutput(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str
    parameters: dict[str, Any] | None = None


class InferRequestHeader(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: str | None = None
    parameters: dict[str, Any] | None = None
    inputs: list[TensorHeader]
    outputs: list[RequestedOutput] | None = None


class InferResponseHeader(BaseModel):
    model_config = ConfigDict(extra="allow")
    model_name: str
    model_version: str | None = None
    id: str | None = None
    parameters: dict[str, Any] | None = None
    outputs: list[TensorHeader]


def datatype_of(dtype: torch.dtype | str) -> str:
    """The OIP datatype name of a torch dtype (or a BoundarySpec dtype string such as 'float32')."""
    try:
        return oip_datatype(dtype)
    except BoundaryMismatchError as exc:
        raise ProtocolError(str(exc)) from None


# --------------------------------------------------------------------------------------------
# Encoding
# --------------------------------------------------------------------------------------------
def _tensor_bytes(t: torch.Tensor) -> bytes:
    arr = t.detach().cpu().contiguous().numpy()
    return arr.astype(DATATYPES[datatype_of(t.dtype)][0], copy=False).tobytes()


def _encode(header: dict[str, Any], field: str, tensors: Mapping[str, torch.Tensor], binary: bool,
            parameters: Mapping[str, Any] | None) -> tuple[bytes, dict[str, str]]:
    blobs, entries = [], []
    for name, t in tensors.items():
        entry: dict[str, Any] = {"name": name, "shape": list(t.shape), "datatype": datatype_of(t.dtype)}
        if binary:
            raw = _tensor_bytes(t)
            entry["parameters"] = {"binary_data_size": len(raw)}
            blobs.append(raw)
        else:
            entry["data"] = t.detach().cpu().reshape(-1).tolist()
        entries.append(entry)
    header[field] = entries
    if parameters:
        header["parameters"] = dict(parameters)
    try:  # OIP JSON has no NaN or inf: never send the bare tokens
        head = json.dumps(header, separators=(",", ":"), allow_nan=False).encode()
    except ValueError:
        raise ProtocolError("a tensor or parameter holds NaN or inf, which JSON cannot carry; send finite values "
                            "(or binary tensor data)") from None
    if not binary:
        return head, {"Content-Type": JSON_TYPE}
    return head + b"".join(blobs), {"Content-Type": BINARY_TYPE, HEADER_LENGTH: str(len(head))}


def encode_request(tensors: Mapping[str, torch.Tensor], *, parameters: Mapping[str, Any] | None = None,
                   binary: bool = True, binary_output: bool = True, request_id: str | None = None,
                   ) -> tuple[bytes, dict[str, str]]:
    """An inference request: body bytes and the HTTP headers it needs."""
    header: dict[str, Any] = {}
    if request_id is not None:
        header["id"] = request_id
    params = dict(parameters or {})
    if binary_output:
        params["binary_data_output"] = True
    return _encode(header, "inputs", tensors, binary, params)


def encode_response(model_name: str, tensors: Mapping[str, torch.Tensor], *,
                    parameters: Mapping[str, Any] | None = None, binary: bool = True,
                    request_id: str | None = None) -> tuple[bytes, dict[str, str]]:
    """An inference response: body bytes and the HTTP headers it needs."""
    header: dict[str, Any] = {"model_name": model_name}
    if request_id is not None:
        header["id"] = request_id
    return _encode(header, "outputs", tensors, binary, parameters)


# --------------------------------------------------------------------------------------------
# Decoding
# --------------------------------------------------------------------------------------------
def _split(body: bytes, header_length: str | int | None) -> tuple[Any, bytes]:
    if header_length is None:
        head, rest = body, b""
    else:
        try:
            n = int(header_length)
        except (TypeError, ValueError):
            raise ProtocolError(f"{HEADER_LENGTH} must be an integer, got {header_length!r}", 400) from None
        if not 0 < n <= len(body):
            raise ProtocolError(
                f"{HEADER_LENGTH} is {n}, but the body has {len(body)} bytes; it must be between 1 and the body length",
                400)
        head, rest = body[:n], body[n:]
    try:
        return json.loads(head), rest
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError, int digit limit
        raise ProtocolError(f"the JSON header is not valid JSON: {str(exc)[:200]}", 400) from None


def _tensor(entry: TensorHeader, rest: bytes, offset: int) -> tuple[torch.Tensor, int]:
    """One tensor from its header entry and the binary section; returns the new offset."""
    if entry.datatype not in DATATYPES:
        raise ProtocolError(f"tensor {entry.name!r} has datatype {entry.datatype!r}; supported: {sorted(DATATYPES)}")
    if len(entry.shape) > MAX_DIMS or any(not 0 <= s <= MAX_DIM_SIZE for s in entry.shape):
        shown = str(entry.shape)[:120]
        raise ProtocolError(f"tensor {entry.name!r} has shape {shown}; sizes must be between 0 and {MAX_DIM_SIZE}, "
                            f"at most {MAX_DIMS} dimensions")
    np_dtype = np.dtype(DATATYPES[entry.datatype][0])
    count = math.prod(entry.shape)
    size = (entry.parameters or {}).get("binary_data_size")
    if size is not None:
        if entry.data is not None:
            raise ProtocolError(f"tensor {entry.name!r} has both binary_data_size and JSON data; send one")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise ProtocolError(f"tensor {entry.name!r}: binary_data_size must be a non-negative integer, got {size!r}")
        if offset + size > len(rest):
            raise ProtocolError(
                f"tensor {entry.name!r} declares {size} binary bytes, but only {len(rest) - offset} follow the header")
        if size != count * np_dtype.itemsize:
            raise ProtocolError(
                f"tensor {entry.name!r}: shape {entry.shape} of {entry.datatype} needs {count * np_dtype.itemsize} "
                f"bytes, but binary_data_size is {size}")
        arr = np.frombuffer(rest, dtype=np_dtype, count=count, offset=offset).reshape(entry.shape)
        return torch.from_numpy(arr.astype(np_dtype.newbyteorder("="), copy=True)), offset + size
    if entry.data is None:
        raise ProtocolError(f"tensor {entry.name!r} has neither JSON data nor parameters.binary_data_size")
    try:
        with np.errstate(over="raise"):  # 1e39 as FP32 is an error here, not a warning and an inf
            arr = np.asarray(entry.data, dtype=np_dtype)
    except (ValueError, TypeError, OverflowError, RecursionError, FloatingPointError) as exc:
        raise ProtocolError(f"tensor {entry.name!r}: data is not a (nested) list of {entry.datatype} numbers: {exc}") \
            from None
    if arr.size != count:
        raise ProtocolError(f"tensor {entry.name!r}: shape {entry.shape} needs {count} values, data has {arr.size}")
    return torch.from_numpy(arr.reshape(entry.shape).astype(np_dtype.newbyteorder("="), copy=True)), offset


def _tensors(entries: list[TensorHeader], rest: bytes) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    offset = 0
    for entry in entries:
        if entry.name in out:
            raise ProtocolError(f"tensor name {entry.name!r} appears twice")
        out[entry.name], offset = _tensor(entry, rest, offset)
    if offset != len(rest):
        raise ProtocolError(f"{len(rest) - offset} bytes follow the header that no tensor's binary_data_size claims")
    return out


def _validated(model: type[BaseModel], raw: Any) -> Any:
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors()[:5])
        raise ProtocolError(f"the JSON header is not a valid {model.__name__}: {problems}") from None


def decode_request(body: bytes, header_length: str | int | None = None
                   ) -> tuple[InferRequestHeader, dict[str, torch.Tensor]]:
    """Parse a request: its validated header and its input tensors by name."""
    raw, rest = _split(body, header_length)
    header: InferRequestHeader = _validated(InferRequestHeader, raw)
    return header, _tensors(header.inputs, rest)


def decode_response(body: bytes, header_length: str | int | None = None
                    ) -> tuple[InferResponseHeader, dict[str, torch.Tensor]]:
    """Parse a response: its validated header and its output tensors by name."""
    raw, rest = _split(body, header_length)
    header: InferResponseHeader = _validated(InferResponseHeader, raw)
    return header, _tensors(header.outputs, rest)


def wants_binary_output(header: InferRequestHeader) -> bool:
    """Whether a request asked for binary outputs (request-level or per requested output)."""
    if (header.parameters or {}).get("binary_data_output") is True:
        return True
    return any((o.parameters or {}).get("binary_data") is True for o in header.outputs or [])
