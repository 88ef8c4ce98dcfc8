"""How a local provider's server routes requests between its paths (``codenn serve``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from codenn.config.cost import CostModel
from codenn.errors import ConfigError


@dataclass(frozen=True)
class RoutingConfig:
    """How the coordinator weighs load and treats a failing host."""

    cost: CostModel = field(default_factory=CostModel)
    workers: int = 1
    timeout_s: float = 1.0
    retry_after_s: float = 2.0
    smoothing: float = 0.2

    def __post_init__(self) -> None:
        if self.workers < 1 or self.timeout_s <= 0 or self.retry_after_s < 0 or not 0 < self.smoothing <= 1:
            raise ConfigError(f"routing: workers={self.workers} must be >= 1, timeout_s={self.timeout_s} > 0, "
                              f"retry_after_s={self.retry_after_s} >= 0, smoothing={self.smoothing} in (0, 1]")
