"""Experiment 4 (paper Fig. 7): selecting a path with the cost of eq. (1).

Question: which path does eq. (1) pick with the paper's coefficients (a = 40, c_l = 1e-6,
c_h = 2e-5, d_l = d_h = 10), and is it kept over the original model? Candidates as in the
paper: the default scenario's MobileNetV2 host (letters), ``lout=0, hin=1, lin=5``, ``hout`` 2..5, plus the skip path
``lout=0 -> lin=5``. codenn's search runs them twice, exhaustive (the paper's method: train every
path) and fast (least-squares screening, successive halving), and the selected path is exported
to ONNX with parity checks against PyTorch.

    python benchmarks/paper/exp4_path_selection.py [--link-epochs 6] [--no-export]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path as FsPath
from typing import Any

sys.path.insert(0, str(FsPath(__file__).resolve().parent))

import paper_common as pc  # noqa: E402

from codenn.config.cost import CostModel  # noqa: E402
from codenn.config.search import FastConfig, SearchConfig  # noqa: E402
from codenn.paths.rows import TERMS  # noqa: E402
from codenn.search.store import RunStore  # noqa: E402
from codenn.search.strategies import Search  # noqa: E402
from codenn.train.data import Splits  # noqa: E402

NAME = "exp4_path_selection"
HOST = "mobilenet_letters"
PAPER = {"selected_hout": 4, "selected_accuracy": 0.821, "selected_params": 340e3, "skipped_params": 1.88e6,
         "coefficients": {"a": 40, "c_l": 1e-6, "c_h": 2e-5, "d_l": 10, "d_h": 10}}
GOALS = {"selected_through_host": True}  # issue 13: the selected path goes through the host (paper: hout=4, kept)
SEARCH_BENCH = pc.ROOT / "benchmarks" / "results" / "search_cost.json"


def limited_splits(opts: pc.Options) -> Splits:
    splits = pc.splits_of(opts.local_task, opts.size, opts.seed)
    if opts.limit is None:
        return splits
    from torch.utils.data import Subset

    cut = {p: Subset(getattr(splits, p), range(min(opts.limit, len(getattr(splits, p))))) for p in ("train", "val", "test")}
    return Splits(cut["train"], cut["val"], cut["test"], splits.num_classes, splits.name)


def run(opts: pc.Options, houts: Sequence[int] = (2, 3, 4, 5), profile_repeats: int = 10,
        log: pc.Log = print) -> dict[str, Any]:
    """Run both strategies on the paper's candidates, export the pick, return the JSON-able result."""
    t0 = time.perf_counter()
    lab = pc.make_lab(opts, (HOST,), log=log)
    splits = limited_splits(opts)
    specs = [pc.cross_spec(HOST, k) for k in houts] + [pc.skip_spec(0, 5)]
    cost = CostModel()
    searches: dict[str, Any] = {}
    export: dict[str, Any] = {"skipped": True}
    with tempfile.TemporaryDirectory() as tmp:
        for strategy in ("exhaustive", "fast"):
            cfg = SearchConfig(strategy=strategy, link="paper", train=opts.train_config(), cost=cost,
                               profile_repeats=profile_repeats,
                               fast=FastConfig(screen_keep=len(specs), final_keep=2))
            ts = time.perf_counter()
            res = Search(lab.local, [lab.services[HOST]], splits, cfg, run_dir=FsPath(tmp) / strategy,
                         log=log).run(specs)
            searches[strategy] = {"result": res, "wall_seconds": round(time.perf_counter() - ts, 1)}
        ex = searches["exhaustive"]["result"]
        if opts.export and ex.selected is not None:
            export = export_selected(lab, ex.selected.spec, FsPath(tmp) / "exhaustive", FsPath(tmp) / "onnx", log)
    lab.verify_frozen()
    ex = searches["exhaustive"]["result"]
    ex_rows = {r.spec: r for r in ex.rows}
    rows = [{k: getattr(r, k) for k in ("spec", "kind", "lout", "hin", "hout", "lin", "val_accuracy", "test_accuracy",
                                    "ls_accuracy", "t_comm_us", "t_local_us", "t_host_us", "latency_us",
                                    "link_params", "local_params", "host_params", "skipped_params",
                                    "local_gflops", "host_gflops", *TERMS, "cost", "train_samples")}
            for r in ex.rows]
    strategies = {}
    for name, s in searches.items():
        r = s["result"]
        pick = r.selected
        strategies[name] = {"selected": pick.spec if pick else None, "decision": r.decision,
                            "trained_in_full": r.totals["trained"], "train_sample_steps": r.totals["train_samples"],
                            "wall_seconds": s["wall_seconds"],
                            "selected_cost_on_exhaustive_measurements": ex_rows[pick.spec].cost if pick else None}
    orig = {k: getattr(ex.original, k) for k in ("spec", "val_accuracy", "test_accuracy", "t_local_us", "latency_us",
                                            "local_gflops", "local_params", *TERMS, "cost")}
    sel = ex.selected
    summary = {
        "selected": sel.spec if sel else None, "selected_hout": sel.hout if sel else None,
        "selected_test_accuracy": sel.test_accuracy if sel else None,
        "selected_val_accuracy": sel.val_accuracy if sel else None,
        "selected_link_params": sel.link_params if sel else None,
        "selected_added_host_params": sel.host_params if sel else None,
        "selected_skipped_params": sel.skipped_params if sel else None,
        "selected_cost": sel.cost if sel else None, "original_cost": ex.original.cost,
        "kept": bool(sel and sel.cost < ex.original.cost), "decision": ex.decision,
        "selected_kind": sel.kind if sel else None,
        "fast_same_pick": strategies["fast"]["selected"] == strategies["exhaustive"]["selected"],
        "sample_steps_ratio": strategies["exhaustive"]["train_sample_steps"]
        / max(1, strategies["fast"]["train_sample_steps"]),
        "wall_time_ratio": strategies["exhaustive"]["wall_seconds"] / max(1e-9, strategies["fast"]["wall_seconds"]),
    }
    if "worst_rel" in export:
        summary["onnx_worst_rel"] = export["worst_rel"]
    result = {"experiment": NAME, "paper": PAPER, "host": HOST, "houts": list(houts), "cost_model": cost.to_dict(),
              "base_models": pc.base_models(lab), "original": orig, "rows": rows, "strategies": strategies,
              "export": export, "search_benchmark": search_benchmark(), "goals": GOALS, "summary": summary}
    return pc.finish(NAME, result, opts, t0, plot, log=log)


