"""Parts 1 and 2 run together: the plans of :mod:`.fuzz_plans`, built by :mod:`.fuzz_build`, replayed
by concurrent clients into host A (every request kind) and host B (no finite gradient), the fixed
step sequences after, and the poisoning probe (:mod:`.poisoning`) before and after; one record
per request, summed up by :func:`fuzz_summary`."""

from __future__ import annotations

import argparse
import asyncio
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

import torch

from .fuzz_build import Req, build
from .fuzz_plans import draw_plans
from .harness import TOKENS, Bench, Target, alive, bearer, emit, model_url, peak_rss_mib, percentile, say, timed
from .poisoning import compare_probes, probe, steps_trained

MODEL_PHRASES = ("produced", "rolled back", "no pending forward", "already applied", "for step", "would be")
"""Error messages only the model code gives (a step's output, a rollback, the step ledger, an answer's size)."""

SEQUENCES = {
    "two steps in flight": "forward s, forward s+1, backward s+1, backward s",
    "a rolled-back step with another in flight": "forward s, forward s+1, backward s+1 with a gradient of 1e38 "
                                                 "(the update overflows: rolled back), backward s",
}
"""Fixed split-training sequences sent after the fuzz (each answer's status is recorded); the last
backward of each meets a pending step whose links something else touched in between."""


def reached_model(endpoint: str, status: int | None, message: str) -> bool:
    """Whether a request got past every protocol check into the model code."""
    compute = endpoint in ("infer", "forward", "pair-forward", "pair-backward", "pair-backward-retry",
                           "pair-backward-other", "backward")
    return compute and (status == 200 or any(p in message for p in MODEL_PHRASES))


async def _send(client: Any, target: Target, req: Req, prev: str | None) -> dict[str, Any]:
    """One request of the fuzz and its record (status, message unless 200, time, bytes)."""
    import httpx

    t0 = time.perf_counter()
    rec: dict[str, Any] = {"endpoint": req.endpoint, "kind": req.kind, "bytes": len(req.body or b""),
                           "max_bytes": target.max_bytes, "prev": prev}
    try:
        res = await client.request(req.method, req.path, headers=req.headers, content=req.body)
        rec["status"] = res.status_code
        if res.status_code != 200:
            rec["message"] = res.text[:300]
    except httpx.HTTPError as exc:
        rec["status"], rec["message"] = None, f"{type(exc).__name__}: {exc}"[:300]
    rec["ms"] = 1e3 * (time.perf_counter() - t0)
    rec["reached_model"] = reached_model(req.endpoint, rec["status"], rec.get("message", ""))
    return rec


async def replay(target: Target, plans: Sequence[dict[str, Any]], clients: int, timeout: float = 120.0
                 ) -> list[dict[str, Any]]:
    """Send every plan's requests from ``clients`` concurrent workers; one record per request."""
    import httpx

    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    for p in plans:
        queue.put_nowait(p)
    records: list[dict[str, Any]] = []

    async def worker() -> None:  # one client, one keep-alive connection each
        prev = None
        async with httpx.AsyncClient(base_url=target.url, timeout=timeout, limits=httpx.Limits(max_connections=1)) as client:
            while not queue.empty():
                plan = queue.get_nowait()
                for req in build(target, plan):
                    rec = await _send(client, target, req, prev)
                    records.append(rec)
                    prev = f"{req.endpoint} {req.kind} ({rec['bytes']} bytes) -> {rec['status']}"

    await asyncio.gather(*(worker() for _ in range(clients)))
    return records


def _no_answer_cause(r: dict[str, Any]) -> str:
    """Why a request got no answer: its body was over the cap (the host answers 413 and closes
    before the body is in), the connection had just carried a 500 (the server closes it), or else."""
    if r["bytes"] > r.get("max_bytes", 1 << 62):
        return "oversized body, connection reset"
    if r.get("prev") and str(r["prev"]).endswith("-> 500"):
        return "connection closed after a 500"
    return str(r["message"]).split(":")[0]


