"""Built-in path objectives: the paper's eq. (1), and accuracy times throughput."""

from __future__ import annotations

from collections.abc import Callable

from codenn import hookimpl
from codenn.paths.cost import accuracy_throughput, paper_cost


@hookimpl
def codenn_register_objectives(register: Callable[..., None]) -> None:
    register("paper", paper_cost, description="F(p) of eq. (1): exp(a(L_A-A_p)) + time and compute terms")
    register("accuracy_throughput", accuracy_throughput,
             description="-(accuracy x requests per second), the later version of the paper")
