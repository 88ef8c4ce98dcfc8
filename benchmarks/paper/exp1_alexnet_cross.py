"""Experiment 1 (paper Figs. 4 and 6): AlexNet local, AlexNet hosts, cross-connections.

Question: does sending activations through another provider's *trained* AlexNet win back the
accuracy a skip path loses? Paths ``lout=0, hin=1, lin=5`` with ``hout`` swept, through two trained
CIFAR-sized AlexNet hosts (letters, whose strokes transfer to the local digits; shapes, an unrelated
control task) and a random-weights host; baselines: the original model, the skip path
``lout=0 -> lin=5``, and "just links" (the cross path's links with the host blocks removed). The skip
path and the letters host's paths are trained twice, with least-squares and with random link
initialisation. Fig. 6's link sizes: normal (one 3x3 conv) / reduced-25 / reduced-5 links on ``hout=4``.

    python benchmarks/paper/exp1_alexnet_cross.py [--link-epochs 6] [--limit N]
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

NAME = "exp1_alexnet_cross"
TRAINED_HOSTS = ("alexnet_letters", "alexnet_shapes")  # transferable task first, then the control
RANDOM_HOST = "alexnet_random"
PAPER = {
    "local_accuracy": 0.867, "skip_0_5": 0.61, "random_host_hout2": 0.713,
    "food101_hout2": 0.802, "imagenet_hout2": 0.80, "hout4": 0.833, "hout5": 0.824,
    "recovered_vs_random": 0.58, "recovered_vs_skip": 0.78, "skipped_params": 1.88e6,
    "link_sizes_hout4": {"normal": 0.827, "reduced25": 0.815, "reduced5": 0.738, "just_links": 0.588},
}
# Issue 13's goals: at hout=2 the transferable trained host beats the random-weights host by at least
# 5 points (paper: 80.2 / 80.0 vs 71.3) and wins back at least 58 % of the skip path's drop.
GOALS = {"trained_beats_random": 0.05, "recovered_vs_skip": 0.58}


def run(opts: pc.Options, houts: Sequence[int] = (2, 3, 4, 5), link_hout: int = 4,
        log: pc.Log = print) -> dict[str, Any]:
    """Train every path of Figs. 4 and 6 and return the JSON-able result."""
    t0 = time.perf_counter()
    hosts = (*TRAINED_HOSTS, RANDOM_HOST)
    lab = pc.make_lab(opts, hosts, log=log)
    original = pc.original_row(lab)
    log(f"{NAME}: original local accuracy {original['test_accuracy']:.3f}")
    skip = pc.train_path(lab, pc.skip_spec(0, 5), label="skip lout=0 lin=5", log=log)
    cross = [pc.train_path(lab, pc.cross_spec(h, hout), label=f"{h} hout={hout}", log=log)
             for h in hosts for hout in houts]
    # Least squares vs random initialisation of the links (same budget): the skip path and the
    # transferable host's cross paths once more, links starting from random weights.
    rnd_skip = pc.train_path(lab, pc.skip_spec(0, 5), ls_init=False, label="skip lout=0 lin=5 random-init", log=log)
    rnd_cross = [pc.train_path(lab, pc.cross_spec(TRAINED_HOSTS[0], hout), ls_init=False,
                               label=f"{TRAINED_HOSTS[0]} hout={hout} random-init", log=log) for hout in houts]
    # Fig. 6 compares one-conv ("normal") links with two-conv reduced ones, so its normal links are
    # conv3x3 everywhere (the sweep's "paper" links are bottlenecks where sizes match).
    sizes = [{**pc.train_path(lab, pc.cross_spec(TRAINED_HOSTS[0], link_hout), link=link,
                              label=f"{TRAINED_HOSTS[0]} hout={link_hout} {link}", log=log), "link_kind": kind}
             for kind, link in (("normal", "conv3x3"), ("reduced25", "reduced25"), ("reduced5", "reduced5"))]
    jl = pc.train_path(lab, pc.skip_spec(0, 5), links=[pc.just_links(lab, TRAINED_HOSTS[0])],
                       label="just links (host blocks removed)", log=log)
    lab.verify_frozen()
    la = original["test_accuracy"]
    by = {(r["label"].split(" hout=")[0], r["hout"]): r for r in cross}
    summary: dict[str, Any] = {"original": la, "skip_0_5": skip["test_accuracy"], "just_links": jl["test_accuracy"]}
    for h in hosts:
        accs = [by[(h, k)]["test_accuracy"] for k in houts]
        summary[h] = {"by_hout": dict(zip(houts, accs)), "best_hout": houts[accs.index(max(accs))],
                      "best": max(accs), "monotonic": all(b >= a for a, b in zip(accs, accs[1:]))}
    ref = 2 if 2 in houts else houts[0]
    summary["reference_hout"] = ref
    for h in TRAINED_HOSTS:
        acc = by[(h, ref)]["test_accuracy"]
        summary[h]["recovered_vs_random"] = pc.recovered(acc, by[(RANDOM_HOST, ref)]["test_accuracy"], la)
        summary[h]["recovered_vs_skip"] = pc.recovered(acc, skip["test_accuracy"], la)
        summary[h]["best_recovered_vs_skip"] = pc.recovered(summary[h]["best"], skip["test_accuracy"], la)
    ls_rows = [(skip, rnd_skip), *((by[(TRAINED_HOSTS[0], r["hout"])], r) for r in rnd_cross)]
    summary["random_init"] = {
        "host": TRAINED_HOSTS[0], "skip_0_5": rnd_skip["test_accuracy"],
        "by_hout": {r["hout"]: r["test_accuracy"] for r in rnd_cross},
        "mean_change": sum(a["test_accuracy"] - b["test_accuracy"] for a, b in ls_rows) / len(ls_rows),
        "ls_wins": sum(a["test_accuracy"] > b["test_accuracy"] for a, b in ls_rows),
        "ties": sum(a["test_accuracy"] == b["test_accuracy"] for a, b in ls_rows), "paths": len(ls_rows),
    }
    transfer, rand_ref = by[(TRAINED_HOSTS[0], ref)]["test_accuracy"], by[(RANDOM_HOST, ref)]["test_accuracy"]
    summary["goals"] = {  # issue 13's goals for this scenario
        "trained_beats_random_points": 100 * (transfer - rand_ref),
        "trained_beats_random_met": transfer - rand_ref >= GOALS["trained_beats_random"] - 1e-9,
        "recovered_vs_skip": summary[TRAINED_HOSTS[0]]["recovered_vs_skip"],
        "recovered_met": (summary[TRAINED_HOSTS[0]]["recovered_vs_skip"] or -1.0) >= GOALS["recovered_vs_skip"],
    }
    summary["link_sizes"] = {
        "hout": link_hout,
        **{name: {"test_accuracy": r["test_accuracy"], "link_params": r["link_params"]}
           for name, r in (*((r["link_kind"], r) for r in sizes), ("just_links", jl))},
    }
    result = {"experiment": NAME, "paper": PAPER, "houts": list(houts), "hosts": list(hosts),
              "base_models": pc.base_models(lab), "original": original, "skip": skip, "cross": cross,
              "random_init": {"skip": rnd_skip, "cross": rnd_cross}, "link_sizes": sizes, "just_links": jl,
              "goals": GOALS, "summary": summary}
    return pc.finish(NAME, result, opts, t0, plot, log=log)


def plot(result: dict[str, Any], target: FsPath) -> None:
    """Fig. 4a (accuracy per hout per host), Fig. 4b (link vs skipped params), Fig. 6 (link sizes)."""
    plt = pc.pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.2))
    ax = axes[0]
    houts = result["houts"]
    for h in result["hosts"]:
        rows = sorted((r for r in result["cross"] if r["label"].startswith(h + " ")), key=lambda r: r["hout"])
        ax.plot([r["hout"] for r in rows], [r["test_accuracy"] for r in rows], "o-", label=f"host {h}")
    if "random_init" in result:
        rows = sorted(result["random_init"]["cross"], key=lambda r: r["hout"])
        ax.plot([r["hout"] for r in rows], [r["test_accuracy"] for r in rows], "x:", color="C0",
                label=f"host {result['hosts'][0]}, random-init links")
    s = result["summary"]
    ax.axhline(s["original"], color="k", ls="--", lw=1, label="original local")
    ax.axhline(s["skip_0_5"], color="r", ls=":", lw=1.5, label="skip lout=0 lin=5")
    ax.axhline(s["just_links"], color="gray", ls="-.", lw=1, label="just links")
    ax.set_xticks(houts)
    ax.set_xlabel("hout (lout=0, hin=1, lin=5)")
    ax.set_ylabel("test accuracy (digits)")
    ax.set_title("(a) cross paths, AlexNet hosts")
    ax.legend(fontsize=7)
    ax = axes[1]
    rows = sorted((r for r in result["cross"] if r["label"].startswith(result["hosts"][0] + " ")), key=lambda r: r["hout"])
    x = range(len(rows))
    ax.bar([i - 0.2 for i in x], [r["link_params"] / 1e6 for r in rows], 0.4, label="link params (on host)")
    ax.bar([i + 0.2 for i in x], [r["skipped_params"] / 1e6 for r in rows], 0.4, label="skipped local params")
    ax.set_xticks(list(x), [f"hout={r['hout']}" for r in rows])
    ax.set_ylabel("millions of parameters")
    ax.set_title("(b) links vs skipped local blocks")
    ax.legend(fontsize=7)
    ax = axes[2]
    ls = s["link_sizes"]
    names = ["normal", "reduced25", "reduced5", "just_links"]
    bars = ax.bar(names, [ls[n]["test_accuracy"] for n in names], color=["C0", "C1", "C2", "gray"])
    for b, n in zip(bars, names):
        ax.text(b.get_x() + b.get_width() / 2, b.get_height(), f"{ls[n]['link_params'] / 1e3:.0f}k",
                ha="center", va="bottom", fontsize=7)
    ax.set_ylabel("test accuracy")
    ax.set_title(f"(c) link size, hout={ls['hout']} (labels: link params)")
    fig.tight_layout()
    pc.save_figure(fig, target)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    pc.add_arguments(parser)
    args = parser.parse_args(argv)
    return run(pc.options_from(args))


if __name__ == "__main__":
    main()
