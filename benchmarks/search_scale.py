"""The default scenario's exhaustive search in this process vs on a local Ray cluster, then a
simulated schedule for more workers on a larger path space.

The searches run one after the other in one process, over the same services and data, with the
same training budget: in-process with torch's default thread count (and, with ``--one-thread``,
with one thread), then with
``RayExecutor(workers=N, threads_per_worker=1)`` on a local Ray cluster started for the run (its
start and the workers' set-up count in its wall time). Every path's jobs are deterministic, so
runs with the same thread count measure the same accuracies (another thread count changes the
order of float reductions, and so the last digits); costs also contain profiled times, which
differ from run to run, so the Ray run's selection is also costed on the in-process run's
measurements.

The simulation (``--simulate 8,32,128``) is **a simulation, not a measurement**: a path space
``--scale`` times larger (as with a second host) whose per-path job times are drawn from the ones
measured in the Ray run (skip paths from skip paths, cross from cross), scheduled first-come
first-served on W workers the way :class:`~codenn_adapters.ray_search.RayExecutor` schedules
them, plus the measured per-worker set-up and the measured serial part of the search (profiling,
building candidates, saving links), scaled with the number of paths.

    python benchmarks/search_scale.py [--workers 2] [--epochs 3] [--limit N] [--one-thread] [--simulate 8,32,128]
"""

from __future__ import annotations

import argparse
import dataclasses
import heapq
import os
import platform
import random
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from codenn.config.run import RunConfig
from codenn.fileio import atomic_json
from codenn.paths.rows import PathRow
from codenn.paths.space import PathSpace
from codenn.search.strategies import Search, SearchResult
from codenn.train.scenario import Scenario, scenario_from_config


def run_search(run: RunConfig, scenario: Scenario, out: Path, executor: Any, specs: Sequence[str] | None
               ) -> tuple[Search, SearchResult, float]:
    search = Search(scenario.local, scenario.hosts, scenario.splits, run.search, run_dir=out, executor=executor,
                    log=lambda m: print(m, flush=True))
    t0 = time.perf_counter()
    result = search.run(specs)
    return search, result, time.perf_counter() - t0


def schedule(durations: Sequence[float], workers: int) -> float:
    """Makespan of jobs handed, in order, to whichever of ``workers`` is free first."""
    free = [0.0] * workers
    heapq.heapify(free)
    end = 0.0
    for d in durations:
        start = heapq.heappop(free)
        heapq.heappush(free, start + d)
        end = max(end, start + d)
    return end


