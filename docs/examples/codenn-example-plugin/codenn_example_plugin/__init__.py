"""An example codenn plugin: a splitter for a custom CNN and a depthwise-separable link factory.

It is found through the entry point ``example = "codenn_example_plugin"`` in the ``codenn`` group
(see this package's pyproject.toml), loaded exactly like codenn's built-in plugins, and
contributes through two hooks:

- ``codenn_register_splitters``: :class:`TinyConvNetSplitter` ("tiny_convnet"), which cuts
  :class:`TinyConvNet` (3 conv stages + pooled linear head) into 1..7 blocks.
- ``codenn_register_link_factories``: "depthwise_separable", a depthwise KxK conv followed by a
  pointwise 1x1 conv, with parameter-free spatial resampling when the two boundaries differ in size.

The model lives in the plugin only to keep the example self-contained; a real plugin usually
ships a splitter for a model defined elsewhere (your training repo, timm, torchvision).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from codenn import BoundaryMismatchError, BoundarySpec, ConfigError, NamedModule, UnitSplitter, hookimpl, stage_cuts

__all__ = [
    "DepthwiseSeparableLink",
    "TinyConvNet",
    "TinyConvNetSplitter",
    "build_depthwise_separable",
    "codenn_register_link_factories",
    "codenn_register_splitters",
]

__version__ = "0.1.0"


# --------------------------------------------------------------------------------------------
# The model: a small CNN that no built-in splitter knows
# --------------------------------------------------------------------------------------------
class ConvBNReLU(nn.Sequential):
    """3x3 conv (no bias), batch norm, ReLU: the atomic unit of TinyConvNet."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__(
            nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(),
        )


