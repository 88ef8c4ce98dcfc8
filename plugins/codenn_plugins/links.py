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

import torch
import torch.nn.functional as F
from torch import nn

from codenn import hookimpl
from codenn.blocks import BoundarySpec
from codenn.errors import BoundaryMismatchError, ConfigError

RESAMPLE_MODES = ("auto", "conv", "pool", "interpolate")
POOL_MODES = ("max", "avg")
ACTIVATIONS = ("relu", "none")

# Options every factory accepts, with their defaults.
_COMMON: dict[str, Any] = {"resample": "auto", "pool_mode": "max", "flat_pool": 1}


# --------------------------------------------------------------------------------------------
# Modules
# --------------------------------------------------------------------------------------------
class Resize(nn.Module):
    """Parameter-free bilinear resize to a fixed (H, W): any ratio, up or down."""

    def __init__(self, size: tuple[int, int]) -> None:
        super().__init__()
        self.size = (int(size[0]), int(size[1]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, size=self.size, mode="bilinear", align_corners=False)

    def extra_repr(self) -> str:
        return f"size={self.size}, mode='bilinear', align_corners=False"


class ConvLink(nn.Module):
    """A link: ``reshape(body(resample(x)))``. Every built-in factory returns one.

    - ``resample`` has no parameters: Identity, MaxPool2d/AvgPool2d (or their adaptive forms),
      :class:`Resize`, or, for NCHW -> NC links, ``Sequential(AdaptiveAvgPool2d, Flatten)``.
    - ``body`` (``nn.Sequential``) holds every parameter of the link.
    - ``reshape`` has no parameters: Identity, or ``Unflatten(1, dst.shape)`` for NC -> NCHW.

    For least-squares initialisation: when ``body`` is a single ``nn.Conv2d`` or ``nn.Linear``
    (conv1x1, conv3x3 and "paper" when it picks conv3x3), the link is that purely linear layer
    applied to the fixed features ``resample(x)``, its output flattened if ``reshape`` is an
    Unflatten. :func:`linear_head` returns that layer. Its kernel is 1x1 for conv1x1, 3x3 for
    conv3x3, and ``max(k, stride)`` with a stride when ``resample="conv"``; fit it on
    ``F.unfold(resample(x), kernel_size, padding=..., stride=...)`` when the kernel is not 1x1.
    Two-layer links (bottleneck, reduced*, "paper" when it picks bottleneck) have ``body`` =
    ``Sequential(first, [BatchNorm], [ReLU], second)``: ``first`` sees the same features (its
    kernel: 1x1 for bottleneck, ``kernel`` for reduced*, strided with ``resample="conv"``),
    ``second`` is a stride-1 'same' conv (``kernel``) or a Linear. With ``activation="none"``
    the link is a linear map of rank <= width; with a ReLU it still represents any map of rank
    <= width // 2 exactly (first layer ``[A; -A]``, second ``[B, -B]``). The least-squares fit
    (:func:`codenn.train.least_squares_init`) uses both: it fits the map on ``first``'s receptive
    field at that rank, factors it by SVD into ``first`` and the centre tap of ``second`` (bias in
    ``second``) and sets a BatchNorm to the identity (running stats of the middle, weight
    ``sqrt(var + eps)``, bias the mean).

    Attributes ``kind`` (the construction: conv1x1, conv3x3, bottleneck, reduced25, reduced5),
    ``factory`` (the name asked for, e.g. "paper"), ``resample_mode``, ``src_shape`` and
    ``dst_shape`` are plain metadata, not part of the state dict.
    """

    def __init__(
        self,
        resample: nn.Module,
        body: nn.Sequential,
        reshape: nn.Module,
        *,
        kind: str,
        factory: str,
        resample_mode: str,
        src_shape: tuple[int, ...],
        dst_shape: tuple[int, ...],
    ) -> None:
        super().__init__()
        self.resample = resample
        self.body = body
        self.reshape = reshape
        self.kind = kind
        self.factory = factory
        self.resample_mode = resample_mode
        self.src_shape = tuple(src_shape)
        self.dst_shape = tuple(dst_shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.reshape(self.body(self.resample(x)))

    def extra_repr(self) -> str:
        return (
            f"kind={self.kind!r}, factory={self.factory!r}, resample={self.resample_mode!r}, "
            f"{self.src_shape} -> {self.dst_shape}"
        )


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


def _hw(shape: tuple[int, ...]) -> str:
    return "x".join(str(s) for s in shape)


def _spatial(
    factory: str, src_hw: tuple[int, ...], dst_hw: tuple[int, ...], resample: str, pool_mode: str
) -> tuple[nn.Module, str, tuple[int, int]]:
    """Choose the parameter-free resampler (or a stride for the first conv)."""
    if src_hw == dst_hw:
        return nn.Identity(), "none", (1, 1)
    down = all(s >= d for s, d in zip(src_hw, dst_hw))
    integer = down and all(s % d == 0 for s, d in zip(src_hw, dst_hw))
    factors = (src_hw[0] // dst_hw[0], src_hw[1] // dst_hw[1])
    if integer:
        valid = RESAMPLE_MODES
        what = f"integer downsampling by {_hw(factors)}"
    elif down:
        valid = ("auto", "pool", "interpolate")
        what = "non-integer downsampling"
    else:
        valid = ("auto", "interpolate")
        what = "upsampling" if all(s <= d for s, d in zip(src_hw, dst_hw)) else "mixed up/down"
    if resample not in valid:
        raise ConfigError(
            f"link factory {factory!r}: resample={resample!r} cannot map {_hw(src_hw)} to "
            f"{_hw(dst_hw)} ({what}); valid values here: {', '.join(map(repr, valid))}"
        )
    mode = resample if resample != "auto" else ("pool" if integer else "interpolate")
    if mode == "pool":
        if integer:
            pool_cls = nn.MaxPool2d if pool_mode == "max" else nn.AvgPool2d
            return pool_cls(kernel_size=factors, stride=factors), f"{pool_mode}pool", (1, 1)
        adaptive = nn.AdaptiveMaxPool2d if pool_mode == "max" else nn.AdaptiveAvgPool2d
        return adaptive(tuple(dst_hw)), f"adaptive-{pool_mode}pool", (1, 1)
    if mode == "conv":
        return nn.Identity(), "strided-conv", factors
    return Resize((dst_hw[0], dst_hw[1])), "interpolate", (1, 1)


# The built-in factories that join any two layouts (codenn_plugins.layout_links).
LAYOUT_FACTORIES = ("linear", "mlp")
CONV_LAYOUTS = ("NCHW", "NC")
LAYOUT_WORDS = {"NCHW": "map", "NHWC": "channel-last map", "NLC": "tokens", "NC": "flat"}


def describe_layout(spec: BoundarySpec) -> str:
    """'NLC (tokens) (50, 32)': what error messages call a boundary."""
    return f"{spec.layout} ({LAYOUT_WORDS[spec.layout]}) {spec.shape}"


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
        resample, mode, stride = _spatial(
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


# --------------------------------------------------------------------------------------------
# Options
# --------------------------------------------------------------------------------------------
def _options(
    factory: str,
    given: Mapping[str, Any],
    defaults: Mapping[str, Any],
    choices: Mapping[str, tuple[str, ...]] | None = None,
) -> dict[str, Any]:
    """Merge options over defaults; reject unknown names and bad values with ConfigError.

    ``choices`` adds or overrides the valid values of string options (layout links use it).
    """
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise ConfigError(
            f"link factory {factory!r} got unknown option(s) {unknown}; valid options: "
            f"{', '.join(f'{k}={v!r}' for k, v in defaults.items())}"
        )
    opts = {**defaults, **given}

    def bad(name: str, valid: str) -> ConfigError:
        return ConfigError(f"link factory {factory!r}: {name}={opts[name]!r} is invalid; {valid}")

    valid_values = {"resample": RESAMPLE_MODES, "pool_mode": POOL_MODES, "activation": ACTIVATIONS,
                    **(choices or {})}
    for name, valid in valid_values.items():
        if name in opts and opts[name] not in valid:
            raise bad(name, f"valid values: {', '.join(map(repr, valid))}")
    for name in ("flat_pool", "width"):
        value = opts.get(name)
        if name in opts and value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or value < 1
        ):
            raise bad(name, "expected a positive integer" + (" or None" if name == "width" else ""))
    if "kernel" in opts:
        k = opts["kernel"]
        if isinstance(k, bool) or not isinstance(k, int) or k < 1 or k % 2 == 0:
            raise bad("kernel", "expected a positive odd integer (1, 3, 5, ...) so size is kept")
    if "norm" in opts and not isinstance(opts["norm"], bool):
        raise bad("norm", "expected True or False")
    return opts


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


def default_width(cin: int, cout: int) -> int:
    """Bottleneck width: a quarter of the narrower side, at least 8."""
    return max(8, min(cin, cout) // 4)


def _conv(
    kind: str,
    k: int,
    factory: str,
    src: BoundarySpec,
    dst: BoundarySpec,
    options: Mapping[str, Any],
) -> ConvLink:
    opts = _options(factory, options, _COMMON)
    plan = _plan(factory, src, dst, opts)
    return _link(factory, kind, plan, _single(plan, k), src, dst)


def _bottleneck(
    factory: str, src: BoundarySpec, dst: BoundarySpec, options: Mapping[str, Any]
) -> ConvLink:
    opts = _options(factory, options, _BOTTLENECK)
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
    opts = _options(factory, options, _REDUCED)
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
    opts = _options("paper", options, _PAPER)
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
    from codenn_plugins.layout_links import LAYOUT_LINKS  # imports this module: load it at call time

    for name, (build, description) in {**FACTORIES, **LAYOUT_LINKS}.items():
        register(name, build, description=description)
