"""Shared helpers for unit-based splitters of torchvision CNNs (stage cuts: codenn.splitters.stage_cuts)."""

from __future__ import annotations

from torch import nn

__all__ = ["head"]


def head(*modules: nn.Module) -> nn.Sequential:
    """The classifier head as one unit: pooling, flatten, classifier."""
    return nn.Sequential(*modules)
