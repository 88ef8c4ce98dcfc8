"""Part 4: malformed host replies. ``codenn serve`` (the local provider) routes through a fake host
(a proxy in front of a real host) that answers ``/infer`` with each of :data:`BAD_MODES`; no
local request may be lost, and each one that tried the host must fall back."""

from __future__ import annotations

import argparse
import contextlib
import http.server
import math
import os
import random
import socket
import statistics
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import torch

from .harness import CLIENT_TOKEN, LOOPBACK, Bench, alive, bearer, emit, peak_rss_mib, say

BAD_MODES = ("wrong-shape", "wrong-batch", "wrong-dtype", "nan", "inf", "no-output", "compute-null",
             "compute-negative", "compute-string", "compute-missing", "compute-bool", "not-an-object", "garbage",
             "truncated", "header-length-wrong", "empty", "huge-declared", "http-500", "http-503", "reset", "hang",
             "drip")
TENSOR_MODES = ("wrong-shape", "wrong-batch", "wrong-dtype", "nan", "inf", "no-output")
"""The modes that answer a well-formed tensor that is wrong (shape, batch, datatype, values, name)."""


def _bad_tensor(y: torch.Tensor, mode: str) -> tuple[torch.Tensor, str]:
    """The output of one of :data:`TENSOR_MODES`, and the name it is sent under."""
    t = y.clone()
    if mode == "wrong-shape":
        t = t.reshape(t.shape[0], -1)[:, :-1]
    elif mode == "wrong-batch":
        t = torch.cat([t, t])
    elif mode == "wrong-dtype":
        t = t.double()
    elif mode in ("nan", "inf"):
        t.view(-1)[random.randrange(t.numel())] = math.nan if mode == "nan" else math.inf
    return t, "result" if mode == "no-output" else "output"


def _bad_compute(params: dict[str, Any], mode: str) -> dict[str, Any]:
    """The answer's parameters with a ``host_compute_s`` that is missing or not a number of seconds."""
    value = {"compute-null": None, "compute-negative": -1.0, "compute-string": "fast", "compute-bool": True}
    if mode == "compute-missing":
        params.pop("host_compute_s", None)
    else:
        params["host_compute_s"] = value[mode]
    return params


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
        self.url = f"{LOOPBACK}:{self.server.server_address[1]}"
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
        """Answer the real host's good answer (``headers``, ``body``) as ``mode`` would."""
        from codenn_adapters import oip

        header, tensors = oip.decode_response(body, headers.get(oip.HEADER_LENGTH))
        y, params = tensors["output"], dict(header.parameters or {})

        def send_tensor(t: torch.Tensor, p: dict[str, Any], tensor_name: str = "output") -> None:
            b, hd = oip.encode_response(header.model_name, {tensor_name: t}, parameters=p)
            self._send(h, 200, hd, b)

        if mode in TENSOR_MODES:
            t, tensor_name = _bad_tensor(y, mode)
            send_tensor(t, params, tensor_name)
        elif mode.startswith("compute-"):
            send_tensor(y, _bad_compute(params, mode))
        elif mode == "reset":
            h.close_connection = True
            with contextlib.suppress(OSError):
                h.connection.shutdown(socket.SHUT_RDWR)
        elif mode == "hang":
            time.sleep(self.hang_s)
            h.close_connection = True
        elif mode == "drip":
            self._drip(h, headers, body)
        else:
            self._send_bad(h, mode, headers, body)

    def _send_bad(self, h: http.server.BaseHTTPRequestHandler, mode: str, headers: dict[str, str], body: bytes) -> None:
        """The modes whose answer is not a well-formed OIP answer (or not a 200)."""
        from codenn_adapters import oip

        if mode == "not-an-object":
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
        else:
            raise ValueError(f"unknown fake host mode {mode!r}")

    def _drip(self, h: http.server.BaseHTTPRequestHandler, headers: dict[str, str], body: bytes) -> None:
        """The good answer, one byte per :attr:`drip_interval` (for at most :attr:`drip_cap_s`)."""
        from codenn_adapters import oip

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


def _mode_row(res: Sequence[dict[str, Any]], seconds: float) -> dict[str, Any]:
    return {
        "requests": len(res),
        "answered": sum(r["status"] == 200 for r in res),
        "lost": sum(r["status"] != 200 for r in res),
        "fallbacks": sum(bool(r.get("fallback")) for r in res),
        "offloaded": sum(bool(r.get("offloaded")) and not r.get("fallback") for r in res),
        "seconds": seconds,
        "errors": sorted({str(r.get("error"))[:200] for r in res if r["status"] != 200}),
    }


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
        rows[mode] = _mode_row(res, time.perf_counter() - t0)
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

    client = httpx.Client(timeout=timeout, headers=bearer(token))

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


def _through_local_server(bench: Bench, args: argparse.Namespace, fake: FakeHost) -> dict[str, Any]:
    """``codenn serve`` routing every request to ``fake``, and the local requests sent through it."""
    # eq. (1) with the paper's coefficients prefers the original model to this cross path on the
    # default scenario (issue 13), and then no request would meet the fake host: local compute is
    # made expensive so that every request is routed to it
    (bench.tmp / "offload.toml").write_text("[cost]\nd_l = 1000.0\n")
    local_args = bench.local_args(fake.url, "--timeout", str(args.host_timeout), "--retry-after", "0",
                                  "--config", str(bench.tmp / "offload.toml"))
    port_l = bench.free_port()
    with bench.start(local_args, 0, "local.log", port_l) as proc_l:
        send, close = http_sender(f"{LOOPBACK}:{port_l}/v2/models/{bench.local_name}/infer", CLIENT_TOKEN, bench.x_test)
        try:
            say(f"malformed replies: {args.per_mode} local requests per mode, {len(BAD_MODES)} modes")
            report = malformed_replies(send, fake, args.per_mode)
        finally:
            close()
        report["local_up"] = alive(f"{LOOPBACK}:{port_l}") and proc_l.poll() is None
    return report


def part(bench: Bench, args: argparse.Namespace, peaks: dict[str, float | None]) -> dict[str, Any]:
    """Part 4 in the full run: host D behind the fake host, the local server in front of it."""
    port_d = bench.free_port()
    with bench.start(bench.host_args(), 1, "host-d.log", port_d) as proc_d:
        fake = FakeHost(f"{LOOPBACK}:{port_d}")
        try:
            report = _through_local_server(bench, args, fake)
        finally:
            fake.close()
        peaks["D (behind the fake)"] = peak_rss_mib(proc_d.pid)
    report["logged_exceptions_local"] = bench.logged("local.log")
    emit({k: v for k, v in report.items() if k != "modes"})
    return report
