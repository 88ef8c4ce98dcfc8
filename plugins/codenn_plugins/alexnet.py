"""Splitter for torchvision's AlexNet.

Eight units: conv1..conv5 (each conv with its ReLU and pooling), fc6, fc7, fc8. Seven blocks (the
paper's partition, Fig. 3 plus its added first block) merge fc6 and fc7, so block 5 is "the layer
before the output layer" and block 6 the output layer, as in Section IV.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn
from torchvision.models import AlexNet

from codenn import hookimpl
from codenn.contracts.splitters import BlockSplitter, NamedModule, UnitSplitter


class AlexNetSplitter(UnitSplitter):
    name = "alexnet"
    architectures = ("alexnet",)
    default_blocks = 7
    description = "torchvision AlexNet: conv1..conv5, fc6, fc7, fc8 (1..8 blocks)"

    def handles(self, model: nn.Module) -> bool:
        return isinstance(model, AlexNet)

    def units(self, model: nn.Module) -> list[NamedModule]:
        f, c = model.features, model.classifier
        return [
            ("conv1", f[0:3]),
            ("conv2", f[3:6]),
            ("conv3", f[6:8]),
            ("conv4", f[8:10]),
            ("conv5", f[10:13]),
            ("fc6", nn.Sequential(model.avgpool, nn.Flatten(1), *c[0:3])),
            ("fc7", c[3:6]),
            ("fc8", c[6]),
        ]

    def preferred_cuts(self, model: nn.Module) -> list[int]:
        # features|classifier first, then the early convs, the output layer, the late convs, fc6|fc7
        return [4, 0, 1, 6, 2, 3, 5]


@hookimpl
def codenn_register_splitters(register: Callable[[BlockSplitter], None]) -> None:
    register(AlexNetSplitter())
