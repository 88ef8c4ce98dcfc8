"""The command line of ``python benchmarks/faults.py`` and the order the parts run in: hosts A and B
(fuzz and poisoning probe, slow drip, pending-step memory), host C (kill during split training),
host D behind the fake host (malformed replies), then the report."""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path as FsPath
from typing import Any

from . import drip, fuzz, kill, memory, replies
from .harness import LOOPBACK, OUT, TOKENS, Bench, Target, load_serving
from .report import goals, header, write

DESCRIPTION = "Faults benchmark (issue 12): hostile and broken peers against real server processes on loopback."


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=DESCRIPTION)
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
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The options, with every size left out filled in (the quick one with ``--quick``)."""
    args = _parser().parse_args(argv)
    q = args.quick
    defaults = {"fuzz": 150 if q else 2000, "poison_fuzz": 60 if q else 1000, "drip_s": 5.0 if q else 12.0,
                "train_epochs": 1 if q else 2, "per_mode": 2 if q else 20, "kill_at": 2 * args.checkpoint_every + 3}
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    return args


def hosts_a_and_b(bench: Bench, args: argparse.Namespace, peaks: dict[str, float | None]) -> dict[str, Any]:
    """Parts 1, 2, 5 and the pending-step memory: host A (every request kind) and host B (no valid
    training step), both with the fuzzed size caps and short header and body deadlines."""
    fuzzed = bench.host_args("--max-bytes", str(args.max_bytes), "--max-response-bytes", str(args.max_bytes),
                             "--header-timeout", str(args.header_timeout), "--body-timeout", str(args.body_timeout))
    port_a, port_b = bench.free_port(), bench.free_port()
    report: dict[str, Any] = {}
    with bench.start(fuzzed, 1, "host-a.log", port_a) as proc_a, bench.start(fuzzed, 0, "host-b.log", port_b) as proc_b:
        a = Target.discover(f"{LOOPBACK}:{port_a}", bench.model, TOKENS["trainer"], args.max_bytes)
        b = dataclasses.replace(a, url=f"{LOOPBACK}:{port_b}")
        report["fuzz"] = fuzz.part(bench, args, a, b, proc_a, proc_b, peaks)
        report["drip"] = drip.part(args, a, proc_a, bench.x_probe, peaks)
        report["pending"] = memory.part(args, a, proc_a, peaks)
    report["fuzz"]["logged_exceptions_A"] = bench.logged("host-a.log")
    report["fuzz"]["logged_exceptions_B"] = bench.logged("host-b.log")
    return report


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    serving = load_serving()
    t_start = time.perf_counter()
    report: dict[str, Any] = {}
    peaks: dict[str, float | None] = {}
    with tempfile.TemporaryDirectory() as tmp_name:
        bench = Bench.prepare(serving, FsPath(args.run), FsPath(tmp_name))
        report.update(header(bench, args, argv))
        report.update(hosts_a_and_b(bench, args, peaks))
        report["kill"] = kill.part(bench, args, peaks)
        report["replies"] = replies.part(bench, args, peaks)
    report["peak_mib"] = peaks
    report["wall_s"] = time.perf_counter() - t_start
    report["goals"] = goals(report)
    write(report, FsPath(args.out))
    return report
