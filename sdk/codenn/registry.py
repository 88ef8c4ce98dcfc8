"""A named registry that remembers which plugin registered each entry."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Generic, TypeVar

from codenn.errors import DuplicateNameError, PluginError, UnknownNameError, available

T = TypeVar("T")


class Registry(Generic[T]):
    """Name -> item, with the owning plugin of each name, duplicates rejected."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}
        self._owners: dict[str, str] = {}

    def add(self, name: str, item: T, owner: str) -> None:
        if not isinstance(name, str) or not name:
            raise PluginError(
                f"plugin {owner!r} registered a {self.kind} with an invalid name {name!r}: "
                "names must be non-empty strings"
            )
        if name in self._items:
            raise DuplicateNameError(
                f"plugin {owner!r} registered the {self.kind} {name!r}, which plugin "
                f"{self._owners[name]!r} already registered; choose another name"
            )
        self._items[name] = item
        self._owners[name] = owner

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            raise UnknownNameError(
                f"{self.kind} {name!r} not found. Available names: {available(self._items)}"
            ) from None

    def owner(self, name: str) -> str:
        self.get(name)
        return self._owners[name]

    def names(self) -> list[str]:
        return list(self._items)

    def by_owner(self, owner: str) -> list[str]:
        return [n for n, o in self._owners.items() if o == owner]

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[T]:
        return iter(self._items.values())

    def __len__(self) -> int:
        return len(self._items)
