"""The objectives that score a path: eq. (1) of the paper and accuracy x throughput (coefficients:
:class:`codenn.config.cost.CostModel`).

Units (every coefficient is per these units):

- accuracy ``A_p``, ``L_A``: fractions in [0, 1];
- times ``T_cm``, ``T_cp,l``, ``T_cp,h``: microseconds per request (one sample);
- compute ``C_l``, ``C_h``: GFLOPs per sample (``compute_unit="gflops"``, the default) or millions
  of parameters (``compute_unit="mparams"``), on the local provider and on the hosts.

F(p) = exp(a (L_A - A_p)) + b T_cm + c_l T_cp,l + c_h T_cp,h + d_l C_l + d_h C_h      (1)
subject to T_cp,l + T_cp,h + T_cm <= L_T                                              (2)

Defaults are the paper's Experiment 4 values (a = 40, c_l = 1e-6, c_h = 2e-5, d_l = d_h = 10);
the paper gives no b (its communication time was negligible), so b defaults to c_l.
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
