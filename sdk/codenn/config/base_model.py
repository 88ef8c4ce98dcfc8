"""How each provider's base model is obtained (``[local]``, ``[[hosts]]``): architecture, task,
initial weights and training, and the embedded default scenario's two models."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

from codenn.errors import ConfigError


@dataclass(frozen=True)
class BaseModelSpec:
    """How a provider's base model is obtained: architecture, task, initial weights, training."""

    model: str
    task: str
    epochs: int
    lr: float
    batch_size: int = 64
    size: int = 64
    weights: str | None = None
    seed: int = 0
    patience: int = 0
    """Early stopping: with patience > 0, training stops once validation accuracy has not risen for
    that many epochs (``epochs`` is then the most), and the best epoch's weights are kept."""
    lr_drops: int = 0
    """With patience: instead of stopping the first times accuracy stops rising, go back to the
    best epoch and go on at a tenth of the learning rate, this many times (a model trained to its
    ceiling, not to its first plateau)."""

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.patience < 0 or self.lr_drops < 0 or not self.lr > 0:
            raise ConfigError(f"base model {self.model!r}: epochs={self.epochs} must be >= 1, patience="
                              f"{self.patience} and lr_drops={self.lr_drops} >= 0, lr={self.lr} > 0")

    def key(self) -> str:
        fields = asdict(self)
        for name in ("patience", "lr_drops"):  # models cached before these existed keep their key
            if not fields[name]:
                fields.pop(name)
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:12]


DEFAULT_LOCAL = BaseModelSpec("alexnet_cifar", "digits", epochs=60, lr=1e-3, batch_size=32, size=32, patience=4,
                              lr_drops=2)
"""The paper's local provider: a CIFAR-sized AlexNet on 32x32 handwritten digits, trained until
validation accuracy stops rising (so no skip path can beat an under-trained original)."""
DEFAULT_HOST = BaseModelSpec("mobilenet_v2", "letters", epochs=30, lr=2e-3, size=32, patience=4)
"""The host provider: MobileNetV2 on rendered letters, a task whose pen strokes transfer to digits."""
