"""The report: its header, the issue's goals (each measured and checked), the markdown table and
the details of every part, written to ``benchmarks/results/faults.{json,md}``."""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
from pathlib import Path as FsPath
from typing import Any

import torch

from codenn.fileio import atomic_write

from .fuzz import SEQUENCES
from .harness import Bench


def header(bench: Bench, args: argparse.Namespace, argv: list[str] | None) -> dict[str, Any]:
    """What the run was: where, when, on which cross path, by which command."""
    return {
        "benchmark": "faults", "quick": args.quick, "date": datetime.date.today().isoformat(),
        "device": f"CPU ({platform.machine()}, {os.cpu_count()} cores; each server pinned to one core, 1 torch thread)",
        "torch": torch.__version__, "cross_path": bench.cross, "model": bench.model,
        "command": "python benchmarks/faults.py " + " ".join(argv if argv is not None else sys.argv[1:]),
    }


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


def _v(x: Any, fmt: str = "") -> str:
    return "-" if x is None else format(x, fmt)


def _yn(b: bool) -> str:
    return "yes" if b else "NO"


def _goals_table(report: dict[str, Any]) -> list[str]:
    """The run's header line and the goals table."""
    g, f, k, r = report["goals"], report["fuzz"], report["kill"], report["replies"]
    return [f"Device: **{report['device']}**; torch {report['torch']}; {report['date']}; cross path "
            f"`{report['cross_path']}`; command `{report['command'].strip()}`; {report['wall_s']:.0f} s in all.", "",
            "| measure | value | goal | met |", "| --- | --- | --- | --- |",
            f"| requests tried (fuzz: host A {f['A']['requests']}, host B {f['B']['requests']}; "
            f"{sum(len(q) for q in f['step_sequences'].values())} in fixed step sequences) | "
            f"{g['requests_tried']['value']:,} | >= 2,000 | {_yn(g['requests_tried']['met'])} |",
            f"| 5xx answers | {g['answers_5xx']['value']} | 0 | {_yn(g['answers_5xx']['met'])} |",
            f"| servers up at the end | {_yn(g['server_up_at_end']['value'])} | yes | {_yn(g['server_up_at_end']['met'])} |",
            f"| poisoned answers after the run (probe on B: {f['probe_B']['answers']}, on A: {f['probe_A']['answers']}) | "
            f"{g['poisoned_answers']['value']} | 0 | {_yn(g['poisoned_answers']['met'])} |",
            f"| local requests lost (malformed host replies, {r['requests']} requests) | {r['lost']} | 0 | "
            f"{_yn(g['local_requests_lost']['met'])} |",
            f"| training steps lost by the kill (checkpoint every {k['checkpoint_every']}) | {k['lost_steps']} | "
            f"<= {k['checkpoint_every']} | {_yn(g['training_steps_lost']['met'])} |",
            f"| slow-drip connections cut within the deadlines | {g['drippers_cut_in_time']['value']} | all | "
            f"{_yn(g['drippers_cut_in_time']['met'])} |",
            f"| peak memory of a host (VmHWM; before the pending-step measure) | {_v(g['peak_host_mib']['value'], '.0f')} MiB "
            "| - | - |", ""]


def _fuzz_lines(f: dict[str, Any]) -> list[str]:
    """The fuzz answers by status, and what the fuzz reached, trained and broke."""
    statuses = sorted(set(f["A"]["statuses"]) | set(f["B"]["statuses"]), key=lambda s: (s == "None", s))
    lines = ["Fuzz answers by status (host A: every request kind; host B: no finite gradient):", "",
             "| status | host A | host B |", "| --- | --- | --- |"]
    lines += [f"| {'no answer' if s == 'None' else s} | {f['A']['statuses'].get(s, 0)} | {f['B']['statuses'].get(s, 0)} |"
              for s in statuses]
    lines += ["", f"Requests that reached the model code (200, or refused by the model, the step ledger or the answer "
                  f"cap): A {f['A']['reached_model']}, B {f['B']['reached_model']}; {f['kinds_tried']} distinct request "
                  f"kinds; {f['clients']} clients per host; fuzz {f['fuzz_s']:.0f} s. Steps trained during the fuzz: "
                  f"A {_v(f['steps_trained_A'])}, B {_v(f['steps_trained_B'])} (must be 0). Probe on B: max abs "
                  f"difference {_v(f['probe_B']['max_abs_diff'], '.3g')}. Fixed step sequences on A: "
                  + "; ".join(f"{name} ({SEQUENCES.get(name, '')}): {st}" for name, st in f["step_sequences"].items())
                  + f". No answer (connection closed or "
                  f"reset): A {f['A']['transport_errors_by_kind'] or 0}, B {f['B']['transport_errors_by_kind'] or 0}. "
                  f"Exceptions in the host logs: A {f.get('logged_exceptions_A') or 'none'}, "
                  f"B {f.get('logged_exceptions_B') or 'none'}."]
    return lines