def simulate(rows: Sequence[PathRow], job_s: dict[str, float], *, scale: int, workers: Sequence[int],
             setup_s: float, serial_s_per_path: float, seed: int = 0) -> list[dict[str, Any]]:
    """Makespans on W workers for a path space ``scale`` times larger, job times drawn from ``job_s``."""
    rng = random.Random(seed)
    by_kind: dict[str, list[float]] = {}
    for r in rows:
        if r.spec in job_s:
            by_kind.setdefault(r.kind, []).append(job_s[r.spec])
    kinds = [r.kind for r in rows if r.spec in job_s]
    durations = [rng.choice(by_kind[k]) for _ in range(scale) for k in kinds]
    serial = serial_s_per_path * len(durations)
    one = serial + sum(durations)
    out = []
    for w in (1, *workers):
        wall = serial + setup_s * (w > 1) + schedule(durations, w)
        out.append({"workers": w, "paths": len(durations), "simulated_wall_s": round(wall, 1),
                    "speed_up": round(one / wall, 2), "efficiency": round(one / wall / w, 2),
                    "longest_job_s": round(max(durations), 1)})
    return out


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2, help="Ray workers (1 thread each)")
    parser.add_argument("--epochs", type=int, default=None, help="training budget per path (default: the scenario's)")
    parser.add_argument("--limit", type=int, default=None, help="search only the first N paths of the space (tests)")
    parser.add_argument("--simulate", default="8,32,128", help="worker counts for the simulated schedule")
    parser.add_argument("--scale", type=int, default=4, help="how many times larger the simulated path space is")
    parser.add_argument("--one-thread", action="store_true",
                        help="also run in-process with one torch thread (what each Ray worker gets)")
    parser.add_argument("--address", default=None, help="a running Ray cluster instead of a local one")
    parser.add_argument("--out", default="benchmarks/results/search_scale.json")
    args = parser.parse_args(argv)

    from codenn_adapters.ray_search import RayExecutor

    run = RunConfig()
    train = dataclasses.replace(run.search.train, progress=False, **({"epochs": args.epochs} if args.epochs else {}))
    run = dataclasses.replace(run, search=dataclasses.replace(run.search, strategy="exhaustive", train=train))
    scenario = scenario_from_config(run)
    specs = None
    if args.limit:
        space = PathSpace.between(scenario.local, scenario.hosts, **dataclasses.asdict(run.search.space))
        specs = [str(p) for p in list(space)[: args.limit]]
    default_threads = torch.get_num_threads()
    baselines = sorted({default_threads, 1} if args.one_thread else {default_threads}, reverse=True)
    here: dict[int, tuple[Search, SearchResult, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for t in baselines:  # the default thread count, and one thread: what each Ray worker gets
            torch.set_num_threads(t)
            here[t] = run_search(run, scenario, Path(tmp) / f"inprocess-{t}", None, specs)
        torch.set_num_threads(default_threads)
        executor = RayExecutor(run, address=args.address, workers=args.workers, threads_per_worker=1,
                               log=lambda m: print(m, flush=True))
        ray_search, there, ray_wall = run_search(run, scenario, Path(tmp) / "ray", executor, specs)

    def acc_gap(a: SearchResult, b: SearchResult) -> float:
        rows = {r.spec: r for r in a.rows}
        return max((abs(r.val_accuracy - rows[r.spec].val_accuracy) for r in b.rows
                    if r.val_accuracy is not None and rows[r.spec].val_accuracy is not None), default=0.0)

    ref_search, ref, ref_wall = here[default_threads]
    rows_ref = {r.spec: r for r in ref.rows}
    pick_there = there.selected
    table = []
    for t, (srch, res, wall) in here.items():
        pick = res.selected
        table.append({"executor": f"in-process, {t} torch thread(s)", "workers": 1, "paths": res.totals["paths"],
                      "train_sample_steps": res.totals["train_samples"], "wall_s": round(wall, 1),
                      "job_s": round(sum(srch.job_seconds.values()), 1), "selected": pick.spec if pick else None,
                      "cost": pick.cost if pick else None, "test_accuracy": pick.test_accuracy if pick else None,
                      "max_val_accuracy_gap_to_ray": acc_gap(res, there)})
    table.append({"executor": f"Ray, {args.workers} workers x 1 thread", "workers": args.workers,
                  "paths": there.totals["paths"], "train_sample_steps": there.totals["train_samples"],
                  "wall_s": round(ray_wall, 1), "job_s": round(sum(ray_search.job_seconds.values()), 1),
                  "setup_s": round(executor.setup_seconds, 1), "retried": len(executor.retried),
                  "selected": pick_there.spec if pick_there else None, "cost": pick_there.cost if pick_there else None,
                  "cost_on_in_process_measures": rows_ref[pick_there.spec].cost if pick_there else None,
                  "test_accuracy": pick_there.test_accuracy if pick_there else None})
    speed_up = {t: round(wall / ray_wall, 2) for t, (_, _, wall) in here.items()}
    serial = max(0.0, ref_wall - sum(ref_search.job_seconds.values()))
    sim = simulate(there.rows, ray_search.job_seconds, scale=args.scale,
                   workers=[int(w) for w in args.simulate.split(",") if w], setup_s=executor.setup_seconds,
                   serial_s_per_path=serial / max(1, len(ref_search.job_seconds)))
    same_one_thread = acc_gap(here[1][1], there) == 0.0 if 1 in here else None
    report = {
        "benchmark": "search_scale", "date": time.strftime("%Y-%m-%d"), "torch": torch.__version__,
        "cpu": platform.machine(), "cores": os.cpu_count(), "default_threads": default_threads,
        "epochs": run.search.train.epochs, "strategy": "exhaustive", "table": table,
        "speed_up_vs_in_process": speed_up, "same_accuracies_at_one_thread": same_one_thread,
        "same_selection": (ref.selected and ref.selected.spec) == (pick_there and pick_there.spec),
        "serial_s": round(serial, 1),
        "job_seconds": {"median": statistics.median(ray_search.job_seconds.values()),
                        "max": max(ray_search.job_seconds.values()), "per_path": ray_search.job_seconds},
        "simulation": {"note": "simulated, not measured: job times drawn from the Ray run's, first-come first-served",
                       "scale": args.scale, "rows": sim},
        "goal": {"speed_up_at_least": 1.5, "met_vs_default_threads": speed_up[default_threads] >= 1.5,
                 "met_vs_one_thread": speed_up[1] >= 1.5 if 1 in speed_up else None},
    }
    print(f"\n{'executor':40} {'paths':>5} {'sample-steps':>12} {'wall s':>8} {'selected':50} {'cost':>8}")
    for row in table:
        print(f"{row['executor']:40} {row['paths']:>5} {row['train_sample_steps']:>12,} {row['wall_s']:>8} "
              f"{str(row['selected']):50} {row['cost'] or float('nan'):>8.4f}")
    print(f"speed-up vs in-process (threads: x): {speed_up} (goal x1.5); same accuracies as in-process at one "
          f"thread: {same_one_thread}; same selection as in-process at {default_threads} thread(s): "
          f"{report['same_selection']}")
    print(f"\nsimulated ({args.scale}x the paths, job times drawn from this run):")
    for row in sim:
        print(f"  {row['workers']:>4} workers: {row['paths']} paths, {row['simulated_wall_s']:>8} s, "
              f"x{row['speed_up']} (efficiency {row['efficiency']})")
    if args.out:
        atomic_json(Path(args.out), report)
    return report


if __name__ == "__main__":
    main()
