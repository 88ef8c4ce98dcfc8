"""codenn: coordinated DNNs on edge.

Providers split their pretrained models into frozen blocks; small trainable links join blocks
within one model (skip paths) or route activations through another provider's blocks (cross
paths). See docs/architecture.md for the layout of the sub-packages.

The names below are the public API. They are imported on first use (:mod:`codenn.lazy`), so
that importing a leaf such as :mod:`codenn.config` (or ``hookimpl`` in a plugin) does not load torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from codenn.contracts.hookspecs import hookimpl
from codenn.errors import (
    BoundaryMismatchError,
    CodennError,
    ConfigError,
    DuplicateNameError,
    FrozenParameterError,
    PathShapeError,
    PathSpecError,
    PluginError,
    SplitError,
    UnknownNameError,
)
from codenn.lazy import lazy_exports

if TYPE_CHECKING:
    from codenn.contracts.plugins import Plugins, create_plugins, get_plugins
    from codenn.contracts.registry import Entry, Registry
    from codenn.contracts.splitters import BlockSplitter, NamedModule, UnitSplitter, stage_cuts
    from codenn.model.blocks import BoundarySpec, FrozenBlock
    from codenn.model.service import BlockCard, Service, ServiceCard
    from codenn.paths.composed import ComposedPath
    from codenn.paths.links import build_link
    from codenn.paths.spec import PathSpec

__version__ = "0.1.0"

_LAZY = {
    "BlockCard": "codenn.model.service",
    "BlockSplitter": "codenn.contracts.splitters",
    "BoundarySpec": "codenn.model.blocks",
    "ComposedPath": "codenn.paths.composed",
    "Entry": "codenn.contracts.registry",
    "FrozenBlock": "codenn.model.blocks",
    "NamedModule": "codenn.contracts.splitters",
    "PathSpec": "codenn.paths.spec",
    "Plugins": "codenn.contracts.plugins",
    "Registry": "codenn.contracts.registry",
    "Service": "codenn.model.service",
    "ServiceCard": "codenn.model.service",
    "UnitSplitter": "codenn.contracts.splitters",
    "build_link": "codenn.paths.links",
    "create_plugins": "codenn.contracts.plugins",
    "get_plugins": "codenn.contracts.plugins",
    "stage_cuts": "codenn.contracts.splitters",
}

__all__ = [
    "BlockCard", "BlockSplitter", "BoundaryMismatchError", "BoundarySpec", "CodennError", "ComposedPath",
    "ConfigError", "DuplicateNameError", "Entry", "FrozenBlock", "FrozenParameterError", "NamedModule",
    "PathShapeError", "PathSpec", "PathSpecError", "PluginError", "Plugins", "Registry", "Service", "ServiceCard",
    "SplitError", "UnitSplitter", "UnknownNameError", "build_link", "create_plugins", "get_plugins", "hookimpl",
    "stage_cuts",
]


__getattr__, __dir__ = lazy_exports(__name__, _LAZY)
