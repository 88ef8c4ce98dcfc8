"""Shared helpers for unit-based splitters of torchvision CNNs."""

from __future__ import annotations

from torch import nn

# The preferred-cut order of every built-in splitter; public (and documented) in the core since
# plugin authors need it too. Re-exported so ``codenn_plugins._units.stage_cuts`` keeps working.
from codenn.splitters import stage_cuts

__all__ = ["head", "stage_cuts"]


def head(*modules: nn.Module) -> nn.Sequential:
    """The classifier head as one unit: pooling, flatten, classifier."""
    return nn.Sequential(*modules)
