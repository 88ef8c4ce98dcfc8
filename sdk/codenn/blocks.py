"""Blocks, boundaries and their public specs.

Boundary *k* is the output of block *k*; the service's input is the boundary before block 0.
A :class:`BoundarySpec` is what a provider may publish about a boundary: shape, dtype, layout,
channels and reduction (stride). It never carries parameters.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from codenn.errors import BoundaryMismatchError, ConfigError

LAYOUTS = ("NCHW", "NC", "NLC")


@dataclass(frozen=True)
class BoundarySpec:
    """Public description of the tensor at one boundary (shapes exclude the batch dimension)."""

    shape: tuple[int, ...]
    dtype: str = "float32"
    layout: str = "NCHW"
    name: str = ""
    reduction: int = 1

    def __post_init__(self) -> None:
        shape = tuple(int(s) for s in self.shape)
        object.__setattr__(self, "shape", shape)
        if self.layout not in LAYOUTS:
            raise ConfigError(f"BoundarySpec layout {self.layout!r} is not one of {LAYOUTS}")
        expected_rank = {"NCHW": 3, "NC": 1, "NLC": 2}[self.layout]
        if len(shape) != expected_rank or any(s <= 0 for s in shape):
            raise ConfigError(
                f"BoundarySpec {self.name!r}: shape {shape} does not fit layout {self.layout} "
                f"(expected {expected_rank} positive sizes, batch excluded)"
            )

    @property
    def channels(self) -> int:
        return self.shape[-1] if self.layout == "NLC" else self.shape[0]

    @property
    def spatial(self) -> tuple[int, ...]:
        """(H, W) for NCHW, (L,) for tokens, () for flat features."""
        if self.layout == "NCHW":
            return self.shape[1:]
        if self.layout == "NLC":
            return self.shape[:1]
        return ()

    @property
    def numel(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n

    @property
    def nbytes(self) -> int:
        """Bytes of one sample at this boundary: what crosses the network per request."""
        return self.numel * torch.empty((), dtype=getattr(torch, self.dtype)).element_size()

    @classmethod
    def for_input(cls, shape: tuple[int, ...] | list[int]) -> BoundarySpec:
        """The spec of a model input: (C, H, W) images, (L, C) tokens or (F,) flat features."""
        layout = {3: "NCHW", 2: "NLC", 1: "NC"}.get(len(tuple(shape)))
        if layout is None:
            raise ConfigError(f"input shape {tuple(shape)} must be (C, H, W), (L, C) or (F,), batch excluded")
        return cls(tuple(shape), name="input", layout=layout)

    @classmethod
    def of(cls, tensor: torch.Tensor, *, name: str = "", input_size: int | None = None) -> BoundarySpec:
        """Describe a batched tensor (dim 0 is the batch)."""
        if tensor.dim() == 4:
            layout = "NCHW"
        elif tensor.dim() == 2:
            layout = "NC"
        elif tensor.dim() == 3:
            layout = "NLC"
        else:
            raise BoundaryMismatchError(
                f"boundary {name!r} carries a tensor of shape {tuple(tensor.shape)}; codenn supports "
                "NCHW (4-d), tokens NLC (3-d) and flat NC (2-d) boundaries"
            )
        reduction = 1
        if layout == "NCHW" and input_size:
            reduction = max(1, round(input_size / tensor.shape[-1]))
        return cls(
            shape=tuple(tensor.shape[1:]),
            dtype=str(tensor.dtype).removeprefix("torch."),
            layout=layout,
            name=name,
            reduction=reduction,
        )

    def check(self, tensor: torch.Tensor, what: str = "tensor") -> None:
        """Raise if a batched tensor does not match this spec."""
        got = tuple(tensor.shape[1:])
        if got != self.shape or str(tensor.dtype).removeprefix("torch.") != self.dtype:
            raise BoundaryMismatchError(
                f"{what} has shape {got} and dtype {tensor.dtype}; boundary {self.name!r} expects "
                f"shape {self.shape} (batch excluded) and dtype {self.dtype}"
            )

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["shape"] = list(self.shape)
        d["channels"] = self.channels
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> BoundarySpec:
        return cls(
            shape=tuple(d["shape"]),
            dtype=d.get("dtype", "float32"),
            layout=d.get("layout", "NCHW"),
            name=d.get("name", ""),
            reduction=int(d.get("reduction", 1)),
        )

    def example(self, batch: int = 2, *, seed: int = 0) -> torch.Tensor:
        """A random (never all-zero) tensor of this spec, for checks and probes."""
        g = torch.Generator().manual_seed(seed)
        return torch.randn((batch, *self.shape), generator=g, dtype=getattr(torch, self.dtype))


class FrozenBlock(nn.Module):
    """A block of a provider's network: always in eval mode, never trainable.

    ``train(True)`` on a path that contains it does not reach the wrapped module, so dropout
    stays off and batch-norm statistics never move.
    """

    def __init__(self, name: str, module: nn.Module) -> None:
        super().__init__()
        self.name = name
        self.module = module
        self.module.requires_grad_(False)
        self.module.eval()

    def train(self, mode: bool = True) -> FrozenBlock:
        self.training = False
        self.module.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y: torch.Tensor = self.module(x)
        return y

    def extra_repr(self) -> str:
        return f"name={self.name!r}"


def run_blocks(blocks: Iterable[nn.Module], x: torch.Tensor) -> torch.Tensor:
    for block in blocks:
        x = block(x)
    return x


def parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def count_flops(module: nn.Module, example: torch.Tensor) -> int:
    """FLOPs of one forward for one sample, as torch.utils.flop_counter counts them.

    One multiply-add counts as 2 FLOPs; element-wise ops (ReLU, pooling) count 0.
    """
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        module(example[:1])
    return int(counter.get_total_flops())
