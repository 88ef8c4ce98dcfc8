"""The contract of a block splitter, and the cut helpers most splitters use.

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
    A ``fallback`` splitter (the generic graph splitter) handles almost anything, so
    :func:`find_splitter` asks it only after every other splitter, whatever the loading order.
    """

    name: str = ""
    architectures: tuple[str, ...] = ()
    default_blocks: int = 4
    fallback: bool = False
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
    :func:`stage_cuts` gives the usual order (head, then stage ends, deepest first).
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


def stage_cuts(stage_starts: Sequence[bool], head_cut: bool = True) -> list[int]:
    """Preferred cut positions for a chain of units grouped in stages, for
    :meth:`UnitSplitter.preferred_cuts`.

    ``stage_starts[i]`` says whether unit ``i`` begins a new stage (typically: it lowers the
    spatial resolution; a value for unit 0 is ignored, nothing can be cut before it). The cuts
    are, most preferred first: before the last unit (the head) when ``head_cut``, then every stage
    end (the unit before a stage start), deepest first. So two blocks separate features from the
    classifier, and a few more blocks separate the coarse stages, where a link is most useful::

        stage_cuts([False, False, True, False, True, False, False])   # 2 convs x 3 stages, head
        # -> [5, 3, 1]: before the head, then after units 3 and 1
    """
    n = len(stage_starts)
    cuts = [n - 2] if head_cut and n >= 2 else []
    ends = [i - 1 for i in range(1, n) if stage_starts[i]]
    cuts += [c for c in sorted(ends, reverse=True) if c not in cuts]
    return cuts


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
    """The first splitter that handles ``model`` (fallback splitters last), or an error naming
    what is supported."""
    for splitter in sorted(splitters, key=lambda s: s.fallback):  # stable: registration order otherwise
        if splitter.handles(model):
            return splitter
    families = sorted({a for s in splitters for a in s.architectures})
    raise SplitError(
        f"no registered splitter can cut a {type(model).__name__}. Supported architectures: "
        f"{available(families)}. Write a splitter plugin (docs/writing-plugins.md) to add one"
    )


def split_model(
    model: nn.Module, chosen: BlockSplitter, num_blocks: int | None, others: Sequence[BlockSplitter] = ()
) -> tuple[BlockSplitter, list[NamedModule]]:
    """Cut ``model`` with ``chosen`` into ``num_blocks`` blocks (None: the smaller of the
    splitter's default and the model's maximum).

    A splitter's ``handles`` is a cheap guess; when ``chosen`` claims the model but its ``split``
    fails (not the block count: that error stands), the first fallback splitter among ``others``
    that handles the model cuts it instead, and if that fails too both reasons are raised.
    """

    def cut(splitter: BlockSplitter) -> list[NamedModule]:
        count = min(splitter.default_blocks, splitter.max_blocks(model)) if num_blocks is None else num_blocks
        splitter.check_count(model, count)
        parts = splitter.split(model, count)
        if len(parts) != count:
            raise SplitError(f"splitter {splitter.name!r} returned {len(parts)} blocks; {count} were asked for")
        return parts

    if num_blocks is not None:
        chosen.check_count(model, num_blocks)
    try:
        return chosen, cut(chosen)
    except SplitError as first:
        rescue = next((s for s in others if s.fallback and s is not chosen and s.handles(model)), None)
        if rescue is None or chosen.fallback:
            raise
        try:
            return rescue, cut(rescue)
        except SplitError as second:
            raise SplitError(f"{first}. The fallback splitter {rescue.name!r} failed too: {second}") from second

