"""The objectives that score a path: eq. (1) of the paper and accuracy x throughput.

Their coefficients, the bound L_T of eq. (2) and the units every term is in (accuracy as a
fraction, times in µs per sample, compute in GFLOPs or Mparams per sample) are
:class:`codenn.config.cost.CostModel`'s.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from codenn.config.cost import CostModel


@dataclass(frozen=True)
class PathMeasures:
    """Everything an objective may read about one path (units as in the module docstring)."""

    spec: str
    accuracy: float
    t_comm_us: float
    t_local_us: float
    t_host_us: float
    local_gflops: float
    host_gflops: float
    local_mparams: float
    host_mparams: float

    @property
    def latency_us(self) -> float:
        return self.t_comm_us + self.t_local_us + self.t_host_us

    def compute(self, unit: str) -> tuple[float, float]:
        return (self.local_gflops, self.host_gflops) if unit == "gflops" else (self.local_mparams, self.host_mparams)

Objective = Callable[[PathMeasures, float, CostModel], float]


def paper_cost(m: PathMeasures, original_accuracy: float, model: CostModel) -> float:
    """F(p) of eq. (1); lower is better."""
    return sum(model.terms(m, original_accuracy).values())


def accuracy_throughput(m: PathMeasures, original_accuracy: float, model: CostModel) -> float:
    """Minus accuracy times throughput (requests per second at the path's latency); lower is better."""
    return -m.accuracy * 1e6 / max(m.latency_us, 1e-9)
