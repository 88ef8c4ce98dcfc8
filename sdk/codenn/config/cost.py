"""The coefficients of eq. (1), the latency bound L_T of eq. (2) and the objective's name (``[cost]``).

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

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from codenn.errors import ConfigError

COMPUTE_UNITS = ("gflops", "mparams")


class Measured(Protocol):
    """What eq. (1) and eq. (2) read about a path (:class:`codenn.paths.cost.PathMeasures` has it);
    a protocol, so that the configuration imports nothing of the paths it scores."""

    @property
    def accuracy(self) -> float: ...

    @property
    def t_comm_us(self) -> float: ...

    @property
    def t_local_us(self) -> float: ...

    @property
    def t_host_us(self) -> float: ...

    @property
    def latency_us(self) -> float: ...

    def compute(self, unit: str) -> tuple[float, float]: ...


@dataclass(frozen=True)
class CostModel:
    """Coefficients of eq. (1), the bound L_T of eq. (2), and the objective's name."""

    a: float = 40.0
    b: float = 1e-6
    c_l: float = 1e-6
    c_h: float = 2e-5
    d_l: float = 10.0
    d_h: float = 10.0
    latency_bound_us: float | None = None
    compute_unit: str = "gflops"
    objective: str = "paper"
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("a", "b", "c_l", "c_h", "d_l", "d_h"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ConfigError(f"cost coefficient {name} must be a finite number >= 0, got {value!r}")
        if self.latency_bound_us is not None and not self.latency_bound_us > 0:
            raise ConfigError(f"latency bound L_T must be > 0 microseconds, got {self.latency_bound_us!r}")
        if self.compute_unit not in COMPUTE_UNITS:
            raise ConfigError(f"compute_unit {self.compute_unit!r} is not one of {COMPUTE_UNITS}")

    def feasible(self, m: Measured) -> bool:
        """Eq. (2): the path's total latency is within L_T (always true without a bound)."""
        return self.latency_bound_us is None or m.latency_us <= self.latency_bound_us

    def terms(self, m: Measured, original_accuracy: float) -> dict[str, float]:
        """Each term of eq. (1), for tables and results.jsonl."""
        c_l, c_h = m.compute(self.compute_unit)
        return {
            "accuracy_term": math.exp(self.a * (original_accuracy - m.accuracy)),
            "comm_term": self.b * m.t_comm_us,
            "local_time_term": self.c_l * m.t_local_us,
            "host_time_term": self.c_h * m.t_host_us,
            "local_compute_term": self.d_l * c_l,
            "host_compute_term": self.d_h * c_h,
        }

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
