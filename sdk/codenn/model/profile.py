"""Measured costs: per-block and per-link latency on a device and batch size.

Latencies are medians of many timed runs after warm-up, on random (never zero) inputs, taken by
:func:`codenn.model.timing.sample` (CUDA events on GPU). Communication time is modelled from the
boundary tensor's bytes over a configured network (:class:`codenn.config.network.Network`).
"""

from __future__ import annotations

import torch
from torch import nn

from codenn.errors import ConfigError
from codenn.model.blocks import BoundarySpec
from codenn.model.timing import sample


def resolve_device(device: str | torch.device) -> torch.device:
    """A torch device, refusing CUDA where there is none rather than silently using the CPU."""
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {str(device)!r} asked for, but CUDA is not available here; use 'cpu'")
    return dev


def time_module(
    module: nn.Module,
    spec: BoundarySpec,
    *,
    batch_size: int = 1,
    device: str | torch.device = "cpu",
    warmup: int = 3,
    repeats: int = 15,
    seed: int = 0,
) -> float:
    """Median latency of ``module`` on a ``spec`` input, in microseconds per call (cards and rows
    keep µs; :mod:`codenn.model.timing` measures in seconds)."""
    dev = resolve_device(device)
    inputs = [spec.example(batch=batch_size, seed=seed + i).to(dev) for i in range(3)]
    module = module.to(dev)
    was_training = module.training
    module.eval()
    try:
        with torch.inference_mode():
            samples = sample(module, inputs, warmup=warmup, repeats=repeats, device=dev)
    finally:
        module.train(was_training)
    return samples.median() * 1e6


def profile_blocks(
    service: nn.Module, *, batch_size: int = 1, device: str | torch.device = "cpu", warmup: int = 3, repeats: int = 15
) -> list[float]:
    """Each block's median latency (µs per call at ``batch_size``), recorded on the service card."""
    from codenn.model.service import Service

    if not isinstance(service, Service):
        raise ConfigError(f"profile_blocks needs a codenn.Service, got {type(service).__name__}")
    times = [
        time_module(block, service.input_of(i), batch_size=batch_size, device=device, warmup=warmup, repeats=repeats)
        for i, block in enumerate(service.blocks)
    ]
    service.with_latencies([t / 1e3 for t in times])
    return times
