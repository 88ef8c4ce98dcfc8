"""The contract of a block splitter, and the grouping helper most splitters use.

A splitter cuts a model into N contiguous blocks whose composition, in order, is the original
forward. Splitters come from plugins (``codenn_register_splitters``); the core never imports one.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

from torch import nn

from codenn.errors import SplitError, available

NamedModule = tuple[str, nn.Module]


class BlockSplitter(ABC):
    """Cuts the models it handles into N blocks at named boundaries.

    Subclasses set ``name`` (registry key), ``architectures`` (the families it handles, shown in
    errors) and ``default_blocks``, and implement :meth:`handles`, :meth:`max_blocks`, :meth:`split`.
    """

    name: str = ""
    architectures: tuple[str, ...] = ()
    default_blocks: int = 4
    description: str = ""
    modality: str = "image"

    @abstractmethod
    def handles(self, model: nn.Module) -> bool:
        """Whether this splitter can cut ``model``."""

    @abstractmethod
    def max_blocks(self, model: nn.Module) -> int:
        """The largest block count this splitter supports for ``model``."""

    @abstractmethod
    def split(self, model: nn.Module, num_blocks: int) -> list[NamedModule]:
        """Return ``num_blocks`` (name, module) pairs sharing ``model``'s submodules."""

    def family(self, model: nn.Module) -> str:
        """The architecture family written on the service card."""
        return self.architectures[0] if self.architectures else type(model).__name__.lower()

    def check_count(self, model: nn.Module, num_blocks: int) -> None:
        top = self.max_blocks(model)
        if not isinstance(num_blocks, int) or not 1 <= num_blocks <= top:
            raise SplitError(
                f"splitter {self.name!r} cannot cut {type(model).__name__} into {num_blocks!r} "
                f"blocks; valid block counts are 1..{top}"
            )


class UnitSplitter(BlockSplitter):
    """A splitter defined by a model's atomic units and the order in which to cut between them.

    ``units`` lists the smallest pieces (their composition is the model); ``preferred_cuts``
    lists cut positions (a cut at ``i`` falls after unit ``i``) from most to least preferred. N
    blocks take the first N-1 preferred cuts; cuts not listed are used last, evenly spread.
    """

    @abstractmethod
    def units(self, model: nn.Module) -> list[NamedModule]:
        """The model's atomic units, in forward order."""

    def preferred_cuts(self, model: nn.Module) -> list[int]:
        return []

    def max_blocks(self, model: nn.Module) -> int:
        return len(self.units(model))

    def split(self, model: nn.Module, num_blocks: int) -> list[NamedModule]:
        self.check_count(model, num_blocks)
        units = self.units(model)
        cuts = choose_cuts(len(units), num_blocks, self.preferred_cuts(model))
        return group_units(units, cuts)


def choose_cuts(num_units: int, num_blocks: int, preferred: Sequence[int]) -> list[int]:
    """Pick ``num_blocks - 1`` cut positions among ``num_units - 1``, preferred ones first."""
    candidates = range(num_units - 1)
    chosen: list[int] = []
    for c in preferred:
        if c in candidates and c not in chosen and len(chosen) < num_blocks - 1:
            chosen.append(c)
    rest = [c for c in candidates if c not in chosen]
    need = num_blocks - 1 - len(chosen)
    if need > 0:
        # spread the remaining cuts evenly over what is left
        step = len(rest) / need
        chosen += [rest[int(i * step + step / 2)] for i in range(need)]
    return sorted(set(chosen))


def group_units(units: Sequence[NamedModule], cuts: Sequence[int]) -> list[NamedModule]:
    """Group units into blocks, cutting after each position in ``cuts``."""
    blocks: list[NamedModule] = []
    start = 0
    for end in [*cuts, len(units) - 1]:
        part = units[start : end + 1]
        name = part[0][0] if len(part) == 1 else f"{part[0][0]}..{part[-1][0]}"
        module = part[0][1] if len(part) == 1 else nn.Sequential(*(m for _, m in part))
        blocks.append((name, module))
        start = end + 1
    return blocks


def find_splitter(model: nn.Module, splitters: Sequence[BlockSplitter]) -> BlockSplitter:
    """The first splitter that handles ``model``, or an error naming what is supported."""
    for splitter in splitters:
        if splitter.handles(model):
            return splitter
    families = sorted({a for s in splitters for a in s.architectures})
    raise SplitError(
        f"no registered splitter can cut a {type(model).__name__}. Supported architectures: "
        f"{available(families)}. Write a splitter plugin (docs/writing-plugins.md) to add one"
    )
