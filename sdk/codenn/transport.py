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

from typing import Any

from codenn.plugins import Plugins, get_plugins
from codenn.protocols import HostReply, Transport

__all__ = ["HostReply", "Transport", "make_transport"]


def make_transport(name: str, *, plugins: Plugins | None = None, **options: Any) -> Transport:
    """Build a registered transport by name (``in-process``, ``http``, or a plugin's)."""
    return (plugins or get_plugins()).transports.build(name, **options)
