"""Every hook a codenn plugin can implement, and nothing else.

Plugins contribute by calling the ``register`` callback they receive, as ``llm`` and ``tox`` do:
the core owns the registries, rejects duplicate names and records which plugin registered what.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pluggy

hookspec = pluggy.HookspecMarker("codenn")
hookimpl = pluggy.HookimplMarker("codenn")


@hookspec
def codenn_register_splitters(register: Callable[[Any], None]) -> None:
    """Register block splitters.

    Call ``register(splitter)`` once per :class:`codenn.splitters.BlockSplitter` instance. A
    splitter says which models it handles and cuts one into N contiguous blocks.
    """


@hookspec
def codenn_register_link_factories(register: Callable[..., None]) -> None:
    """Register link factories.

    Call ``register(name, build, description="...")`` where
    ``build(src: BoundarySpec, dst: BoundarySpec, **options) -> torch.nn.Module``. A factory sees
    only the two public boundary specs, never another provider's module or parameters.
    """


@hookspec
def codenn_register_objectives(register: Callable[..., None]) -> None:
    """Register path objectives for the search.

    Call ``register(name, objective, description="...")`` where
    ``objective(measures: PathMeasures, original_accuracy: float, model: CostModel) -> float``
    returns a cost (lower is better). The latency bound of eq. (2) applies to every objective.
    """


@hookspec
def codenn_register_runtimes(register: Callable[..., None]) -> None:
    """Register inference runtimes (torch eager, CUDA graphs, ONNX Runtime, ...).

    Call ``register(name, factory, description="...")`` where ``factory(model, **options)``
    returns a runtime: an object with ``name``, ``device`` and ``run(x: torch.Tensor) ->
    torch.Tensor``. ``model`` is a ``torch.nn.Module`` or the path of an ONNX file, as the
    runtime's description says. A factory asked for a device it cannot use raises a
    :class:`codenn.errors.CodennError`; it never falls back to another device silently.
    """


@hookspec
def codenn_register_transports(register: Callable[..., None]) -> None:
    """Register transports: how a local provider reaches a host provider's segments.

    Call ``register(name, factory, description="...")`` where ``factory(**options)`` returns a
    :class:`codenn.transport.Transport` (``health``, ``metadata``, ``infer``, ``train_forward``,
    ``train_backward``, ``close``). A transport carries boundary tensors and gradients only: never
    parameters, never labels. Down or timed-out hosts raise
    :class:`codenn.errors.HostUnavailableError`, refused requests :class:`codenn.errors.HostRejectedError`.
    """
