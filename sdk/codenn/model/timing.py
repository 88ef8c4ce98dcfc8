"""One timer for every latency codenn measures: raw per-call samples, in seconds.

:func:`sample` times ``fn`` on each of ``repeats`` calls after ``warmup`` untimed ones, rotating
over ``inputs``. On a CUDA device each call sits between two CUDA events (after a synchronize,
so queued work does not leak into the first sample); elsewhere it is timed with
``time.perf_counter``. What to feed it (random batches, never zeros: zeros make some kernels
faster) is the caller's choice. Every sample is in **seconds**; callers convert only at their
edges (µs on service cards and result rows, ms in the runtime benchmark).
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from codenn.errors import ConfigError


@dataclass(frozen=True)
class Samples:
    """Per-call times in seconds, in the order they were taken, each call on a batch of ``batch``."""

    seconds: tuple[float, ...]
    batch: int = 1

    def __post_init__(self) -> None:
        if not self.seconds:
            raise ConfigError("timing samples need at least one time, got none")
        bad = [t for t in self.seconds if not (math.isfinite(t) and t >= 0)]
        if bad or self.batch < 1:
            raise ConfigError(f"timing samples must be finite seconds >= 0 with batch >= 1; got times {bad[:3]} "
                              f"and batch={self.batch}")

    @classmethod
    def pool(cls, parts: Sequence[Samples]) -> Samples:
        """Several runs' samples as one (e.g. interleaved rounds), all of the same batch size."""
        batches = {p.batch for p in parts}
        if len(batches) != 1:
            raise ConfigError(f"pooled samples must share one batch size, got {sorted(batches) or 'no samples'}")
        return cls(tuple(t for p in parts for t in p.seconds), batches.pop())

    def __len__(self) -> int:
        return len(self.seconds)

    def median(self) -> float:
        return statistics.median(self.seconds)

    def percentile(self, q: float) -> float:
        """The ``q``-th percentile (0..100), linear between the two nearest samples (as numpy's
        default), so that ``percentile(50) == median()``."""
        if not 0 <= q <= 100:
            raise ConfigError(f"percentile q={q} must be in [0, 100]")
        ordered = sorted(self.seconds)
        pos = q / 100 * (len(ordered) - 1)
        lo = math.floor(pos)
        hi = min(lo + 1, len(ordered) - 1)
        return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)

    def mean(self) -> float:
        return statistics.fmean(self.seconds)

    def throughput(self) -> float:
        """Samples (batch elements) per second at the mean call time."""
        mean = self.mean()
        return math.inf if mean == 0 else self.batch / mean


def sample(
    fn: Callable[[torch.Tensor], object],
    inputs: Sequence[torch.Tensor],
    *,
    warmup: int,
    repeats: int,
    device: str | torch.device | None = None,
) -> Samples:
    """Time ``repeats`` calls of ``fn`` (after ``warmup`` untimed ones) rotating over ``inputs``.

    ``device`` (default: the first input's) picks the clock: CUDA events on a CUDA device,
    perf_counter otherwise. Inputs are used as given (move them to the device first). The batch
    size recorded is the first input's leading dimension (at least 1).
    """
    if not inputs:
        raise ConfigError("timing needs at least one input batch, got none")
    if repeats < 1 or warmup < 0:
        raise ConfigError(f"timing needs repeats >= 1 and warmup >= 0, got repeats={repeats}, warmup={warmup}")
    dev = torch.device(device) if device is not None else inputs[0].device
    for i in range(warmup):
        fn(inputs[i % len(inputs)])
    times: list[float] = []
    if dev.type == "cuda":
        with torch.cuda.device(dev):
            torch.cuda.synchronize(dev)
            for i in range(repeats):
                start = torch.cuda.Event(enable_timing=True)
                end = torch.cuda.Event(enable_timing=True)
                start.record()
                fn(inputs[i % len(inputs)])
                end.record()
                end.synchronize()
                times.append(start.elapsed_time(end) / 1e3)  # elapsed_time is in ms
    else:
        for i in range(repeats):
            t0 = time.perf_counter()
            fn(inputs[i % len(inputs)])
            times.append(time.perf_counter() - t0)
    first = inputs[0]
    return Samples(tuple(times), max(1, int(first.shape[0])) if first.dim() > 0 else 1)
