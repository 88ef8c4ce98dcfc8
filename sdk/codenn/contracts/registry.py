"""One registry type for everything plugins contribute by name.

Splitters, link factories, objectives, runtimes and transports are all held as :class:`Entry`
objects (name, what was registered, description, owning plugin) in a :class:`Registry`, so that
duplicate names, unknown names, option checks and wrong return types give the same errors
whichever kind of thing a plugin registered.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from codenn.errors import ConfigError, DuplicateNameError, PluginError, UnknownNameError, available

T = TypeVar("T")
T_contra = TypeVar("T_contra", contravariant=True)
R = TypeVar("R")


@dataclass(frozen=True)
class Entry(Generic[T]):
    """One registration: the name, the registered object, its description and the plugin that made it."""

    name: str
    obj: T
    description: str
    owner: str


class Register(Protocol[T_contra]):
    """The ``register`` callback a plugin receives for named things (link factories, objectives,
    runtimes, transports): ``register(name, obj, description="...")``."""

    def __call__(self, name: str, obj: T_contra, description: str = "") -> None: ...


class Registry(Generic[T]):
    """Name -> :class:`Entry`, duplicates rejected naming both plugins.

    ``returns`` (with ``returns_hint`` for messages) is what :meth:`build` requires a factory to
    return: a plugin's mistake is caught where it is made, not deep inside the caller.
    """

    def __init__(self, kind: str, *, returns: type[Any] | None = None, returns_hint: str = "") -> None:
        self.kind = kind
        self.returns = returns
        self.returns_hint = returns_hint or (returns.__name__ if returns is not None else "")
        self._entries: dict[str, Entry[T]] = {}

    def add(self, name: str, obj: T, owner: str, description: str = "") -> None:
        if not isinstance(name, str) or not name:
            raise PluginError(
                f"plugin {owner!r} registered a {self.kind} with an invalid name {name!r}: "
                "names must be non-empty strings"
            )
        if not isinstance(description, str):
            raise PluginError(
                f"plugin {owner!r} registered the {self.kind} {name!r} with description {description!r}; "
                "a description must be a string"
            )
        if name in self._entries:
            raise DuplicateNameError(
                f"plugin {owner!r} registered the {self.kind} {name!r}, which plugin "
                f"{self._entries[name].owner!r} already registered; choose another name"
            )
        self._entries[name] = Entry(name, obj, description, owner)

    def entry(self, name: str) -> Entry[T]:
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownNameError(
                f"{self.kind} {name!r} not found. Available names: {available(self._entries)}"
            ) from None

    def get(self, name: str) -> T:
        """The registered object itself (a splitter, or a factory to call)."""
        return self.entry(name).obj

    def owner(self, name: str) -> str:
        return self.entry(name).owner

    def build(self: Registry[Callable[..., R]], name: str, *args: Any, **options: Any) -> R:
        """Call factory ``name`` with ``args`` and ``options``, checking both sides of the call.

        Options the factory does not accept are a :class:`ConfigError` that lists what it does
        accept; a result that is not ``returns`` is a :class:`PluginError` naming the plugin.
        """
        entry = self.entry(name)
        try:
            signature: inspect.Signature | None = inspect.signature(entry.obj)
        except (TypeError, ValueError):  # some builtins and C callables have no signature
            signature = None
        if signature is not None:
            try:
                signature.bind(*args, **options)
            except TypeError as exc:
                raise ConfigError(
                    f"{self.kind} {name!r} (plugin {entry.owner!r}) rejected options {sorted(options)}: {exc}; "
                    f"its signature is {name}{signature}"
                ) from exc
        product = entry.obj(*args, **options)
        if self.returns is not None and not isinstance(product, self.returns):
            raise PluginError(
                f"{self.kind} {name!r} (plugin {entry.owner!r}) returned {type(product).__name__}; "
                f"it must return {self.returns_hint}"
            )
        return product

    def names(self) -> list[str]:
        return list(self._entries)

    def entries(self) -> list[Entry[T]]:
        return list(self._entries.values())

    def by_owner(self, owner: str) -> list[str]:
        return [n for n, e in self._entries.items() if e.owner == owner]

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[T]:
        return (e.obj for e in self._entries.values())

    def __len__(self) -> int:
        return len(self._entries)
