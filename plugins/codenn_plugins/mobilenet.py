"""Splitters for torchvision's MobileNetV2 and MobileNetV3 (small and large).

Units are the ``features`` entries plus the head (global pool, flatten, classifier); cuts prefer
the head boundary, then stage ends (just before a stride-2 block).
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn
from torchvision.models import MobileNetV2, MobileNetV3

from codenn import hookimpl
from codenn.contracts.splitters import BlockSplitter, NamedModule, UnitSplitter, stage_cuts


def _feature_units(model: nn.Module) -> list[NamedModule]:
    return [(f"features.{i}", m) for i, m in enumerate(model.features)]


class MobileNetV2Splitter(UnitSplitter):
    name = "mobilenet_v2"
    architectures = ("mobilenet_v2",)
    default_blocks = 7
    description = "torchvision MobileNetV2: 19 feature units + head (1..20 blocks)"

    def handles(self, model: nn.Module) -> bool:
        return isinstance(model, MobileNetV2)

    def units(self, model: nn.Module) -> list[NamedModule]:
        return [*_feature_units(model), ("head", nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1), model.classifier))]

    def preferred_cuts(self, model: nn.Module) -> list[int]:
        strided = [i > 0 and getattr(m, "stride", 1) == 2 for i, m in enumerate(model.features)]
        return stage_cuts([*strided, False])


class MobileNetV3Splitter(UnitSplitter):
    name = "mobilenet_v3"
    architectures = ("mobilenet_v3_small", "mobilenet_v3_large")
    default_blocks = 6
    description = "torchvision MobileNetV3 small/large: feature units + head"

    def handles(self, model: nn.Module) -> bool:
        return isinstance(model, MobileNetV3)

    def family(self, model: nn.Module) -> str:
        return "mobilenet_v3_small" if len(model.features) < 16 else "mobilenet_v3_large"

    def units(self, model: nn.Module) -> list[NamedModule]:
        return [*_feature_units(model), ("head", nn.Sequential(model.avgpool, nn.Flatten(1), model.classifier))]

    def preferred_cuts(self, model: nn.Module) -> list[int]:
        strided = [i > 0 and bool(getattr(m, "_is_cn", False)) for i, m in enumerate(model.features)]
        return stage_cuts([*strided, False])


@hookimpl
def codenn_register_splitters(register: Callable[[BlockSplitter], None]) -> None:
    register(MobileNetV2Splitter())
    register(MobileNetV3Splitter())
