"""Plugin manager factory, entry-point loading, and the typed registries the core reads.

Built-in plugins are entry points of codenn's own distribution, so they load exactly like
third-party ones. Every failure names the plugin that caused it.

Environment switches (read when a manager is created):

- ``CODENN_DISABLE_PLUGINS``: comma-separated entry-point names to skip.
- ``CODENN_LOAD_PLUGINS``: comma-separated entry-point names; only these load. Empty: none.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from importlib import metadata
from types import ModuleType
from typing import TYPE_CHECKING, Any

import pluggy
from torch import nn

import codenn.contracts.hookspecs as hookspecs
from codenn.contracts.protocols import Executor, Runtime, Transport
from codenn.contracts.registry import Registry
from codenn.contracts.splitters import BlockSplitter
from codenn.errors import PluginError

if TYPE_CHECKING:
    import click

ENTRY_POINT_GROUP = "codenn"

#: The registries filled from ``register(name, obj, description="...")`` hooks: attribute ->
#: (what one entry is called in messages, hook name, what ``Registry.build`` must return).
NAMED_REGISTRIES: dict[str, tuple[str, str, type[Any] | None, str]] = {
    "link_factories": ("link factory", "codenn_register_link_factories", nn.Module, "a torch.nn.Module"),
    "objectives": ("objective", "codenn_register_objectives", None, ""),
    "runtimes": ("runtime", "codenn_register_runtimes", Runtime,
                 "a codenn.contracts.protocols.Runtime (name, device, run(x))"),
    "transports": ("transport", "codenn_register_transports", Transport,
                   "a codenn.remote.transport.Transport (health, metadata, infer, train_forward, train_backward, close)"),
    "executors": ("executor", "codenn_register_executors", Executor,
                  "a codenn.contracts.protocols.Executor (name, start(worker), map(jobs), close())"),
}


@dataclass(frozen=True)
class PluginInfo:
    """What ``codenn plugins`` prints for one plugin."""

    name: str
    distribution: str | None
    version: str | None
    hooks: tuple[str, ...]
    registered: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "distribution": self.distribution,
            "version": self.version,
            "hooks": list(self.hooks),
            "registered": {k: list(v) for k, v in self.registered.items()},
        }


class Plugins:
    """A pluggy manager plus the registries filled from its hooks.

    Registries are filled lazily, once, on first access; plugins registered later (tests do this)
    call :meth:`refresh`.
    """

    def __init__(self, pm: pluggy.PluginManager, distributions: dict[str, tuple[str, str]]) -> None:
        self.pm = pm
        self._distributions = distributions
        self._registries: dict[str, Registry[Any]] = {}

    # -- registration -------------------------------------------------------------------------
    def register(self, plugin: object, name: str | None = None) -> str:
        """Register a plugin object (module or class instance) and validate its hooks."""
        try:
            plugin_name = self.pm.register(plugin, name=name)
        except ValueError as exc:  # pluggy: name already registered
            raise PluginError(f"plugin {name or plugin!r} could not be registered: {exc}") from exc
        except pluggy.PluginValidationError as exc:
            raise PluginError(f"plugin {exc.plugin!r} is invalid: {exc}") from exc
        if plugin_name is None:
            raise PluginError(f"plugin {name or plugin!r} is blocked or already registered")
        validate_hooks(self.pm)
        self.refresh()
        return plugin_name

    def refresh(self) -> None:
        self._registries.clear()

    # -- registries ---------------------------------------------------------------------------
    @property
    def splitters(self) -> Registry[BlockSplitter]:
        def fill(owner: str, registry: Registry[BlockSplitter]) -> Callable[..., None]:
            def register(splitter: BlockSplitter) -> None:
                if not isinstance(splitter, BlockSplitter):
                    raise PluginError(
                        f"plugin {owner!r} registered {splitter!r} as a splitter; expected an "
                        "instance of codenn.contracts.splitters.BlockSplitter"
                    )
                registry.add(splitter.name, splitter, owner, _first_line(type(splitter).__doc__))

            return register

        return self._registry("splitters", Registry("splitter"), "codenn_register_splitters", fill)

    @property
    def link_factories(self) -> Registry[Callable[..., nn.Module]]:
        return self._named("link_factories")

    @property
    def objectives(self) -> Registry[Callable[..., float]]:
        return self._named("objectives")

    @property
    def runtimes(self) -> Registry[Callable[..., Runtime]]:
        return self._named("runtimes")

    @property
    def transports(self) -> Registry[Callable[..., Transport]]:
        return self._named("transports")

    @property
    def executors(self) -> Registry[Callable[..., Executor]]:
        return self._named("executors")

    @property
    def commands(self) -> Registry[click.Command]:
        """CLI commands from ``codenn_register_commands``: each plugin adds to a group of its own,
        so a name two plugins (or a plugin and the core) both use is caught, not overwritten."""
        import click

        def fill(owner: str, registry: Registry[click.Command]) -> Callable[..., None]:
            def register(cli: click.Group) -> None:
                for name, command in cli.commands.items():
                    registry.add(name, command, owner, command.get_short_help_str(limit=80))

            return register

        def call(owner: str, registry: Registry[click.Command], impl: Callable[..., Any]) -> None:
            group = click.Group("codenn")
            impl(cli=group)
            fill(owner, registry)(group)

        return self._registry("commands", Registry("command"), "codenn_register_commands", fill, call)

    def _named(self, attr: str) -> Registry[Any]:
        """A registry filled by ``register(name, obj, description="...")`` calls."""
        kind, hook_name, returns, hint = NAMED_REGISTRIES[attr]

        def fill(owner: str, registry: Registry[Any]) -> Callable[..., None]:
            def register(name: str, obj: Any, description: str = "") -> None:
                if not callable(obj):
                    raise PluginError(f"plugin {owner!r} registered {kind} {name!r} with {obj!r}, which is not callable")
                registry.add(name, obj, owner, description)

            return register

        return self._registry(attr, Registry(kind, returns=returns, returns_hint=hint), hook_name, fill)

    def _registry(
        self,
        attr: str,
        registry: Registry[Any],
        hook_name: str,
        fill: Callable[[str, Registry[Any]], Callable[..., None]],
        call: Callable[[str, Registry[Any], Callable[..., Any]], None] | None = None,
    ) -> Registry[Any]:
        """Fill ``registry`` from one hook, once, calling each plugin's implementation on its own
        so that every registration knows its owner."""
        if attr in self._registries:
            return self._registries[attr]
        for impl in getattr(self.pm.hook, hook_name).get_hookimpls():  # registration order
            owner = impl.plugin_name
            try:
                if call is not None:
                    call(owner, registry, impl.function)
                else:
                    register = _reporting_misuse(owner, registry.kind, fill(owner, registry))
                    impl.function(*[{"register": register}[a] for a in impl.argnames])
            except PluginError:
                raise
            except Exception as exc:
                raise PluginError(
                    f"plugin {owner!r} failed in {hook_name}: {type(exc).__name__}: {exc}"
                ) from exc
        self._registries[attr] = registry
        return registry

    # -- introspection ------------------------------------------------------------------------
    def info(self) -> list[PluginInfo]:
        registries: dict[str, Registry[Any]] = {
            "splitters": self.splitters, **{attr: self._named(attr) for attr in NAMED_REGISTRIES},
            "commands": self.commands,
        }
        out = []
        for name, plugin in self.pm.list_name_plugin():
            if plugin is hookspecs:
                continue
            dist, version = self._distributions.get(name, (None, None))
            hooks = tuple(sorted(h.name for h in self.pm.get_hookcallers(plugin) or []))
            registered = {
                kind: tuple(reg.by_owner(name)) for kind, reg in registries.items() if reg.by_owner(name)
            }
            out.append(PluginInfo(name, dist, version, hooks, registered))
        return sorted(out, key=lambda p: p.name)


def _reporting_misuse(owner: str, kind: str, register: Callable[..., None]) -> Callable[..., None]:
    """``register`` called with the wrong arguments is the plugin's mistake: say whose."""

    def checked(*args: Any, **kwargs: Any) -> None:
        try:
            inspect.signature(register).bind(*args, **kwargs)
        except TypeError as exc:
            raise PluginError(f"plugin {owner!r} called register() for a {kind} wrongly: {exc}") from exc
        register(*args, **kwargs)

    return checked