def export_selected(lab: pc.Lab, spec: str, run_dir: FsPath, out: FsPath, log: pc.Log) -> dict[str, Any]:
    """Reload the selected path's trained links and export it with parity checks (ONNX Runtime)."""
    from codenn.errors import CodennError

    try:
        from codenn_adapters.onnx_export import export_path
    except ImportError as exc:  # the adapters are an optional install
        return {"skipped": True, "reason": f"codenn_adapters unavailable: {exc}"}
    path = RunStore(run_dir).trained_path(spec, lab.services)
    try:
        res = export_path(path, out, real_inputs=lab.data["test"][0][:8], log=log)
    except CodennError as exc:
        return {"skipped": False, "ok": False, "error": str(exc)}
    worst = res.worst()
    real = [p for p in res.parity if p.inputs == "real"]
    return {"skipped": False, "ok": res.ok, "spec": spec, "exporter": res.exporter, "files": [f.name for f in res.files],
            "worst_rel": worst.rel, "worst": worst.to_dict(), "worst_real_rel": max((p.rel for p in real), default=None),
            "parity_checks": len(res.parity), "leak_checks_ok": all(c.ok for c in res.leaks),
            "seconds": round(res.seconds, 1)}


def search_benchmark() -> dict[str, Any] | None:
    """The larger fast-vs-exhaustive benchmark (``make bench``), cited when its JSON exists."""
    if not SEARCH_BENCH.is_file():
        return None
    data = json.loads(SEARCH_BENCH.read_text())
    return {"file": str(SEARCH_BENCH.relative_to(pc.ROOT)), "summary": data.get("summary"),
            "table": data.get("table"), "machine": data.get("machine")}


def short(row: dict[str, Any]) -> str:
    if row["spec"].endswith("[:]"):
        return "original"
    return f"hout={row['hout']}" if row.get("hout") is not None else f"skip {row['lout']}->{row['lin']}"


def plot(result: dict[str, Any], target: FsPath) -> None:
    """Fig. 7a (computation time per path, local vs host) and 7b (eq. (1) cost per path by term)."""
    plt = pc.pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    rows = [result["original"], *sorted(result["rows"], key=lambda r: (r["kind"], r.get("hout") or 0))]
    labels = [short(r) for r in rows]
    x = list(range(len(rows)))
    ax = axes[0]
    loc = [r["t_local_us"] / 1e3 for r in rows]
    host = [(r.get("t_host_us") or 0) / 1e3 for r in rows]
    ax.bar(x, loc, label="local")
    ax.bar(x, host, bottom=loc, label="host")
    ax.set_xticks(x, labels, fontsize=8)
    ax.set_ylabel("ms per sample (batch 1, CPU)")
    ax.set_title("(a) computation time per path")
    ax.legend(fontsize=7)
    ax = axes[1]
    totals = [r["cost"] for r in rows]
    sel = result["summary"]["selected"]
    if max(totals) > 100 * max(min(totals), 1e-9):
        # costs span orders of magnitude (the accuracy term is exponential): total per path, log scale
        ax.bar(x, totals, color=["C3" if r["spec"] == sel else "C0" for r in rows])
        ax.set_yscale("log")
    else:
        bottom = [0.0] * len(rows)
        for term in TERMS:
            vals = [r.get(term) or 0.0 for r in rows]
            if any(vals):
                ax.bar(x, vals, bottom=bottom, label=term.replace("_term", ""))
                bottom = [b + v for b, v in zip(bottom, vals)]
        ax.legend(fontsize=7)
    for i, r in enumerate(rows):
        ax.text(i, totals[i], f"{totals[i]:.3g}" + (" *" if r["spec"] == sel else ""), ha="center", va="bottom",
                fontsize=7)
    ax.set_xticks(x, labels, fontsize=8)
    ax.set_ylabel("F(p), eq. (1)")
    ax.set_title("(b) cost per path (* = selected)")
    ax = axes[2]
    st = result["strategies"]
    names = list(st)
    ax.bar([i - 0.2 for i in range(len(names))], [st[n]["train_sample_steps"] / 1e3 for n in names], 0.4,
           label="training sample-steps (k)")
    ax2 = ax.twinx()
    ax2.bar([i + 0.2 for i in range(len(names))], [st[n]["wall_seconds"] for n in names], 0.4, color="C1",
            label="wall s")
    picks = {n: next((short(r) for r in rows if r["spec"] == st[n]["selected"]), "-") for n in names}
    ax.set_xticks(range(len(names)), [f"{n}\npick: {picks[n]}" for n in names], fontsize=8)
    ax.set_ylabel("training sample-steps (thousands)")
    ax2.set_ylabel("wall seconds")
    ax.set_title("(c) exhaustive vs fast search")
    fig.tight_layout()
    pc.save_figure(fig, target)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    pc.add_arguments(parser)
    args = parser.parse_args(argv)
    return run(pc.options_from(args))


if __name__ == "__main__":
    main()
