"""Serving benchmark: local-only vs the local skip path vs codenn routing, servers on loopback.

The local provider (``codenn serve``) and the host provider (``codenn serve-host``) run as
separate processes, each pinned to its own CPU core with one torch thread (two "servers"). An
open-loop load generator sends single test images with Poisson arrivals (bounded in count and
time) at a *balanced* and a *heavy* rate, relative to the local server's measured capacity with
its original model:

- local-only: the local server serves only its original model (what a provider does today);
- local skip: the same server serves its best trained skip path (and the original, routed by
  eq. (1)), no host: a skip path also leaves blocks out, so this is what a host must beat;
- codenn: the same server routes each request by eq. (1), re-weighted by load, between the
  original model, the skip path and a trained cross path through the host.

Reported per run: throughput, p50/p95/mean latency, accuracy on the labelled test images (the
same images, in the same order, at the same times for every server at one load), share
offloaded and the routes taken. A fault run kills the host mid-run: lost requests (goal 0) and
recovery time.

    python benchmarks/serving.py [--duration 20] [--skip best] [--out benchmarks/results/serving.json]

Set-up on first use: base models from the cache (trained if missing), then the cross path and
the skip path(s) are trained once into ``runs/serving-bench-v2`` (an exhaustive search over just
those paths, ``--link`` links for ``--epochs`` epochs); a run directory that cannot be resumed
with this configuration (another search configuration, or links trained on other base weights,
as an older scenario's) is replaced, and so is any with ``--fresh``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import datetime
import json
import os
import platform
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path as FsPath
from typing import Any

import torch

from codenn.config.run import RunConfig
from codenn.errors import ConfigError
from codenn.fileio import atomic_write
from codenn.paths.rows import PathRow
from codenn.paths.space import PathSpace
from codenn.paths.spec import PathSpec
from codenn.search.store import RunStore
from codenn.search.strategies import Search
from codenn.train.data import tensors
from codenn.train.scenario import scenario_from_config

CROSS = "alexnet[:2] > mobilenet_v2[3:5] > alexnet[5:]"
"""The default cross path: conv1-conv2 here (their output is 4x4, as MobileNetV2's block 3 takes),
MobileNetV2's blocks 3-4 on the host, fc6-fc8 here; about 39 % of the original's FLOPs stay local."""
LINK = "conv3x3"
EPOCHS = 8
RUN_DIR = "runs/serving-bench-v2"
TOKENS = {"bench": "benchmark-client-token-0123"}
HOST_TOKENS = {"alexnet": "local-provider-token-4567"}
RUNS = ("local-only", "local-skip", "codenn")
FAULT = "codenn/heavy, host killed"


# -- set-up ----------------------------------------------------------------------------------------
def prepare_run(run_dir: FsPath, cross: str | Sequence[str], epochs: int, skips: Sequence[str] = (), *,
                all_skips: bool = False, link: str = LINK, fresh: bool = False,
                log: Callable[[str], None] = print) -> tuple[torch.Tensor, torch.Tensor]:
    """Train ``cross`` (one spec or several) and ``skips`` (with ``all_skips``: every skip path of
    the local model) into ``run_dir`` once, resumed later; the test images and labels.

    An exhaustive search over just these paths on the default :class:`RunConfig`, ``link`` links
    trained ``epochs`` epochs. A run directory this configuration cannot resume (another search
    configuration, or links trained on other base weights: an older scenario) is replaced, and
    so is any with ``fresh``.
    """
    run = RunConfig()
    scenario = scenario_from_config(run, log=log)
    cfg = dataclasses.replace(run.search, strategy="exhaustive", link=link,
                              train=dataclasses.replace(run.search.train, epochs=epochs, progress=False))
    run = dataclasses.replace(run, search=cfg)
    services = [scenario.local, *scenario.hosts]
    replace_stale(FsPath(run_dir), cfg.hash(), {s.name: s.fingerprint() for s in services}, fresh=fresh, log=log)
    specs = [cross] if isinstance(cross, str) else list(cross)
    specs += list(skips)
    if all_skips:
        space = dataclasses.replace(cfg.space, skip=True, cross=False)
        specs += [str(s) for s in PathSpace.between(scenario.local, [], space)]
    counts = {s.name: s.num_blocks for s in services}
    specs = list(dict.fromkeys(str(PathSpec.parse(s).resolve(counts)) for s in specs))
    Search(scenario.local, scenario.hosts, scenario.splits, cfg, run_dir=run_dir, log=log,
           metadata={"base_models": scenario.info}, run_config=run).run(specs=specs)
    return tensors(scenario.splits.test)


def stale_reason(run_dir: FsPath, config_hash: str, fingerprints: Mapping[str, str]) -> str | None:
    """Why ``run_dir`` cannot be resumed by a search of ``config_hash`` over services with these
    weight fingerprints (None: it can, or it holds no run)."""
    store = RunStore(run_dir)
    if not store.exists():
        return None
    try:
        store.check_resumable(config_hash)
        store.check_fingerprints(fingerprints)
    except ConfigError as exc:
        return str(exc)
    return None


def replace_stale(run_dir: FsPath, config_hash: str, fingerprints: Mapping[str, str], *, fresh: bool = False,
                  log: Callable[[str], None] = print) -> bool:
    """Remove ``run_dir`` when it holds a run that cannot be resumed (or any run, with ``fresh``);
    True if it was removed. A directory that holds no codenn run is never removed."""
    if not (run_dir / "run.json").exists() and not RunStore(run_dir).results.exists():
        return False
    reason = stale_reason(run_dir, config_hash, fingerprints) or ("--fresh" if fresh else None)
    if reason is None:
        return False
    log(f"replacing {run_dir}: {reason}")
    shutil.rmtree(run_dir)
    return True


def best_trained(rows: Mapping[str, PathRow], kind: str) -> PathRow:
    """The trained path of ``kind`` ("skip" or "cross") with the lowest eq. (1) cost: the one a
    search over these paths would select."""
    cands = [r for r in rows.values() if r.status == "trained" and r.kind == kind and r.cost is not None]
    if not cands:
        raise ConfigError(f"the run holds no trained {kind} path")
    return min(cands, key=lambda r: (r.cost, r.spec))


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
def arrivals(rate: float, duration: float, n_images: int, seed: int) -> list[tuple[float, int]]:
    """The open loop's schedule: (send time in s, test image index) of Poisson arrivals at
    ``rate``/s for ``duration`` s. Drawn before the run, so every server at one load and seed
    gets the same images at the same times."""
    rng = random.Random(seed)
    out: list[tuple[float, int]] = []
    t = rng.expovariate(rate)
    while t <= duration:
        out.append((t, rng.randrange(n_images)))
        t += rng.expovariate(rate)
    return out


async def open_loop(url: str, token: str, x: torch.Tensor, y: torch.Tensor, rate: float, duration: float,
                    seed: int, max_in_flight: int = 512, on_time: Any = None) -> list[dict[str, Any]]:
    """Poisson arrivals at ``rate``/s for ``duration`` s (:func:`arrivals`); every request's
    outcome (bounded: at most ``max_in_flight`` connections)."""
    import httpx

    from codenn_adapters import oip

    results: list[dict[str, Any]] = []
    limits = httpx.Limits(max_connections=max_in_flight, max_keepalive_connections=max_in_flight)
    async with httpx.AsyncClient(timeout=120.0, limits=limits,
                                 headers={"Authorization": f"Bearer {token}"}) as client:
        sem = asyncio.Semaphore(max_in_flight)

        async def one(i: int, k: int) -> None:
            body, headers = oip.encode_request({"input": x[k:k + 1]})
            async with sem:
                t0 = time.perf_counter()
                rec: dict[str, Any] = {"i": i, "image": k, "sent_s": t0 - start, "label": int(y[k])}
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

        tasks = []
        start = time.perf_counter()
        for i, (t, k) in enumerate(arrivals(rate, duration, len(y), seed)):
            delay = start + t - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            if on_time is not None:
                on_time(time.perf_counter() - start)
            tasks.append(asyncio.create_task(one(i, k)))
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
    parser.add_argument("--run", default=RUN_DIR, help="the benchmark's run directory: paths are trained there once "
                        "and reused; one this configuration cannot resume (an older scenario's) is replaced")
    parser.add_argument("--fresh", action="store_true", help="replace the run directory and train again")
    parser.add_argument("--cross", default=CROSS, help="the trained cross path codenn may route to")
    parser.add_argument("--skip", default="best", help="the local skip path: a spec, or 'best' (every skip path of "
                        "the local model trained, the one of lowest eq. (1) cost served: a search's choice without host)")
    parser.add_argument("--link", default=LINK, help="link factory of the trained paths")
    parser.add_argument("--epochs", type=int, default=EPOCHS, help="link training epochs")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of load per run")
    parser.add_argument("--balanced", type=float, default=0.7, help="offered load / local capacity")
    parser.add_argument("--heavy", type=float, default=1.6, help="offered load / local capacity")
    parser.add_argument("--timeout", type=float, default=1.0, help="host timeout of the coordinator (s)")
    parser.add_argument("--limit-concurrency", type=int, default=1024,
                        help="the servers' --limit-concurrency: above the load generator's 512 connections, so an "
                             "overloaded server queues (latency grows) instead of answering 503")
    parser.add_argument("--out", default="benchmarks/results/serving.json")
    args = parser.parse_args(argv)

    t_start = time.perf_counter()
    run_dir = FsPath(args.run)
    best_skip = args.skip == "best"
    x, y = prepare_run(run_dir, args.cross, args.epochs, () if best_skip else [args.skip], all_skips=best_skip,
                       link=args.link, fresh=args.fresh)
    store = RunStore.open(run_dir)
    counts = store.block_counts()
    trained = store.trained()
    cross = str(PathSpec.parse(args.cross).resolve(counts))
    skip = best_trained(trained, "skip").spec if best_skip else str(PathSpec.parse(args.skip).resolve(counts))
    local_name = PathSpec.parse(cross).local
    original = f"{local_name}[:]"
    host_name = next(s.service for s in PathSpec.parse(cross).segments if s.service != local_name)
    rows = {"original": store.original(), "skip": trained[skip], "cross": trained[cross]}
    report: dict[str, Any] = {
        "benchmark": "serving", "date": datetime.date.today().isoformat(),
        "device": f"CPU ({platform.machine()}, {os.cpu_count()} cores; local and host server pinned to one core each, "
                  "1 torch thread)",
        "torch": torch.__version__,
        "command": "python benchmarks/serving.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "run_dir": str(run_dir), "link": args.link, "epochs": args.epochs,
        "base_models": {k: {n: v.get(n) for n in ("val_accuracy", "test_accuracy", "epochs_run")}
                        for k, v in store.record().base_models.items()},
        "original_path": original, "skip_path": skip, "cross_path": cross,
        "paths": {label: path_info(row) for label, row in rows.items()},
        "skip_candidates": {r.spec: path_info(r) for r in sorted(trained.values(), key=lambda r: r.cost or 0.0)
                            if r.kind == "skip"} if best_skip else {},
        # kept for readers of the earlier JSON
        "cross_val_accuracy": rows["cross"].val_accuracy, "original_val_accuracy": rows["original"].val_accuracy,
        "duration_s": args.duration, "limit_concurrency": args.limit_concurrency, "runs": {},
    }
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = FsPath(tmp_name)
        (tmp / "clients.json").write_text(json.dumps(TOKENS))
        (tmp / "hosts.json").write_text(json.dumps({host_name: HOST_TOKENS["alexnet"]}))
        (tmp / "host-tokens.json").write_text(json.dumps({local_name: HOST_TOKENS["alexnet"]}))
        host_port, local_port = free_port(), free_port()
        url = f"http://127.0.0.1:{local_port}/v2/models/{local_name}/infer"
        limit = ["--limit-concurrency", str(args.limit_concurrency)]
        common = ["serve", "--run", str(run_dir), "--token-file", str(tmp / "clients.json"), *limit]
        servers = {
            "local-only": [*common, "--spec", original],
            "local-skip": [*common, "--spec", skip],
            "codenn": [*common, "--spec", skip, "--spec", cross, "--remote", f"{host_name}=http://127.0.0.1:{host_port}",
                       "--host-token-file", str(tmp / "hosts.json"), "--timeout", str(args.timeout)],
        }
        host_args = ["serve-host", "--run", str(run_dir), "--service", host_name, "--token-file",
                     str(tmp / "host-tokens.json"), "--spec", cross, *limit]

        @contextlib.contextmanager
        def serving(kind: str) -> Iterator[subprocess.Popen[bytes] | None]:
            """The local server of ``kind`` (with its host for codenn); yields the host process."""
            with contextlib.ExitStack() as stack:
                host = stack.enter_context(server(host_args, 1, tmp / "host.log", host_port)) if kind == "codenn" else None
                stack.enter_context(server(servers[kind], 0, tmp / f"{kind}.log", local_port))
                yield host

        capacities = {}
        for kind in ("local-only", "local-skip"):
            with serving(kind):
                capacities[kind] = capacity(url, TOKENS["bench"], x, y)
            print(f"{kind} capacity (batch 1, one core, kept busy): {capacities[kind]:.1f} requests/s", flush=True)
        mu = report["local_capacity_rps"] = capacities["local-only"]
        report["skip_capacity_rps"] = capacities["local-skip"]
        loads = {"balanced": args.balanced * mu, "heavy": args.heavy * mu}
        report["offered_rps"] = loads
        for load, rate in loads.items():
            for kind in RUNS:
                with serving(kind):
                    res = asyncio.run(open_loop(url, TOKENS["bench"], x, y, rate, args.duration, seed=1))
                report["runs"][f"{kind}/{load}"] = summarise(res, rate)
                print(f"{kind} {load}: {report['runs'][f'{kind}/{load}']}", flush=True)
                if kind == "codenn" and load == "balanced":
                    report["codenn_start_up"] = start_up_table(tmp / "codenn.log")

        # fault run: heavy load, the host is killed half-way through
        rate = loads["heavy"]
        kill_at = args.duration / 2
        with serving("codenn") as host:
            assert host is not None
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
        report["runs"][FAULT] = fault

    report["goals"] = goals(report)
    report["wall_s"] = time.perf_counter() - t_start
    out = FsPath(args.out)
    table = markdown(report)
    atomic_write(out, (json.dumps(report, indent=2) + "\n").encode())
    atomic_write(out.with_suffix(".md"), table.encode())
    print(table)
    print(f"wrote {out} and {out.with_suffix('.md')}")
    return report


def path_info(row: PathRow) -> dict[str, Any]:
    """What the report keeps of one path's row in the run."""
    return {"spec": row.spec, "kind": row.kind, "val_accuracy": row.val_accuracy, "test_accuracy": row.test_accuracy,
            "cost": row.cost, "local_gflops": row.local_gflops, "host_gflops": row.host_gflops,
            "link_params": row.link_params}


def start_up_table(log_file: FsPath) -> list[str]:
    """The route table ``codenn serve`` printed at start-up (calibrated times, cost at idle)."""
    if not log_file.exists():
        return []
    lines = log_file.read_text(errors="replace").splitlines()
    return [line.rstrip() for line in lines if line.strip() and line.lstrip()[:1] in "┏┃┡│└━" or "at http" in line]


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


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def _diff(a: float | None, b: float | None) -> float | None:
    return a - b if a is not None and b is not None else None


PAIRS = {"codenn/local-only": ("codenn", "local-only"), "codenn/local-skip": ("codenn", "local-skip"),
         "local-skip/local-only": ("local-skip", "local-only")}


def ratios(runs: Mapping[str, Any], load: str) -> dict[str, dict[str, float | None]]:
    """Side by side at one load: throughput and latency ratios and accuracy differences of each
    pair of servers (``"codenn/local-skip"``: codenn's value over, or minus, the skip path's)."""
    out = {}
    for name, (a, b) in PAIRS.items():
        num, den = runs.get(f"{a}/{load}"), runs.get(f"{b}/{load}")
        if num is None or den is None:
            continue
        out[name] = {"throughput_ratio": _ratio(num["throughput_rps"], den["throughput_rps"]),
                     "p50_latency_ratio": _ratio(num["p50_ms"], den["p50_ms"]),
                     "p95_latency_ratio": _ratio(num["p95_ms"], den["p95_ms"]),
                     "mean_latency_ratio": _ratio(num["mean_ms"], den["mean_ms"]),
                     "accuracy_diff": _diff(num["accuracy"], den["accuracy"])}
    return out


def _goal(new: Mapping[str, Any] | None, base: Mapping[str, Any] | None) -> dict[str, Any]:
    """The issue's goal for ``new`` over ``base`` at heavy load: x1.4 throughput or 30 % lower
    mean latency, with at most 0.02 accuracy drop."""
    if new is None or base is None:
        return {"throughput_ratio": None, "mean_latency_cut": None, "accuracy_drop": None, "met": None}
    throughput = _ratio(new["throughput_rps"], base["throughput_rps"])
    mean = _ratio(new["mean_ms"], base["mean_ms"])
    cut = None if mean is None else 1 - mean
    drop = _diff(base["accuracy"], new["accuracy"])
    met = (throughput is not None and throughput >= 1.4 or cut is not None and cut >= 0.30) \
        and drop is not None and drop <= 0.02
    return {"throughput_ratio": throughput, "mean_latency_cut": cut, "accuracy_drop": drop, "met": met}


def goals(report: dict[str, Any]) -> dict[str, Any]:
    runs = report["runs"]
    vs_local = _goal(runs.get("codenn/heavy"), runs.get("local-only/heavy"))
    vs_skip = _goal(runs.get("codenn/heavy"), runs.get("local-skip/heavy"))
    fault = runs[FAULT]
    return {
        "heavy_throughput_ratio": vs_local["throughput_ratio"],
        "heavy_mean_latency_cut": vs_local["mean_latency_cut"],
        "heavy_accuracy_drop": vs_local["accuracy_drop"],
        "met": vs_local["met"],
        "vs_skip": vs_skip,
        "ratios": {load: ratios(runs, load) for load in ("balanced", "heavy")},
        "fault_lost_requests": fault["lost"],
        "fault_goal_met": fault["lost"] == 0,
    }


def _f(v: Any, fmt: str) -> str:
    return "-" if v is None else format(v, fmt)


def route_shares(r: Mapping[str, Any], labels: Mapping[str, str]) -> str:
    """``"skip 97%, cross 3%"``: the share of answered requests each route served."""
    n = sum(r["routes"].values())
    parts = [f"{labels.get(spec, spec)} {count / n:.0%}" for spec, count in sorted(r["routes"].items(),
                                                                                     key=lambda kv: -kv[1])]
    return ", ".join(parts) if n else "-"


def markdown(report: dict[str, Any]) -> str:
    paths = report["paths"]
    labels = {report["original_path"]: "original", report["skip_path"]: "skip", report["cross_path"]: "cross"}

    def desc(label: str) -> str:
        p = paths[label]
        host = f" + {p['host_gflops'] * 1e3:.1f} MFLOPs on the host" if p.get("host_gflops") else ""
        return (f"{label} `{p['spec']}` (val {_f(p['val_accuracy'], '.3f')}, test {_f(p['test_accuracy'], '.3f')}; "
                f"{p['local_gflops'] * 1e3:.1f} MFLOPs local{host})")

    lines = [f"Device: **{report['device']}**; torch {report['torch']}; {report.get('date', '')}; "
             f"{report.get('link', '?')} links trained {report.get('epochs', '?')} epochs.", "",
             "Paths: " + "; ".join(desc(k) for k in ("original", "skip", "cross")) + ".", "",
             f"Capacity (batch 1, one core, kept busy): original {report['local_capacity_rps']:.1f} req/s, skip path "
             f"{_f(report.get('skip_capacity_rps'), '.1f')} req/s; loads are relative to the original's; "
             f"{report['duration_s']:.0f} s per run; the same requests for every server at one load.", "",
             "| run | offered req/s | answered | lost | throughput req/s | p50 ms | p95 ms | mean ms | accuracy | "
             "routes | fallbacks |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, r in report["runs"].items():
        lines.append(f"| {name} | {r['offered_rps']:.1f} | {r['answered']} | {r['lost']} | {r['throughput_rps']:.1f} | "
                     f"{_f(r['p50_ms'], '.0f')} | {_f(r['p95_ms'], '.0f')} | {_f(r['mean_ms'], '.0f')} | "
                     f"{_f(r['accuracy'], '.3f')} | {route_shares(r, labels)} | {r['fallbacks']} |")
    g = report["goals"]
    lines += ["", "| load | pair | throughput | p50 | p95 | mean latency | accuracy |",
              "| --- | --- | --- | --- | --- | --- | --- |"]
    for load, pairs in g["ratios"].items():
        for pair, v in pairs.items():
            lines.append(f"| {load} | {pair} | x{_f(v['throughput_ratio'], '.2f')} | x{_f(v['p50_latency_ratio'], '.2f')} "
                         f"| x{_f(v['p95_latency_ratio'], '.2f')} | x{_f(v['mean_latency_ratio'], '.2f')} | "
                         f"{_f(v['accuracy_diff'], '+.3f')} |")
    fault = report["runs"][FAULT]
    vs = g["vs_skip"]

    def verdict(met: bool | None) -> str:
        return "-" if met is None else "met" if met else "NOT met"

    lines += ["", f"Heavy load, codenn vs local-only: throughput x{_f(g['heavy_throughput_ratio'], '.2f')}, mean "
                  f"latency {_f(g['heavy_mean_latency_cut'], '.0%')} lower, accuracy drop "
                  f"{_f(g['heavy_accuracy_drop'], '.3f')} (goal: x1.4 or 30 % lower mean, drop <= 0.02): "
                  f"{verdict(g['met'])}.",
              f"Heavy load, codenn vs the local skip path: throughput x{_f(vs['throughput_ratio'], '.2f')}, mean "
              f"latency {_f(vs['mean_latency_cut'], '.0%')} lower, accuracy drop {_f(vs['accuracy_drop'], '.3f')} "
              f"(same goal): {verdict(vs['met'])}.",
              f"Fault run: host killed at {fault['killed_at_s']:.1f} s; lost {fault['lost']} requests (goal 0); first "
              f"fallback answer {_f(fault['first_fallback_answered_after_kill_s'], '.2f')} s after the kill; latency "
              f"back within 1.5x of the pre-kill p95 after {_f(fault['recovery_s'], '.2f')} s."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