def _first_line(doc: str | None) -> str:
    return (doc or "").strip().splitlines()[0] if (doc or "").strip() else ""


def validate_hooks(pm: pluggy.PluginManager) -> None:
    """Turn pluggy's check of misspelled hooks into an error naming the plugin and the hook."""
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        name = pm.get_name(exc.plugin) if exc.plugin is not None else "?"
        known = sorted(n for n in dir(hookspecs) if n.startswith("codenn_"))
        raise PluginError(
            f"plugin {name!r} implements an unknown hook: {exc}. Known hooks: {', '.join(known)}"
        ) from exc


def _names_from_env(var: str) -> set[str] | None:
    raw = os.environ.get(var)
    if raw is None:
        return None
    return {n.strip() for n in raw.split(",") if n.strip()}


def _entry_points() -> Iterable[metadata.EntryPoint]:
    return metadata.entry_points(group=ENTRY_POINT_GROUP)


def create_plugins(*, load_entry_points: bool = True, extra: Iterable[ModuleType | object] = ()) -> Plugins:
    """Make a fresh plugin manager: hookspecs, entry-point plugins (unless told not to), extras."""
    pm = pluggy.PluginManager(ENTRY_POINT_GROUP)
    pm.add_hookspecs(hookspecs)
    distributions: dict[str, tuple[str, str]] = {}
    if load_entry_points:
        only = _names_from_env("CODENN_LOAD_PLUGINS")
        disabled = _names_from_env("CODENN_DISABLE_PLUGINS") or set()
        seen: set[str] = set()
        for ep in _entry_points():
            if ep.name in disabled or (only is not None and ep.name not in only):
                continue
            dist = ep.dist.name if ep.dist is not None else None
            if ep.name in seen:
                raise PluginError(
                    f"plugin name {ep.name!r} (entry point {ep.value!r}, distribution {dist!r}) "
                    "is declared twice in the 'codenn' entry-point group; rename one of them"
                )
            seen.add(ep.name)
            try:
                module = ep.load()
            except Exception as exc:
                raise PluginError(
                    f"plugin {ep.name!r} (entry point {ep.value!r}, distribution {dist!r}) failed "
                    f"to import: {type(exc).__name__}: {exc}. Disable it with "
                    f"CODENN_DISABLE_PLUGINS={ep.name}"
                ) from exc
            try:
                pm.register(module, name=ep.name)
            except (ValueError, pluggy.PluginValidationError) as exc:
                raise PluginError(f"plugin {ep.name!r} could not be registered: {exc}") from exc
            if ep.dist is not None:
                distributions[ep.name] = (ep.dist.name, ep.dist.version)
    plugins = Plugins(pm, distributions)
    for obj in extra:
        plugins.register(obj)
    validate_hooks(pm)
    return plugins


_default: Plugins | None = None


def get_plugins() -> Plugins:
    """The process-wide plugin set, loaded from entry points on first use."""
    global _default
    if _default is None:
        _default = create_plugins()
    return _default


def reset_plugins() -> None:
    """Forget the process-wide plugin set (tests, or after installing a plugin at run time)."""
    global _default
    _default = None
