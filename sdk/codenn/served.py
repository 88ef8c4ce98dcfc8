"""What a codenn server serves: the contract between the OIP app and the models behind it.

A host serves :class:`~codenn_adapters.host_segment.HostSegment` objects, the local provider's
server one :class:`~codenn_adapters.local_server.CoordinatedModel`; the app
(:func:`codenn_adapters.host_server.create_app`) and the in-process transport need only what
:class:`ServedModel` lists. Every inference answers a :class:`Served`, so the server never
guesses how many values a model returns.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch

from codenn.blocks import BoundarySpec


@dataclass(frozen=True)
class Served:
    """One inference: its output, the compute seconds it took on the server (the caller subtracts
    them from the round trip to measure T_cm) and extra response parameters (JSON values)."""

    output: torch.Tensor
    seconds: float
    parameters: Mapping[str, Any] = field(default_factory=dict)


@runtime_checkable
class ServedModel(Protocol):
    """A model the OIP app can serve: inference always, split training where the model supports
    it (a model that does not raises from ``train_forward``/``train_backward``)."""

    @property
    def name(self) -> str:
        """The model name in OIP URLs."""
        ...

    @property
    def input_spec(self) -> BoundarySpec:
        ...

    @property
    def output_spec(self) -> BoundarySpec:
        ...

    @property
    def local_name(self) -> str:
        """The local service whose path this is (what a token file's ``local:SERVICE`` right matches)."""
        ...

    @property
    def steps_trained(self) -> int:
        """Split-training steps taken, all providers together (a checkpoint is written when > 0)."""
        ...

    def metadata(self) -> dict[str, Any]:
        """OIP model metadata; never parameters."""
        ...

    def serve(self, x: torch.Tensor) -> Served:
        """One inference on a batch."""
        ...

    def train_forward(self, x: torch.Tensor, step: int, provider: str = "default") -> tuple[torch.Tensor, float]:
        """Split training's forward half for ``provider``: (output, compute seconds)."""
        ...

    def train_backward(self, step: int, grad: torch.Tensor, provider: str = "default") -> float:
        """Split training's backward half for ``provider``: compute seconds."""
        ...

    def train_state(self, provider: str = "default") -> dict[str, Any]:
        """``provider``'s own split-training counters (``steps_trained``, ``last_step``, ``next_step``)."""
        ...

    def save_checkpoint(self, file: str | os.PathLike[str]) -> None:
        """Write what split training changed, durably."""
        ...

    def load_checkpoint(self, file: str | os.PathLike[str]) -> int:
        """Resume from :meth:`save_checkpoint`'s file; returns the steps it holds."""
        ...
