"""Shared helpers for unit-based splitters of torchvision CNNs."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn


def head(*modules: nn.Module) -> nn.Sequential:
    """The classifier head as one unit: pooling, flatten, classifier."""
    return nn.Sequential(*modules)


def stage_cuts(downsamples: Sequence[bool], head_cut: bool = True) -> list[int]:
    """Preferred cut positions for a chain of units.

    ``downsamples[i]`` says whether unit ``i`` lowers the spatial resolution. Preferred cuts are,
    in order: before the head (the last unit), then every stage end (a unit followed by a
    downsampling unit), deepest first, so few blocks still separate the coarse stages.
    """
    n = len(downsamples)
    cuts = [n - 2] if head_cut and n >= 2 else []
    ends = [i - 1 for i in range(1, n) if downsamples[i]]
    cuts += [c for c in sorted(ends, reverse=True) if c not in cuts]
    return cuts
