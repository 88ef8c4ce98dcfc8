"""``nn.ModuleDict`` / ``nn.ModuleList`` that know their element type.

torch types their items as ``Module``, so every ``path.services[name].num_blocks`` would need a
cast or a ``type: ignore``. These subclasses change nothing at run time (same registration,
same state_dict keys) and give type checkers the element type once, where the container is made.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Generic, TypeVar, cast, overload

from torch import nn

M = TypeVar("M", bound=nn.Module)


class ModulesByName(nn.ModuleDict, Generic[M]):
    """A ModuleDict whose values are all ``M``."""

    def __getitem__(self, key: str) -> M:
        return cast(M, super().__getitem__(key))

    def values(self) -> Iterable[M]:  # type: ignore[override]  # narrower element type, same behaviour
        return cast("Iterable[M]", super().values())

    def items(self) -> Iterable[tuple[str, M]]:  # type: ignore[override]  # narrower element type, same behaviour
        return cast("Iterable[tuple[str, M]]", super().items())


class ModuleSequence(nn.ModuleList, Generic[M]):
    """A ModuleList whose elements are all ``M``."""

    @overload
    def __getitem__(self, idx: slice) -> ModuleSequence[M]: ...

    @overload
    def __getitem__(self, idx: int) -> M: ...

    def __getitem__(self, idx: int | slice) -> M | ModuleSequence[M]:
        return cast("M | ModuleSequence[M]", super().__getitem__(idx))  # a slice keeps the class

    def __iter__(self) -> Iterator[M]:
        return cast("Iterator[M]", super().__iter__())
