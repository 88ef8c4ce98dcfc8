"""What every built-in link is made of: the :class:`ConvLink` module, parameter-free resampling,
option checking and the names of boundary layouts. ``links`` (the conv factories) and
``layout_links`` (the factories between any two layouts) both build on it, so neither imports
the other's internals.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from codenn.errors import ConfigError
from codenn.model.blocks import BoundarySpec

RESAMPLE_MODES = ("auto", "conv", "pool", "interpolate")
POOL_MODES = ("max", "avg")
ACTIVATIONS = ("relu", "none")


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


def _hw(shape: tuple[int, ...]) -> str:
    return "x".join(str(s) for s in shape)


def spatial_resampler(
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


# The built-in factories that join any two layouts (codenn_plugins.layout_links), and the layouts
# the conv factories join.
LAYOUT_FACTORIES = ("linear", "mlp")
CONV_LAYOUTS = ("NCHW", "NC")
LAYOUT_WORDS = {"NCHW": "map", "NHWC": "channel-last map", "NLC": "tokens", "NC": "flat"}


def describe_layout(spec: BoundarySpec) -> str:
    """'NLC (tokens) (50, 32)': what error messages call a boundary."""
    return f"{spec.layout} ({LAYOUT_WORDS[spec.layout]}) {spec.shape}"




# --------------------------------------------------------------------------------------------
# Options
# --------------------------------------------------------------------------------------------
def link_options(
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


def default_width(cin: int, cout: int) -> int:
    """Bottleneck width: a quarter of the narrower side, at least 8."""
    return max(8, min(cin, cout) // 4)