def _kill_and_replies_lines(k: dict[str, Any], r: dict[str, Any]) -> list[str]:
    return [f"Kill: {_v(k['steps_before_kill'])} steps done before the SIGKILL, the restarted host held "
            f"{_v(k['host_steps_after_restart'])}, {k['lost_steps']} lost and redone, {k['backward_retries']} backward "
            f"retries; host ready {_v(k['restart_s'], '.1f')} s after the kill, first step applied after "
            f"{_v(k['recover_s'], '.1f')} s; {k['steps_done']}/{k['steps_target']} steps done, the host holds "
            f"{_v(k['host_steps_final'])}; final links finite: {_yn(bool(k['final_links_finite']))}.",
            f"Malformed replies: {r['bad_requests']} local requests under {len(r['modes']) - 1} bad modes, "
            f"{r['fallbacks']} fell back, {r['bad_replies_accepted']} bad replies accepted, {r['lost']} lost; "
            f"control (good host): {r['good_offloaded']}/{r['modes']['good']['requests']} offloaded. Drip host: "
            f"connections held up to {_v(r['drip_held_max_s'], '.1f')} s (median {_v(r['drip_held_median_s'], '.1f')} s) "
            "against a 0.5 s deadline."]


def _drip_and_memory_lines(report: dict[str, Any]) -> list[str]:
    d, p = report["drip"], report["pending"]
    return [f"Slow drip: {d['drippers']} clients for {d['drip_s']:.0f} s; heads cut after at most "
            f"{_v(d['header_closed_max_s'], '.1f')} s (timeout {d['header_timeout_s']} s), bodies answered "
            f"{d['body_answers']} after at most {_v(d['body_closed_max_s'], '.1f')} s (timeout {d['body_timeout_s']} s); "
            f"normal requests p95 {_v(d['normal_before']['p95_ms'], '.0f')} ms before, "
            f"{_v(d['normal_during']['p95_ms'], '.0f')} ms during ({d['normal_during']['failed']} failed of "
            f"{d['normal_during']['requests']}).",
            f"Pending training graphs: {p['graphs']} train/forward calls of {p['batch']} samples "
            f"({p['request_kib']:.0f} KiB each) with no backward raised the host's resident memory from "
            f"{_v(p['rss_before_mib'], '.0f')} to {_v(p['rss_after_mib'], '.0f')} MiB ({_v(p['mib_per_graph'], '.0f')} MiB "
            f"per pending step); at {p['max_pending']} pending steps per provider of up to {p['max_batch']} samples "
            f"(the answer cap) one provider with train rights can pin about {_v(p['bound_mib'], ',.0f')} MiB.",
            "Peak memory (MiB): " + ", ".join(f"{name} {_v(mib, '.0f')}" for name, mib in report["peak_mib"].items()) + "."]


def markdown(report: dict[str, Any]) -> str:
    """The goals table, the status-code breakdown and each part's details."""
    lines = [*_goals_table(report), *_fuzz_lines(report["fuzz"]),
             *_kill_and_replies_lines(report["kill"], report["replies"]), *_drip_and_memory_lines(report)]
    return "\n".join(lines) + "\n"


def write(report: dict[str, Any], out: FsPath) -> None:
    """The report as JSON at ``out`` and as markdown beside it (``.md``); the table goes to stdout."""
    table = markdown(report)
    atomic_write(out, (json.dumps(report, indent=2, default=str) + "\n").encode())
    atomic_write(out.with_suffix(".md"), table.encode())
    print(table)
    print(f"wrote {out} and {out.with_suffix('.md')} in {report['wall_s']:.0f} s")
