"""Serving benchmark: local-only vs codenn routing, two server processes on loopback.

The local provider (``codenn serve``) and the host provider (``codenn serve-host``) run as
separate processes, each pinned to its own CPU core with one torch thread (two "servers"). An
open-loop load generator sends single test images with Poisson arrivals (bounded in count and
time) at a *balanced* and a *heavy* rate, relative to the local server's measured capacity:

- local-only: the local server serves only its original model (what a provider does today);
- codenn: the same server routes each request by eq. (1), re-weighted by load, between the
  original model and a trained cross path through the host.

Reported per run: throughput, p50/p95/mean latency, accuracy on the labelled test images, share
offloaded. A fault run kills the host mid-run: lost requests (goal 0) and recovery time.

    python benchmarks/serving.py [--duration 20] [--out benchmarks/results/serving.json]

Set-up on first use: base models from the cache (trained if missing), then the cross path is
trained once into ``runs/serving-bench`` (an exhaustive search over just that path).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import platform
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path as FsPath
from typing import Any

import torch

from codenn.config import RunConfig
from codenn.data import tensors
from codenn.fileio import atomic_write
from codenn.pathspec import PathSpec
from codenn.runstore import RunStore
from codenn.scenario import scenario_from_config
from codenn.search import Search

CROSS = "alexnet[:5] > mobilenet_v2[1:2] > alexnet[6:]"
TOKENS = {"bench": "benchmark-client-token-0123"}
HOST_TOKENS = {"alexnet": "local-provider-token-4567"}


# -- set-up ----------------------------------------------------------------------------------------
def prepare_run(run_dir: FsPath, cross: str, epochs: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Train ``cross`` into ``run_dir`` once (resumed later); the test images and labels."""
    run = RunConfig()
    scenario = scenario_from_config(run, log=print)
    cfg = dataclasses.replace(run.search, strategy="exhaustive",
                              train=dataclasses.replace(run.search.train, epochs=epochs, progress=False))
    run = dataclasses.replace(run, search=cfg)
    Search(scenario.local, scenario.hosts, scenario.splits, cfg, run_dir=run_dir, log=print,
           metadata={"run_config": run.to_dict(), "base_models": scenario.info}).run(specs=[cross])
    return tensors(scenario.splits.test)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def server(args: list[str], core: int, log_file: FsPath, port: int) -> Iterator[subprocess.Popen[bytes]]:
    """A codenn server process pinned to ``core`` with one torch thread; always stopped."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    cores = sorted(os.sched_getaffinity(0))
    pin = {cores[core % len(cores)]}
    with open(log_file, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "codenn", *args, "--port", str(port)], stdout=log,
                                stderr=subprocess.STDOUT, env=env, preexec_fn=lambda: os.sched_setaffinity(0, pin))
        try:
            wait_ready(proc, port, log_file)
            yield proc
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


def wait_ready(proc: subprocess.Popen[bytes], port: int, log_file: FsPath, timeout: float = 300.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited:\n{log_file.read_text()[-3000:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"http://127.0.0.1:{port}/v2/health/ready", timeout=1.0).status_code == 200:
                return
        time.sleep(0.3)
    raise RuntimeError(f"server on port {port} not ready in {timeout} s:\n{log_file.read_text()[-3000:]}")


# -- load --------------------------------------------------------------------------------------------
async def open_loop(url: str, token: str, x: torch.Tensor, y: torch.Tensor, rate: float, duration: float,
                    seed: int, max_in_flight: int = 512, on_time: Any = None) -> list[dict[str, Any]]:
    """Poisson arrivals at ``rate``/s for ``duration`` s; every request's outcome (bounded)."""
    import httpx

    from codenn_adapters import oip

    rng = random.Random(seed)
    results: list[dict[str, Any]] = []
    limits = httpx.Limits(max_connections=max_in_flight, max_keepalive_connections=max_in_flight)
    async with httpx.AsyncClient(timeout=120.0, limits=limits,
                                 headers={"Authorization": f"Bearer {token}"}) as client:
        sem = asyncio.Semaphore(max_in_flight)

        async def one(i: int, t_sched: float) -> None:
            k = rng.randrange(len(y))
            body, headers = oip.encode_request({"input": x[k:k + 1]})
            async with sem:
                t0 = time.perf_counter()
                rec: dict[str, Any] = {"i": i, "sent_s": t0 - start, "label": int(y[k])}
                try:
                    res = await client.post(url, content=body, headers=headers)
                    rec["status"] = res.status_code
                    if res.status_code == 200:
                        header, out = oip.decode_response(res.content, res.headers.get(oip.HEADER_LENGTH))
                        rec.update(pred=int(out["output"].flatten(1).argmax(1)[0]), **(header.parameters or {}))
                    else:
                        rec["error"] = res.text[:200]
                except httpx.HTTPError as exc:
                    rec["status"], rec["error"] = None, f"{type(exc).__name__}: {exc}"
                rec["latency_s"] = time.perf_counter() - t0
                rec["done_s"] = time.perf_counter() - start
                results.append(rec)

        start = time.perf_counter()
        tasks, t, i = [], 0.0, 0
        while True:
            t += rng.expovariate(rate)
            if t > duration:
                break
            delay = start + t - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            if on_time is not None:
                on_time(time.perf_counter() - start)
            tasks.append(asyncio.create_task(one(i, t)))
            i += 1
        await asyncio.gather(*tasks)
    return results


