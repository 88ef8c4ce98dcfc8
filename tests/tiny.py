"""Tiny CNNs and a splitter for them, so search tests run in seconds on 2 CPU cores."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from codenn import Service, UnitSplitter, hookimpl
from codenn.contracts.plugins import Plugins, create_plugins
from codenn.train.data import split_dataset, tensors
from codenn.train.synthetic import digits, shapes


class TinyCNN(nn.Sequential):
    def __init__(self, num_classes: int, width: int = 8) -> None:
        w = width
        super().__init__(
            nn.Sequential(nn.Conv2d(3, w, 3, padding=1), nn.ReLU()),
            nn.Sequential(nn.Conv2d(w, 2 * w, 3, stride=2, padding=1), nn.ReLU()),
            nn.Sequential(nn.Conv2d(2 * w, 2 * w, 3, padding=1), nn.ReLU()),
            nn.Sequential(nn.Conv2d(2 * w, 4 * w, 3, stride=2, padding=1), nn.ReLU()),
            nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1), nn.Linear(4 * w, num_classes)),
        )


class TinySplitter(UnitSplitter):
    name = "tiny_cnn"
    architectures = ("tiny_cnn",)
    default_blocks = 5

    def handles(self, model: nn.Module) -> bool:
        return isinstance(model, TinyCNN)

    def units(self, model: nn.Module) -> list[tuple[str, nn.Module]]:
        return [(f"stage{i}", m) for i, m in enumerate(model)]


class TinyPlugin:
    @hookimpl
    def codenn_register_splitters(self, register):
        register(TinySplitter())


def tiny_plugins() -> Plugins:
    return create_plugins(extra=[TinyPlugin()])


def fit(model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int = 150, seed: int = 0) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(steps):
        idx = torch.randint(0, len(x), (64,), generator=g)
        opt.zero_grad()
        F.cross_entropy(model(x[idx]), y[idx]).backward()
        opt.step()
    return model.eval()


def tiny_scenario(size: int = 16, plugins: Plugins | None = None):
    """(local service trained on digits, host service trained on shapes, digit splits, plugins)."""
    plugins = plugins or tiny_plugins()
    torch.manual_seed(0)
    ds, classes = digits(size=size)
    splits = split_dataset(ds, classes, seed=0, name="digits")
    x, y = tensors(splits.train)
    local = Service("local", fit(TinyCNN(classes), x, y), input_shape=(3, size, size), plugins=plugins)
    hds, hclasses = shapes(n=600, size=size)
    hx, hy = hds.tensors
    host = Service("host", fit(TinyCNN(hclasses, width=12), hx, hy, seed=1), input_shape=(3, size, size),
                   plugins=plugins)
    return local, host, splits, plugins