class TinyConvNet(nn.Module):
    """Three conv stages (two ConvBNReLU each; stages 2 and 3 halve the resolution) and a head:
    global average pool, dropout, linear classifier.

    The head's dropout is there on purpose: it makes the conformance kit's train-mode check mean
    something (blocks must draw the same dropout masks as the whole model).
    """

    def __init__(
        self,
        num_classes: int = 10,
        widths: Sequence[int] = (16, 32, 64),
        convs_per_stage: int = 2,
        dropout: float = 0.1,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        if num_classes < 1 or convs_per_stage < 1 or not widths or any(w < 1 for w in widths):
            raise ConfigError(
                f"TinyConvNet(num_classes={num_classes}, widths={tuple(widths)}, "
                f"convs_per_stage={convs_per_stage}): all sizes must be >= 1 and widths non-empty"
            )
        stages: list[nn.Module] = []
        cin = in_channels
        for s, width in enumerate(widths):
            convs = [ConvBNReLU(cin if i == 0 else width, width, stride=2 if s > 0 and i == 0 else 1)
                     for i in range(convs_per_stage)]
            stages.append(nn.Sequential(*convs))
            cin = width
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stages(x)
        x = torch.flatten(self.pool(x), 1)
        return self.fc(self.dropout(x))


# --------------------------------------------------------------------------------------------
# The splitter
# --------------------------------------------------------------------------------------------
class TinyConvNetSplitter(UnitSplitter):
    """Cuts TinyConvNet between its ConvBNReLU units and before the head.

    Units are ``stage{s}.conv{i}`` (1-based) and ``head``. Preferred cuts: before the head first,
    then stage ends, deepest first, so 4 blocks are exactly the three stages and the head.
    """

    name = "tiny_convnet"
    architectures = ("tiny_convnet",)
    default_blocks = 4
    description = "codenn-example-plugin TinyConvNet: one unit per ConvBNReLU, plus the head"

    def handles(self, model: nn.Module) -> bool:
        return isinstance(model, TinyConvNet)

    def units(self, model: nn.Module) -> list[NamedModule]:
        units: list[NamedModule] = []
        for s, stage in enumerate(model.stages, start=1):
            units += [(f"stage{s}.conv{i}", conv) for i, conv in enumerate(stage, start=1)]
        # A new Sequential around the model's own modules: it owns no parameters of its own, and
        # Flatten replaces the torch.flatten call of TinyConvNet.forward.
        units.append(("head", nn.Sequential(model.pool, nn.Flatten(1), model.dropout, model.fc)))
        return units

    def preferred_cuts(self, model: nn.Module) -> list[int]:
        # one flag per unit: does it begin a stage? (the first conv of every stage; the head: no)
        starts = [i == 0 for stage in model.stages for i in range(len(stage))]
        return stage_cuts([*starts, False])  # before the head, then stage ends, deepest first


# --------------------------------------------------------------------------------------------
# The link factory
# --------------------------------------------------------------------------------------------
RESAMPLE_MODES = ("auto", "pool", "interpolate")
ACTIVATIONS = ("relu", "none")
DEFAULTS: dict[str, Any] = {"kernel": 3, "activation": "relu", "norm": False, "resample": "auto"}
FACTORY = "depthwise_separable"


class Resize(nn.Module):
    """Parameter-free bilinear resize to a fixed (H, W)."""

    def __init__(self, size: tuple[int, int]) -> None:
        super().__init__()
        self.size = (int(size[0]), int(size[1]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, size=self.size, mode="bilinear", align_corners=False)

    def extra_repr(self) -> str:
        return f"size={self.size}"


class DepthwiseSeparableLink(nn.Module):
    """``pointwise(act(norm(depthwise(resample(x)))))``.

    ``resample`` has no parameters (Identity, AdaptiveAvgPool2d or :class:`Resize`); resampling
    first keeps the convs at the destination resolution, which is cheapest when downsampling.
    """

    def __init__(self, src: BoundarySpec, dst: BoundarySpec, options: Mapping[str, Any]) -> None:
        super().__init__()
        cin, cout, k = src.channels, dst.channels, int(options["kernel"])
        self.resample = _resampler(src, dst, options["resample"])
        self.depthwise = nn.Conv2d(cin, cin, k, padding=k // 2, groups=cin, bias=not options["norm"])
        self.norm: nn.Module = nn.BatchNorm2d(cin) if options["norm"] else nn.Identity()
        self.act: nn.Module = nn.ReLU() if options["activation"] == "relu" else nn.Identity()
        self.pointwise = nn.Conv2d(cin, cout, 1)
        self.src_shape, self.dst_shape = src.shape, dst.shape

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.act(self.norm(self.depthwise(self.resample(x)))))

    def extra_repr(self) -> str:
        return f"{self.src_shape} -> {self.dst_shape}"


def _resampler(src: BoundarySpec, dst: BoundarySpec, mode: str) -> nn.Module:
    """Identity when sizes agree; adaptive average pooling when shrinking, bilinear otherwise."""
    src_hw, dst_hw = src.spatial, dst.spatial
    if src_hw == dst_hw:
        return nn.Identity()
    shrinking = all(s >= d for s, d in zip(src_hw, dst_hw))
    if mode == "pool" and not shrinking:
        raise ConfigError(
            f"link factory {FACTORY!r}: resample='pool' cannot map {src_hw} to {dst_hw} (that is "
            "upsampling); use resample='interpolate' or 'auto'"
        )
    if mode == "pool" or (mode == "auto" and shrinking):
        return nn.AdaptiveAvgPool2d((dst_hw[0], dst_hw[1]))
    return Resize((dst_hw[0], dst_hw[1]))


def _options(given: Mapping[str, Any]) -> dict[str, Any]:
    """Merge options over :data:`DEFAULTS`; unknown names and bad values are ConfigErrors."""
    unknown = sorted(set(given) - set(DEFAULTS))
    if unknown:
        valid = ", ".join(f"{k}={v!r}" for k, v in DEFAULTS.items())
        raise ConfigError(f"link factory {FACTORY!r} got unknown option(s) {unknown}; valid options: {valid}")
    opts = {**DEFAULTS, **given}
    k = opts["kernel"]
    if isinstance(k, bool) or not isinstance(k, int) or k < 1 or k % 2 == 0:
        raise ConfigError(f"link factory {FACTORY!r}: kernel={k!r} is invalid; expected a positive odd integer")
    if opts["activation"] not in ACTIVATIONS:
        raise ConfigError(f"link factory {FACTORY!r}: activation={opts['activation']!r}; valid: {ACTIVATIONS}")
    if opts["resample"] not in RESAMPLE_MODES:
        raise ConfigError(f"link factory {FACTORY!r}: resample={opts['resample']!r}; valid: {RESAMPLE_MODES}")
    if not isinstance(opts["norm"], bool):
        raise ConfigError(f"link factory {FACTORY!r}: norm={opts['norm']!r}; expected True or False")
    return opts


def build_depthwise_separable(src: BoundarySpec, dst: BoundarySpec, **options: Any) -> DepthwiseSeparableLink:
    """Build a depthwise-separable link from boundary ``src`` to the input expected at ``dst``.

    Only the two public specs and the options arrive here, never a provider's module: the link
    cannot read, copy or train anyone's frozen parameters. Options: ``kernel`` (odd, default 3),
    ``activation`` ("relu" | "none"), ``norm`` (BatchNorm after the depthwise conv),
    ``resample`` ("auto" | "pool" | "interpolate").
    """
    for spec, side in ((src, "source"), (dst, "destination")):
        if spec.layout != "NCHW":
            raise BoundaryMismatchError(
                f"link factory {FACTORY!r}: the {side} boundary {spec.name!r} is {spec.layout} "
                f"{spec.shape}; this factory joins NCHW boundaries only. Use a factory that handles "
                f"{spec.layout} (the built-in 'paper' or 'conv1x1' handle flat NC boundaries)"
            )
    return DepthwiseSeparableLink(src, dst, _options(options))


# --------------------------------------------------------------------------------------------
# Hooks: the only functions codenn calls
# --------------------------------------------------------------------------------------------
@hookimpl
def codenn_register_splitters(register: Callable[[Any], None]) -> None:
    register(TinyConvNetSplitter())


@hookimpl
def codenn_register_link_factories(register: Callable[..., None]) -> None:
    register(
        FACTORY,
        build_depthwise_separable,
        description=(
            "Depthwise KxK conv (kernel=3) [+ BN if norm] [+ ReLU: activation='relu'|'none'] then "
            "pointwise 1x1 conv; adaptive average pooling (shrinking) or bilinear resize "
            "(otherwise) when sizes differ (resample='auto'|'pool'|'interpolate'). NCHW only."
        ),
    )
