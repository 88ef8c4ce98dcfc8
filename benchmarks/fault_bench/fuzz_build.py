"""Part 1, the fuzz: one plan of :mod:`.fuzz_plans` as HTTP requests (bytes, headers, and a ``kind``
naming the mutations it carries), built around the spec a :class:`.harness.Target` read."""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from .fuzz_plans import MUTATIONS, NON_FINITE, TENSOR_FIELDS
from .harness import BAD_TOKEN, TOKENS, Target, model_url

BIG = "__BIG_NUMBER__"
BIG_DIGITS = "9" * 5000


@dataclasses.dataclass
class Req:
    """One HTTP request of the fuzz; ``kind`` says which mutations it carries."""

    endpoint: str
    kind: str
    method: str
    path: str
    headers: dict[str, str | bytes]
    body: bytes | None = None


# -- one tensor request ----------------------------------------------------------------------------
def _array(rng: np.random.Generator, shape: Sequence[int], datatype: str, values: str) -> np.ndarray:
    """Tensor values of ``shape`` for ``datatype``, with non-finite or overflowing values as asked."""
    from codenn_adapters import oip

    numel = int(np.prod(shape)) if len(shape) else 1
    dtype = np.dtype(oip.DATATYPES[datatype][0]) if datatype in oip.DATATYPES else np.dtype("<f4")
    if dtype.kind == "b":
        return rng.integers(0, 2, size=shape).astype(bool)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return rng.integers(max(info.min, -1000), min(info.max, 1000), size=shape, dtype=np.int64).astype(dtype)
    x = rng.standard_normal(numel).astype(np.float64)
    if values == "zeros":
        x[:] = 0
    elif values == "huge-1e38" and numel:
        x[rng.integers(0, numel, size=max(1, numel // 10))] = 1e38
    elif values == "huge-neg":
        x[:] = -1e38
    elif values == "denormal":
        x *= 1e-45
    elif values in NON_FINITE and numel:
        bad = {"nan": [math.nan], "inf": [math.inf], "-inf": [-math.inf],
               "mixed-non-finite": [math.nan, math.inf, -math.inf]}[values]
        for i in rng.integers(0, numel, size=int(rng.integers(1, 4))):
            x[i] = bad[int(rng.integers(0, len(bad)))]
    with np.errstate(over="ignore", invalid="ignore"):
        return x.astype(dtype).reshape(shape)


def _json_data(arr: np.ndarray, encoding: str, rng: np.random.Generator) -> Any:
    flat = arr.reshape(-1)
    if encoding == "json-nested":
        return arr.tolist()
    if encoding == "json-strings":
        return [str(v) for v in flat.tolist()]
    if encoding == "json-null":
        return [None if isinstance(v, float) and not math.isfinite(v) else v for v in flat.tolist()]
    if encoding == "json-bool":
        return [bool(v) for v in flat.tolist()]
    if encoding == "json-ragged":
        nested = arr.tolist() if arr.ndim > 1 else [flat.tolist(), [1.0]]
        if isinstance(nested, list) and nested and isinstance(nested[0], list) and nested[0]:
            nested[0] = nested[0][:-1]
        return nested
    return flat.tolist()


def _shape(s: str, shape: list[Any], large: int, rng: np.random.Generator) -> tuple[list[Any], list[Any] | None]:
    """The shape mutation ``s``: (the shape of the values sent, the shape declared if it differs)."""
    declared: list[Any] | None = None
    if s in ("dim+1", "dim-1"):
        i = int(rng.integers(1, len(shape))) if len(shape) > 1 else 0
        shape[i] = max(0, shape[i] + (1 if s == "dim+1" else -1))
    elif s == "extra-dim":
        shape.append(1)
    elif s == "missing-dim":
        shape = shape[:-1] or [1]
    elif s == "batch-0":
        shape[0] = 0
    elif s == "batch-large":
        shape[0] = large
    elif s == "scalar":
        shape = []
    elif s == "negative":
        declared = [-shape[0], *shape[1:]]
    elif s == "digits-5000":
        declared = [BIG, *shape[1:]]
    elif s == "2**70":
        declared = [2**70, *shape[1:]]
    elif s == "float-dim":
        declared = [float(shape[0]) + 0.5, *shape[1:]]
    elif s == "string-dim":
        declared = [str(shape[0]), *shape[1:]]
    elif s == "nine-dims":
        declared = [1] * 9
    return shape, declared


def _tensor_entry(name: str, arr: np.ndarray, shape: list[Any], datatype: str, m: dict[str, str],
                  rng: np.random.Generator) -> tuple[dict[str, Any], bytes]:
    """The tensor's entry in the JSON header (with the encoding and size mutations) and its raw bytes."""
    raw = arr.tobytes()
    encoding = "binary" if m["encoding"] == "ok" else m["encoding"]
    if encoding != "binary" and arr.size > 200_000:  # keep JSON bodies bounded; the mutation still shows in kind
        encoding = "binary"
    entry: dict[str, Any] = {"name": name, "shape": shape, "datatype": datatype}
    if encoding == "binary":
        size: Any = len(raw)
        sz = m["size"]
        size = {"minus-1": size - 1, "plus-1": size + 1, "2**70": 2**70, "negative": -size, "string": str(size),
                "zero": 0, "float": size + 0.5, "digits-5000": BIG}.get(sz, size)
        if sz != "missing":
            entry["parameters"] = {"binary_data_size": size}
        if sz == "both-data-and-size":
            entry["data"] = [0.0]
    else:
        entry["data"] = _json_data(arr, encoding, rng)
        raw = b""
    return entry, raw


def _mutate_header(header: dict[str, Any], entry: dict[str, Any], raw: bytes, name: str, j: str) -> tuple[Any, bytes]:
    """The JSON mutation ``j`` applied to the header's structure: (header, raw bytes)."""
    if j == "no-inputs":
        del header["inputs"]
    elif j == "empty-inputs":
        header["inputs"] = []
    elif j == "two-tensors":
        header["inputs"] = [entry, {**entry, "name": "other"}]
        raw = raw + raw
    elif j == "duplicate-name":
        header["inputs"] = [entry, entry]
        raw = raw + raw
    elif j == "wrong-name":
        entry["name"] = "grad" if name == "input" else "input"
    elif j == "inputs-object":
        header["inputs"] = entry
    elif j == "parameters-list":
        header["parameters"] = [1, 2]
    elif j == "id-surrogate":
        header["id"] = "\ud800x"
    elif j == "id-number":
        header["id"] = 12345
    elif j == "outputs-garbage":
        header["outputs"] = [{"name": None}, 7]
    elif j == "top-level-list":
        return [header], raw  # a hostile header that is a list, on purpose
    return header, raw


def _encode_head(header: Any, j: str) -> bytes:
    """The JSON header as bytes, with the JSON mutations that break its syntax or encoding."""
    text = json.dumps(header, separators=(",", ":"), allow_nan=True).replace(f'"{BIG}"', BIG_DIGITS)
    head = text.encode()
    if j == "not-json":
        head = b"{not json at all" + head[:20]
    elif j == "invalid-utf8":
        head = b'{"inputs":[{"name":"\xff\xfe' + head[20:]
    elif j == "deep-nesting":
        head = b'{"inputs":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    return head


def _mutate_tail(body: bytes, t: str, max_bytes: int, rng: np.random.Generator) -> bytes:
    if t == "truncate" and body:
        body = body[: max(1, len(body) - int(rng.integers(1, 200)))]
    elif t == "extra-bytes":
        body = body + rng.bytes(int(rng.integers(1, 64)))
    elif t == "oversize":
        body = body + bytes(max_bytes + 4096 - len(body)) if len(body) <= max_bytes else body
    return body


def _content_headers(raw: bytes, head: bytes, body: bytes, hl: str) -> dict[str, str | bytes]:
    """Content-Type and the OIP header-length header (with its mutation ``hl``)."""
    from codenn_adapters import oip

    headers: dict[str, str | bytes] = {"Content-Type": oip.BINARY_TYPE if raw else oip.JSON_TYPE}
    n = len(head)
    if raw or hl != "ok":
        value = {"ok": str(n), "zero": "0", "negative": str(-n), "plus-1": str(n + 1), "minus-1": str(n - 1),
                 "beyond-body": str(len(body) + 10), "text": "forty-two", "digits-5000": BIG_DIGITS,
                 "plus-sign": f"+{n}", "superscript": "\xb2".encode("latin-1"), "underscore": f"{n // 10}_{n % 10}"}.get(hl)
        if value is not None:
            headers[oip.HEADER_LENGTH] = value
    return headers


def tensor_request(target: Target, plan: dict[str, Any], *, name: str, base_shape: Sequence[int], values: str,
                   params: dict[str, Any], rng: np.random.Generator, mutate: bool = True
                   ) -> tuple[bytes, dict[str, str | bytes], str]:
    """The body and headers of one OIP request carrying tensor ``name``, with the plan's
    mutations applied (none with ``mutate=False``); returns (body, headers, kind)."""
    m = {k: (plan[k] if mutate else "ok") for k in MUTATIONS}
    shape, declared = _shape(m["shape"], list(base_shape), plan["large"], rng)
    datatype = "FP32" if m["datatype"] == "ok" else m["datatype"]
    arr = _array(rng, shape, datatype, values)
    entry, raw = _tensor_entry(name, arr, declared if declared is not None else shape, datatype, m, rng)
    header: dict[str, Any] = {"inputs": [entry], "parameters": {**params, "binary_data_output": plan["binary_output"]}}
    if plan["id"] is not None:
        header["id"] = plan["id"]
    mutated, raw = _mutate_header(header, entry, raw, name, m["json"])
    head = _encode_head(mutated, m["json"])
    body = _mutate_tail(head + raw, m["tail"], target.max_bytes, rng)
    headers = _content_headers(raw, head, body, m["header_length"])
    kind = ",".join(f"{k}={m[k]}" for k in TENSOR_FIELDS if m[k] != "ok") or "valid"
    return body, headers, kind


# -- a plan's requests -----------------------------------------------------------------------------
def auth(plan: dict[str, Any]) -> dict[str, str | bytes]:
    who = plan["who"]
    token = {"ok": TOKENS["trainer"], "reader": TOKENS["reader"], "nobody": TOKENS["nobody"],
             "bad-token": BAD_TOKEN}.get(who)
    if token is not None:
        return {"Authorization": f"Bearer {token}"}
    return {"basic-scheme": {"Authorization": f"Basic {TOKENS['trainer']}"},
            "bare-bearer": {"Authorization": "Bearer"}}.get(who, {})


def model_path(target: Target, plan: dict[str, Any]) -> str:
    name = {"ok": target.model, "unknown": "no-such-model", "encoded-slash": f"{target.model}/../x",
            "long-20k": "m" * 20_000, "unicode": "m\u00e9d\u00e8le-\u2603"}[plan["model"]]
    return model_url(name)


def step_param(plan: dict[str, Any], step: int) -> dict[str, Any]:
    s = plan["step"]
    if s == "missing":
        return {}
    return {"step": {"ok": step, "zero": 0, "max-int64": 2**63 - 1, "2**63": 2**63, "minus-1": -1, "string": str(step),
                     "float": step + 0.5, "bool": True, "digits-5000": BIG, "null": None}[s]}


def _kind(plan: dict[str, Any], kind: str, *, values: bool = False, grad: bool = False, step: bool = False) -> str:
    parts = [] if kind == "valid" else [kind]
    if step and plan["step"] != "ok":
        parts.append(f"step={plan['step']}")
    if plan["who"] != "ok":
        parts.append(f"who={plan['who']}")
    if plan["model"] != "ok":
        parts.append(f"model={plan['model']}")
    if values and plan["values"] != "normal":
        parts.append(f"values={plan['values']}")
    if grad and plan["grad"] != "normal":
        parts.append(f"grad={plan['grad']}")
    return ",".join(parts) or "valid"


def _input_request(target: Target, plan: dict[str, Any], base: str, headers: dict[str, str | bytes],
                   in_shape: list[int], rng: np.random.Generator) -> Req:
    """The plan's one request carrying an input: an infer, a train/forward, or an infer by another method."""
    ep = plan["endpoint"]
    params = step_param(plan, plan["step_id"]) if ep == "forward" else {}
    body, h, kind = tensor_request(target, plan, name="input", base_shape=in_shape, values=plan["values"],
                                   params=params, rng=rng)
    if ep == "method":
        return Req(ep, f"method={plan['method']}," + kind, plan["method"], f"{base}/infer", {**headers, **h},
                   None if plan["method"] in ("GET", "OPTIONS") else body)
    if ep == "infer":
        return Req(ep, _kind(plan, kind, values=True), "POST", f"{base}/infer", {**headers, **h}, body)
    return Req(ep, _kind(plan, kind, values=True, step=True), "POST", f"{base}/train/forward", {**headers, **h}, body)


def _gradient(target: Target, plan: dict[str, Any]) -> tuple[list[int], dict[str, Any], str]:
    """The shape, plan and values of the plan's gradient (a wrong batch or datatype holds normal values)."""
    batch = plan["batch"]
    grad_shape = [batch + 1, *target.output_shape] if plan["grad"] == "wrong-batch" else [batch, *target.output_shape]
    grad_plan = {**plan, "datatype": "FP64" if plan["grad"] == "wrong-dtype" else plan["datatype"]}
    grad_values = "normal" if plan["grad"] in ("wrong-batch", "wrong-dtype") else plan["grad"]
    return grad_shape, grad_plan, grad_values


def _pair(target: Target, plan: dict[str, Any], base: str, headers: dict[str, str | bytes], in_shape: list[int],
          rng: np.random.Generator) -> list[Req]:
    """A clean forward by the trainer, then the (mutated) backward of that step, sent once or twice."""
    grad_shape, grad_plan, grad_values = _gradient(target, plan)
    clean = {**plan, "who": "ok", "model": "ok", "id": None}
    fbody, fh, _ = tensor_request(target, clean, name="input", base_shape=in_shape, values="normal",
                                  params={"step": plan["step_id"]}, rng=rng, mutate=False)
    out = [Req("pair-forward", "valid", "POST", f"{model_path(target, clean)}/train/forward",
               {**auth(clean), **fh}, fbody)]
    body, h, kind = tensor_request(target, grad_plan, name="grad", base_shape=grad_shape, values=grad_values,
                                   params=step_param(plan, plan["step_id"]), rng=rng)
    out.append(Req("pair-backward", _kind(plan, kind, grad=True, step=True), "POST", f"{base}/train/backward",
                   {**headers, **h}, body))
    if plan["repeat"] == "same-twice":
        out.append(dataclasses.replace(out[-1], endpoint="pair-backward-retry"))
    elif plan["repeat"] == "different-twice":
        g2 = {**grad_plan, "seed": plan["seed"] + 1}
        body2, h2, kind2 = tensor_request(target, g2, name="grad", base_shape=grad_shape,
                                          values=plan["grad2"] if plan["grad2"] not in ("wrong-batch", "wrong-dtype")
                                          else "normal", params=step_param(plan, plan["step_id"]),
                                          rng=np.random.default_rng(plan["seed"] + 1))
        out.append(Req("pair-backward-other", _kind(plan, kind2, grad=True, step=True), "POST", f"{base}/train/backward",
                       {**headers, **h2}, body2))
    return out


def build(target: Target, plan: dict[str, Any]) -> list[Req]:
    """The requests of one plan (a forward+backward pair is 2-3 requests, sent in order)."""
    rng = np.random.default_rng(plan["seed"])
    base = model_path(target, plan)
    headers = auth(plan)
    ep = plan["endpoint"]
    in_shape = [plan["batch"], *target.input_shape]
    if ep in ("state", "metadata", "ready"):
        path = {"state": f"{base}/train/state", "metadata": base, "ready": f"{base}/ready"}[ep]
        return [Req(ep, _kind(plan, "valid"), "GET", path, headers)]
    if ep in ("method", "infer", "forward"):
        return [_input_request(target, plan, base, headers, in_shape, rng)]
    if ep == "backward":  # alone: a step with no pending forward, mostly
        grad_shape, grad_plan, grad_values = _gradient(target, plan)
        body, h, kind = tensor_request(target, grad_plan, name="grad", base_shape=grad_shape, values=grad_values,
                                       params=step_param(plan, plan["step_id"]), rng=rng)
        return [Req(ep, _kind(plan, kind, grad=True, step=True), "POST", f"{base}/train/backward", {**headers, **h}, body)]
    return _pair(target, plan, base, headers, in_shape, rng)
