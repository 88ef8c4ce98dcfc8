"""Screening many candidate paths by their least-squares fit alone, sharing fits and activations
between paths with a common prefix (the fast strategy's first cut)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from codenn.model.service import Service
from codenn.paths.composed import ComposedPath
from codenn.paths.spec import Segment
from codenn.train.features import FeatureCache
from codenn.train.lstsq import least_squares_init


class Screener:
    """Least-squares-initialise and evaluate many candidate paths, sharing work between them.

    Paths that share a prefix (the same segments and link factories up to link *i*) get the same
    least-squares fit for link *i* (the fit overwrites the random initialisation), so the fit and
    the activations after the following frozen segment are computed once and reused, e.g. by
    every cross path with the same ``lout`` and ``hin`` whatever its ``hout`` and ``lin``.
    """

    def __init__(self, train_cache: FeatureCache, val_cache: FeatureCache, val_labels: torch.Tensor, *,
                 samples: int = 256, ridge: float = 1e-3, batch_size: int = 256) -> None:
        self.train_cache, self.val_cache, self.val_labels = train_cache, val_cache, val_labels
        self.samples, self.ridge, self.batch_size = min(samples, len(train_cache)), ridge, batch_size
        self._fits: dict[tuple[Any, ...], tuple[dict[str, torch.Tensor], bool]] = {}
        self._acts: dict[tuple[Any, ...], tuple[torch.Tensor, torch.Tensor]] = {}

    def _batched(self, fn: Any, x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return torch.cat([fn(x[i : i + self.batch_size]) for i in range(0, len(x), self.batch_size)])

    def screen(self, path: ComposedPath) -> tuple[list[bool], float]:
        """Fit ``path``'s links in place; return which were fitted and the validation accuracy."""
        segs, factories = path.spec.segments, path.link_factories
        n = self.samples
        calib = self.train_cache.get(path.spec.local, segs[0].end(path.local.num_blocks))[:n]
        val = self.val_cache.get(path.spec.local, segs[0].end(path.local.num_blocks))
        shared, flags = True, []
        path.eval()
        for i, link in enumerate(path.links):
            dst = segs[i + 1]
            service = path.services[dst.service]
            stop = dst.end(service.num_blocks)
            fit_key = (segs[: i + 1], dst.service, dst.start, factories[: i + 1])
            if shared and fit_key in self._fits:
                state, ok = self._fits[fit_key]
                link.load_state_dict(state)
            else:
                with torch.no_grad():
                    ok = least_squares_init(link, calib, self.train_cache.get(dst.service, dst.start)[:n], self.ridge)
                if shared and ok:
                    self._fits[fit_key] = ({k: v.clone() for k, v in link.state_dict().items()}, ok)
            flags.append(ok)
            shared = shared and ok
            act_key = (fit_key, stop)
            if shared and act_key in self._acts:
                calib, val = self._acts[act_key]
                continue

            def run(x: torch.Tensor, link: nn.Module = link, service: Service = service, dst: Segment = dst,
                    stop: int = stop) -> torch.Tensor:
                return service.run(link(x), dst.start, stop)

            calib, val = self._batched(run, calib), self._batched(run, val)
            if shared and i < len(path.links) - 1:
                self._acts[act_key] = (calib, val)
        return flags, int((val.argmax(1).cpu() == self.val_labels).sum()) / len(self.val_labels)
