"""Blocks, boundaries and their public specs.

Boundary *k* is the output of block *k*; the service's input is the boundary before block 0.
A :class:`BoundarySpec` is what a provider may publish about a boundary: shape, dtype, layout,
channels, reduction (stride) and, for token sequences, the patch grid and the number of prefix
tokens. It never carries parameters.

Layouts (shapes exclude the batch):

- ``"NCHW"``: feature maps (C, H, W), as CNNs emit them;
- ``"NHWC"``: channel-last maps (H, W, C), as timm Swin, MambaOut and others emit them;
- ``"NLC"``: token sequences (N, C); ``grid`` (gh, gw) is the patch grid and ``prefix_tokens``
  the class / distillation / register tokens in front of it, so N = prefix_tokens + gh * gw;
- ``"NC"``: flat features (F,).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from codenn.errors import BoundaryMismatchError, ConfigError

LAYOUTS = ("NCHW", "NHWC", "NLC", "NC")
MAP_LAYOUTS = ("NCHW", "NHWC")
_RANK = {"NCHW": 3, "NHWC": 3, "NLC": 2, "NC": 1}
# Prefix-token counts tried, in order, when a token boundary's grid must be inferred:
# none, class, class + distillation, 4 registers, class + 4 registers.
PREFIX_GUESSES = (0, 1, 2, 4, 5)


def _square_grid(tokens: int) -> tuple[int, int] | None:
    side = math.isqrt(tokens) if tokens > 0 else 0
    return (side, side) if side > 0 and side * side == tokens else None


def infer_grid(length: int, prefix_tokens: int | None = None) -> tuple[tuple[int, int], int] | None:
    """(grid, prefix) for a token sequence of ``length`` tokens with a square patch grid.

    With ``prefix_tokens`` given only that count is tried, otherwise :data:`PREFIX_GUESSES` in
    order. None when no square grid fits (a text sequence, a non-square image).
    """
    for prefix in (prefix_tokens,) if prefix_tokens is not None else PREFIX_GUESSES:
        grid = _square_grid(length - prefix)
        if grid is not None:
            return grid, prefix
    return None


@dataclass(frozen=True)
class BoundarySpec:
    """Public description of the tensor at one boundary (shapes exclude the batch dimension).

    For ``layout="NLC"``, ``grid=None`` asks for inference: a square grid after ``prefix_tokens``
    tokens, or after 0, 1, 2, 4 or 5 tokens when ``prefix_tokens`` is 0 (see :func:`infer_grid`);
    the grid stays None when none fits. Other layouts take no grid and no prefix tokens.
    """

    shape: tuple[int, ...]
    dtype: str = "float32"
    layout: str = "NCHW"
    name: str = ""
    reduction: int = 1
    grid: tuple[int, int] | None = None
    prefix_tokens: int = 0

    def __post_init__(self) -> None:
        shape = tuple(int(s) for s in self.shape)
        object.__setattr__(self, "shape", shape)
        if self.layout not in LAYOUTS:
            raise ConfigError(
                f"BoundarySpec {self.name!r}: layout {self.layout!r} is not one of {LAYOUTS} "
                "(maps NCHW / NHWC, tokens NLC, flat NC)"
            )
        expected_rank = _RANK[self.layout]
        if len(shape) != expected_rank or any(s <= 0 for s in shape):
            raise ConfigError(
                f"BoundarySpec {self.name!r}: shape {shape} does not fit layout {self.layout} "
                f"(expected {expected_rank} positive sizes, batch excluded)"
            )
        if self.layout == "NLC":
            self._settle_tokens()
        elif self.grid is not None or self.prefix_tokens:
            raise ConfigError(
                f"BoundarySpec {self.name!r}: grid={self.grid} / prefix_tokens={self.prefix_tokens} "
                f"given for layout {self.layout}; only token boundaries (NLC) have them"
            )

    def _settle_tokens(self) -> None:
        """Check or infer the patch grid and prefix count of a token boundary."""
        length, prefix = self.shape[0], int(self.prefix_tokens)
        if prefix < 0 or prefix > length:
            raise ConfigError(
                f"BoundarySpec {self.name!r}: prefix_tokens={prefix} is invalid for {length} tokens; "
                f"expected 0..{length}"
            )
        if self.grid is None:
            found = infer_grid(length, prefix or None)
            grid, prefix = found if found is not None else (None, prefix)
        else:
            grid = (int(self.grid[0]), int(self.grid[1]))
            if min(grid) <= 0 or prefix + grid[0] * grid[1] != length:
                raise ConfigError(
                    f"BoundarySpec {self.name!r}: grid {grid} with {prefix} prefix token(s) gives "
                    f"{prefix + grid[0] * grid[1]} tokens, the shape has {length}; expected "
                    "prefix_tokens + gh * gw == N"
                )
        object.__setattr__(self, "grid", grid)
        object.__setattr__(self, "prefix_tokens", prefix)

    @property
    def channels(self) -> int:
        return self.shape[0] if self.layout in ("NCHW", "NC") else self.shape[-1]

    @property
    def spatial(self) -> tuple[int, ...]:
        """(H, W) for maps, (N,) for tokens, () for flat features."""
        if self.layout == "NCHW":
            return self.shape[1:]
        if self.layout == "NHWC":
            return self.shape[:2]
        if self.layout == "NLC":
            return self.shape[:1]
        return ()

    @property
    def hw(self) -> tuple[int, int] | None:
        """The 2-d grid: (H, W) of a map, the patch grid of tokens, None for flat or grid-less tokens."""
        if self.layout in MAP_LAYOUTS:
            return (self.spatial[0], self.spatial[1])
        return self.grid

    @property
    def kind(self) -> str:
        """'map', 'tokens' or 'flat'."""
        return {"NCHW": "map", "NHWC": "map", "NLC": "tokens", "NC": "flat"}[self.layout]

    def summary(self) -> str:
        """One line for tables: layout, shape and, for tokens, grid and prefix tokens."""
        text = f"{self.layout} {self.shape}"
        if self.layout == "NLC":
            grid = "x".join(map(str, self.grid)) if self.grid else "none"
            text += f" grid {grid} prefix {self.prefix_tokens}"
        return text

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
    def of(
        cls,
        tensor: torch.Tensor,
        *,
        name: str = "",
        input_size: int | None = None,
        layout: str | None = None,
        grid: tuple[int, int] | None = None,
        prefix_tokens: int | None = None,
    ) -> BoundarySpec:
        """Describe a batched tensor (dim 0 is the batch).

        A 4-d tensor is NCHW unless ``layout="NHWC"``; a 3-d tensor is tokens, its ``grid`` and
        ``prefix_tokens`` inferred (square grid) when not given; a 2-d tensor is flat.
        ``input_size`` (the input's width) gives the reduction of maps and gridded tokens.
        """
        by_rank = {4: MAP_LAYOUTS, 3: ("NLC",), 2: ("NC",)}
        valid = by_rank.get(tensor.dim())
        if valid is None:
            raise BoundaryMismatchError(
                f"boundary {name!r} carries a tensor of shape {tuple(tensor.shape)}; codenn supports "
                "maps NCHW / NHWC (4-d), tokens NLC (3-d) and flat NC (2-d) boundaries"
            )
        chosen = layout or valid[0]
        if chosen not in valid:
            raise ConfigError(
                f"boundary {name!r}: layout {chosen!r} does not fit a {tensor.dim()}-d tensor "
                f"{tuple(tensor.shape)}; valid layouts for it: {', '.join(valid)}"
            )
        spec = cls(
            shape=tuple(tensor.shape[1:]),
            dtype=str(tensor.dtype).removeprefix("torch."),
            layout=chosen,
            name=name,
            grid=grid if chosen == "NLC" else None,
            prefix_tokens=(prefix_tokens or 0) if chosen == "NLC" else 0,
        )
        width = spec.hw[1] if spec.hw else None
        if input_size and width and chosen != "NC":
            object.__setattr__(spec, "reduction", max(1, round(input_size / width)))
        return spec

    def check(self, tensor: torch.Tensor, what: str = "tensor") -> None:
        """Raise if a batched tensor does not match this spec."""
        got = tuple(tensor.shape[1:])
        if got != self.shape or str(tensor.dtype).removeprefix("torch.") != self.dtype:
            raise BoundaryMismatchError(
                f"{what} has shape {got} and dtype {tensor.dtype}; boundary {self.name!r} expects "
                f"shape {self.shape} (batch excluded) and dtype {self.dtype}"
            )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready; ``grid`` and ``prefix_tokens`` appear for token boundaries only."""
        d = asdict(self)
        d["shape"] = list(self.shape)
        d["channels"] = self.channels
        if self.layout == "NLC":
            d["grid"] = list(self.grid) if self.grid else None
        else:
            del d["grid"], d["prefix_tokens"]
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> BoundarySpec:
        """Read :meth:`to_dict`'s form, and older cards without grid / prefix tokens."""
        grid = d.get("grid")
        return cls(
            shape=tuple(d["shape"]),
            dtype=d.get("dtype", "float32"),
            layout=d.get("layout", "NCHW"),
            name=d.get("name", ""),
            reduction=int(d.get("reduction", 1)),
            grid=(int(grid[0]), int(grid[1])) if grid else None,
            prefix_tokens=int(d.get("prefix_tokens", 0)),
        )

    def example(self, batch: int = 2, *, seed: int = 0) -> torch.Tensor:
        """A random (never all-zero) tensor of this spec, for checks and probes."""
        g = torch.Generator().manual_seed(seed)
        return torch.randn((batch, *self.shape), generator=g, dtype=getattr(torch, self.dtype))


def _aspect_fits(hw: tuple[int, int], input_hw: tuple[int, int]) -> bool:
    """Whether a map of size ``hw`` can come from an input of ``input_hw`` (similar strides)."""
    rh, rw = input_hw[0] / hw[0], input_hw[1] / hw[1]
    return max(rh, rw) / min(rh, rw) <= 1.5


@dataclass(frozen=True)
class LayoutHints:
    """What a model says about its boundaries; the service probe applies a hint where it fits.

    ``maps`` is the layout of a 4-d boundary whose shape cannot tell NCHW from NHWC (timm's
    ``output_fmt``); ``grid`` and ``prefix_tokens`` come from timm ViTs (``patch_embed.grid_size``,
    ``num_prefix_tokens``) and are used for token boundaries of exactly that many tokens;
    ``input_hw`` is the input's (H, W), against which a 4-d shape is read as NCHW or NHWC.
    """

    maps: str = "NCHW"
    grid: tuple[int, int] | None = None
    prefix_tokens: int | None = None
    input_hw: tuple[int, int] | None = None

    @classmethod
    def of_model(cls, model: nn.Module, input_spec: BoundarySpec | None = None) -> LayoutHints:
        """Read the hints a (timm) model exposes; absent attributes give no hint."""
        fmt = getattr(model, "output_fmt", None)
        fmt = getattr(fmt, "value", fmt)  # timm's Format is a str enum
        grid = getattr(getattr(model, "patch_embed", None), "grid_size", None)
        prefix = getattr(model, "num_prefix_tokens", None)
        return cls(
            maps="NHWC" if fmt == "NHWC" else "NCHW",
            grid=(int(grid[0]), int(grid[1])) if isinstance(grid, (tuple, list)) and len(grid) == 2 else None,
            prefix_tokens=prefix if isinstance(prefix, int) and not isinstance(prefix, bool) else None,
            input_hw=input_spec.hw if input_spec is not None and input_spec.layout in MAP_LAYOUTS else None,
        )

    def map_layout(self, shape: tuple[int, ...]) -> str:
        """NCHW or NHWC for a map of ``shape`` (batch excluded): the shape decides when only one
        reading has the input's aspect, the ``maps`` hint otherwise."""
        if self.input_hw is not None:
            nchw = _aspect_fits((shape[1], shape[2]), self.input_hw)
            nhwc = _aspect_fits((shape[0], shape[1]), self.input_hw)
            if nchw != nhwc:
                return "NCHW" if nchw else "NHWC"
        return self.maps

    def spec(self, tensor: torch.Tensor, *, name: str = "") -> BoundarySpec:
        """The :class:`BoundarySpec` of a batched boundary tensor, hints applied where they fit."""
        size = self.input_hw[1] if self.input_hw else None
        if tensor.dim() == 4:
            return BoundarySpec.of(tensor, name=name, input_size=size,
                                   layout=self.map_layout(tuple(tensor.shape[1:])))
        if tensor.dim() == 3:
            length, prefix = tensor.shape[1], self.prefix_tokens
            if self.grid and prefix is not None and prefix + self.grid[0] * self.grid[1] == length:
                return BoundarySpec.of(tensor, name=name, input_size=size, grid=self.grid, prefix_tokens=prefix)
            if prefix and prefix < length and infer_grid(length, prefix) is not None:
                return BoundarySpec.of(tensor, name=name, input_size=size, prefix_tokens=prefix)
        return BoundarySpec.of(tensor, name=name, input_size=size)


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
