"""The transport contract: how a local provider reaches the segments a host provider serves.

A host serves each trained cross path it takes part in as one *model*: the path's entry link,
the host's frozen blocks ``hin..hout`` and the exit link (the ``host-NAME`` part of
:func:`codenn_adapters.onnx_export.split_path`). What crosses a transport is only boundary
tensors (activations going out, the host's outputs coming back) and, for split training, the
gradient of the local loss with respect to the host's output. Never parameters, never labels.

Implementations come from plugins (hook ``codenn_register_transports``); the built-ins are
``in-process`` and ``http`` in :mod:`codenn_adapters.transports`. The core imports none of them.

Failure contract (a coordinator relies on it to fall back to a local path):

- :class:`codenn.errors.HostUnavailableError`: the host is down, unreachable, overloaded or too
  slow (``timeout``). The request was fine; run it locally instead.
- :class:`codenn.errors.HostRejectedError`: the host refused the request (credentials, size,
  shape). Fix the request.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import torch

from codenn.errors import ConfigError

if TYPE_CHECKING:
    from codenn.plugins import Plugins


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


def make_transport(name: str, *, plugins: Plugins | None = None, **options: Any) -> Transport:
    """Build a registered transport by name (``in-process``, ``http``, or a plugin's)."""
    from codenn.plugins import get_plugins

    entry = (plugins or get_plugins()).transports.get(name)
    transport = entry.factory(**options)
    if not isinstance(transport, Transport):
        raise ConfigError(
            f"transport factory {name!r} returned {type(transport).__name__}, which lacks the "
            "codenn.transport.Transport methods (health, metadata, infer, train_forward, train_backward, close)"
        )
    return transport
