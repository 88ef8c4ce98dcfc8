"""Splitter for torchvision's ResNet family (resnet18..152, and ResNeXt / wide ResNets, same class).

Units: the stem (conv1, bn1, relu, maxpool), every residual block of layer1..layer4, the head.
Cuts prefer the head boundary, then stage ends, deepest first.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn
from torchvision.models import ResNet

from codenn import hookimpl
from codenn.contracts.splitters import BlockSplitter, NamedModule, UnitSplitter, stage_cuts


class ResNetSplitter(UnitSplitter):
    name = "resnet"
    architectures = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")
    default_blocks = 6
    description = "torchvision ResNet 18..152: stem, each residual block, head"

    def handles(self, model: nn.Module) -> bool:
        return isinstance(model, ResNet)

    def family(self, model: nn.Module) -> str:
        return "resnet"

    def units(self, model: nn.Module) -> list[NamedModule]:
        units: list[NamedModule] = [("stem", nn.Sequential(model.conv1, model.bn1, model.relu, model.maxpool))]
        for stage in ("layer1", "layer2", "layer3", "layer4"):
            units += [(f"{stage}.{i}", block) for i, block in enumerate(getattr(model, stage))]
        units.append(("head", nn.Sequential(model.avgpool, nn.Flatten(1), model.fc)))
        return units

    def preferred_cuts(self, model: nn.Module) -> list[int]:
        names = [n for n, _ in self.units(model)]
        stage_starts = [n.endswith(".0") for n in names]
        return stage_cuts(stage_starts)


@hookimpl
def codenn_register_splitters(register: Callable[[BlockSplitter], None]) -> None:
    register(ResNetSplitter())
