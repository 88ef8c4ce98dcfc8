"""A provider's model as codenn sees it: frozen blocks and their boundaries, the service that
wraps a model and publishes its card, fingerprints, model loading, and timing and profiling.

Names are imported on first use (:mod:`codenn.lazy`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from codenn.lazy import lazy_exports

if TYPE_CHECKING:
    from codenn.model.blocks import BoundarySpec, FrozenBlock
    from codenn.model.fingerprint import fingerprint
    from codenn.model.loading import load_model, load_safetensors, save_safetensors
    from codenn.model.profile import profile_blocks, resolve_device, time_module
    from codenn.model.service import BlockCard, Service, ServiceCard, services_by_name
    from codenn.model.timing import Samples, sample

_EXPORTS = {
    "BoundarySpec": "codenn.model.blocks",
    "FrozenBlock": "codenn.model.blocks",
    "fingerprint": "codenn.model.fingerprint",
    "load_model": "codenn.model.loading",
    "load_safetensors": "codenn.model.loading",
    "save_safetensors": "codenn.model.loading",
    "profile_blocks": "codenn.model.profile",
    "resolve_device": "codenn.model.profile",
    "time_module": "codenn.model.profile",
    "BlockCard": "codenn.model.service",
    "Service": "codenn.model.service",
    "ServiceCard": "codenn.model.service",
    "services_by_name": "codenn.model.service",
    "Samples": "codenn.model.timing",
    "sample": "codenn.model.timing",
}
__all__ = [
    "BlockCard", "BoundarySpec", "FrozenBlock", "Samples", "Service", "ServiceCard", "fingerprint", "load_model",
    "load_safetensors", "profile_blocks", "resolve_device", "sample", "save_safetensors", "services_by_name",
    "time_module",
]

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
