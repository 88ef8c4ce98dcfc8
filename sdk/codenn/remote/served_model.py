"""What a codenn server serves: the contract between the OIP app and the models behind it.

Every served model offers inference (:class:`ServedModel`); a host's segments also offer split
training and durable checkpoints (:class:`TrainableModel`). The local provider's server serves a
:class:`~codenn.remote.local_model.CoordinatedModel`, which is only a ServedModel, so nothing has
to stub training methods that raise: the app answers a training call to it with 404. Every
inference answers a :class:`Served`, so the server never guesses how many values a model returns.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch

from codenn.errors import BoundaryMismatchError
from codenn.model.blocks import BoundarySpec

OIP_DATATYPES: dict[str, tuple[str, torch.dtype]] = {
    "FP32": ("<f4", torch.float32),
    "FP16": ("<f2", torch.float16),
    "FP64": ("<f8", torch.float64),
    "INT8": ("i1", torch.int8),
    "INT16": ("<i2", torch.int16),
    "INT32": ("<i4", torch.int32),
    "INT64": ("<i8", torch.int64),
    "UINT8": ("u1", torch.uint8),
    "BOOL": ("?", torch.bool),
}
"""Open Inference Protocol datatype -> (numpy little-endian dtype, torch dtype)."""
_BY_TORCH = {t: name for name, (_, t) in OIP_DATATYPES.items()}


def oip_datatype(dtype: torch.dtype | str) -> str:
    """The OIP datatype name of a torch dtype (or a BoundarySpec dtype string such as 'float32')."""
    t = getattr(torch, dtype, None) if isinstance(dtype, str) else dtype
    if t not in _BY_TORCH:
        raise BoundaryMismatchError(f"dtype {dtype} has no Open Inference Protocol datatype; supported: "
                                    f"{sorted(OIP_DATATYPES)}")
    return _BY_TORCH[t]


def tensor_metadata(name: str, spec: BoundarySpec) -> dict[str, Any]:
    """One input or output of OIP model metadata (batch dimension -1)."""
    return {"name": name, "datatype": oip_datatype(spec.dtype), "shape": [-1, *spec.shape]}


@dataclass(frozen=True)
class Served:
    """One inference: its output, the compute seconds it took on the server (the caller subtracts
    them from the round trip to measure T_cm) and extra response parameters (JSON values)."""

    output: torch.Tensor
    seconds: float
    parameters: Mapping[str, Any] = field(default_factory=dict)


@runtime_checkable
class ServedModel(Protocol):
    """A model the OIP app can serve for inference."""

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

    def metadata(self) -> dict[str, Any]:
        """OIP model metadata; never parameters."""
        ...

    def serve(self, x: torch.Tensor) -> Served:
        """One inference on a batch."""
        ...


@runtime_checkable
class TrainableModel(ServedModel, Protocol):
    """A served model whose links can also be split-trained by the providers allowed to, and whose
    training survives a restart."""

    @property
    def steps_trained(self) -> int:
        """Split-training steps taken, all providers together (a checkpoint is written when > 0)."""
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
