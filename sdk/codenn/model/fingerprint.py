"""SHA-256 fingerprints of frozen parameters: how codenn proves that frozen means frozen."""

from __future__ import annotations

import hashlib

import torch
from torch import nn


def fingerprint(module: nn.Module) -> str:
    """Hash every parameter and buffer (names, dtypes, shapes and bytes) in a stable order."""
    digest = hashlib.sha256()
    state = module.state_dict(keep_vars=False)
    for name in sorted(state):
        tensor = state[name].detach()
        digest.update(name.encode())
        digest.update(str(tensor.dtype).encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(_tensor_bytes(tensor))
    return digest.hexdigest()


def _tensor_bytes(tensor: torch.Tensor) -> bytes:
    t = tensor.contiguous().cpu()
    if t.numel() == 0:
        return b""
    return t.reshape(-1).view(torch.uint8).numpy().tobytes()