def summarise(results: list[dict[str, Any]], offered: float) -> dict[str, Any]:
    ok = [r for r in results if r.get("status") == 200]
    lat = sorted(r["latency_s"] for r in ok)
    span = max((r["done_s"] for r in ok), default=0.0) - min((r["sent_s"] for r in ok), default=0.0)
    return {
        "offered_rps": offered,
        "requests": len(results),
        "answered": len(ok),
        "lost": len(results) - len(ok),
        "throughput_rps": len(ok) / span if span > 0 else 0.0,
        "p50_ms": 1e3 * lat[len(lat) // 2] if lat else None,
        "p95_ms": 1e3 * lat[min(len(lat) - 1, int(0.95 * (len(lat) - 1)))] if lat else None,
        "mean_ms": 1e3 * statistics.mean(lat) if lat else None,
        "accuracy": sum(r["pred"] == r["label"] for r in ok) / len(ok) if ok else None,
        "offloaded_share": sum(bool(r.get("offloaded")) for r in ok) / len(ok) if ok else None,
        "fallbacks": sum(bool(r.get("fallback")) for r in ok),
        "routes": {k: sum(r.get("route") == k for r in ok) for k in sorted({r.get("route") for r in ok} - {None})},
        "errors": sorted({f"{r.get('status')}: {r.get('error', '')[:160]}" for r in results if r.get("status") != 200}),
    }


def capacity(url: str, token: str, x: torch.Tensor, y: torch.Tensor, n: int = 60, clients: int = 8) -> float:
    """Requests per second the local-only server completes when kept busy (closed loop,
    ``clients`` requests always in flight): its service rate, which the loads are relative to."""

    async def run() -> float:
        import httpx

        from codenn_adapters import oip

        async with httpx.AsyncClient(timeout=120.0, headers={"Authorization": f"Bearer {token}"}) as client:
            async def worker(k: int) -> None:
                for i in range(k, n, clients):
                    body, headers = oip.encode_request({"input": x[i % len(x): i % len(x) + 1]})
                    (await client.post(url, content=body, headers=headers)).raise_for_status()

            await worker(0)  # warm-up: connections, first calls
            t0 = time.perf_counter()
            await asyncio.gather(*(worker(k) for k in range(clients)))
            return n / (time.perf_counter() - t0)

    return asyncio.run(run())


# -- the run -----------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default="runs/serving-bench", help="where the cross path is trained (reused)")
    parser.add_argument("--cross", default=CROSS, help="the trained cross path codenn may route to")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of load per run")
    parser.add_argument("--balanced", type=float, default=0.7, help="offered load / local capacity")
    parser.add_argument("--heavy", type=float, default=1.6, help="offered load / local capacity")
    parser.add_argument("--timeout", type=float, default=1.0, help="host timeout of the coordinator (s)")
    parser.add_argument("--out", default="benchmarks/results/serving.json")
    args = parser.parse_args(argv)

    run_dir = FsPath(args.run)
    x, y = prepare_run(run_dir, args.cross, args.epochs)
    store = RunStore.open(run_dir)
    cross = str(PathSpec.parse(args.cross).resolve(store.block_counts()))
    row = store.trained()[cross]
    local_name = PathSpec.parse(cross).local
    host_name = next(s.service for s in PathSpec.parse(cross).segments if s.service != local_name)
    report: dict[str, Any] = {
        "benchmark": "serving", "device": f"CPU ({platform.machine()}, {os.cpu_count()} cores; local and host "
                                          "server pinned to one core each, 1 torch thread)",
        "torch": torch.__version__, "cross_path": cross, "cross_val_accuracy": row.val_accuracy,
        "original_val_accuracy": store.original().val_accuracy, "duration_s": args.duration, "runs": {},
    }
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = FsPath(tmp_name)
        (tmp / "clients.json").write_text(json.dumps(TOKENS))
        (tmp / "hosts.json").write_text(json.dumps({host_name: HOST_TOKENS["alexnet"]}))
        (tmp / "host-tokens.json").write_text(json.dumps({local_name: HOST_TOKENS["alexnet"]}))
        host_port, local_port = free_port(), free_port()
        url = f"http://127.0.0.1:{local_port}/v2/models/{local_name}/infer"
        common = ["serve", "--run", str(run_dir), "--token-file", str(tmp / "clients.json")]
        local_only = [*common, "--spec", f"{local_name}[:]"]
        codenn = [*common, "--spec", cross, "--remote", f"{host_name}=http://127.0.0.1:{host_port}",
                  "--host-token-file", str(tmp / "hosts.json"), "--timeout", str(args.timeout)]
        host_args = ["serve-host", "--run", str(run_dir), "--service", host_name, "--token-file",
                     str(tmp / "host-tokens.json"), "--spec", cross]

        with server(local_only, 0, tmp / "local.log", local_port):
            mu = capacity(url, TOKENS["bench"], x, y)
        report["local_capacity_rps"] = mu
        print(f"local capacity (original model only, batch 1, one core, kept busy): {mu:.1f} requests/s", flush=True)
        loads = {"balanced": args.balanced * mu, "heavy": args.heavy * mu}
        for load, rate in loads.items():
            with server(local_only, 0, tmp / "local.log", local_port):
                res = asyncio.run(open_loop(url, TOKENS["bench"], x, y, rate, args.duration, seed=1))
            report["runs"][f"local-only/{load}"] = summarise(res, rate)
            print(f"local-only {load}: {report['runs'][f'local-only/{load}']}", flush=True)
            with server(host_args, 1, tmp / "host.log", host_port), server(codenn, 0, tmp / "local.log", local_port):
                res = asyncio.run(open_loop(url, TOKENS["bench"], x, y, rate, args.duration, seed=1))
            report["runs"][f"codenn/{load}"] = summarise(res, rate)
            print(f"codenn {load}: {report['runs'][f'codenn/{load}']}", flush=True)

        # fault run: heavy load, the host is killed half-way through
        rate = loads["heavy"]
        kill_at = args.duration / 2
        with server(host_args, 1, tmp / "host.log", host_port) as host, \
                server(codenn, 0, tmp / "local.log", local_port):
            killed: list[float] = []

            def maybe_kill(now: float) -> None:
                if not killed and now >= kill_at:
                    host.kill()
                    killed.append(now)

            res = asyncio.run(open_loop(url, TOKENS["bench"], x, y, rate, args.duration, seed=2, on_time=maybe_kill))
        fault = summarise(res, rate)
        after = sorted((r for r in res if r.get("status") == 200 and r["sent_s"] >= killed[0]), key=lambda r: r["sent_s"])
        first_fallback = next((r for r in after if r.get("fallback")), None)
        fault.update({
            "killed_at_s": killed[0],
            "first_fallback_answered_after_kill_s": first_fallback["done_s"] - killed[0] if first_fallback else None,
            "recovery_s": recovery_time(res, killed[0]),
            "offloaded_after_kill": sum(bool(r.get("offloaded")) for r in after),
        })
        report["runs"]["codenn/heavy, host killed"] = fault

    report["goals"] = goals(report)
    out = FsPath(args.out)
    table = markdown(report)
    atomic_write(out, (json.dumps(report, indent=2) + "\n").encode())
    atomic_write(out.with_suffix(".md"), table.encode())
    print(table)
    print(f"wrote {out} and {out.with_suffix('.md')}")
    return report


def recovery_time(results: list[dict[str, Any]], killed_at: float, window: float = 1.0) -> float | None:
    """Seconds from the kill until a 1-s window of requests sent after it has a p95 within 1.5x of
    the p95 before the kill (None if it never does)."""
    before = sorted(r["latency_s"] for r in results if r.get("status") == 200 and r["sent_s"] < killed_at)
    if not before:
        return None
    ref = before[min(len(before) - 1, int(0.95 * (len(before) - 1)))]
    after = sorted((r for r in results if r["sent_s"] >= killed_at), key=lambda r: r["sent_s"])
    t = killed_at
    end = max((r["sent_s"] for r in after), default=killed_at)
    while t <= end:
        win = sorted(r["latency_s"] for r in after if t <= r["sent_s"] < t + window and r.get("status") == 200)
        if win and win[min(len(win) - 1, int(0.95 * (len(win) - 1)))] <= 1.5 * ref:
            return t - killed_at
        t += window / 4
    return None


def goals(report: dict[str, Any]) -> dict[str, Any]:
    runs = report["runs"]
    lo, co = runs["local-only/heavy"], runs["codenn/heavy"]
    throughput = co["throughput_rps"] / lo["throughput_rps"] if lo["throughput_rps"] else None
    mean_cut = 1 - co["mean_ms"] / lo["mean_ms"] if lo["mean_ms"] and co["mean_ms"] else None
    drop = lo["accuracy"] - co["accuracy"] if lo["accuracy"] is not None and co["accuracy"] is not None else None
    fault = runs["codenn/heavy, host killed"]
    return {
        "heavy_throughput_ratio": throughput,
        "heavy_mean_latency_cut": mean_cut,
        "heavy_accuracy_drop": drop,
        "met": (throughput is not None and throughput >= 1.4 or mean_cut is not None and mean_cut >= 0.30)
               and drop is not None and drop <= 0.02,
        "fault_lost_requests": fault["lost"],
        "fault_goal_met": fault["lost"] == 0,
    }


def markdown(report: dict[str, Any]) -> str:
    lines = [f"Device: **{report['device']}**; torch {report['torch']}; cross path `{report['cross_path']}` "
             f"(val accuracy {report['cross_val_accuracy']:.3f} vs original {report['original_val_accuracy']:.3f}); "
             f"local capacity {report['local_capacity_rps']:.1f} req/s; {report['duration_s']:.0f} s per run.", "",
             "| run | offered req/s | answered | lost | throughput req/s | p50 ms | p95 ms | mean ms | accuracy | "
             "offloaded | fallbacks |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]

    def f(v: Any, fmt: str) -> str:
        return "-" if v is None else format(v, fmt)

    for name, r in report["runs"].items():
        lines.append(f"| {name} | {r['offered_rps']:.1f} | {r['answered']} | {r['lost']} | {r['throughput_rps']:.1f} | "
                     f"{f(r['p50_ms'], '.0f')} | {f(r['p95_ms'], '.0f')} | {f(r['mean_ms'], '.0f')} | "
                     f"{f(r['accuracy'], '.3f')} | {f(r['offloaded_share'], '.0%')} | {r['fallbacks']} |")
    fault = report["runs"]["codenn/heavy, host killed"]
    g = report["goals"]
    lines += ["", f"Heavy load, codenn vs local-only: throughput x{f(g['heavy_throughput_ratio'], '.2f')}, mean latency "
                  f"{f(g['heavy_mean_latency_cut'], '.0%')} lower, accuracy drop {f(g['heavy_accuracy_drop'], '.3f')} "
                  f"(goal: x1.4 or 30 % lower mean, drop <= 0.02): {'met' if g['met'] else 'NOT met'}.",
              f"Fault run: host killed at {fault['killed_at_s']:.1f} s; lost {fault['lost']} requests (goal 0); first "
              f"fallback answer {f(fault['first_fallback_answered_after_kill_s'], '.2f')} s after the kill; latency "
              f"back within 1.5x of the pre-kill p95 after {f(fault['recovery_s'], '.2f')} s."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
