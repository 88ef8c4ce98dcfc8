"""Ray is an optional extra (``pip install 'codenn[ray]'``): importing it, and saying how to get it."""

from __future__ import annotations

from typing import Any

from codenn.errors import CodennError


class RayMissingError(CodennError):
    """Ray is not installed; it is the optional extra ``codenn[ray]``."""


def import_ray(purpose: str) -> Any:
    """The ``ray`` module, or a :class:`RayMissingError` naming ``purpose`` and the install command."""
    try:
        import ray
    except ImportError as exc:
        raise RayMissingError(f"{purpose} needs Ray: pip install 'codenn[ray]' (or pip install 'ray[serve]>=2.9'); "
                              f"import failed: {exc}") from None
    return ray
