"""Load a provider's model by name (codenn's own, torchvision, timm) or from a local safetensors file.

Weights are never downloaded implicitly: ``weights=None`` gives random initialisation,
``weights="DEFAULT"`` (or a torchvision enum name) asks torchvision/timm for pretrained weights,
and a ``.safetensors`` path loads a local file.

codenn's own architectures (:data:`MODELS`) are the small networks of the paper's set-up that no
zoo ships: ``alexnet_cifar``, the CIFAR-sized AlexNet whose convolutions carry the work.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torchvision
from torch import nn

from codenn.errors import ConfigError
from codenn.fileio import atomic_tensors


class AlexNetCifar(torchvision.models.AlexNet):  # type: ignore[misc]  # torchvision has no type information
    """The CIFAR-sized AlexNet of the paper's local provider: five convolutions (64, 192, 384, 256,
    256 filters; blocks 2-4 hold 1.86 M of its 3.2 M parameters) and a small classifier, so that
    the convolutional blocks, not fc6/fc7, carry the work. A torchvision ``AlexNet`` with the same
    module layout (``features``, ``avgpool``, ``classifier``), so the AlexNet splitter cuts it
    into the same conv1..conv5, fc6, fc7, fc8 units. Its first convolution has stride 2 for
    64x64 inputs (stride 1 at 32x32 would do the same work on CIFAR)."""

    def __init__(self, num_classes: int = 10, dropout: float = 0.5, first_stride: int = 2) -> None:
        super().__init__(num_classes=num_classes, dropout=dropout)
        self.features = nn.Sequential(
            nn.Conv2d(3, 64, 5, stride=first_stride, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        )
        self.avgpool = nn.AdaptiveAvgPool2d((2, 2))
        self.classifier = nn.Sequential(
            nn.Dropout(dropout), nn.Linear(256 * 2 * 2, 512), nn.ReLU(inplace=True),
            nn.Dropout(dropout), nn.Linear(512, 512), nn.ReLU(inplace=True),
            nn.Linear(512, num_classes),
        )


MODELS: dict[str, type[nn.Module]] = {"alexnet_cifar": AlexNetCifar}
"""codenn's own architectures, looked up before torchvision and timm."""


def load_model(name: str, *, weights: str | os.PathLike[str] | None = None, num_classes: int | None = None,
               input_size: int | None = None) -> nn.Module:
    """Build ``name`` from torchvision, else timm, and load ``weights`` if given. ``input_size``
    (pixels, square) builds a timm model whose size is fixed at construction (ViT, Swin, ...) for
    that size; models that take any size ignore it."""
    local = Path(weights) if weights is not None and _is_local_file(weights) else None
    model = _build(name, pretrained=None if local else weights, num_classes=num_classes, input_size=input_size)
    if local is not None:
        load_safetensors(model, local)
    return model


def _is_local_file(weights: str | os.PathLike[str]) -> bool:
    return str(weights).endswith(".safetensors") or Path(weights).exists()


def _build(name: str, *, pretrained: str | os.PathLike[str] | None, num_classes: int | None,
           input_size: int | None = None) -> nn.Module:
    kwargs: dict[str, Any] = {} if num_classes is None else {"num_classes": num_classes}
    if name in MODELS:
        if pretrained is not None:
            raise ConfigError(f"{name!r} is codenn's own architecture: it has no pretrained weights to download; "
                              "pass a local .safetensors file (or train it: codenn's scenario caches its weights)")
        return MODELS[name](**kwargs)
    if name in torchvision.models.list_models():
        model: nn.Module = torchvision.models.get_model(name, weights=pretrained, **kwargs)
        return model
    import timm

    if timm.is_model(name):
        return _timm_model(timm, name, pretrained is not None, input_size, kwargs)
    raise ConfigError(
        f"unknown model {name!r}: it is neither codenn's own ({', '.join(MODELS)}) nor a torchvision model "
        "(torchvision.models.list_models()) nor a timm model (timm.list_models()); "
        "pass your own nn.Module to Service instead"
    )


def _timm_model(timm: Any, name: str, pretrained: bool, input_size: int | None, kwargs: dict[str, Any]) -> nn.Module:
    """A timm model at ``input_size`` where its size is a constructor argument (``img_size``); a model
    without one (a CNN) takes any size and is built as usual."""
    if input_size is None:
        plain: nn.Module = timm.create_model(name, pretrained=pretrained, **kwargs)
        return plain
    try:
        model: nn.Module = timm.create_model(name, pretrained=pretrained, img_size=input_size, **kwargs)
        return model
    except TypeError as exc:
        if "img_size" not in str(exc):
            raise
    except (AssertionError, ValueError) as exc:  # timm's own checks: a patch or window size that does not fit
        raise ConfigError(f"timm model {name!r} cannot be built for {input_size}x{input_size} inputs: {exc}; set the "
                          "scenario's size (`size` of [local]) to one the model takes, e.g. a multiple of its patch "
                          "and window sizes") from None
    any_size: nn.Module = timm.create_model(name, pretrained=pretrained, **kwargs)
    return any_size


def load_safetensors(model: nn.Module, path: Path) -> None:
    """Load a local safetensors file strictly; a mismatch names the missing/unexpected keys."""
    from safetensors.torch import load_file

    if not path.is_file():
        raise ConfigError(f"weights file {str(path)!r} does not exist")
    try:
        state = load_file(str(path))
    except Exception as exc:
        raise ConfigError(f"weights file {str(path)!r} is not a valid safetensors file: {exc}") from exc
    result = model.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ConfigError(
            f"weights file {str(path)!r} does not fit {type(model).__name__}: missing keys "
            f"{result.missing_keys[:5]}, unexpected keys {result.unexpected_keys[:5]}"
        )


def save_safetensors(model: nn.Module, path: str | os.PathLike[str]) -> Path:
    """Write a model's state as safetensors; atomic and fsynced, so a crash never leaves a truncated weights file."""
    target = Path(path)
    atomic_tensors(target, model.state_dict())
    return target
