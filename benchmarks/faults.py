"""Faults benchmark (issue 12): hostile and broken peers against real server processes on loopback.

A host provider serves peers it does not trust, and a local provider relies on hosts that may
die or answer garbage. Every part runs against real ``python -m codenn ...`` processes on
127.0.0.1 (the serving benchmark's set-up: the cross path ``alexnet[:5] > mobilenet_v2[1:2] >
alexnet[6:]`` trained once into ``runs/serving-bench``):

1. **Fuzz.** Hypothesis draws request *plans* (endpoint, caller, shape, datatype, values,
   encoding, size fields, header lengths, steps, gradients, at most three mutations each, most
   with valid headers and tokens around the spec read from ``GET /v2/models/NAME``, so they reach
   the model code); they are recorded into a list, turned into bytes and replayed by concurrent
   clients, then fixed split-training sequences (:data:`SEQUENCES`) are sent. Goal: no answer >= 500.
2. **Poisoning.** Valid finite training steps change the links on purpose, so "poisoned" is
   measured where nothing may change them: a second host process (B) gets the same fuzz, except
   that every gradient it is sent holds NaN or inf (inputs may be anything, NaN and 1e38
   included). A fixed probe (the local prefix of test images, 1 batch + single images) is sent
   to B before and after: an answer that is not 200, holds a non-finite value or differs in a
   single bit from the pre-fuzz answer counts as poisoned, and B must report 0 steps trained.
   On host A, which takes valid training steps too, the probe after the run must be 200 and
   finite.
3. **Kill during split training.** ``serve-host --save-dir DIR --checkpoint-every K``; this
   process runs :meth:`codenn.remote.split_trainer.SplitTrainer.fit` (the local side) while a thread
   SIGKILLs the host between two checkpoints and restarts it with ``--resume``. Goal: steps lost
   <= K, training finishes, final links finite.
4. **Malformed host replies.** ``codenn serve`` (the local provider) routes through a fake host
   (a proxy in front of a real host) that answers 200 with wrong shapes, NaN, bad
   ``host_compute_s``, garbage, truncated bodies, 5xx, drips one byte every 0.2 s, hangs or
   resets. Goal: no local request lost; each one that tried the host fell back.
5. **Slow-drip clients.** Clients drip headers or a body one byte a second into host A
   (``--header-timeout``, ``--body-timeout``) while normal requests flow: the drippers must be
   closed (or get 408) within the deadlines, and normal latency must hold.
6. Peak memory (``VmHWM``) of every host process at the end of its part, and the resident memory
   that forward steps left pending pin (:func:`pending_memory`), which the size caps do not bound.

    python benchmarks/faults.py [--quick] [--fuzz 2000] [--out benchmarks/results/faults.json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import datetime
import http.server
import importlib.util
import json
import math
import os
import platform
import random
import socket
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path as FsPath
from typing import Any
from urllib.parse import quote

import numpy as np
import torch

from codenn.fileio import atomic_write

SERVING_SCRIPT = FsPath(__file__).resolve().parent / "serving.py"
OUT = "benchmarks/results/faults.json"
TOKENS = {"trainer": "fuzz-trainer-token-0123456789", "reader": "fuzz-reader-token-0123456789",
          "nobody": "fuzz-nobody-token-0123456789", "pinner": "fuzz-pinner-token-0123456789"}
"""Roles of the callers: the local provider (train rights), one that may only infer, one with no rights,
and a second provider with train rights whose only use is to measure what pending steps pin."""
BAD_TOKEN = "not-a-registered-token-000"
CLIENT_TOKEN = "faults-bench-client-token-42"


def token_file(local_name: str) -> dict[str, Any]:
    """The host's token file: the local provider may infer and train everything, ``reader`` may
    only infer, ``nobody`` may do nothing (403 everywhere); ``pinner`` may train, and only
    measures memory (its split-training state is fresh when it starts)."""
    return {local_name: {"token": TOKENS["trainer"], "infer": ["*"], "train": ["*"]},
            "reader": {"token": TOKENS["reader"], "infer": ["*"], "train": []},
            "nobody": {"token": TOKENS["nobody"], "infer": [], "train": []},
            "pinner": {"token": TOKENS["pinner"], "infer": ["*"], "train": ["*"]}}


def load_serving() -> Any:
    """benchmarks/serving.py as a module: its set-up (prepare_run, server, wait_ready, free_port)."""
    name = "serving_benchmark"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, SERVING_SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def peak_rss_mib(pid: int) -> float | None:
    """``VmHWM`` (peak resident memory) of a live process in MiB; None once it is gone."""
    try:
        for line in FsPath(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def log_exceptions(log_file: FsPath) -> dict[str, int]:
    """The exceptions a server process logged (the last line of each traceback), counted."""
    import re

    if not log_file.exists():
        return {}
    pattern = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception)\b")
    lines = log_file.read_text(errors="replace").splitlines()
    return dict(Counter(line[:160] for line in lines if pattern.match(line)))


def percentile(values: Sequence[float], q: float) -> float | None:
    v = sorted(values)
    return v[min(len(v) - 1, int(q * (len(v) - 1)))] if v else None


# =================================================================================================
# 1. Fuzz: request plans drawn by hypothesis, built into bytes, replayed concurrently
# =================================================================================================
@dataclasses.dataclass(frozen=True)
class Target:
    """A served model as its metadata describes it, and where it is."""

    url: str
    model: str
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    max_bytes: int

    @classmethod
    def discover(cls, url: str, model: str, token: str, max_bytes: int) -> Target:
        import httpx

        meta = httpx.get(f"{url}/v2/models/{quote(model, safe='')}", headers={"Authorization": f"Bearer {token}"},
                         timeout=30).raise_for_status().json()
        shape = {t["name"]: tuple(t["shape"][1:]) for t in (*meta["inputs"], *meta["outputs"])}
        return cls(url, model, shape["input"], shape["output"], max_bytes)


@dataclasses.dataclass
class Req:
    """One HTTP request of the fuzz; ``kind`` says which mutations it carries."""

    endpoint: str
    kind: str
    method: str
    path: str
    headers: dict[str, str | bytes]
    body: bytes | None = None


ENDPOINTS = ("pair",) * 4 + ("infer",) * 5 + ("forward",) * 2 + ("backward", "state", "metadata", "ready", "method")
MUTATIONS: dict[str, tuple[str, ...]] = {
    "who": ("reader", "nobody", "bad-token", "no-token", "basic-scheme", "bare-bearer"),
    "model": ("unknown", "encoded-slash", "long-20k", "unicode"),
    "shape": ("dim+1", "dim-1", "extra-dim", "missing-dim", "batch-0", "batch-large", "negative", "digits-5000",
              "2**70", "float-dim", "string-dim", "nine-dims", "scalar"),
    "datatype": ("FP16", "FP64", "INT8", "INT16", "INT32", "INT64", "UINT8", "BOOL", "FP8", "BYTES", "fp32"),
    "encoding": ("json", "json-nested", "json-strings", "json-null", "json-bool", "json-ragged"),
    "size": ("minus-1", "plus-1", "2**70", "negative", "string", "missing", "zero", "float", "digits-5000",
             "both-data-and-size"),
    "header_length": ("missing", "zero", "negative", "plus-1", "minus-1", "beyond-body", "text", "digits-5000",
                      "plus-sign", "superscript", "underscore"),
    "tail": ("truncate", "extra-bytes", "oversize"),
    "json": ("not-json", "invalid-utf8", "deep-nesting", "no-inputs", "empty-inputs", "two-tensors",
             "duplicate-name", "wrong-name", "inputs-object", "parameters-list", "id-surrogate", "id-number",
             "outputs-garbage", "top-level-list"),
    "step": ("zero", "max-int64", "2**63", "minus-1", "string", "float", "bool", "missing", "digits-5000", "null"),
}
TENSOR_FIELDS = ("shape", "datatype", "encoding", "size", "header_length", "tail", "json")
VALUES = ("normal",) * 6 + ("nan", "inf", "-inf", "mixed-non-finite", "huge-1e38", "huge-neg", "zeros", "denormal")
NON_FINITE = ("nan", "inf", "-inf", "mixed-non-finite")
GRADS = ("normal",) * 4 + NON_FINITE + ("huge-1e38", "zeros", "wrong-batch", "wrong-dtype")
REPEATS = ("once",) * 6 + ("same-twice", "different-twice")
BIG = "__BIG_NUMBER__"
BIG_DIGITS = "9" * 5000


def plan_strategy(poison_only: bool) -> Any:
    """A hypothesis strategy of request plans (small dicts: drawing bytes is left to :func:`build`)."""
    from hypothesis import strategies as st

    @st.composite
    def plans(draw: Any) -> dict[str, Any]:
        n = draw(st.sampled_from((0, 0, 0, 0, 1, 1, 1, 2, 3)))
        fields = draw(st.lists(st.sampled_from(sorted(MUTATIONS)), min_size=n, max_size=n, unique=True))
        plan: dict[str, Any] = {k: draw(st.sampled_from(MUTATIONS[k])) if k in fields else "ok" for k in sorted(MUTATIONS)}
        plan.update(
            endpoint=draw(st.sampled_from(ENDPOINTS)),
            seed=draw(st.integers(0, 2**31 - 1)),
            batch=draw(st.sampled_from((1, 1, 1, 2, 3, 4, 8, 16))),
            large=draw(st.sampled_from((64, 256, 2048))),
            values=draw(st.sampled_from(VALUES)),
            collide=draw(st.sampled_from((False,) * 9 + (True,))),
            step_id=draw(st.integers(0, 20)),
            binary_output=draw(st.booleans()),
            id=draw(st.one_of(st.none(), st.text(max_size=16))),
            grad=draw(st.sampled_from(NON_FINITE if poison_only else GRADS)),
            grad2=draw(st.sampled_from(NON_FINITE if poison_only else GRADS)),
            repeat=draw(st.sampled_from(REPEATS)),
            method=draw(st.sampled_from(("PUT", "DELETE", "PATCH", "GET", "OPTIONS"))),
        )
        if poison_only and plan["encoding"] == "json-bool":  # booleans would turn a NaN gradient into a finite one
            plan["encoding"] = "json"
        return plan

    return plans()


def draw_plans(n: int, seed: int, poison_only: bool = False) -> list[dict[str, Any]]:
    """``n`` request plans drawn by hypothesis (``@given`` run ``n`` times, each plan recorded)."""
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as hseed

    out: list[dict[str, Any]] = []
    rounds = 0
    while len(out) < n and rounds < 10:
        @hseed(seed + rounds)
        @settings(max_examples=n - len(out), database=None, deadline=None, phases=[Phase.generate],
                  suppress_health_check=list(HealthCheck))
        @given(plan_strategy(poison_only))
        def record(plan: dict[str, Any]) -> None:
            out.append(plan)

        record()
        rounds += 1
    for i, plan in enumerate(out):  # hypothesis repeats simple draws: make seeds (and steps) distinct
        plan["seed"] = (plan["seed"] * 1_000_003 + i + seed * 7919) % 2**32
        if not plan["collide"]:
            plan["step_id"] = 100 + plan["seed"]
    return out[:n]


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


def tensor_request(target: Target, plan: dict[str, Any], *, name: str, base_shape: Sequence[int], values: str,
                   params: dict[str, Any], rng: np.random.Generator, mutate: bool = True
                   ) -> tuple[bytes, dict[str, str | bytes], str]:
    """The body and headers of one OIP request carrying tensor ``name``, with the plan's
    mutations applied (none with ``mutate=False``); returns (body, headers, kind)."""
    from codenn_adapters import oip

    m = {k: (plan[k] if mutate else "ok") for k in MUTATIONS}
    shape = list(base_shape)
    declared: list[Any] | None = None
    s = m["shape"]
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
        shape[0] = plan["large"]
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
    datatype = "FP32" if m["datatype"] == "ok" else m["datatype"]
    arr = _array(rng, shape, datatype, values)
    raw = arr.tobytes()
    encoding = "binary" if m["encoding"] == "ok" else m["encoding"]
    if encoding != "binary" and arr.size > 200_000:  # keep JSON bodies bounded; the mutation still shows in kind
        encoding = "binary"
    entry: dict[str, Any] = {"name": name, "shape": declared if declared is not None else shape, "datatype": datatype}
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
    header: dict[str, Any] = {"inputs": [entry], "parameters": {**params, "binary_data_output": plan["binary_output"]}}
    if plan["id"] is not None:
        header["id"] = plan["id"]
    j = m["json"]
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
        header = [header]  # type: ignore[assignment]  # a hostile header that is a list, on purpose
    text = json.dumps(header, separators=(",", ":"), allow_nan=True).replace(f'"{BIG}"', BIG_DIGITS)
    head = text.encode()
    if j == "not-json":
        head = b"{not json at all" + head[:20]
    elif j == "invalid-utf8":
        head = b'{"inputs":[{"name":"\xff\xfe' + head[20:]
    elif j == "deep-nesting":
        head = b'{"inputs":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    body = head + raw
    t = m["tail"]
    if t == "truncate" and body:
        body = body[: max(1, len(body) - int(rng.integers(1, 200)))]
    elif t == "extra-bytes":
        body = body + rng.bytes(int(rng.integers(1, 64)))
    elif t == "oversize":
        body = body + bytes(target.max_bytes + 4096 - len(body)) if len(body) <= target.max_bytes else body
    headers: dict[str, str | bytes] = {"Content-Type": oip.BINARY_TYPE if raw else oip.JSON_TYPE}
    hl = m["header_length"]
    n = len(head)
    if raw or hl != "ok":
        value = {"ok": str(n), "zero": "0", "negative": str(-n), "plus-1": str(n + 1), "minus-1": str(n - 1),
                 "beyond-body": str(len(body) + 10), "text": "forty-two", "digits-5000": BIG_DIGITS,
                 "plus-sign": f"+{n}", "superscript": "\xb2".encode("latin-1"), "underscore": f"{n // 10}_{n % 10}"}.get(hl)
        if value is not None:
            headers[oip.HEADER_LENGTH] = value
    kind = ",".join(f"{k}={m[k]}" for k in TENSOR_FIELDS if m[k] != "ok") or "valid"
    return body, headers, kind


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
    return f"/v2/models/{quote(name, safe='')}"


def step_param(plan: dict[str, Any], step: int) -> dict[str, Any]:
    s = plan["step"]
    if s == "missing":
        return {}
    return {"step": {"ok": step, "zero": 0, "max-int64": 2**63 - 1, "2**63": 2**63, "minus-1": -1, "string": str(step),
                     "float": step + 0.5, "bool": True, "digits-5000": BIG, "null": None}[s]}


def build(target: Target, plan: dict[str, Any]) -> list[Req]:
    """The requests of one plan (a forward+backward pair is 2-3 requests, sent in order)."""
    rng = np.random.default_rng(plan["seed"])
    base = model_path(target, plan)
    headers = auth(plan)
    ep = plan["endpoint"]
    batch = plan["batch"]
    in_shape = [batch, *target.input_shape]
    out_shape = [batch, *target.output_shape]
    if ep in ("state", "metadata", "ready"):
        path = {"state": f"{base}/train/state", "metadata": base, "ready": f"{base}/ready"}[ep]
        return [Req(ep, _kind(plan, "valid"), "GET", path, headers)]
    if ep == "method":
        body, h, kind = tensor_request(target, plan, name="input", base_shape=in_shape, values=plan["values"],
                                       params={}, rng=rng)
        return [Req(ep, f"method={plan['method']}," + kind, plan["method"], f"{base}/infer", {**headers, **h},
                    None if plan["method"] in ("GET", "OPTIONS") else body)]
    if ep == "infer":
        body, h, kind = tensor_request(target, plan, name="input", base_shape=in_shape, values=plan["values"],
                                       params={}, rng=rng)
        return [Req(ep, _kind(plan, kind, values=True), "POST", f"{base}/infer", {**headers, **h}, body)]
    if ep == "forward":
        body, h, kind = tensor_request(target, plan, name="input", base_shape=in_shape, values=plan["values"],
                                       params=step_param(plan, plan["step_id"]), rng=rng)
        return [Req(ep, _kind(plan, kind, values=True, step=True), "POST", f"{base}/train/forward", {**headers, **h}, body)]
    grad_shape = [batch + 1, *target.output_shape] if plan["grad"] == "wrong-batch" else out_shape
    grad_plan = {**plan, "datatype": "FP64" if plan["grad"] == "wrong-dtype" else plan["datatype"]}
    grad_values = "normal" if plan["grad"] in ("wrong-batch", "wrong-dtype") else plan["grad"]
    if ep == "backward":  # alone: a step with no pending forward, mostly
        body, h, kind = tensor_request(target, grad_plan, name="grad", base_shape=grad_shape, values=grad_values,
                                       params=step_param(plan, plan["step_id"]), rng=rng)
        return [Req(ep, _kind(plan, kind, grad=True, step=True), "POST", f"{base}/train/backward", {**headers, **h}, body)]
    # pair: a clean forward by the trainer, then the (mutated) backward of that step
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


MODEL_PHRASES = ("produced", "rolled back", "no pending forward", "already applied", "for step", "would be")
"""Error messages only the model code gives (a step's output, a rollback, the step ledger, an answer's size)."""


def reached_model(endpoint: str, status: int | None, message: str) -> bool:
    """Whether a request got past every protocol check into the model code."""
    compute = endpoint in ("infer", "forward", "pair-forward", "pair-backward", "pair-backward-retry",
                           "pair-backward-other", "backward")
    return compute and (status == 200 or any(p in message for p in MODEL_PHRASES))


async def replay(target: Target, plans: Sequence[dict[str, Any]], clients: int, timeout: float = 120.0
                 ) -> list[dict[str, Any]]:
    """Send every plan's requests from ``clients`` concurrent workers; one record per request."""
    import httpx

    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    for p in plans:
        queue.put_nowait(p)
    records: list[dict[str, Any]] = []

    async def worker() -> None:  # one client, one keep-alive connection each
        prev = None
        async with httpx.AsyncClient(base_url=target.url, timeout=timeout, limits=httpx.Limits(max_connections=1)) as client:
            while not queue.empty():
                plan = queue.get_nowait()
                for req in build(target, plan):
                    t0 = time.perf_counter()
                    rec: dict[str, Any] = {"endpoint": req.endpoint, "kind": req.kind, "bytes": len(req.body or b""),
                                           "max_bytes": target.max_bytes, "prev": prev}
                    try:
                        res = await client.request(req.method, req.path, headers=req.headers, content=req.body)
                        rec["status"] = res.status_code
                        if res.status_code != 200:
                            rec["message"] = res.text[:300]
                    except httpx.HTTPError as exc:
                        rec["status"], rec["message"] = None, f"{type(exc).__name__}: {exc}"[:300]
                    rec["ms"] = 1e3 * (time.perf_counter() - t0)
                    rec["reached_model"] = reached_model(req.endpoint, rec["status"], rec.get("message", ""))
                    records.append(rec)
                    prev = f"{req.endpoint} {req.kind} ({rec['bytes']} bytes) -> {rec['status']}"

    await asyncio.gather(*(worker() for _ in range(clients)))
    return records


