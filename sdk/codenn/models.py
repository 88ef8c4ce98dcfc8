"""Load a provider's model by name (torchvision, timm) or from a local safetensors file.

Weights are never downloaded implicitly: ``weights=None`` gives random initialisation,
``weights="DEFAULT"`` (or a torchvision enum name) asks torchvision/timm for pretrained weights,
and a ``.safetensors`` path loads a local file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from torch import nn

from codenn.errors import ConfigError
from codenn.fileio import atomic_tensors


def load_model(name: str, *, weights: str | os.PathLike[str] | None = None, num_classes: int | None = None) -> nn.Module:
    """Build ``name`` from torchvision, else timm, and load ``weights`` if given."""
    local = Path(weights) if weights is not None and _is_local_file(weights) else None
    model = _build(name, pretrained=None if local else weights, num_classes=num_classes)
    if local is not None:
        load_safetensors(model, local)
    return model


def _is_local_file(weights: str | os.PathLike[str]) -> bool:
    return str(weights).endswith(".safetensors") or Path(weights).exists()


def _build(name: str, *, pretrained: str | os.PathLike[str] | None, num_classes: int | None) -> nn.Module:
    import torchvision

    kwargs: dict[str, Any] = {} if num_classes is None else {"num_classes": num_classes}
    if name in torchvision.models.list_models():
        model: nn.Module = torchvision.models.get_model(name, weights=pretrained, **kwargs)
        return model
    import timm

    if timm.is_model(name):
        return timm.create_model(name, pretrained=pretrained is not None, **kwargs)
    raise ConfigError(
        f"unknown model {name!r}: it is neither a torchvision model "
        "(torchvision.models.list_models()) nor a timm model (timm.list_models()); "
        "pass your own nn.Module to Service instead"
    )


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
