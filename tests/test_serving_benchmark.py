"""benchmarks/serving.py's load generator and its summaries, against a real server process."""

from __future__ import annotations

import asyncio
import importlib.util
import sys
from pathlib import Path as FsPath

import pytest
import torch

from split_helpers import SPEC, TOKENS, HostProcess, tiny

SCRIPT = FsPath(__file__).resolve().parents[1] / "benchmarks" / "serving.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("serving_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_open_loop_load_is_bounded_and_every_request_is_accounted_for(bench, tmp_path) -> None:
    t = tiny()
    path = t.path(SPEC).eval()
    host = HostProcess(t, path, tmp_path / "host")
    try:
        host.wait_ready()
        x = torch.randn(6, *path.link_specs[0][0].shape)  # what the host segment takes
        y = torch.tensor([0, 1, 2, 3, 4, 5])
        url = f"{host.url}/v2/models/{host.name}/infer"
        mu = bench.capacity(url, TOKENS["local"], x, y, n=16, clients=4)
        assert mu > 0
        killed: list[float] = []

        def kill(now: float) -> None:
            if not killed and now >= 1.0:
                host.stop()
                killed.append(now)

        res = asyncio.run(bench.open_loop(url, TOKENS["local"], x, y, rate=20.0, duration=2.0, seed=0, on_time=kill))
    finally:
        host.stop()
    assert 15 <= len(res) <= 70  # Poisson, 20/s for 2 s
    before = [r for r in res if r["sent_s"] < killed[0]]
    after = [r for r in res if r["sent_s"] > killed[0] + 0.2]
    assert before and all(r["status"] == 200 and "host_compute_s" in r for r in before)
    assert after and all(r["status"] != 200 for r in after)  # a host alone has no fallback: these are lost
    s = bench.summarise(res, 20.0)
    assert s["requests"] == len(res) and s["answered"] + s["lost"] == len(res) and s["lost"] >= len(after)
    assert 0 < s["p50_ms"] <= s["p95_ms"] and 0 <= s["accuracy"] <= 1


def test_summaries_recovery_and_goals(bench) -> None:
    def rec(sent: float, lat: float, ok: bool = True, offloaded: bool = False, pred: int = 1) -> dict:
        return {"sent_s": sent, "done_s": sent + lat, "latency_s": lat, "status": 200 if ok else None,
                "label": 1, "pred": pred, "offloaded": offloaded, "route": "b" if offloaded else "a"}

    slow = [rec(i / 10, 1.0 + i / 10) for i in range(20)]
    fast = [rec(i / 10, 0.1, offloaded=i % 2 == 0) for i in range(20)]
    lo, co = bench.summarise(slow, 10.0), bench.summarise(fast, 10.0)
    assert lo["lost"] == 0 and co["offloaded_share"] == 0.5 and co["routes"] == {"a": 10, "b": 10}
    assert co["mean_ms"] == pytest.approx(100.0)
    # a kill at 1.0 s: latency is high for 0.5 s, then back to normal
    fault = [rec(i / 10, 0.1) for i in range(10)] + [rec(1.0 + i / 10, 1.0 if i < 5 else 0.1) for i in range(20)]
    assert bench.recovery_time(fault, 1.0) == pytest.approx(0.5)
    fs = bench.summarise(fault, 10.0)
    report = {"runs": {"local-only/heavy": lo, "codenn/heavy": co, "codenn/heavy, host killed": fs}}
    g = bench.goals(report)
    assert g["heavy_mean_latency_cut"] > 0.9 and g["heavy_accuracy_drop"] == 0 and g["met"]
    assert g["fault_lost_requests"] == 0 and g["fault_goal_met"]
