"""Built-in link factories: the paper's conv, bottleneck and reduced links, plus plain 1x1 / 3x3.

The paper (CoDE, sec. IV) joins frozen blocks with 2D conv links: a conv layer where the two
boundary sizes differ, a bottleneck conv where they are equal, and "reduced" links of two convs
whose middle width is 25 or 5 filters. Every link here is a :class:`ConvLink`::

    x -> resample (no parameters) -> body (nn.Sequential, all parameters) -> reshape -> y

Spatial resampling (NCHW -> NCHW with different H, W) follows option ``resample``:

- ``"auto"`` (default): integer downsampling -> pooling (max, see ``pool_mode``), because it
  keeps ``resample`` parameter-free and matches the MaxPool of the paper's skip links;
  upsampling or non-integer ratios -> bilinear interpolation.
- ``"pool"``: max/avg pooling; integer factors use ``MaxPool2d(k=s, stride=s)``, other
  downsampling ratios (AlexNet's 13 -> 6) ``AdaptiveMaxPool2d``. Upsampling is an error.
- ``"conv"``: the body's first conv is strided (integer factors only). Its kernel grows to
  ``max(kernel, stride)`` per axis so that no input pixel is skipped; ``resample`` is Identity.
- ``"interpolate"``: bilinear resize (``align_corners=False``), any ratio up or down.

Flat (NC) boundaries use Linear layers in place of convs, in every factory: NCHW -> NC pools
(``flat_pool`` x ``flat_pool`` adaptive average pool, default 1 = global) and flattens before the
body; NC -> NCHW ends with a reshape. Channel-last maps (NHWC) and tokens (NLC) are joined by
the layout factories ``linear`` and ``mlp`` (:mod:`codenn_plugins.layout_links`); the factories
here refuse them with an error that names both layouts and those factories.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from torch import nn

from codenn import hookimpl
from codenn.errors import BoundaryMismatchError
from codenn.model.blocks import BoundarySpec
from codenn_plugins.layout_links import LAYOUT_LINKS
from codenn_plugins.link_parts import (
    CONV_LAYOUTS,
    LAYOUT_FACTORIES,
    ConvLink,
    default_width,
    describe_layout,
    link_options,
    spatial_resampler,
)

# Options every factory accepts, with their defaults.
_COMMON: dict[str, Any] = {"resample": "auto", "pool_mode": "max", "flat_pool": 1}


def linear_head(link: nn.Module) -> nn.Conv2d | nn.Linear | None:
    """The single linear layer of ``link`` when the link is one linear map after ``resample``.

    Returns None for any other module (two-layer links, foreign links).
    """
    if not isinstance(link, ConvLink) or len(link.body) != 1:
        return None
    layer = link.body[0]
    return layer if isinstance(layer, (nn.Conv2d, nn.Linear)) else None


# --------------------------------------------------------------------------------------------
# Planning: what resample / reshape a (src, dst) pair needs
# --------------------------------------------------------------------------------------------
@dataclass
class _Plan:
    """How a link maps src to dst, before the body is chosen."""

    flat: bool  # body made of Linear layers (some side is NC) instead of Conv2d
    resample: nn.Module
    resample_mode: str
    cin: int
    cout: int
    stride: tuple[int, int]  # stride of the body's first conv (resample="conv"), else (1, 1)
    reshape: nn.Module


def factories_joining(src: str, dst: str) -> tuple[str, ...]:
    """Names of the built-in factories that join layout ``src`` to layout ``dst``."""
    if src in CONV_LAYOUTS and dst in CONV_LAYOUTS:
        return (*FACTORIES, *LAYOUT_FACTORIES)
    return LAYOUT_FACTORIES


def _plan(factory: str, src: BoundarySpec, dst: BoundarySpec, opts: Mapping[str, Any]) -> _Plan:
    if src.layout not in CONV_LAYOUTS or dst.layout not in CONV_LAYOUTS:
        raise BoundaryMismatchError(
            f"link factory {factory!r} joins NCHW maps and NC flat features only; it cannot join "
            f"{describe_layout(src)} ({src.name!r}) to {describe_layout(dst)} ({dst.name!r}). "
            f"Factories that can: {', '.join(map(repr, factories_joining(src.layout, dst.layout)))} "
            "(layout adapters around one linear map or a two-layer MLP; docs/links.md)"
        )
    if src.layout == "NCHW" and dst.layout == "NCHW":
        resample, mode, stride = spatial_resampler(
            factory, src.spatial, dst.spatial, opts["resample"], opts["pool_mode"]
        )
        return _Plan(False, resample, mode, src.channels, dst.channels, stride, nn.Identity())
    if src.layout == "NCHW":  # -> NC
        g = opts["flat_pool"]
        resample = nn.Sequential(nn.AdaptiveAvgPool2d(g), nn.Flatten(1))
        mode = "global-avgpool" if g == 1 else f"avgpool{g}x{g}"
        cin = src.channels * g * g
    else:  # NC ->
        resample, mode, cin = nn.Identity(), "none", src.numel
    reshape: nn.Module = nn.Unflatten(1, dst.shape) if dst.layout == "NCHW" else nn.Identity()
    return _Plan(True, resample, mode, cin, dst.numel, (1, 1), reshape)


# --------------------------------------------------------------------------------------------
# Bodies
# --------------------------------------------------------------------------------------------
def _first_conv(
    cin: int, cout: int, k: int, stride: tuple[int, int], bias: bool = True
) -> nn.Conv2d:
    """A conv that keeps the size at stride 1 and divides it exactly by an integer stride.

    Per axis the kernel is ``max(k, s)`` (so a strided 1x1 does not drop pixels) and the padding
    ``(K - s + 1) // 2``, which gives ``floor((s*d + 2p - K) / s) + 1 == d``.
    """
    kernel = tuple(k if s == 1 else max(k, s) for s in stride)
    padding = tuple((kk - s + 1) // 2 for kk, s in zip(kernel, stride))
    return nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding, bias=bias)


def _single(plan: _Plan, k: int) -> nn.Sequential:
    if plan.flat:
        return nn.Sequential(nn.Linear(plan.cin, plan.cout))
    return nn.Sequential(_first_conv(plan.cin, plan.cout, k, plan.stride))


def _double(
    plan: _Plan, width: int, k_in: int, k_out: int, activation: str, norm: bool
) -> nn.Sequential:
    """cin -> width -> cout, with optional BN and ReLU in the middle."""
    layers: list[nn.Module] = []
    if plan.flat:
        layers.append(nn.Linear(plan.cin, width, bias=not norm))
        if norm:
            layers.append(nn.BatchNorm1d(width))
    else:
        layers.append(_first_conv(plan.cin, width, k_in, plan.stride, bias=not norm))
        if norm:
            layers.append(nn.BatchNorm2d(width))
    if activation == "relu":
        layers.append(nn.ReLU())
    if plan.flat:
        layers.append(nn.Linear(width, plan.cout))
    else:
        layers.append(nn.Conv2d(width, plan.cout, k_out, padding=k_out // 2))
    return nn.Sequential(*layers)


def _link(
    factory: str,
    kind: str,
    plan: _Plan,
    body: nn.Sequential,
    src: BoundarySpec,
    dst: BoundarySpec,
) -> ConvLink:
    return ConvLink(
        plan.resample,
        body,
        plan.reshape,
        kind=kind,
        factory=factory,
        resample_mode=plan.resample_mode,
        src_shape=src.shape,
        dst_shape=dst.shape,
    )


# --------------------------------------------------------------------------------------------
# Factories
# --------------------------------------------------------------------------------------------
_BOTTLENECK = {**_COMMON, "width": None, "kernel": 1, "activation": "relu", "norm": False}
_REDUCED = {**_COMMON, "kernel": 3, "activation": "none", "norm": False}
_PAPER = {**_COMMON, "width": None, "norm": False}


def _conv(
    kind: str,
    k: int,
    factory: str,
    src: BoundarySpec,
    dst: BoundarySpec,
    options: Mapping[str, Any],
) -> ConvLink:
    opts = link_options(factory, options, _COMMON)
    plan = _plan(factory, src, dst, opts)
    return _link(factory, kind, plan, _single(plan, k), src, dst)


def _bottleneck(
    factory: str, src: BoundarySpec, dst: BoundarySpec, options: Mapping[str, Any]
) -> ConvLink:
    opts = link_options(factory, options, _BOTTLENECK)
    plan = _plan(factory, src, dst, opts)
    width = opts["width"] or default_width(plan.cin, plan.cout)
    body = _double(plan, width, 1, opts["kernel"], opts["activation"], opts["norm"])
    return _link(factory, "bottleneck", plan, body, src, dst)


def _reduced(
    width: int,
    factory: str,
    src: BoundarySpec,
    dst: BoundarySpec,
    options: Mapping[str, Any],
) -> ConvLink:
    opts = link_options(factory, options, _REDUCED)
    plan = _plan(factory, src, dst, opts)
    k = opts["kernel"]
    body = _double(plan, width, k, k, opts["activation"], opts["norm"])
    return _link(factory, f"reduced{width}", plan, body, src, dst)


def build_conv1x1(src: BoundarySpec, dst: BoundarySpec, **options: Any) -> ConvLink:
    """1x1 conv channel map after resampling; a Linear on flat boundaries."""
    return _conv("conv1x1", 1, "conv1x1", src, dst, options)


def build_conv3x3(src: BoundarySpec, dst: BoundarySpec, **options: Any) -> ConvLink:
    """3x3 conv (padding 1) after resampling; a Linear on flat boundaries."""
    return _conv("conv3x3", 3, "conv3x3", src, dst, options)


def build_bottleneck(src: BoundarySpec, dst: BoundarySpec, **options: Any) -> ConvLink:
    """1x1 conv to ``width``, ReLU, conv (``kernel``) to the destination channels."""
    return _bottleneck("bottleneck", src, dst, options)


def build_reduced25(src: BoundarySpec, dst: BoundarySpec, **options: Any) -> ConvLink:
    """The paper's reduced link with 25 middle filters."""
    return _reduced(25, "reduced25", src, dst, options)


