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
  slow (``timeout`` is a deadline for the whole call). The request was fine; run it locally instead.
- :class:`codenn.errors.BadHostReplyError`, a kind of HostUnavailableError: the host answered,
  but not with what the call needs (a reply that cannot be read or is too large, no numeric
  ``host_compute_s``; and, from :func:`check_host_reply`, the wrong shape, dtype or batch, or
  NaN / inf). A host that answers wrongly is as useless as a down one, and is treated the same.
- :class:`codenn.errors.HostRejectedError`: the host refused the request (credentials, size,
  shape). Fix the request.

A transport checks what it can see on the wire; only the caller knows which boundary a reply
must fit, so whoever uses a reply checks it with :func:`check_host_reply` first.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from codenn.contracts.plugins import Plugins, get_plugins
from codenn.contracts.protocols import HostReply, Transport
from codenn.errors import BadHostReplyError
from codenn.model.blocks import BoundarySpec

__all__ = ["HostReply", "Transport", "check_host_reply", "make_transport"]


def make_transport(name: str, *, plugins: Plugins | None = None, **options: Any) -> Transport:
    """Build a registered transport by name (``in-process``, ``http``, or a plugin's)."""
    return (plugins or get_plugins()).transports.build(name, **options)


def _seconds_ok(value: object) -> bool:
    """A time a reply may carry: a real, finite number >= 0 (a bool is not one)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= 0


def check_host_reply(reply: HostReply, expected: BoundarySpec, batch: int, *, host: str, model: str) -> HostReply:
    """``reply`` if it is what a call for ``batch`` samples needs, else :class:`BadHostReplyError`.

    A host is another provider: its answer is checked before anything uses it, or measures it.
    The output must be a tensor of ``expected.dtype`` and shape ``[batch, *expected.shape]``
    holding only finite values; ``host_compute_s`` and ``round_trip_s`` real finite numbers
    >= 0. The error names the host and model, what came and what was expected, so the caller
    can fall back locally and say why (a BadHostReplyError is a HostUnavailableError).
    """
    where = f"host {host!r} answered model {model!r}"
    want = [batch, *expected.shape]
    wanted = f"expected {want} {expected.dtype}"
    out = reply.output
    if not isinstance(out, torch.Tensor):
        raise BadHostReplyError(f"{where} with a {type(out).__name__}, not a tensor; {wanted}")
    shape, dtype = list(out.shape), str(out.dtype).removeprefix("torch.")
    if shape != want or dtype != expected.dtype:
        batch_note = f"a batch of {shape[0]} ({batch} sent), " if shape and shape[1:] == want[1:] \
            and shape[0] != batch else ""
        raise BadHostReplyError(f"{where} with {batch_note}shape {shape} {dtype}; {wanted}")
    if out.is_floating_point() or out.is_complex():
        finite = torch.isfinite(out)
        if not bool(finite.all()):
            bad = out.numel() - int(finite.sum())
            raise BadHostReplyError(f"{where} with {bad} non-finite value{'s' if bad != 1 else ''} (NaN or inf) of "
                                    f"{out.numel()}; expected only finite values")
    for field in ("host_compute_s", "round_trip_s"):
        value = getattr(reply, field)
        if not _seconds_ok(value):
            raise BadHostReplyError(f"{where} with {field}={value!r}; expected a finite number of seconds >= 0")
    return reply
