"""The search's picture: accuracy vs local compute for every trained path (``pareto.png``)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path as FsPath

from codenn.fileio import atomic_file
from codenn.paths.rows import PathRow, pareto_front


def plot_pareto(rows: Sequence[PathRow], original: PathRow, selected: PathRow | None, target: FsPath) -> None:
    """Accuracy vs local compute, coloured by latency; the front, the pick and the original marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    trained = [r for r in rows if r.status == "trained"]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    if trained:
        sc = ax.scatter([r.local_gflops for r in trained], [_number(r.val_accuracy) for r in trained],
                        c=[r.latency_us / 1e3 for r in trained], cmap="viridis", s=30, label="trained paths")
        fig.colorbar(sc, ax=ax, label="latency (ms)")
        front = sorted((r for r in trained if r.spec in pareto_front(trained)), key=lambda r: r.local_gflops)
        ax.plot([r.local_gflops for r in front], [_number(r.val_accuracy) for r in front], "k--", lw=1, label="Pareto front")
    ax.scatter([original.local_gflops], [_number(original.val_accuracy)], marker="*", s=200, c="red", label="original model")
    if selected is not None:
        ax.scatter([selected.local_gflops], [_number(selected.val_accuracy)], marker="o", s=160, facecolors="none",
                   edgecolors="red", lw=2, label="selected")
    ax.set_xlabel("local compute (GFLOPs per sample)")
    ax.set_ylabel("validation accuracy")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    atomic_file(target, lambda tmp: fig.savefig(tmp, dpi=120, format="png"))
    plt.close(fig)


def _number(value: float | None) -> float:
    """None plotted as NaN (matplotlib leaves the point out)."""
    return math.nan if value is None else value
