"""Exhaustive (the paper's method) vs fast search on the embedded default scenario, in one run.

Prints a table and writes JSON (default benchmarks/results/search_cost.json). Both searches use
the same services, data, profiler settings and training budget; the selected paths' costs are
compared on the exhaustive run's measurements, so profiling noise cannot favour either side.

    python benchmarks/search_cost.py [--epochs 3] [--out benchmarks/results/search_cost.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import tempfile
import time
from pathlib import Path

import torch

from codenn.config.run import RunConfig
from codenn.search.strategies import Search
from codenn.train.scenario import scenario_from_config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3, help="full training budget per path")
    parser.add_argument("--out", default="benchmarks/results/search_cost.json")
    args = parser.parse_args()

    run = RunConfig()
    base = dataclasses.replace(run.search, train=dataclasses.replace(run.search.train, epochs=args.epochs,
                                                                     progress=False))
    scenario = scenario_from_config(run)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for strategy in ("fast", "exhaustive"):
            cfg = dataclasses.replace(base, strategy=strategy)
            t0 = time.perf_counter()
            result = Search(scenario.local, scenario.hosts, scenario.splits, cfg, run_dir=Path(tmp) / strategy,
                            log=lambda m: print(m, flush=True)).run()
            results[strategy] = {"result": result, "wall": time.perf_counter() - t0}

    ex, fast = results["exhaustive"]["result"], results["fast"]["result"]
    ex_rows = {r.spec: r for r in ex.rows}
    optimum = ex.selected
    fast_pick = fast.selected
    fast_pick_cost = ex_rows[fast_pick.spec].cost if fast_pick else None
    table = []
    for name in ("exhaustive", "fast"):
        r = results[name]["result"]
        pick = r.selected
        table.append({
            "strategy": name,
            "candidates": r.totals["paths"],
            "trained_in_full": r.totals["trained"],
            "train_sample_steps": r.totals["train_samples"],
            "wall_seconds": round(results[name]["wall"], 1),
            "selected": pick.spec if pick else None,
            "selected_cost_own_run": pick.cost if pick else None,
            "selected_cost_on_exhaustive_measurements": ex_rows[pick.spec].cost if pick else None,
            "selected_test_accuracy": pick.test_accuracy if pick else None,
        })
    summary = {
        "sample_steps_ratio": table[0]["train_sample_steps"] / max(1, table[1]["train_sample_steps"]),
        "wall_time_ratio": table[0]["wall_seconds"] / max(1e-9, table[1]["wall_seconds"]),
        "cost_gap_vs_optimum": (fast_pick_cost - optimum.cost) / abs(optimum.cost) if optimum and fast_pick else None,
        "original_val_accuracy": ex.original.val_accuracy,
        "original_test_accuracy": ex.original.test_accuracy,
        "original_cost": ex.original.cost,
        "decision_exhaustive": ex.decision,
        "decision_fast": fast.decision,
    }
    machine = {"cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
               "torch": torch.__version__, "device": base.train.device}
    print()
    print("| strategy | candidates | trained in full | training sample-steps | wall s | selected "
          "| cost (exhaustive measurements) | test acc |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for row in table:
        print(f"| {row['strategy']} | {row['candidates']} | {row['trained_in_full']} | {row['train_sample_steps']:,} | "
              f"{row['wall_seconds']:.0f} | `{row['selected']}` | {row['selected_cost_on_exhaustive_measurements']:.4f} | "
              f"{row['selected_test_accuracy']:.3f} |")
    print(f"\nfast needs {summary['sample_steps_ratio']:.1f}x fewer training sample-steps and "
          f"{summary['wall_time_ratio']:.1f}x less wall time; its pick's cost is "
          f"{100 * summary['cost_gap_vs_optimum']:+.2f}% from the exhaustive optimum")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = out.with_suffix(".tmp")
    tmp_out.write_text(json.dumps({"machine": machine, "epochs": args.epochs, "table": table, "summary": summary,
                                   "exhaustive_rows": ex.rows, "fast_rows": fast.rows}, indent=2))
    tmp_out.replace(out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