def build_reduced5(src: BoundarySpec, dst: BoundarySpec, **options: Any) -> ConvLink:
    """The paper's reduced link with 5 middle filters."""
    return _reduced(5, "reduced5", src, dst, options)


def paper_choice(src: BoundarySpec, dst: BoundarySpec) -> str:
    """The paper's rule: sizes differ -> a conv link (conv3x3), sizes equal -> bottleneck.

    "Size" is the spatial size for NCHW -> NCHW and the feature size for NC -> NC; a change of
    layout (NCHW <-> NC) counts as different sizes (a single Linear).
    """
    if src.layout == dst.layout == "NCHW":
        return "bottleneck" if src.spatial == dst.spatial else "conv3x3"
    if src.layout == dst.layout == "NC":
        return "bottleneck" if src.shape == dst.shape else "conv3x3"
    return "conv3x3"


def build_paper(src: BoundarySpec, dst: BoundarySpec, **options: Any) -> ConvLink:
    """conv3x3 (with resampling) when sizes differ, bottleneck when they are equal."""
    opts = link_options("paper", options, _PAPER)
    choice = paper_choice(src, dst)
    if choice == "bottleneck":
        return _bottleneck("paper", src, dst, opts)
    conv_opts = {k: v for k, v in opts.items() if k in _COMMON}
    return _conv("conv3x3", 3, "paper", src, dst, conv_opts)


