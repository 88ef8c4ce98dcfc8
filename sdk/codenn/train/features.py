"""Outputs of frozen service prefixes, computed once per split and shared by every path that
starts with them (the frozen prefix never changes, so nothing is recomputed per path or epoch)."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from codenn.model.service import Service


class FeatureCache:
    """Outputs of frozen service prefixes on a fixed set of inputs, computed once.

    ``get(service, stop)`` is ``service.run(inputs, 0, stop)``: the tensor block ``stop`` consumes.
    A longer prefix starts from the longest cached shorter one, so candidates that share a
    prefix share its forward pass.
    """

    def __init__(self, services: Mapping[str, Service], inputs: torch.Tensor, *, batch_size: int = 256) -> None:
        self.services = dict(services)
        self.inputs = inputs
        self.batch_size = batch_size
        self._cache: dict[tuple[str, int], torch.Tensor] = {}
        self.forward_samples = 0

    def __len__(self) -> int:
        return len(self.inputs)

    def get(self, service: str, stop: int) -> torch.Tensor:
        if stop == 0:
            return self.inputs
        key = (service, stop)
        if key not in self._cache:
            svc = self.services[service]
            done = max((s for (n, s) in self._cache if n == service and s < stop), default=0)
            start = self._cache[(service, done)] if done else self.inputs
            outs = []
            with torch.inference_mode():
                for i in range(0, len(start), self.batch_size):
                    outs.append(svc.run(start[i : i + self.batch_size], done, stop))
            self.forward_samples += len(start)
            self._cache[key] = torch.cat(outs)
        return self._cache[key]
