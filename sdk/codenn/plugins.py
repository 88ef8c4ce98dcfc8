"""Plugin manager factory, entry-point loading, and the typed registries the core reads.

Built-in plugins are entry points of codenn's own distribution, so they load exactly like
third-party ones. Every failure names the plugin that caused it.

Environment switches (read when a manager is created):

- ``CODENN_DISABLE_PLUGINS``: comma-separated entry-point names to skip.
- ``CODENN_LOAD_PLUGINS``: comma-separated entry-point names; only these load. Empty: none.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from importlib import metadata
from types import ModuleType
from typing import TYPE_CHECKING, Any

import pluggy

from codenn import hookspecs
from codenn.errors import PluginError
from codenn.registry import Registry

if TYPE_CHECKING:
    from codenn.links import LinkFactory
    from codenn.splitters import BlockSplitter

ENTRY_POINT_GROUP = "codenn"


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
        from codenn.splitters import BlockSplitter

        def entry(owner: str, splitter: Any) -> tuple[str, BlockSplitter]:
            if not isinstance(splitter, BlockSplitter):
                raise PluginError(
                    f"plugin {owner!r} registered {splitter!r} as a splitter; expected an "
                    "instance of codenn.splitters.BlockSplitter"
                )
            return splitter.name, splitter

        return self._registry("splitter", "codenn_register_splitters", entry)

    @property
    def link_factories(self) -> Registry[LinkFactory]:
        from codenn.links import LinkFactory

        return self._named_callables("link factory", "codenn_register_link_factories", LinkFactory)

    @property
    def objectives(self) -> Registry[ObjectiveEntry]:
        return self._named_callables("objective", "codenn_register_objectives", ObjectiveEntry)

    @property
    def runtimes(self) -> Registry[RuntimeEntry]:
        return self._named_callables("runtime", "codenn_register_runtimes", RuntimeEntry)

    @property
    def transports(self) -> Registry[TransportEntry]:
        return self._named_callables("transport", "codenn_register_transports", TransportEntry)

    def _named_callables(self, kind: str, hook_name: str, make: Callable[[str, Any, str], Any]) -> Registry[Any]:
        """A registry filled by ``register(name, callable, description="...")`` calls."""

        def entry(owner: str, name: str, fn: Any, description: str = "") -> tuple[str, Any]:
            _require_callable(owner, kind, name, fn)
            return name, make(name, fn, description)

        return self._registry(kind, hook_name, entry)

    def _registry(self, kind: str, hook_name: str, entry: Callable[..., tuple[str, Any]]) -> Registry[Any]:
        """Fill a registry from one hook, once; each ``register`` call knows its plugin."""
        if hook_name not in self._registries:
            registry: Registry[Any] = Registry(kind)

            def make_register(owner: str) -> Callable[..., None]:
                def register(*args: Any, **kwargs: Any) -> None:
                    try:
                        name, item = entry(owner, *args, **kwargs)
                    except TypeError as exc:
                        raise PluginError(f"plugin {owner!r} called register() for a {kind} wrongly: {exc}") from exc
                    registry.add(name, item, owner)

                return register

            self._call_each(hook_name, make_register)
            self._registries[hook_name] = registry
        return self._registries[hook_name]

    def _call_each(self, hook_name: str, make_register: Callable[[str], Callable[..., Any]]) -> None:
        """Call one hook per plugin, so each ``register`` call knows its owner."""
        caller = getattr(self.pm.hook, hook_name)
        for impl in caller.get_hookimpls():  # registration order
            register = make_register(impl.plugin_name)
            try:
                impl.function(*[{"register": register}[a] for a in impl.argnames])
            except PluginError:
                raise
            except Exception as exc:
                raise PluginError(
                    f"plugin {impl.plugin_name!r} failed in {hook_name}: "
                    f"{type(exc).__name__}: {exc}"
                ) from exc

    # -- introspection ------------------------------------------------------------------------
    def info(self) -> list[PluginInfo]:
        registries = {"splitters": self.splitters, "link_factories": self.link_factories,
                      "objectives": self.objectives, "runtimes": self.runtimes,
                      "transports": self.transports}
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


@dataclass(frozen=True)
class ObjectiveEntry:
    """A named path objective (see codenn.cost); lower is better."""

    name: str
    fn: Callable[..., float]
    description: str = ""


@dataclass(frozen=True)
class RuntimeEntry:
    """A named inference runtime factory: ``factory(model, **options)`` returns a runtime."""

    name: str
    factory: Callable[..., Any]
    description: str = ""


@dataclass(frozen=True)
class TransportEntry:
    """A named transport factory: ``factory(**options)`` returns a :class:`codenn.transport.Transport`."""

    name: str
    factory: Callable[..., Any]
    description: str = ""


def _require_callable(owner: str, kind: str, name: str, obj: Any) -> None:
    if not callable(obj):
        raise PluginError(f"plugin {owner!r} registered {kind} {name!r} with {obj!r}, which is not callable")


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