def _no_answer_cause(r: dict[str, Any]) -> str:
    """Why a request got no answer: its body was over the cap (the host answers 413 and closes
    before the body is in), the connection had just carried a 500 (the server closes it), or else."""
    if r["bytes"] > r.get("max_bytes", 1 << 62):
        return "oversized body, connection reset"
    if r.get("prev") and str(r["prev"]).endswith("-> 500"):
        return "connection closed after a 500"
    return str(r["message"]).split(":")[0]


def fuzz_summary(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Status counts (overall, per endpoint), 5xx and transport errors with their messages."""
    statuses = Counter(str(r["status"]) for r in records)
    by_endpoint: dict[str, Counter[str]] = {}
    for r in records:
        by_endpoint.setdefault(r["endpoint"], Counter())[str(r["status"])] += 1
    five = [r for r in records if r["status"] is not None and r["status"] >= 500]
    errors = [r for r in records if r["status"] is None]
    return {
        "requests": len(records),
        "statuses": dict(sorted(statuses.items())),
        "by_endpoint": {k: dict(sorted(v.items())) for k, v in sorted(by_endpoint.items())},
        "answers_5xx": len(five),
        "transport_errors": len(errors),
        "reached_model": sum(r["reached_model"] for r in records),
        "ok_200": statuses.get("200", 0),
        "p95_ms": percentile([r["ms"] for r in records], 0.95),
        "examples_5xx": [{k: r[k] for k in ("endpoint", "kind", "status", "message")} for r in five[:20]],
        "transport_errors_by_kind": dict(Counter(_no_answer_cause(r) for r in errors)),
        "examples_transport_errors": sorted({f"{r['endpoint']} {r['kind']} ({r['bytes']} bytes, {r['ms']:.0f} ms): "
                                             f"{r['message']}"[:300] + f" [after: {r['prev']}]" for r in errors})[:20],
    }


# =================================================================================================
# 2. Poisoning probe
# =================================================================================================
def probe(url: str, model: str, token: str, x: torch.Tensor) -> list[dict[str, Any]]:
    """The answers to ``x`` as one batch and to each of its samples alone (status, output)."""
    import httpx

    from codenn_adapters import oip

    out = []
    with httpx.Client(base_url=url, timeout=60, headers={"Authorization": f"Bearer {token}"}) as client:
        for part in [x, *(x[i:i + 1] for i in range(len(x)))]:
            body, headers = oip.encode_request({"input": part})
            r = client.post(f"/v2/models/{quote(model, safe='')}/infer", content=body, headers=headers)
            y = None
            if r.status_code == 200:
                _, tensors = oip.decode_response(r.content, r.headers.get(oip.HEADER_LENGTH))
                y = tensors["output"]
            out.append({"status": r.status_code, "output": y})
    return out


def compare_probes(before: Sequence[dict[str, Any]], after: Sequence[dict[str, Any]], *, exact: bool
                   ) -> dict[str, Any]:
    """Poisoned answers: not 200, non-finite, or (``exact``) not bit-identical to the answer before."""
    poisoned, worst = 0, 0.0
    for b, a in zip(before, after):
        ya, yb = a["output"], b["output"]
        bad = a["status"] != 200 or ya is None or not bool(torch.isfinite(ya).all())
        if not bad and exact:
            bad = yb is None or ya.shape != yb.shape or not torch.equal(ya, yb)
            if yb is not None and ya.shape == yb.shape:
                worst = max(worst, float((ya - yb).abs().max()))
        poisoned += bad
    return {"answers": len(after), "poisoned": poisoned, "max_abs_diff": worst if exact else None}


def alive(url: str) -> bool:
    import httpx

    try:
        return httpx.get(f"{url}/v2/health/ready", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def train_state(url: str, model: str, token: str) -> dict[str, Any]:
    import httpx

    r = httpx.get(f"{url}/v2/models/{quote(model, safe='')}/train/state", headers={"Authorization": f"Bearer {token}"},
                  timeout=30)
    return dict(r.json().get("parameters", {})) if r.status_code == 200 else {"status": r.status_code}


def steps_trained(url: str, model: str, token: str) -> int | None:
    """All providers' applied steps, from the model's public metadata."""
    import httpx

    r = httpx.get(f"{url}/v2/models/{quote(model, safe='')}", headers={"Authorization": f"Bearer {token}"}, timeout=30)
    return r.json().get("parameters", {}).get("steps_trained") if r.status_code == 200 else None


SEQUENCES = {
    "two steps in flight": "forward s, forward s+1, backward s+1, backward s",
    "a rolled-back step with another in flight": "forward s, forward s+1, backward s+1 with a gradient of 1e38 "
                                                 "(the update overflows: rolled back), backward s",
}
"""Fixed split-training sequences sent after the fuzz (each answer's status is recorded); the last
backward of each meets a pending step whose links something else touched in between."""


def step_sequences(target: Target, token: str, step: int = 2**50) -> dict[str, list[int | None]]:
    """The statuses of :data:`SEQUENCES`, each on fresh step ids from ``step``."""
    import httpx

    from codenn_adapters import oip

    out: dict[str, list[int | None]] = {}
    path = f"/v2/models/{quote(target.model, safe='')}/train"
    x = torch.randn(2, *target.input_shape, generator=torch.Generator().manual_seed(step % 2**31))
    with httpx.Client(base_url=target.url, timeout=60, headers={"Authorization": f"Bearer {token}"}) as client:
        for i, name in enumerate(SEQUENCES):
            s0 = step + 10 * i
            statuses: list[int | None] = []
            outputs = {}
            for s in (s0, s0 + 1):
                body, headers = oip.encode_request({"input": x}, parameters={"step": s})
                r = client.post(f"{path}/forward", content=body, headers=headers)
                statuses.append(r.status_code)
                if r.status_code == 200:
                    outputs[s] = oip.decode_response(r.content, r.headers.get(oip.HEADER_LENGTH))[1]["output"]
            for s in (s0 + 1, s0):
                ref = outputs.get(s, torch.ones(2, *target.output_shape))
                scale = 1e38 if i == 1 and s == s0 + 1 else 1e-3
                body, headers = oip.encode_request({"grad": torch.full_like(ref, scale)}, parameters={"step": s},
                                                   binary_output=False)
                statuses.append(client.post(f"{path}/backward", content=body, headers=headers).status_code)
            out[name] = statuses
    return out


def rss_mib(pid: int) -> float | None:
    """``VmRSS`` (resident memory now) of a live process in MiB."""
    try:
        for line in FsPath(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def pending_memory(target: Target, token: str, pid: int, *, graphs: int, batch: int, step: int = 2**51
                   ) -> dict[str, Any]:
    """Memory that forward steps left pending pin on the host: ``graphs`` train/forward calls of
    ``batch`` samples with no backward (by a provider with no other pending step), resident
    memory before and after, and what one provider with train rights could pin at most (the
    host keeps ``max_pending`` graphs per provider, each of up to the largest batch whose answer
    fits the answer cap). Resident memory is an estimate: freed memory may be reused."""
    import inspect

    import httpx

    from codenn.remote.segment import HostSegment
    from codenn_adapters import oip

    max_pending = int(inspect.signature(HostSegment.__init__).parameters["max_pending"].default)
    before = rss_mib(pid)
    statuses = []
    x = torch.randn(batch, *target.input_shape, generator=torch.Generator().manual_seed(5))
    with httpx.Client(base_url=target.url, timeout=120, headers={"Authorization": f"Bearer {token}"}) as client:
        for i in range(graphs):
            body, headers = oip.encode_request({"input": x}, parameters={"step": step + i})
            statuses.append(client.post(f"/v2/models/{quote(target.model, safe='')}/train/forward", content=body,
                                        headers=headers).status_code)
    after = rss_mib(pid)
    per_sample = (after - before) / (graphs * batch) if before is not None and after is not None else None
    max_batch = target.max_bytes // (4 * math.prod(target.output_shape))
    return {"graphs": graphs, "batch": batch, "statuses": statuses, "rss_before_mib": before, "rss_after_mib": after,
            "request_kib": x.numel() * 4 / 1024, "mib_per_graph": per_sample * batch if per_sample is not None else None,
            "max_pending": max_pending, "max_batch": max_batch,
            "bound_mib": per_sample * max_batch * max_pending if per_sample is not None else None}


def fuzz_and_probe(a: Target, b: Target, x_probe: torch.Tensor, *, n_fuzz: int, n_poison: int, clients: int,
                   seed: int) -> dict[str, Any]:
    """Parts 1 and 2: probe both hosts, fuzz A (everything) and B (no finite gradient) at once, probe again."""
    t0 = time.perf_counter()
    plans_a = draw_plans(n_fuzz, seed)
    plans_b = draw_plans(n_poison, seed + 1000, poison_only=True)
    drawn_s = time.perf_counter() - t0
    before_a = probe(a.url, a.model, TOKENS["trainer"], x_probe)
    before_b = probe(b.url, b.model, TOKENS["trainer"], x_probe)

    async def both() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        ra, rb = await asyncio.gather(replay(a, plans_a, clients), replay(b, plans_b, clients))
        return ra, rb

    t1 = time.perf_counter()
    rec_a, rec_b = asyncio.run(both())
    fuzz_s = time.perf_counter() - t1
    sequences = step_sequences(a, TOKENS["trainer"], 2**50 + 100 * seed)
    after_a = probe(a.url, a.model, TOKENS["trainer"], x_probe)
    after_b = probe(b.url, b.model, TOKENS["trainer"], x_probe)
    return {
        "step_sequences": sequences,
        "plans": {"A": len(plans_a), "B": len(plans_b)}, "draw_s": drawn_s, "fuzz_s": fuzz_s, "clients": clients,
        "A": fuzz_summary(rec_a), "B": fuzz_summary(rec_b),
        "kinds_tried": len({r["kind"] for r in rec_a + rec_b}),
        "probe_A": compare_probes(before_a, after_a, exact=False),
        "probe_B": compare_probes(before_b, after_b, exact=True),
        "steps_trained_A": steps_trained(a.url, a.model, TOKENS["trainer"]),
        "steps_trained_B": steps_trained(b.url, b.model, TOKENS["trainer"]),
        "up_A": alive(a.url), "up_B": alive(b.url),
    }


# =================================================================================================
# 3. Kill the host during split training
# =================================================================================================
class RecordingTransport:
    """A transport that notes when each backward succeeded (recovery time), delegating the rest."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.backward_done: list[float] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def train_backward(self, model: str, step: int, grad: torch.Tensor, timeout: float | None = None) -> float:
        seconds: float = self.inner.train_backward(model, step, grad, timeout=timeout)
        self.backward_done.append(time.monotonic())
        return seconds

    def train_state(self, model: str, timeout: float | None = None) -> dict[str, Any]:
        state: dict[str, Any] = self.inner.train_state(model, timeout=timeout)
        return state


def checkpoint_steps(file: FsPath) -> dict[str, Any]:
    """What a host checkpoint holds: applied steps per provider, whether every link weight is finite."""
    from safetensors import safe_open

    if not file.exists():
        return {"exists": False, "steps": 0, "links_finite": None}
    with safe_open(str(file), framework="pt") as fh:
        meta = fh.metadata() or {}
        finite = all(bool(torch.isfinite(fh.get_tensor(k)).all()) for k in fh.keys() if not k.startswith("optimizer/"))  # noqa: SIM118
    providers = json.loads(meta.get("providers", "{}"))
    return {"exists": True, "steps": sum(int(p["steps"]) for p in providers.values()), "links_finite": finite}


def kill_during_training(trainer: Any, transport: RecordingTransport, *, epochs: int, kill_at: int,
                         checkpoint_every: int, host_checkpoint: FsPath, trainer_checkpoint: FsPath,
                         kill: Callable[[], None], restart: Callable[[], None], host_pid: Callable[[], int],
                         wait_for_host_s: float = 120.0) -> dict[str, Any]:
    """Part 3: ``trainer.fit`` here; a thread SIGKILLs the host once ``kill_at`` steps are done and
    restarts it with ``--resume``. Returns what was lost and how long recovery took."""
    info: dict[str, Any] = {}
    finished = threading.Event()

    def chaos() -> None:
        while trainer.steps < kill_at and not finished.is_set():
            time.sleep(0.002)
        if finished.is_set():
            return
        info["steps_before_kill"] = trainer.steps
        info["host_peak_mib_before_kill"] = peak_rss_mib(host_pid())
        info["t_kill"] = time.monotonic()
        kill()
        info["checkpoint_at_kill"] = checkpoint_steps(host_checkpoint)  # what the restarted host will hold
        restart()
        info["t_ready"] = time.monotonic()

    thread = threading.Thread(target=chaos, daemon=True)
    thread.start()
    t0 = time.perf_counter()
    try:
        loss = trainer.fit(epochs, checkpoint=trainer_checkpoint, checkpoint_every=checkpoint_every,
                           wait_for_host_s=wait_for_host_s)
    finally:
        finished.set()
        thread.join(timeout=300)
    wall = time.perf_counter() - t0
    t_kill = info.get("t_kill")
    after = [t for t in transport.backward_done if t_kill is not None and t > t_kill]
    return {
        "killed": t_kill is not None,
        "steps_target": epochs * trainer.steps_per_epoch,
        "steps_done": trainer.steps,
        "steps_before_kill": info.get("steps_before_kill"),
        "host_steps_after_restart": info.get("checkpoint_at_kill", {}).get("steps"),
        "lost_steps": trainer.lost_steps,
        "checkpoint_every": checkpoint_every,
        "backward_retries": trainer.backward_retries,
        "restart_s": info["t_ready"] - t_kill if t_kill is not None and "t_ready" in info else None,
        "recover_s": after[0] - t_kill if after and t_kill is not None else None,
        "host_peak_mib_before_kill": info.get("host_peak_mib_before_kill"),
        "final_loss": loss,
        "wall_s": wall,
    }


# =================================================================================================
# 4. Malformed host replies: a fake host (a proxy to a real one) that misbehaves on infer
# =================================================================================================
BAD_MODES = ("wrong-shape", "wrong-batch", "wrong-dtype", "nan", "inf", "no-output", "compute-null",
             "compute-negative", "compute-string", "compute-missing", "compute-bool", "not-an-object", "garbage",
             "truncated", "header-length-wrong", "empty", "huge-declared", "http-500", "http-503", "reset", "hang",
             "drip")


class FakeHost:
    """An OIP host in a thread (stdlib ``http.server``) that forwards every call to a real host and
    answers ``/infer`` according to :attr:`mode` ("good" or one of :data:`BAD_MODES`)."""

    def __init__(self, upstream: str, *, drip_interval: float = 0.2, drip_cap_s: float = 30.0,
                 hang_s: float = 3.0) -> None:
        import httpx

        self.upstream, self.mode = upstream, "good"
        self.drip_interval, self.drip_cap_s, self.hang_s = drip_interval, drip_cap_s, hang_s
        self.client = httpx.Client(base_url=upstream, timeout=60)
        self.drips: list[dict[str, float]] = []
        self.answered = Counter[str]()
        self.errors: list[str] = []
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                fake.handle(self)

            def do_POST(self) -> None:
                fake.handle(self)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.client.close()

    def handle(self, h: http.server.BaseHTTPRequestHandler) -> None:
        from codenn_adapters import oip

        length = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(length) if length else None
        keep = ("authorization", "content-type", oip.HEADER_LENGTH.lower())
        r = self.client.request(h.command, h.path, content=body,
                                headers={k: v for k, v in h.headers.items() if k.lower() in keep})
        headers = {k: r.headers[k] for k in ("Content-Type", oip.HEADER_LENGTH) if k in r.headers}
        mode = self.mode
        if h.command != "POST" or not h.path.endswith("/infer") or mode == "good" or r.status_code != 200:
            self._send(h, r.status_code, headers, r.content)
            return
        self.answered[mode] += 1
        try:
            self.corrupt(h, mode, headers, r.content)
        except Exception as exc:  # the fake's own failure would look like a reset: count it
            self.errors.append(f"{mode}: {type(exc).__name__}: {exc}")
            raise

    def _send(self, h: http.server.BaseHTTPRequestHandler, status: int, headers: dict[str, str], body: bytes,
              declared: int | None = None) -> None:
        h.send_response(status)
        for k, v in headers.items():
            h.send_header(k, v)
        h.send_header("Content-Length", str(len(body) if declared is None else declared))
        h.end_headers()
        with contextlib.suppress(OSError):
            h.wfile.write(body)

    def corrupt(self, h: http.server.BaseHTTPRequestHandler, mode: str, headers: dict[str, str], body: bytes) -> None:
        from codenn_adapters import oip

        header, tensors = oip.decode_response(body, headers.get(oip.HEADER_LENGTH))
        y, params = tensors["output"], dict(header.parameters or {})
        name = header.model_name

        def send_tensor(t: torch.Tensor, p: dict[str, Any], tensor_name: str = "output") -> None:
            b, hd = oip.encode_response(name, {tensor_name: t}, parameters=p)
            self._send(h, 200, hd, b)

        if mode in ("wrong-shape", "wrong-batch", "wrong-dtype", "nan", "inf", "no-output"):
            t = y.clone()
            if mode == "wrong-shape":
                t = t.reshape(t.shape[0], -1)[:, :-1]
            elif mode == "wrong-batch":
                t = torch.cat([t, t])
            elif mode == "wrong-dtype":
                t = t.double()
            elif mode in ("nan", "inf"):
                t.view(-1)[random.randrange(t.numel())] = math.nan if mode == "nan" else math.inf
            send_tensor(t, params, "result" if mode == "no-output" else "output")
        elif mode.startswith("compute-"):
            value = {"compute-null": None, "compute-negative": -1.0, "compute-string": "fast", "compute-bool": True}
            if mode == "compute-missing":
                params.pop("host_compute_s", None)
            else:
                params["host_compute_s"] = value[mode]
            send_tensor(y, params)
        elif mode == "not-an-object":
            self._send(h, 200, {"Content-Type": "application/json"}, b"[1, 2, 3]")
        elif mode == "garbage":
            self._send(h, 200, headers, os.urandom(len(body)))
        elif mode == "truncated":
            self._send(h, 200, headers, body[:-7])
        elif mode == "header-length-wrong":
            self._send(h, 200, {**headers, oip.HEADER_LENGTH: str(int(headers[oip.HEADER_LENGTH]) + 3)}, body)
        elif mode == "empty":
            self._send(h, 200, {}, b"")
        elif mode == "huge-declared":
            self._send(h, 200, headers, body[:100], declared=10**12)
        elif mode in ("http-500", "http-503"):
            self._send(h, int(mode[-3:]), {"Content-Type": "application/json"}, b'{"error": "fake failure"}')
        elif mode == "reset":
            h.close_connection = True
            with contextlib.suppress(OSError):
                h.connection.shutdown(socket.SHUT_RDWR)
        elif mode == "hang":
            time.sleep(self.hang_s)
            h.close_connection = True
        elif mode == "drip":
            raw = (f"HTTP/1.1 200 OK\r\nContent-Type: {headers.get('Content-Type', oip.BINARY_TYPE)}\r\n"
                   f"{oip.HEADER_LENGTH}: {headers.get(oip.HEADER_LENGTH, '')}\r\nContent-Length: {len(body)}\r\n"
                   "Connection: close\r\n\r\n").encode() + body
            t0 = time.monotonic()
            sent = 0
            try:
                for byte in raw:
                    h.wfile.write(bytes([byte]))
                    h.wfile.flush()
                    sent += 1
                    if time.monotonic() - t0 > self.drip_cap_s:
                        break
                    time.sleep(self.drip_interval)
            except OSError:
                pass
            self.drips.append({"held_s": time.monotonic() - t0, "bytes": sent})
            h.close_connection = True
        else:
            raise ValueError(f"unknown fake host mode {mode!r}")


def malformed_replies(send: Callable[[int], dict[str, Any]], fake: FakeHost, per_mode: int,
                      modes: Sequence[str] = BAD_MODES) -> dict[str, Any]:
    """Part 4: ``per_mode`` local requests under each fake-host mode (``good`` first, as the
    control). ``send(i)`` sends local request ``i`` and returns ``{"status", "fallback", "offloaded"}``."""
    rows: dict[str, dict[str, Any]] = {}
    i = 0
    for mode in ("good", *modes):
        fake.mode = mode
        res = []
        t0 = time.perf_counter()
        for _ in range(per_mode):
            res.append(send(i))
            i += 1
        rows[mode] = {
            "requests": len(res),
            "answered": sum(r["status"] == 200 for r in res),
            "lost": sum(r["status"] != 200 for r in res),
            "fallbacks": sum(bool(r.get("fallback")) for r in res),
            "offloaded": sum(bool(r.get("offloaded")) and not r.get("fallback") for r in res),
            "seconds": time.perf_counter() - t0,
            "errors": sorted({str(r.get("error"))[:200] for r in res if r["status"] != 200}),
        }
    fake.mode = "good"
    deadline = time.monotonic() + fake.drip_cap_s + 2  # let dripping connections end and be measured
    while len(fake.drips) < fake.answered["drip"] and time.monotonic() < deadline:
        time.sleep(0.05)
    bad = [r for m, r in rows.items() if m != "good"]
    return {
        "modes": rows,
        "requests": sum(r["requests"] for r in rows.values()),
        "lost": sum(r["lost"] for r in rows.values()),
        "bad_requests": sum(r["requests"] for r in bad),
        "fallbacks": sum(r["fallbacks"] for r in bad),
        "bad_replies_accepted": sum(r["offloaded"] for r in bad),
        "good_offloaded": rows["good"]["offloaded"],
        "fake_host_answered": dict(fake.answered),
        "fake_host_errors": fake.errors[:20],
        "drip_connections": len(fake.drips),
        "drip_held_max_s": max((d["held_s"] for d in fake.drips), default=None),
        "drip_held_median_s": statistics.median([d["held_s"] for d in fake.drips]) if fake.drips else None,
    }


def http_sender(url: str, token: str, x: torch.Tensor, timeout: float = 60.0) -> tuple[Callable[[int], dict[str, Any]],
                                                                                         Callable[[], None]]:
    """``send(i)`` for :func:`malformed_replies` through a ``codenn serve`` process, and its close."""
    import httpx

    from codenn_adapters import oip

    client = httpx.Client(timeout=timeout, headers={"Authorization": f"Bearer {token}"})

    def send(i: int) -> dict[str, Any]:
        k = i % len(x)
        body, headers = oip.encode_request({"input": x[k:k + 1]})
        try:
            r = client.post(url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            return {"status": None, "error": f"{type(exc).__name__}: {exc}"}
        if r.status_code != 200:
            return {"status": r.status_code, "error": r.text[:200]}
        header, _ = oip.decode_response(r.content, r.headers.get(oip.HEADER_LENGTH))
        return {"status": 200, **(header.parameters or {})}

    return send, client.close


# =================================================================================================
# 5. Slow-drip clients
# =================================================================================================
async def _header_dripper(host: str, port: int, model: str, token: str, end: float, interval: float,
                          out: list[dict[str, Any]]) -> None:
    """Connects and sends a request's head one byte per ``interval``; notes when the server closes."""
    head = (f"POST /v2/models/{model}/infer HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n"
            "Content-Type: application/octet-stream\r\nContent-Length: 10\r\n\r\n").encode()
    while time.monotonic() < end:
        reader, writer = await asyncio.open_connection(host, port)
        t0 = time.monotonic()

        async def drip(w: asyncio.StreamWriter = writer) -> None:
            for b in head:
                w.write(bytes([b]))
                await w.drain()
                await asyncio.sleep(interval)

        task = asyncio.create_task(drip())
        try:
            data = await reader.read(256)  # b"" when the server closes
        except OSError:
            data = b""
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, OSError):
            await task
        out.append({"kind": "header", "closed_after_s": time.monotonic() - t0, "answer": data[:12].decode("latin-1")})
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def _body_dripper(host: str, port: int, model: str, token: str, end: float, interval: float,
                        out: list[dict[str, Any]]) -> None:
    """Sends a whole head announcing 1 MB, then the body one byte per ``interval``; notes the answer."""
    head = (f"POST /v2/models/{model}/infer HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n"
            "Content-Type: application/octet-stream\r\nContent-Length: 1000000\r\n\r\n").encode()
    while time.monotonic() < end:
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(head)
        await writer.drain()
        t0 = time.monotonic()

        async def drip(w: asyncio.StreamWriter = writer) -> None:
            while True:
                w.write(b"\x00")
                await w.drain()
                await asyncio.sleep(interval)

        task = asyncio.create_task(drip())
        try:
            data = await reader.read(256)
        except OSError:
            data = b""
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, OSError):
            await task
        status = data[9:12].decode("latin-1") if data.startswith(b"HTTP/1.1 ") else "closed"
        out.append({"kind": "body", "closed_after_s": time.monotonic() - t0, "answer": status})
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def _normal_load(url: str, model: str, token: str, x: torch.Tensor, end: float, clients: int,
                       out: list[dict[str, Any]]) -> None:
    import httpx

    from codenn_adapters import oip

    async with httpx.AsyncClient(base_url=url, timeout=60, headers={"Authorization": f"Bearer {token}"}) as client:
        async def one(k: int) -> None:
            i = k
            while time.monotonic() < end:
                body, headers = oip.encode_request({"input": x[i % len(x): i % len(x) + 1]})
                t0 = time.perf_counter()
                try:
                    r = await client.post(f"/v2/models/{quote(model, safe='')}/infer", content=body, headers=headers)
                    status: int | None = r.status_code
                except httpx.HTTPError:
                    status = None
                out.append({"status": status, "ms": 1e3 * (time.perf_counter() - t0)})
                i += clients

        await asyncio.gather(*(one(k) for k in range(clients)))


def slow_drip(url: str, model: str, token: str, x: torch.Tensor, *, drippers: int, drip_s: float, before_s: float,
              header_timeout: float, body_timeout: float, interval: float = 1.0, clients: int = 2) -> dict[str, Any]:
    """Part 5: normal closed-loop requests alone for ``before_s``, then with ``drippers`` slow clients
    (half dripping heads, half bodies) for ``drip_s``."""
    host, port = url.removeprefix("http://").rsplit(":", 1)

    async def run() -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
        before: list[dict[str, Any]] = []
        await _normal_load(url, model, token, x, time.monotonic() + before_s, clients, before)
        during: list[dict[str, Any]] = []
        drips: list[dict[str, Any]] = []
        end = time.monotonic() + drip_s
        tasks = [(_header_dripper if i % 2 == 0 else _body_dripper)(host, int(port), model, token, end, interval, drips)
                 for i in range(drippers)]
        await asyncio.sleep(min(1.0, drip_s / 4))  # measure once every dripper is connected
        await asyncio.gather(_normal_load(url, model, token, x, end, clients, during), *tasks)
        return before, during, drips

    before, during, drips = asyncio.run(run())
    slack = interval + 1.0
    heads = [d for d in drips if d["kind"] == "header"]
    bodies = [d for d in drips if d["kind"] == "body"]

    def normal(rs: list[dict[str, Any]]) -> dict[str, Any]:
        ok = [r["ms"] for r in rs if r["status"] == 200]
        return {"requests": len(rs), "answered": len(ok), "failed": len(rs) - len(ok),
                "p50_ms": percentile(ok, 0.5), "p95_ms": percentile(ok, 0.95)}

    return {
        "drippers": drippers, "drip_s": drip_s, "interval_s": interval,
        "header_timeout_s": header_timeout, "body_timeout_s": body_timeout,
        "header_connections": len(heads),
        "header_closed_in_time": sum(d["closed_after_s"] <= header_timeout + slack for d in heads),
        "header_closed_max_s": max((d["closed_after_s"] for d in heads), default=None),
        "body_connections": len(bodies),
        "body_408_in_time": sum(d["answer"] == "408" and d["closed_after_s"] <= body_timeout + slack for d in bodies),
        "body_answers": dict(Counter(d["answer"] for d in bodies)),
        "body_closed_max_s": max((d["closed_after_s"] for d in bodies), default=None),
        "normal_before": normal(before), "normal_during": normal(during),
    }


# =================================================================================================
# The full run against the AlexNet / MobileNetV2 servers
# =================================================================================================
def local_service(run_dir: FsPath) -> tuple[Any, Any]:
    """The run's local service and scenario (base models from the cache), as ``codenn serve`` builds them."""
    from codenn.search.store import RunStore
    from codenn.train.scenario import scenario_from_config

    run = RunStore.open(run_dir).run_config()
    return scenario_from_config(run, log=lambda m: None), run


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default="runs/serving-bench", help="where the cross path is trained (reused)")
    parser.add_argument("--out", default=OUT)
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke test of every part (about 2 min)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fuzz", type=int, default=None, help="fuzz plans for host A (default 2000; quick 150)")
    parser.add_argument("--poison-fuzz", type=int, default=None, help="fuzz plans for host B (default 1000; quick 60)")
    parser.add_argument("--clients", type=int, default=8, help="concurrent fuzz clients per host")
    parser.add_argument("--max-bytes", type=int, default=4 << 20, help="the fuzzed hosts' --max-bytes and answer cap")
    parser.add_argument("--drippers", type=int, default=16)
    parser.add_argument("--drip-s", type=float, default=None, help="seconds of slow-drip clients (default 12; quick 5)")
    parser.add_argument("--header-timeout", type=float, default=2.0)
    parser.add_argument("--body-timeout", type=float, default=3.0)
    parser.add_argument("--train-samples", type=int, default=640)
    parser.add_argument("--train-batch", type=int, default=32)
    parser.add_argument("--train-epochs", type=int, default=None, help="default 2; quick 1")
    parser.add_argument("--checkpoint-every", type=int, default=5, help="the host's --checkpoint-every (K)")
    parser.add_argument("--kill-at", type=int, default=None, help="trainer steps before the SIGKILL (default 2K+3)")
    parser.add_argument("--per-mode", type=int, default=None, help="local requests per fake-host mode (default 20; quick 2)")
    parser.add_argument("--host-timeout", type=float, default=0.5, help="codenn serve --timeout in part 4")
    parser.add_argument("--pin-graphs", type=int, default=4, help="forward steps left pending to measure their memory "
                                                                   "(at most the host's max_pending are kept)")
    parser.add_argument("--pin-batch", type=int, default=64, help="samples per pending forward step")
    args = parser.parse_args(argv)
    q = args.quick
    n_fuzz = args.fuzz if args.fuzz is not None else (150 if q else 2000)
    n_poison = args.poison_fuzz if args.poison_fuzz is not None else (60 if q else 1000)
    drip_s = args.drip_s if args.drip_s is not None else (5.0 if q else 12.0)
    epochs = args.train_epochs if args.train_epochs is not None else (1 if q else 2)
    per_mode = args.per_mode if args.per_mode is not None else (2 if q else 20)
    k = args.checkpoint_every
    kill_at = args.kill_at if args.kill_at is not None else 2 * k + 3

    serving = load_serving()
    t_start = time.perf_counter()
    run_dir = FsPath(args.run)
    from codenn.paths.spec import PathSpec, slug
    from codenn.search.store import RunStore
    from codenn.train.data import tensors

    x_test, _ = serving.prepare_run(run_dir, serving.CROSS, 3)
    store = RunStore.open(run_dir)
    cross = str(PathSpec.parse(serving.CROSS).resolve(store.block_counts()))
    local_name = PathSpec.parse(cross).local
    host_name = next(s.service for s in PathSpec.parse(cross).segments if s.service != local_name)
    model = slug(cross)
    scenario, run_cfg = local_service(run_dir)
    local = scenario.local
    lout = PathSpec.parse(cross).one_host_visit({local.name: local.num_blocks}, local=local.name).lout
    with torch.inference_mode():
        x_probe = local.run(x_test[:16], 0, lout + 1)
    report: dict[str, Any] = {
        "benchmark": "faults", "quick": q, "date": datetime.date.today().isoformat(),
        "device": f"CPU ({platform.machine()}, {os.cpu_count()} cores; each server pinned to one core, 1 torch thread)",
        "torch": torch.__version__, "cross_path": cross, "model": model,
        "command": "python benchmarks/faults.py " + " ".join(argv if argv is not None else sys.argv[1:]),
    }
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = FsPath(tmp_name)
        (tmp / "host-tokens.json").write_text(json.dumps(token_file(local_name)))
        (tmp / "clients.json").write_text(json.dumps({"bench": CLIENT_TOKEN}))
        (tmp / "hosts.json").write_text(json.dumps({host_name: TOKENS["trainer"]}))
        host_args = ["serve-host", "--run", str(run_dir), "--service", host_name, "--token-file",
                     str(tmp / "host-tokens.json"), "--spec", cross]
        fuzzed = [*host_args, "--max-bytes", str(args.max_bytes), "--max-response-bytes", str(args.max_bytes),
                  "--header-timeout", str(args.header_timeout), "--body-timeout", str(args.body_timeout)]
        peaks: dict[str, float | None] = {}

        # -- parts 1, 2 and 5: hosts A (everything) and B (no valid training step) ----------------
        port_a, port_b = serving.free_port(), serving.free_port()
        with serving.server(fuzzed, 1, tmp / "host-a.log", port_a) as proc_a, \
                serving.server(fuzzed, 0, tmp / "host-b.log", port_b) as proc_b:
            a = Target.discover(f"http://127.0.0.1:{port_a}", model, TOKENS["trainer"], args.max_bytes)
            b = dataclasses.replace(a, url=f"http://127.0.0.1:{port_b}")
            print(f"fuzz: {n_fuzz} plans to host A, {n_poison} (no finite gradient) to host B, "
                  f"{args.clients} clients each; input {list(a.input_shape)}, output {list(a.output_shape)}", flush=True)
            t0 = time.perf_counter()
            report["fuzz"] = fuzz_and_probe(a, b, x_probe, n_fuzz=n_fuzz, n_poison=n_poison, clients=args.clients,
                                            seed=args.seed)
            report["fuzz"]["wall_s"] = time.perf_counter() - t0
            peaks["A after fuzz"], peaks["B after fuzz"] = peak_rss_mib(proc_a.pid), peak_rss_mib(proc_b.pid)
            report["fuzz"]["up_A"] = report["fuzz"]["up_A"] and proc_a.poll() is None
            report["fuzz"]["up_B"] = report["fuzz"]["up_B"] and proc_b.poll() is None
            print(json.dumps({k: report["fuzz"][k] for k in ("plans", "fuzz_s", "probe_A", "probe_B", "up_A", "up_B")}),
                  flush=True)
            print(f"  A: {report['fuzz']['A']['statuses']}\n  B: {report['fuzz']['B']['statuses']}", flush=True)

            print(f"slow drip: {args.drippers} clients for {drip_s} s", flush=True)
            t0 = time.perf_counter()
            report["drip"] = slow_drip(a.url, model, TOKENS["reader"], x_probe, drippers=args.drippers, drip_s=drip_s,
                                       before_s=drip_s / 2, header_timeout=args.header_timeout,
                                       body_timeout=args.body_timeout)
            report["drip"]["wall_s"] = time.perf_counter() - t0
            report["drip"]["up"] = alive(a.url) and proc_a.poll() is None
            peaks["A after drip"] = peak_rss_mib(proc_a.pid)
            print(json.dumps(report["drip"]), flush=True)
            report["pending"] = pending_memory(a, TOKENS["pinner"], proc_a.pid, graphs=args.pin_graphs,
                                               batch=args.pin_batch)
            peaks["A after pending forwards"] = peak_rss_mib(proc_a.pid)
            print(json.dumps(report["pending"]), flush=True)
        report["fuzz"]["logged_exceptions_A"] = log_exceptions(tmp / "host-a.log")
        report["fuzz"]["logged_exceptions_B"] = log_exceptions(tmp / "host-b.log")

        # -- part 3: kill during split training -------------------------------------------------------
        from codenn.remote.host import checkpoint_file
        from codenn.remote.split_trainer import SplitTrainer
        from codenn.train.features import FeatureCache
        from codenn_adapters.transports import HttpTransport

        save_dir = tmp / "host-save"
        port_c = serving.free_port()
        url_c = f"http://127.0.0.1:{port_c}"
        train_args = [*host_args, "--save-dir", str(save_dir), "--checkpoint-every", str(k)]
        x_train, y_train = tensors(scenario.splits.train)
        x_train, y_train = x_train[:args.train_samples], y_train[:args.train_samples]
        cfg = dataclasses.replace(run_cfg.search.train, epochs=epochs, batch_size=args.train_batch, progress=False,
                                  amp=False)
        print(f"split training: {len(y_train)} samples, batch {args.train_batch}, {epochs} epoch(s), host checkpoint "
              f"every {k} steps, SIGKILL after step {kill_at}", flush=True)
        with contextlib.ExitStack() as stack:
            procs = [stack.enter_context(serving.server(train_args, 1, tmp / "host-c.log", port_c))]
            transport = RecordingTransport(HttpTransport(url_c, token=TOKENS["trainer"], timeout=30))
            stack.callback(transport.inner.close)
            trainer = SplitTrainer(local, transport, model, cfg, FeatureCache({local.name: local}, x_train), y_train)

            def restart() -> None:
                procs.append(stack.enter_context(serving.server([*train_args, "--resume"], 1, tmp / "host-c2.log",
                                                                port_c)))

            report["kill"] = kill_during_training(
                trainer, transport, epochs=epochs, kill_at=kill_at, checkpoint_every=k,
                host_checkpoint=checkpoint_file(save_dir, model), trainer_checkpoint=tmp / "trainer.json",
                kill=lambda: (procs[-1].kill(), procs[-1].wait()), restart=restart, host_pid=lambda: procs[-1].pid)
            report["kill"]["probe_finite"] = compare_probes(probe(url_c, model, TOKENS["trainer"], x_probe[:4]),
                                                            probe(url_c, model, TOKENS["trainer"], x_probe[:4]),
                                                            exact=False)["poisoned"] == 0
            peaks["C before kill"] = report["kill"].pop("host_peak_mib_before_kill")
            peaks["C after restart"] = peak_rss_mib(procs[-1].pid)
        final = checkpoint_steps(checkpoint_file(save_dir, model))  # written at the graceful stop
        report["kill"].update(host_steps_final=final["steps"], final_links_finite=final["links_finite"])
        print(json.dumps(report["kill"]), flush=True)

        # -- part 4: malformed host replies through codenn serve ---------------------------------------
        port_d, port_l = serving.free_port(), serving.free_port()
        with serving.server(host_args, 1, tmp / "host-d.log", port_d) as proc_d:
            fake = FakeHost(f"http://127.0.0.1:{port_d}")
            try:
                # eq. (1) with the paper's coefficients prefers the original model to this cross path on
                # the default scenario (issue 13), and then no request would meet the fake host: local
                # compute is made expensive so that every request is routed to it
                (tmp / "offload.toml").write_text("[cost]\nd_l = 1000.0\n")
                local_args = ["serve", "--run", str(run_dir), "--token-file", str(tmp / "clients.json"), "--spec", cross,
                              "--remote", f"{host_name}={fake.url}", "--host-token-file", str(tmp / "hosts.json"),
                              "--timeout", str(args.host_timeout), "--retry-after", "0",
                              "--config", str(tmp / "offload.toml")]
                with serving.server(local_args, 0, tmp / "local.log", port_l) as proc_l:
                    send, close = http_sender(f"http://127.0.0.1:{port_l}/v2/models/{local_name}/infer", CLIENT_TOKEN,
                                              x_test)
                    try:
                        print(f"malformed replies: {per_mode} local requests per mode, {len(BAD_MODES)} modes", flush=True)
                        report["replies"] = malformed_replies(send, fake, per_mode)
                    finally:
                        close()
                    report["replies"]["local_up"] = alive(f"http://127.0.0.1:{port_l}") and proc_l.poll() is None
            finally:
                fake.close()
            peaks["D (behind the fake)"] = peak_rss_mib(proc_d.pid)
        report["replies"]["logged_exceptions_local"] = log_exceptions(tmp / "local.log")
        report["kill"]["logged_exceptions"] = {**log_exceptions(tmp / "host-c.log"), **log_exceptions(tmp / "host-c2.log")}
        print(json.dumps({k: v for k, v in report["replies"].items() if k != "modes"}), flush=True)

    report["peak_mib"] = peaks
    report["wall_s"] = time.perf_counter() - t_start
    report["goals"] = goals(report)
    out = FsPath(args.out)
    table = markdown(report)
    atomic_write(out, (json.dumps(report, indent=2, default=str) + "\n").encode())
    atomic_write(out.with_suffix(".md"), table.encode())
    print(table)
    print(f"wrote {out} and {out.with_suffix('.md')} in {report['wall_s']:.0f} s")
    return report


