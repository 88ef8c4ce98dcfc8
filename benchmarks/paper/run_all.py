"""Run the paper's four experiments in one process (``make experiments``), then write
docs/experiments.md from their JSON.

One process so that base models are loaded from the cache, never trained twice; the wall time of
each experiment and of the whole run is recorded in ``<out_dir>/summary.json``.

    python benchmarks/paper/run_all.py [--only 1,3] [--link-epochs 6] [--no-report] [--replot]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path as FsPath
from typing import Any

sys.path.insert(0, str(FsPath(__file__).resolve().parent))

import exp1_alexnet_cross  # noqa: E402
import exp2_alexnet_skip  # noqa: E402
import exp3_alexnet_mobilenet  # noqa: E402
import exp4_path_selection  # noqa: E402
import paper_common as pc  # noqa: E402
import report  # noqa: E402

EXPERIMENTS = {1: exp1_alexnet_cross, 2: exp2_alexnet_skip, 3: exp3_alexnet_mobilenet, 4: exp4_path_selection}


def run_all(opts: pc.Options, only: Sequence[int] = (1, 2, 3, 4), write_report: bool = True,
            log: pc.Log = print) -> dict[str, Any]:
    t0 = time.perf_counter()
    walls, cpus = {}, {}
    for k in only:
        if k not in EXPERIMENTS:
            raise pc.ConfigError(f"unknown experiment {k}; choose from {sorted(EXPERIMENTS)}")
        log(f"=== experiment {k}: {EXPERIMENTS[k].NAME}")
        c0 = pc.cpu_seconds()
        res = EXPERIMENTS[k].run(opts, log=log)
        walls[EXPERIMENTS[k].NAME] = res["wall_seconds"]
        cpus[EXPERIMENTS[k].NAME] = round(pc.cpu_seconds() - c0, 1)
    summary = {"experiments": walls, "cpu_seconds": cpus, "total_wall_seconds": round(time.perf_counter() - t0, 1),
               "total_cpu_seconds": round(pc.cpu_seconds(), 1), "environment": pc.environment(opts)}
    pc.write_json(FsPath(opts.out_dir) / "summary.json", summary)
    log(f"all done in {summary['total_wall_seconds']:.0f} s: {walls}")
    if write_report:
        target = report.write(FsPath(opts.out_dir))
        log(f"wrote {target}")
    return summary


def replot(opts: pc.Options, log: pc.Log = print) -> None:
    """Redraw every figure from the JSON already written (no training)."""
    for module in EXPERIMENTS.values():
        f = FsPath(opts.out_dir) / f"{module.NAME}.json"
        if f.is_file():
            module.plot(json.loads(f.read_text()), FsPath(opts.fig_dir) / f"{module.NAME}.png")
            log(f"redrew {module.NAME}.png")


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    pc.add_arguments(parser)
    parser.add_argument("--only", default="1,2,3,4", help="comma-separated experiment numbers")
    parser.add_argument("--no-report", dest="report", action="store_false", help="do not rewrite docs/experiments.md")
    parser.add_argument("--replot", action="store_true", help="only redraw the figures and the report from the JSON")
    args = parser.parse_args(argv)
    if args.replot:
        opts = pc.options_from(args)
        replot(opts)
        print(f"wrote {report.write(FsPath(opts.out_dir))}")
        return {}
    return run_all(pc.options_from(args), tuple(int(v) for v in args.only.split(",")), args.report)


if __name__ == "__main__":
    main()
