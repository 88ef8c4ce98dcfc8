"""codenn: coordinated DNNs on edge.

Providers split their pretrained models into frozen blocks; small trainable links join blocks
within one model (skip paths) or route activations through another provider's blocks (cross
paths). See docs/architecture.md.
"""

from __future__ import annotations

from codenn.blocks import BoundarySpec, FrozenBlock
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
from codenn.hookspecs import hookimpl
from codenn.links import build_link
from codenn.plugins import Plugins, create_plugins, get_plugins
from codenn.registry import Entry, Registry
from codenn.service import BlockCard, Service, ServiceCard
from codenn.splitters import BlockSplitter, UnitSplitter

__version__ = "0.1.0"

__all__ = [
    "BlockCard",
    "BlockSplitter",
    "BoundaryMismatchError",
    "BoundarySpec",
    "CodennError",
    "ConfigError",
    "DuplicateNameError",
    "Entry",
    "FrozenBlock",
    "FrozenParameterError",
    "PathShapeError",
    "PathSpecError",
    "PluginError",
    "Plugins",
    "Registry",
    "Service",
    "ServiceCard",
    "SplitError",
    "UnitSplitter",
    "UnknownNameError",
    "build_link",
    "create_plugins",
    "get_plugins",
    "hookimpl",
]