def goals(report: dict[str, Any]) -> dict[str, Any]:
    """The issue's goals, each with its measured value and whether it was met."""
    f, d, k, r = report["fuzz"], report["drip"], report["kill"], report["replies"]
    sequences = [st for seq in f["step_sequences"].values() for st in seq]
    requests = f["A"]["requests"] + f["B"]["requests"] + len(sequences)
    five = f["A"]["answers_5xx"] + f["B"]["answers_5xx"] + sum(st is not None and st >= 500 for st in sequences)
    poisoned = f["probe_A"]["poisoned"] + f["probe_B"]["poisoned"]
    up = f["up_A"] and f["up_B"] and d["up"]
    drips_ok = d["header_closed_in_time"] == d["header_connections"] and d["body_408_in_time"] == d["body_connections"]
    return {
        "requests_tried": {"value": requests, "goal": ">= 2,000", "met": requests >= 2000},
        "answers_5xx": {"value": five, "goal": 0, "met": five == 0},
        "server_up_at_end": {"value": up, "goal": True, "met": up},
        "poisoned_answers": {"value": poisoned, "goal": 0, "met": poisoned == 0 and f["steps_trained_B"] == 0},
        "local_requests_lost": {"value": r["lost"], "goal": 0, "met": r["lost"] == 0 and r["bad_replies_accepted"] == 0},
        "training_steps_lost": {"value": k["lost_steps"], "goal": f"<= {k['checkpoint_every']}",
                                "met": k["killed"] and k["lost_steps"] <= k["checkpoint_every"]
                                and k["steps_done"] == k["steps_target"] and bool(k["final_links_finite"])},
        "drippers_cut_in_time": {"value": f"{d['header_closed_in_time'] + d['body_408_in_time']}/"
                                          f"{d['header_connections'] + d['body_connections']}", "goal": "all",
                                 "met": drips_ok},
        "peak_host_mib": {"value": max((v for name, v in report["peak_mib"].items() if v is not None and "pending" not in name),
                                       default=None),
                          "goal": "-", "met": True},
    }