def fuzz_summary(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Status counts (overall, per endpoint), 5xx and transport errors with their messages."""
    statuses = Counter(str(r["status"]) for r in records)
    by_endpoint: dict[str, Counter[str]] = {}
    for r in records:
        by_endpoint.setdefault(r["endpoint"], Counter())[str(r["status"])] += 1
    five = [r for r in records if r["status"] is not None and r["status"] >= 500]
    errors = [r for r in records if r["status"] is None]
    return {
        "requests": len(records),
        "statuses": dict(sorted(statuses.items())),
        "by_endpoint": {k: dict(sorted(v.items())) for k, v in sorted(by_endpoint.items())},
        "answers_5xx": len(five),
        "transport_errors": len(errors),
        "reached_model": sum(r["reached_model"] for r in records),
        "ok_200": statuses.get("200", 0),
        "p95_ms": percentile([r["ms"] for r in records], 0.95),
        "examples_5xx": [{k: r[k] for k in ("endpoint", "kind", "status", "message")} for r in five[:20]],
        "transport_errors_by_kind": dict(Counter(_no_answer_cause(r) for r in errors)),
        "examples_transport_errors": sorted({f"{r['endpoint']} {r['kind']} ({r['bytes']} bytes, {r['ms']:.0f} ms): "
                                             f"{r['message']}"[:300] + f" [after: {r['prev']}]" for r in errors})[:20],
    }


def step_sequences(target: Target, token: str, step: int = 2**50) -> dict[str, list[int | None]]:
    """The statuses of :data:`SEQUENCES`, each on fresh step ids from ``step``."""
    import httpx

    from codenn_adapters import oip

    out: dict[str, list[int | None]] = {}
    path = f"{model_url(target.model)}/train"
    x = torch.randn(2, *target.input_shape, generator=torch.Generator().manual_seed(step % 2**31))
    with httpx.Client(base_url=target.url, timeout=60, headers=bearer(token)) as client:
        for i, name in enumerate(SEQUENCES):
            s0 = step + 10 * i
            statuses: list[int | None] = []
            outputs = {}
            for s in (s0, s0 + 1):
                body, headers = oip.encode_request({"input": x}, parameters={"step": s})
                r = client.post(f"{path}/forward", content=body, headers=headers)
                statuses.append(r.status_code)
                if r.status_code == 200:
                    outputs[s] = oip.decode_response(r.content, r.headers.get(oip.HEADER_LENGTH))[1]["output"]
            for s in (s0 + 1, s0):
                ref = outputs.get(s, torch.ones(2, *target.output_shape))
                scale = 1e38 if i == 1 and s == s0 + 1 else 1e-3
                body, headers = oip.encode_request({"grad": torch.full_like(ref, scale)}, parameters={"step": s},
                                                   binary_output=False)
                statuses.append(client.post(f"{path}/backward", content=body, headers=headers).status_code)
            out[name] = statuses
    return out


def fuzz_and_probe(a: Target, b: Target, x_probe: torch.Tensor, *, n_fuzz: int, n_poison: int, clients: int,
                   seed: int) -> dict[str, Any]:
    """Parts 1 and 2: probe both hosts, fuzz A (everything) and B (no finite gradient) at once, probe again."""
    t0 = time.perf_counter()
    plans_a = draw_plans(n_fuzz, seed)
    plans_b = draw_plans(n_poison, seed + 1000, poison_only=True)
    drawn_s = time.perf_counter() - t0
    before_a = probe(a.url, a.model, TOKENS["trainer"], x_probe)
    before_b = probe(b.url, b.model, TOKENS["trainer"], x_probe)

    async def both() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        ra, rb = await asyncio.gather(replay(a, plans_a, clients), replay(b, plans_b, clients))
        return ra, rb

    t1 = time.perf_counter()
    rec_a, rec_b = asyncio.run(both())
    fuzz_s = time.perf_counter() - t1
    sequences = step_sequences(a, TOKENS["trainer"], 2**50 + 100 * seed)
    after_a = probe(a.url, a.model, TOKENS["trainer"], x_probe)
    after_b = probe(b.url, b.model, TOKENS["trainer"], x_probe)
    return {
        "step_sequences": sequences,
        "plans": {"A": len(plans_a), "B": len(plans_b)}, "draw_s": drawn_s, "fuzz_s": fuzz_s, "clients": clients,
        "A": fuzz_summary(rec_a), "B": fuzz_summary(rec_b),
        "kinds_tried": len({r["kind"] for r in rec_a + rec_b}),
        "probe_A": compare_probes(before_a, after_a, exact=False),
        "probe_B": compare_probes(before_b, after_b, exact=True),
        "steps_trained_A": steps_trained(a.url, a.model, TOKENS["trainer"]),
        "steps_trained_B": steps_trained(b.url, b.model, TOKENS["trainer"]),
        "up_A": alive(a.url), "up_B": alive(b.url),
    }


def part(bench: Bench, args: argparse.Namespace, a: Target, b: Target, proc_a: Any, proc_b: Any,
         peaks: dict[str, float | None]) -> dict[str, Any]:
    """Parts 1 and 2 in the full run, against host processes A and B; notes their peak memory after."""
    say(f"fuzz: {args.fuzz} plans to host A, {args.poison_fuzz} (no finite gradient) to host B, "
        f"{args.clients} clients each; input {list(a.input_shape)}, output {list(a.output_shape)}")
    report = timed(lambda: fuzz_and_probe(a, b, bench.x_probe, n_fuzz=args.fuzz, n_poison=args.poison_fuzz,
                                          clients=args.clients, seed=args.seed))
    peaks["A after fuzz"], peaks["B after fuzz"] = peak_rss_mib(proc_a.pid), peak_rss_mib(proc_b.pid)
    report["up_A"] = report["up_A"] and proc_a.poll() is None
    report["up_B"] = report["up_B"] and proc_b.poll() is None
    emit({k: report[k] for k in ("plans", "fuzz_s", "probe_A", "probe_B", "up_A", "up_B")})
    say(f"  A: {report['A']['statuses']}\n  B: {report['B']['statuses']}")
    return report
