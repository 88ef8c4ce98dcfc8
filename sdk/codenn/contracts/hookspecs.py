"""Every hook a codenn plugin can implement, and nothing else.

Plugins contribute by calling the ``register`` callback they receive, as ``llm`` and ``tox`` do:
the core owns the registries, rejects duplicate names and records which plugin registered what.
Each spec below types its argument; the types are for plugin authors and type checkers, pluggy
itself matches implementations by argument name.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    import click
    from torch import nn

    from codenn.contracts.protocols import Executor, Runtime, Transport
    from codenn.contracts.registry import Register
    from codenn.contracts.splitters import BlockSplitter

hookspec = pluggy.HookspecMarker("codenn")
hookimpl = pluggy.HookimplMarker("codenn")


@hookspec
def codenn_register_splitters(register: Callable[[BlockSplitter], None]) -> None:
    """Register block splitters.

    :param register: call ``register(splitter)`` once per :class:`codenn.contracts.splitters.BlockSplitter`
        instance. A splitter says which models it handles and cuts one into N contiguous blocks;
        its ``name`` is the registry key.
    """


@hookspec
def codenn_register_link_factories(register: Register[Callable[..., nn.Module]]) -> None:
    """Register link factories.

    :param register: call ``register(name, build, description="...")`` where
        ``build(src: BoundarySpec, dst: BoundarySpec, **options) -> torch.nn.Module``. A factory
        sees only the two public boundary specs, never another provider's module or parameters.
    """


@hookspec
def codenn_register_objectives(register: Register[Callable[..., float]]) -> None:
    """Register path objectives for the search.

    :param register: call ``register(name, objective, description="...")`` where
        ``objective(measures: PathMeasures, original_accuracy: float, model: CostModel) -> float``
        returns a cost (lower is better). The latency bound of eq. (2) applies to every objective.
    """


@hookspec
def codenn_register_runtimes(register: Register[Callable[..., Runtime]]) -> None:
    """Register inference runtimes (torch eager, CUDA graphs, ONNX Runtime, ...).

    :param register: call ``register(name, factory, description="...")`` where
        ``factory(model, **options)`` returns a :class:`codenn.contracts.protocols.Runtime` (``name``,
        ``device``, ``run(x) -> torch.Tensor``). ``model`` is a ``torch.nn.Module`` or the path of
        an ONNX file, as the description says. A factory asked for a device it cannot use raises a
        :class:`codenn.errors.CodennError`; it never falls back to another device silently.
    """


@hookspec
def codenn_register_transports(register: Register[Callable[..., Transport]]) -> None:
    """Register transports: how a local provider reaches a host provider's segments.

    :param register: call ``register(name, factory, description="...")`` where
        ``factory(**options)`` returns a :class:`codenn.remote.transport.Transport` (``health``,
        ``metadata``, ``infer``, ``train_forward``, ``train_backward``, ``close``). A transport
        carries boundary tensors and gradients only: never parameters, never labels. Down or
        timed-out hosts raise :class:`codenn.errors.HostUnavailableError`, refused requests
        :class:`codenn.errors.HostRejectedError`.
    """


@hookspec
def codenn_register_executors(register: Register[Callable[..., Executor]]) -> None:
    """Register search executors: where ``codenn search`` runs its path jobs.

    :param register: call ``register(name, factory, description="...")`` where
        ``factory(run: RunConfig, **options)`` returns a :class:`codenn.contracts.protocols.Executor`.
        ``run`` is the run's configuration: the base-model specs from which each worker loads the
        services' cached weights (never a provider's model object). Options are the
        ``[executor]`` keys: ``address``, ``workers``, ``threads_per_worker``, ``retries``.
        The in-process executor (``inprocess``) is the core's own and needs no plugin.
    """


@hookspec
def codenn_register_commands(cli: click.Group) -> None:
    """Add commands to the ``codenn`` command line.

    :param cli: a :class:`click.Group` of this plugin's own; add commands with ``@cli.command()``
        or ``cli.add_command``. They appear as ``codenn NAME``. A name that the core or another
        plugin already uses is a :class:`codenn.errors.PluginError` naming both. Import heavy
        dependencies inside the command, so that ``codenn --help`` stays fast.
    """