def markdown(report: dict[str, Any]) -> str:
    """The goals table, the status-code breakdown and each part's details."""
    g, f, d, k, r = report["goals"], report["fuzz"], report["drip"], report["kill"], report["replies"]
    p = report["pending"]

    def v(x: Any, fmt: str = "") -> str:
        return "-" if x is None else format(x, fmt)

    def yn(b: bool) -> str:
        return "yes" if b else "NO"

    lines = [f"Device: **{report['device']}**; torch {report['torch']}; {report['date']}; cross path "
             f"`{report['cross_path']}`; command `{report['command'].strip()}`; {report['wall_s']:.0f} s in all.", "",
             "| measure | value | goal | met |", "| --- | --- | --- | --- |",
             f"| requests tried (fuzz: host A {f['A']['requests']}, host B {f['B']['requests']}; "
             f"{sum(len(q) for q in f['step_sequences'].values())} in fixed step sequences) | "
             f"{g['requests_tried']['value']:,} | >= 2,000 | {yn(g['requests_tried']['met'])} |",
             f"| 5xx answers | {g['answers_5xx']['value']} | 0 | {yn(g['answers_5xx']['met'])} |",
             f"| servers up at the end | {yn(g['server_up_at_end']['value'])} | yes | {yn(g['server_up_at_end']['met'])} |",
             f"| poisoned answers after the run (probe on B: {f['probe_B']['answers']}, on A: {f['probe_A']['answers']}) | "
             f"{g['poisoned_answers']['value']} | 0 | {yn(g['poisoned_answers']['met'])} |",
             f"| local requests lost (malformed host replies, {r['requests']} requests) | {r['lost']} | 0 | "
             f"{yn(g['local_requests_lost']['met'])} |",
             f"| training steps lost by the kill (checkpoint every {k['checkpoint_every']}) | {k['lost_steps']} | "
             f"<= {k['checkpoint_every']} | {yn(g['training_steps_lost']['met'])} |",
             f"| slow-drip connections cut within the deadlines | {g['drippers_cut_in_time']['value']} | all | "
             f"{yn(g['drippers_cut_in_time']['met'])} |",
             f"| peak memory of a host (VmHWM; before the pending-step measure) | {v(g['peak_host_mib']['value'], '.0f')} MiB "
             "| - | - |", ""]
    statuses = sorted(set(f["A"]["statuses"]) | set(f["B"]["statuses"]), key=lambda s: (s == "None", s))
    lines += ["Fuzz answers by status (host A: every request kind; host B: no finite gradient):", "",
              "| status | host A | host B |", "| --- | --- | --- |"]
    lines += [f"| {'no answer' if s == 'None' else s} | {f['A']['statuses'].get(s, 0)} | {f['B']['statuses'].get(s, 0)} |"
              for s in statuses]
    lines += ["", f"Requests that reached the model code (200, or refused by the model, the step ledger or the answer "
                  f"cap): A {f['A']['reached_model']}, B {f['B']['reached_model']}; {f['kinds_tried']} distinct request "
                  f"kinds; {f['clients']} clients per host; fuzz {f['fuzz_s']:.0f} s. Steps trained during the fuzz: "
                  f"A {v(f['steps_trained_A'])}, B {v(f['steps_trained_B'])} (must be 0). Probe on B: max abs "
                  f"difference {v(f['probe_B']['max_abs_diff'], '.3g')}. Fixed step sequences on A: "
                  + "; ".join(f"{name} ({SEQUENCES.get(name, '')}): {st}" for name, st in f["step_sequences"].items())
                  + f". No answer (connection closed or "
                  f"reset): A {f['A']['transport_errors_by_kind'] or 0}, B {f['B']['transport_errors_by_kind'] or 0}. "
                  f"Exceptions in the host logs: A {f.get('logged_exceptions_A') or 'none'}, "
                  f"B {f.get('logged_exceptions_B') or 'none'}.",
              f"Kill: {v(k['steps_before_kill'])} steps done before the SIGKILL, the restarted host held "
              f"{v(k['host_steps_after_restart'])}, {k['lost_steps']} lost and redone, {k['backward_retries']} backward "
              f"retries; host ready {v(k['restart_s'], '.1f')} s after the kill, first step applied after "
              f"{v(k['recover_s'], '.1f')} s; {k['steps_done']}/{k['steps_target']} steps done, the host holds "
              f"{v(k['host_steps_final'])}; final links finite: {yn(bool(k['final_links_finite']))}.",
              f"Malformed replies: {r['bad_requests']} local requests under {len(r['modes']) - 1} bad modes, "
              f"{r['fallbacks']} fell back, {r['bad_replies_accepted']} bad replies accepted, {r['lost']} lost; "
              f"control (good host): {r['good_offloaded']}/{r['modes']['good']['requests']} offloaded. Drip host: "
              f"connections held up to {v(r['drip_held_max_s'], '.1f')} s (median {v(r['drip_held_median_s'], '.1f')} s) "
              "against a 0.5 s deadline.",
              f"Slow drip: {d['drippers']} clients for {d['drip_s']:.0f} s; heads cut after at most "
              f"{v(d['header_closed_max_s'], '.1f')} s (timeout {d['header_timeout_s']} s), bodies answered "
              f"{d['body_answers']} after at most {v(d['body_closed_max_s'], '.1f')} s (timeout {d['body_timeout_s']} s); "
              f"normal requests p95 {v(d['normal_before']['p95_ms'], '.0f')} ms before, "
              f"{v(d['normal_during']['p95_ms'], '.0f')} ms during ({d['normal_during']['failed']} failed of "
              f"{d['normal_during']['requests']}).",
              f"Pending training graphs: {p['graphs']} train/forward calls of {p['batch']} samples "
              f"({p['request_kib']:.0f} KiB each) with no backward raised the host's resident memory from "
              f"{v(p['rss_before_mib'], '.0f')} to {v(p['rss_after_mib'], '.0f')} MiB ({v(p['mib_per_graph'], '.0f')} MiB "
              f"per pending step); at {p['max_pending']} pending steps per provider of up to {p['max_batch']} samples "
              f"(the answer cap) one provider with train rights can pin about {v(p['bound_mib'], ',.0f')} MiB.",
              "Peak memory (MiB): " + ", ".join(f"{name} {v(mib, '.0f')}" for name, mib in report["peak_mib"].items()) + "."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
