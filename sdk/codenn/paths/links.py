"""Link registry glue: look a factory up by name, build a link, check it fits its boundaries.

Factories come from plugins (``codenn_register_link_factories``). A factory is given only the two
public :class:`BoundarySpec` s and options, so it can never see another provider's parameters.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from codenn.config.search import DEFAULT_LINK
from codenn.contracts.plugins import Plugins, get_plugins
from codenn.errors import BoundaryMismatchError
from codenn.model.blocks import BoundarySpec


def build_link(
    src: BoundarySpec,
    dst: BoundarySpec,
    factory: str = DEFAULT_LINK,
    *,
    plugins: Plugins | None = None,
    **options: Any,
) -> nn.Module:
    """Build a trainable link from boundary ``src`` to the input expected at ``dst``.

    The result is checked on a random batch: its output must match ``dst`` exactly.
    """
    link = (plugins or get_plugins()).link_factories.build(factory, src, dst, **options)
    check_link(link, src, dst, factory)
    link.requires_grad_(True)
    return link


def check_link(link: nn.Module, src: BoundarySpec, dst: BoundarySpec, factory: str = "?") -> None:
    """Run a random batch through ``link`` and require the output shape of ``dst``."""
    was_training = link.training
    link.eval()
    try:
        with torch.no_grad():
            out = link(src.example(batch=2))
    except Exception as exc:
        raise BoundaryMismatchError(
            f"link factory {factory!r} built a link that fails on input {src.shape} "
            f"({src.name!r}): {type(exc).__name__}: {exc}"
        ) from exc
    finally:
        link.train(was_training)
    if tuple(out.shape[1:]) != dst.shape:
        raise BoundaryMismatchError(
            f"link factory {factory!r} maps {src.shape} ({src.name!r}) to {tuple(out.shape[1:])}, "
            f"but boundary {dst.name!r} expects {dst.shape} (batch excluded)"
        )
