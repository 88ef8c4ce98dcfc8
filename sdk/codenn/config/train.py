"""How links are trained (``[train]``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from codenn.errors import ConfigError


@dataclass(frozen=True)
class TrainConfig:
    """How links are trained. ``epochs`` is the full budget a path gets."""

    epochs: int = 3
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.0
    distill: float = 0.0
    temperature: float = 2.0
    ls_init: bool = True
    ls_samples: int = 256
    ls_ridge: float = 1e-3
    device: str = "cpu"
    amp: bool | None = None
    seed: int = 0
    progress: bool = True

    def __post_init__(self) -> None:
        checks = {
            "epochs": self.epochs >= 1,
            "batch_size": self.batch_size >= 1,
            "lr": self.lr > 0,
            "weight_decay": self.weight_decay >= 0,
            "distill": 0 <= self.distill <= 1,
            "temperature": self.temperature > 0,
            "ls_samples": self.ls_samples >= 1,
            "ls_ridge": self.ls_ridge >= 0,
        }
        for name, ok in checks.items():
            if not ok:
                raise ConfigError(f"train option {name}={getattr(self, name)!r} is out of range")

    def use_amp(self) -> bool:
        """bfloat16 autocast: on by default on CUDA, off elsewhere (``amp`` overrides)."""
        return self.device.split(":", 1)[0] == "cuda" if self.amp is None else self.amp

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
