"""Part 5: slow-drip clients. Clients drip a request's head or body one byte a second into a host
(``--header-timeout``, ``--body-timeout``) while normal requests flow: the drippers must be closed
(or get 408) within the deadlines, and normal latency must hold."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from collections import Counter
from typing import Any

import torch

from .harness import TOKENS, Target, alive, bearer, emit, model_url, peak_rss_mib, percentile, say, timed


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

    async with httpx.AsyncClient(base_url=url, timeout=60, headers=bearer(token)) as client:
        async def one(k: int) -> None:
            i = k
            while time.monotonic() < end:
                body, headers = oip.encode_request({"input": x[i % len(x): i % len(x) + 1]})
                t0 = time.perf_counter()
                try:
                    r = await client.post(f"{model_url(model)}/infer", content=body, headers=headers)
                    status: int | None = r.status_code
                except httpx.HTTPError:
                    status = None
                out.append({"status": status, "ms": 1e3 * (time.perf_counter() - t0)})
                i += clients

        await asyncio.gather(*(one(k) for k in range(clients)))


def _normal(rs: list[dict[str, Any]]) -> dict[str, Any]:
    """Normal requests' counts and latency (of those answered 200)."""
    ok = [r["ms"] for r in rs if r["status"] == 200]
    return {"requests": len(rs), "answered": len(ok), "failed": len(rs) - len(ok),
            "p50_ms": percentile(ok, 0.5), "p95_ms": percentile(ok, 0.95)}


def _drip_summary(drips: list[dict[str, Any]], *, header_timeout: float, body_timeout: float, slack: float
                  ) -> dict[str, Any]:
    """How many dripping connections of each kind were cut within their deadline (plus ``slack``)."""
    heads = [d for d in drips if d["kind"] == "header"]
    bodies = [d for d in drips if d["kind"] == "body"]
    return {
        "header_connections": len(heads),
        "header_closed_in_time": sum(d["closed_after_s"] <= header_timeout + slack for d in heads),
        "header_closed_max_s": max((d["closed_after_s"] for d in heads), default=None),
        "body_connections": len(bodies),
        "body_408_in_time": sum(d["answer"] == "408" and d["closed_after_s"] <= body_timeout + slack for d in bodies),
        "body_answers": dict(Counter(d["answer"] for d in bodies)),
        "body_closed_max_s": max((d["closed_after_s"] for d in bodies), default=None),
    }


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
    return {
        "drippers": drippers, "drip_s": drip_s, "interval_s": interval,
        "header_timeout_s": header_timeout, "body_timeout_s": body_timeout,
        **_drip_summary(drips, header_timeout=header_timeout, body_timeout=body_timeout, slack=interval + 1.0),
        "normal_before": _normal(before), "normal_during": _normal(during),
    }


def part(args: argparse.Namespace, a: Target, proc_a: Any, x: torch.Tensor, peaks: dict[str, float | None]
         ) -> dict[str, Any]:
    """Part 5 in the full run, against host A after the fuzz; notes its peak memory after."""
    say(f"slow drip: {args.drippers} clients for {args.drip_s} s")
    report = timed(lambda: slow_drip(a.url, a.model, TOKENS["reader"], x, drippers=args.drippers, drip_s=args.drip_s,
                                     before_s=args.drip_s / 2, header_timeout=args.header_timeout,
                                     body_timeout=args.body_timeout))
    report["up"] = alive(a.url) and proc_a.poll() is None
    peaks["A after drip"] = peak_rss_mib(proc_a.pid)
    emit(report)
    return report
