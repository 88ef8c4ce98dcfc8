"""Part 6, memory: what forward steps left pending pin on a host, which the size caps do not
bound (the peak memory of every host, ``VmHWM``, is read by :func:`.harness.peak_rss_mib`)."""

from __future__ import annotations

import argparse
import math
from typing import Any

import torch

from .harness import TOKENS, Target, bearer, emit, model_url, peak_rss_mib, rss_mib


def pending_memory(target: Target, token: str, pid: int, *, graphs: int, batch: int, step: int = 2**51
                   ) -> dict[str, Any]:
    """Memory that forward steps left pending pin on the host: ``graphs`` train/forward calls of
    ``batch`` samples with no backward (by a provider with no other pending step), resident
    memory before and after, and what one provider with train rights could pin at most (the
    host keeps ``max_pending`` graphs per provider, each of up to the largest batch whose answer
    fits the answer cap). Resident memory is an estimate: freed memory may be reused."""
    import inspect

    import httpx

    from codenn.remote.segment import HostSegment
    from codenn_adapters import oip

    max_pending = int(inspect.signature(HostSegment.__init__).parameters["max_pending"].default)
    before = rss_mib(pid)
    statuses = []
    x = torch.randn(batch, *target.input_shape, generator=torch.Generator().manual_seed(5))
    with httpx.Client(base_url=target.url, timeout=120, headers=bearer(token)) as client:
        for i in range(graphs):
            body, headers = oip.encode_request({"input": x}, parameters={"step": step + i})
            statuses.append(client.post(f"{model_url(target.model)}/train/forward", content=body,
                                        headers=headers).status_code)
    after = rss_mib(pid)
    per_sample = (after - before) / (graphs * batch) if before is not None and after is not None else None
    max_batch = target.max_bytes // (4 * math.prod(target.output_shape))
    return {"graphs": graphs, "batch": batch, "statuses": statuses, "rss_before_mib": before, "rss_after_mib": after,
            "request_kib": x.numel() * 4 / 1024, "mib_per_graph": per_sample * batch if per_sample is not None else None,
            "max_pending": max_pending, "max_batch": max_batch,
            "bound_mib": per_sample * max_batch * max_pending if per_sample is not None else None}


def part(args: argparse.Namespace, a: Target, proc_a: Any, peaks: dict[str, float | None]) -> dict[str, Any]:
    """The pending-step measure in the full run, on host A (last, since it raises A's peak memory)."""
    report = pending_memory(a, TOKENS["pinner"], proc_a.pid, graphs=args.pin_graphs, batch=args.pin_batch)
    peaks["A after pending forwards"] = peak_rss_mib(proc_a.pid)
    emit(report)
    return report