_FLAT_NOTE = (
    " Flat boundaries use Linear layers: NCHW->NC = avg-pool (flat_pool) + flatten + Linear, "
    "NC->NC = Linear, NC->NCHW = Linear to C*H*W + reshape (large: 4096 -> 256x6x6 is 37.8M "
    "params; a 9216->4096 Linear is 37.8M too)."
)
_RESAMPLE_NOTE = (
    " resample='auto'|'conv'|'pool'|'interpolate' (auto: integer downsampling -> pool_mode "
    "pooling, otherwise bilinear); pool_mode='max'|'avg'; flat_pool=1."
)

FACTORIES: dict[str, tuple[Callable[..., ConvLink], str]] = {
    "conv1x1": (
        build_conv1x1,
        "1x1 conv channel map after parameter-free resampling (linear: least-squares friendly)."
        + _RESAMPLE_NOTE
        + _FLAT_NOTE,
    ),
    "conv3x3": (
        build_conv3x3,
        "3x3 conv, padding 1, after resampling." + _RESAMPLE_NOTE + _FLAT_NOTE,
    ),
    "bottleneck": (
        build_bottleneck,
        "1x1 conv down to width (default max(8, min(cin, cout)//4)), [BN if norm], ReLU "
        "(activation='relu'|'none'), conv with kernel=1 up to the destination channels."
        + _RESAMPLE_NOTE
        + _FLAT_NOTE,
    ),
    "reduced25": (
        build_reduced25,
        "Paper's reduced link: conv (kernel=3) to 25 filters, then conv (kernel=3) to the "
        "destination channels; ~5x fewer params than a conv3x3 link at 256 channels. "
        "activation='none' (linear, rank <= 25) or 'relu'; norm=False."
        + _RESAMPLE_NOTE
        + _FLAT_NOTE,
    ),
    "reduced5": (
        build_reduced5,
        "Paper's reduced link with 5 middle filters (~25x fewer params than conv3x3 at 256 "
        "channels). Options as reduced25." + _RESAMPLE_NOTE + _FLAT_NOTE,
    ),
    "paper": (
        build_paper,
        "The paper's default: sizes differ -> conv3x3 with resampling; sizes equal -> "
        "bottleneck (options width=None, norm=False)." + _RESAMPLE_NOTE + _FLAT_NOTE,
    ),
}


@hookimpl
def codenn_register_link_factories(register: Callable[..., None]) -> None:
    for name, (build, description) in {**FACTORIES, **LAYOUT_LINKS}.items():
        register(name, build, description=description)
