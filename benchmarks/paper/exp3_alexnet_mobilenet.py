"""Experiment 3 (paper Figs. 5c and 5d): AlexNet local, MobileNetV2 host, ``hout`` swept.

Question: can a host of a *different* architecture win back a skip path's accuracy, and does
accuracy grow with the number of host blocks? Paths ``lout=0, hin=1, lin=5`` with ``hout``
swept 2..5 through the default scenario's MobileNetV2 host (letters) and a random-weights
MobileNetV2, plus the skip path ``lout=0 -> lin=5`` and "just links" (host blocks removed). At
32x32 the host's blocks 1..5 output 24x8x8, 32x4x4, 64x2x2, 96x2x2 and 1280x1x1; local block 5
(fc6) takes conv5's 256x2x2.

    python benchmarks/paper/exp3_alexnet_mobilenet.py [--link-epochs 6] [--limit N]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path as FsPath
from typing import Any

sys.path.insert(0, str(FsPath(__file__).resolve().parent))

import paper_common as pc  # noqa: E402

NAME = "exp3_alexnet_mobilenet"
HOST = "mobilenet_letters"
RANDOM_HOST = "mobilenet_random"
PAPER = {"best_accuracy": 0.845, "monotonic_in_hout": True, "local_compute_reduction": 0.75,
         "accuracy_drop": 0.02, "local_accuracy": 0.867}
GOALS = {"rises_with_hout": True}  # issue 13: accuracy rises with hout through the MobileNetV2 host


def run(opts: pc.Options, houts: Sequence[int] = (2, 3, 4, 5), log: pc.Log = print) -> dict[str, Any]:
    """Train the MobileNet-host sweep and its controls; return the JSON-able result."""
    t0 = time.perf_counter()
    lab = pc.make_lab(opts, (HOST, RANDOM_HOST), log=log)
    original = pc.original_row(lab)
    log(f"{NAME}: original local accuracy {original['test_accuracy']:.3f}")
    skip = pc.train_path(lab, pc.skip_spec(0, 5), label="skip lout=0 lin=5", log=log)
    cross = [{**pc.train_path(lab, pc.cross_spec(h, k), label=f"{h} hout={k}", log=log), "host": h}
             for h in (HOST, RANDOM_HOST) for k in houts]
    jl = pc.train_path(lab, pc.skip_spec(0, 5), links=[pc.just_links(lab, HOST)],
                       label="just links (host blocks removed)", log=log)
    lab.verify_frozen()
    la, lf = original["test_accuracy"], original["local_gflops"]
    trained = sorted((r for r in cross if r["host"] == HOST), key=lambda r: r["hout"])
    rand = sorted((r for r in cross if r["host"] == RANDOM_HOST), key=lambda r: r["hout"])
    accs = [r["test_accuracy"] for r in trained]
    best = max(trained, key=lambda r: r["test_accuracy"])
    summary = {
        "original": la, "skip_0_5": skip["test_accuracy"], "just_links": jl["test_accuracy"],
        "by_hout": {r["hout"]: r["test_accuracy"] for r in trained},
        "random_by_hout": {r["hout"]: r["test_accuracy"] for r in rand},
        "monotonic": all(b >= a for a, b in zip(accs, accs[1:])),
        "best": {"hout": best["hout"], "test_accuracy": best["test_accuracy"],
                 "accuracy_drop": la - best["test_accuracy"],
                 "local_gflops_reduction": 1 - best["local_gflops"] / lf,
                 "local_params_reduction": 1 - best["local_params"] / original["local_params"],
                 "skipped_local_params_share": best["skipped_params"] / original["local_params"],
                 "recovered_vs_skip": pc.recovered(best["test_accuracy"], skip["test_accuracy"], la)},
        "added_host_below_skipped": sum(r["host_params"] < r["skipped_params"] for r in trained),
        "rises": accs[-1] > accs[0], "rises_by_points": 100 * (accs[-1] - accs[0]),
        "steps_up": sum(b > a for a, b in zip(accs, accs[1:])), "steps": len(accs) - 1,
        "random_monotonic": all(b["test_accuracy"] >= a["test_accuracy"] for a, b in zip(rand, rand[1:])),
    }
    result = {"experiment": NAME, "paper": PAPER, "houts": list(houts), "host": HOST, "random_host": RANDOM_HOST,
              "base_models": pc.base_models(lab), "original": original, "skip": skip, "cross": cross,
              "just_links": jl, "goals": GOALS, "summary": summary}
    return pc.finish(NAME, result, opts, t0, plot, log=log)


def plot(result: dict[str, Any], target: FsPath) -> None:
    """Fig. 5c (accuracy vs hout, MobileNet host) and Fig. 5d (skipped vs added host parameters)."""
    plt = pc.pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    s = result["summary"]
    ax = axes[0]
    for host, style in ((result["host"], "o-"), (result["random_host"], "s--")):
        rows = sorted((r for r in result["cross"] if r["host"] == host), key=lambda r: r["hout"])
        ax.plot([r["hout"] for r in rows], [r["test_accuracy"] for r in rows], style, label=f"host {host}")
    ax.axhline(s["original"], color="k", ls="--", lw=1, label="original local")
    ax.axhline(s["skip_0_5"], color="r", ls=":", lw=1.5, label="skip lout=0 lin=5")
    ax.axhline(s["just_links"], color="gray", ls="-.", lw=1, label="just links")
    ax.set_xticks(result["houts"])
    ax.set_xlabel("hout (lout=0, hin=1, lin=5)")
    ax.set_ylabel("test accuracy (digits)")
    ax.set_title("(c) MobileNetV2 host")
    ax.legend(fontsize=7)
    ax = axes[1]
    rows = sorted((r for r in result["cross"] if r["host"] == result["host"]), key=lambda r: r["hout"])
    x = list(range(len(rows)))
    ax.bar([i - 0.2 for i in x], [r["skipped_params"] / 1e6 for r in rows], 0.4, color="gray", label="skipped local")
    ax.bar([i + 0.2 for i in x], [r["host_block_params"] / 1e6 for r in rows], 0.4, label="host blocks used")
    ax.bar([i + 0.2 for i in x], [(r["host_params"] - r["host_block_params"]) / 1e6 for r in rows], 0.4,
           bottom=[r["host_block_params"] / 1e6 for r in rows], label="links (on host)")
    ax.set_xticks(x, [f"hout={r['hout']}" for r in rows])
    ax.set_ylabel("millions of parameters")
    ax.set_title("(d) skipped local vs added host parameters")
    ax.legend(fontsize=7)
    fig.tight_layout()
    pc.save_figure(fig, target)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    pc.add_arguments(parser)
    args = parser.parse_args(argv)
    return run(pc.options_from(args))


if __name__ == "__main__":
    main()
