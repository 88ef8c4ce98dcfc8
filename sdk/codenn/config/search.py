"""The search's configuration (``[search]``, ``[space]``, ``[fast]``): its hash names the run."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any

from codenn.config.cost import CostModel
from codenn.config.network import Network
from codenn.config.train import TrainConfig
from codenn.errors import ConfigError

STRATEGIES = ("exhaustive", "fast")
# The accuracy assumed when bounding a path's cost before training: "perfect" (1.0) never drops a
# path that could win; "original" (L_A) also drops paths that would need to beat the original
# model's accuracy, which cross paths sometimes do.
BOUND_ACCURACIES = ("perfect", "original")
DEFAULT_LINK = "conv1x1"
"""The link factory used wherever none is named: a path built in Python, a search, a TOML file."""


@dataclass(frozen=True)
class SpaceConfig:
    """Which candidate paths to consider (:class:`codenn.paths.space.PathSpace` enumerates them)."""

    skip: bool = True
    cross: bool = True
    min_skipped: int = 1
    max_hosts: int = 1
    hin: int | None = None
    hout: int | None = None

    def __post_init__(self) -> None:
        if self.min_skipped < 0 or self.max_hosts < 0:
            raise ConfigError(f"[space] needs min_skipped >= 0 and max_hosts >= 0, got {self.min_skipped}, "
                              f"{self.max_hosts}")
        for name in ("hin", "hout"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
                raise ConfigError(f"[space] {name} must be a block index >= 0 or unset, got {value!r}")


@dataclass(frozen=True)
class FastConfig:
    """Knobs of the fast strategy."""

    screen_keep: int = 8
    eta: int = 2
    first_rung_epochs: int = 1
    final_keep: int = 2
    bound_accuracy: str = "perfect"
    keep_cross: int = 2
    """The best cross paths (by cost at each stage) that go on whatever their rank: a least-squares
    estimate or one epoch underrates a path through another provider's blocks far more than a skip
    path, and the point of the search is to see what the hosts offer."""

    def __post_init__(self) -> None:
        if self.keep_cross < 0:
            raise ConfigError(f"fast search needs keep_cross >= 0; got {self.keep_cross}")
        if self.screen_keep < 1 or self.eta < 2 or self.first_rung_epochs < 1 or self.final_keep < 1:
            raise ConfigError(
                f"fast search needs screen_keep >= 1, eta >= 2, first_rung_epochs >= 1, final_keep >= 1; got {self}"
            )
        if self.bound_accuracy not in BOUND_ACCURACIES:
            raise ConfigError(f"bound_accuracy {self.bound_accuracy!r} is not one of {BOUND_ACCURACIES}")


@dataclass(frozen=True)
class SearchConfig:
    """Everything one search needs besides its services and data; its hash names the run."""

    strategy: str = "fast"
    link: str = DEFAULT_LINK
    link_options: dict[str, Any] = field(default_factory=dict)
    train: TrainConfig = field(default_factory=TrainConfig)
    cost: CostModel = field(default_factory=CostModel)
    network: Network = field(default_factory=Network)
    space: SpaceConfig = field(default_factory=SpaceConfig)
    fast: FastConfig = field(default_factory=FastConfig)
    profile_batch: int = 1
    profile_repeats: int = 10

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ConfigError(f"unknown search strategy {self.strategy!r}; choose one of {STRATEGIES}")
        if self.profile_batch < 1 or self.profile_repeats < 1:
            raise ConfigError(f"profile_batch and profile_repeats must be >= 1, got {self.profile_batch}, "
                              f"{self.profile_repeats}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def hash(self) -> str:
        d = self.to_dict()
        d["train"].pop("progress", None)
        return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]


DEFAULT_SPACE = SpaceConfig(hin=1)  # the paper's experiments enter the host at block 1
