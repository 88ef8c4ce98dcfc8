"""The contracts that plugins' products fulfil: what a transport and a runtime offer.

They live apart from the modules that build them by name (:mod:`codenn.remote.transport`,
:mod:`codenn.contracts.plugins`) so that the plugin manager can check what a factory returns without an
import cycle. ``codenn.remote.transport`` re-exports :class:`Transport` and :class:`HostReply`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch


@dataclass(frozen=True)
class HostReply:
    """What a host returned for one call, with the times eq. (1) needs.

    ``host_compute_s`` is what the host reports it spent computing; ``round_trip_s`` is measured
    by the caller around the whole call. Their difference is the communication time T_cm
    (serialisation, network, queueing), which is what the paper's cost model charges for.
    """

    output: torch.Tensor
    host_compute_s: float
    round_trip_s: float

    @property
    def comm_s(self) -> float:
        """T_cm: round trip minus the host's own compute (never negative)."""
        return max(0.0, self.round_trip_s - self.host_compute_s)


@runtime_checkable
class Transport(Protocol):
    """A connection to one host provider. ``model`` names one of the host's served segments."""

    name: str

    def health(self) -> bool:
        """True when the host is up and ready; never raises for a down host."""
        ...

    def metadata(self, model: str) -> dict[str, Any]:
        """The served segment's public description (OIP model metadata): its input and output
        tensors and, in ``parameters``, the host's service card and the path spec. Never
        parameters of any module."""
        ...

    def infer(self, model: str, x: torch.Tensor, timeout: float | None = None) -> HostReply:
        """Run the segment on a batch of boundary activations (no gradients anywhere)."""
        ...

    def train_forward(self, model: str, x: torch.Tensor, step: int, timeout: float | None = None) -> HostReply:
        """Split training, forward half: the host runs its links and blocks with autograd on and
        keeps the graph under ``step`` until :meth:`train_backward` for the same step."""
        ...

    def train_backward(self, model: str, step: int, grad: torch.Tensor, timeout: float | None = None) -> float:
        """Split training, backward half: ``grad`` is dL/d(host output) of ``step``. The host
        back-propagates into its own links and steps its own optimizer. Returns the host's
        reported compute seconds."""
        ...

    def close(self) -> None:
        """Release connections; the transport is unusable afterwards."""
        ...


@runtime_checkable
class Runtime(Protocol):
    """What every runtime offers: a name, the device its outputs live on, and ``run``."""

    name: str
    device: str

    def run(self, x: torch.Tensor) -> torch.Tensor:
        """One forward pass on a batch; the output is a tensor on :attr:`device`."""
        ...


@runtime_checkable
class Executor(Protocol):
    """Where a search's path jobs run (:mod:`codenn.search.jobs`): this process, or a cluster.

    ``start`` gets the search's own :class:`~codenn.search.jobs.PathWorker` (an in-process executor
    runs jobs on it; a remote one reads its expectations: the fingerprints and data digest every
    remote worker must reproduce). ``map`` yields one result per job, in the order they finish;
    a job whose worker died is retried elsewhere. ``close`` releases the workers.
    """

    name: str

    def start(self, worker: Any) -> None:
        ...

    def map(self, jobs: Sequence[Any]) -> Iterator[Any]:
        ...

    def close(self) -> None:
        ...
