"""Link factories between any two boundary layouts: maps (NCHW, NHWC), tokens (NLC), flat (NC).

Each link is a :class:`~codenn_plugins.links.ConvLink` whose ``resample`` is a parameter-free
:class:`LayoutAdapter` (permute / reshape, resampling of the map or patch grid, prefix tokens
carried or pooled) that puts the source into the working form of the destination; its ``body``
then maps channels without moving positions, so the body's output *is* the destination tensor
(up to a reshape for flat sources):

============  ==========================================  ==================================
destination   working form after the adapter              ``linear`` body
============  ==========================================  ==================================
NCHW          (B, Cin, H, W)                              Conv2d 1x1
NHWC          (B, H, W, Cin)                              Linear on the last dim
NLC           (B, N, Cin), prefix tokens in front         Linear on the last dim (SN-Net)
NC            (B, Cin * g * g) pooled, or the class token Linear
from NC       (B, F), any destination                     Linear to numel + Unflatten
============  ==========================================  ==================================

``linear`` is one linear map, so :func:`codenn.train.least_squares_init` fits it on the adapted
inputs (the adapter has no parameters). ``mlp`` puts ``width`` channels and an activation in the
middle of the same shape.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from codenn.errors import BoundaryMismatchError, ConfigError
from codenn.model.blocks import BoundarySpec
from codenn_plugins.link_parts import (
    POOL_MODES,
    ConvLink,
    default_width,
    describe_layout,
    link_options,
    spatial_resampler,
)

PREFIX_MODES = ("carry", "pool")
LAYOUT_RESAMPLE = ("auto", "pool", "interpolate")
MLP_ACTIVATIONS = ("gelu", "relu", "none")

_LAYOUT: dict[str, Any] = {"resample": "auto", "pool_mode": "max", "flat_pool": 1, "prefix": "carry"}
_MLP: dict[str, Any] = {**_LAYOUT, "width": None, "activation": "gelu"}
_CHOICES = {"resample": LAYOUT_RESAMPLE, "pool_mode": POOL_MODES, "prefix": PREFIX_MODES,
            "activation": MLP_ACTIVATIONS}


class LayoutAdapter(nn.Module):
    """Parameter-free: a source boundary to the working form of the destination (see module doc).

    Maps and gridded tokens become an NCHW grid, which ``resample`` (pooling or bilinear) brings
    to the destination grid. Prefix tokens: a token destination gets the source's first prefix
    tokens (``prefix="carry"``) and the mean of the patch tokens for the rest (all of them with
    ``"pool"``); a flat destination gets the class token (carry, when the source has one) or the
    average pool (``flat_pool`` x ``flat_pool``); a map destination drops them.
    """

    def __init__(self, src: BoundarySpec, dst: BoundarySpec, src_grid: tuple[int, int] | None,
                 resample: nn.Module, prefix: str, flat_pool: int) -> None:
        super().__init__()
        self.src_layout, self.dst_layout = src.layout, dst.layout
        self.src_prefix = src.prefix_tokens
        self.dst_prefix = dst.prefix_tokens
        self.src_grid = src_grid
        self.resample = resample
        self.carry = prefix == "carry"
        self.pool = nn.AdaptiveAvgPool2d(flat_pool) if flat_pool > 1 else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        prefix: torch.Tensor | None = None
        grid: torch.Tensor | None = x
        seq = x  # the patch tokens when the source is tokens
        if self.src_layout == "NLC":
            prefix = x[:, : self.src_prefix] if self.src_prefix else None
            seq = x[:, self.src_prefix :]
            grid = seq.transpose(1, 2).unflatten(2, self.src_grid) if self.src_grid else None
        elif self.src_layout == "NHWC":
            grid = x.permute(0, 3, 1, 2)
        if self.dst_layout == "NC":
            return self._flat(prefix, seq, grid)
        if grid is not None:
            grid = self.resample(grid)
            if self.dst_layout == "NCHW":
                return grid
            if self.dst_layout == "NHWC":
                return grid.permute(0, 2, 3, 1)
            seq = grid.flatten(2).transpose(1, 2)
        return self._prefixed(prefix, seq)

    def _flat(self, prefix: torch.Tensor | None, seq: torch.Tensor, grid: torch.Tensor | None) -> torch.Tensor:
        if self.carry and prefix is not None:
            return prefix[:, 0]
        if grid is None:
            return seq.mean(1)
        return (self.pool(grid) if self.pool is not None else grid.mean((2, 3), keepdim=True)).flatten(1)

    def _prefixed(self, prefix: torch.Tensor | None, seq: torch.Tensor) -> torch.Tensor:
        if not self.dst_prefix:
            return seq
        carried = min(self.src_prefix, self.dst_prefix) if self.carry else 0
        parts = [prefix[:, :carried]] if carried and prefix is not None else []
        if self.dst_prefix > carried:
            parts.append(seq.mean(1, keepdim=True).expand(-1, self.dst_prefix - carried, -1))
        return torch.cat([*parts, seq], dim=1)

    def extra_repr(self) -> str:
        return (f"{self.src_layout} -> {self.dst_layout}, src_grid={self.src_grid}, "
                f"prefix {self.src_prefix} -> {self.dst_prefix} ({'carry' if self.carry else 'pool'})")


@dataclass(frozen=True)
class _Form:
    """What the body sees: the adapter, channels in and out, and how the body is built."""

    adapter: nn.Module
    mode: str
    cin: int
    cout: int
    conv: bool  # 1x1 convs on NCHW; otherwise Linear on the last dim
    reshape: nn.Module


def _patches(spec: BoundarySpec) -> int:
    """Positions of a map or patch tokens of a token sequence (prefix excluded)."""
    if spec.layout == "NLC":
        return spec.shape[0] - spec.prefix_tokens
    hw = spec.hw
    return hw[0] * hw[1] if hw else 1


def _refuse(factory: str, src: BoundarySpec, dst: BoundarySpec, why: str) -> BoundaryMismatchError:
    return BoundaryMismatchError(
        f"link factory {factory!r} cannot join {describe_layout(src)} ({src.name!r}) to "
        f"{describe_layout(dst)} ({dst.name!r}): {why}"
    )


def _form(factory: str, src: BoundarySpec, dst: BoundarySpec, opts: Mapping[str, Any]) -> _Form:
    """Plan the adapter for (src, dst): grids, resampling, channels in and out."""
    if src.layout == "NC":
        reshape: nn.Module = nn.Identity() if dst.layout == "NC" else nn.Unflatten(1, dst.shape)
        return _Form(nn.Identity(), "flat", src.numel, dst.numel, False, reshape)
    same_count = _patches(src) == _patches(dst)
    src_grid = src.hw or (dst.hw if same_count and dst.layout != "NC" else None)
    g = opts["flat_pool"]
    if dst.layout == "NC":
        if src.layout == "NLC" and opts["prefix"] == "carry" and src.prefix_tokens:
            if g != 1:
                raise ConfigError(
                    f"link factory {factory!r}: flat_pool={g} with prefix='carry' takes the class "
                    f"token of {describe_layout(src)}, which is not pooled; use prefix='pool' to "
                    "average-pool the patch grid, or flat_pool=1"
                )
            g = 1
        elif g != 1 and src_grid is None:
            raise _refuse(factory, src, dst, f"flat_pool={g} needs a patch grid and the tokens "
                          "have none; use flat_pool=1 or give the boundary a grid")
        adapter = LayoutAdapter(src, dst, src_grid, nn.Identity(), opts["prefix"], g)
        return _Form(adapter, f"{src.layout}->NC", src.channels * g * g, dst.channels, False, nn.Identity())
    dst_grid = dst.hw or (src_grid if same_count else None)
    if src_grid is None or dst_grid is None:
        if not same_count:
            raise _refuse(factory, src, dst, f"{_patches(src)} positions cannot be resampled to "
                          f"{_patches(dst)} without a patch grid on both sides; give the token "
                          "boundary a grid (BoundarySpec(..., grid=(gh, gw), prefix_tokens=p))")
        resample: nn.Module = nn.Identity()
        mode = "none"
    else:
        resample, mode, _ = spatial_resampler(factory, src_grid, dst_grid, opts["resample"], opts["pool_mode"])
    adapter = LayoutAdapter(src, dst, src_grid, resample, opts["prefix"], 1)
    return _Form(adapter, f"{src.layout}->{dst.layout} {mode}", src.channels, dst.channels,
                 dst.layout == "NCHW", nn.Identity())


def _layer(form: _Form, cin: int, cout: int) -> nn.Module:
    return nn.Conv2d(cin, cout, 1) if form.conv else nn.Linear(cin, cout)


def _build(factory: str, src: BoundarySpec, dst: BoundarySpec, given: Mapping[str, Any],
           defaults: Mapping[str, Any]) -> ConvLink:
    opts = link_options(factory, given, defaults, _CHOICES)
    form = _form(factory, src, dst, opts)
    if factory == "linear":
        body = nn.Sequential(_layer(form, form.cin, form.cout))
    else:
        width = opts["width"] or default_width(form.cin, form.cout)
        act = {"gelu": nn.GELU(), "relu": nn.ReLU(), "none": nn.Identity()}[opts["activation"]]
        body = nn.Sequential(_layer(form, form.cin, width), act, _layer(form, width, form.cout))
    return ConvLink(form.adapter, body, form.reshape, kind=factory, factory=factory,
                    resample_mode=form.mode, src_shape=src.shape, dst_shape=dst.shape)


def build_linear(src: BoundarySpec, dst: BoundarySpec, **options: Any) -> ConvLink:
    """One linear map between any two layouts, after a parameter-free layout adapter."""
    return _build("linear", src, dst, options, _LAYOUT)


def build_mlp(src: BoundarySpec, dst: BoundarySpec, **options: Any) -> ConvLink:
    """Two channel maps with ``width`` channels and an activation between, any two layouts."""
    return _build("mlp", src, dst, options, _MLP)


_OPTIONS_NOTE = (
    " Options: resample='auto'|'pool'|'interpolate' (map / patch grid; auto: integer "
    "downsampling -> pooling, otherwise bilinear); pool_mode='max'|'avg'; flat_pool=1 "
    "(g x g average pool before a flat destination); prefix='carry'|'pool' (prefix tokens "
    "carried where both sides have them, else the mean of the patch tokens; flat destination: "
    "class token or pooled)."
)

LAYOUT_LINKS: dict[str, tuple[Callable[..., ConvLink], str]] = {
    "linear": (
        build_linear,
        "Any layout pair (NCHW, NHWC, NLC tokens, NC): permute / reshape, grid resampling and "
        "prefix tokens, then one linear map (1x1 conv to NCHW, Linear on channels otherwise; "
        "least-squares initialised)." + _OPTIONS_NOTE,
    ),
    "mlp": (
        build_mlp,
        "Any layout pair, as 'linear' but two channel maps with width (default max(8, "
        "min(cin, cout)//4)) channels and activation='gelu'|'relu'|'none' between." + _OPTIONS_NOTE,
    ),
}
