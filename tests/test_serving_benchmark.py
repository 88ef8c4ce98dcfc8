"""benchmarks/serving.py's load generator and its summaries, against a real server process."""

from __future__ import annotations

import asyncio
import importlib.util
import json
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
    # the schedule drawn before the run: every server at one load gets the same images at the same times
    schedule = bench.arrivals(20.0, 2.0, len(y), seed=0)
    assert [(r["image"], r["label"]) for r in sorted(res, key=lambda r: r["i"])] == [(k, int(y[k])) for _, k in schedule]
    assert all(r["sent_s"] >= t - 0.01 for r, (t, _) in zip(sorted(res, key=lambda r: r["i"]), schedule))
    before = [r for r in res if r["sent_s"] < killed[0]]
    after = [r for r in res if r["sent_s"] > killed[0] + 0.2]
    assert before and all(r["status"] == 200 and "host_compute_s" in r for r in before)
    assert after and all(r["status"] != 200 for r in after)  # a host alone has no fallback: these are lost
    s = bench.summarise(res, 20.0)
    assert s["requests"] == len(res) and s["answered"] + s["lost"] == len(res) and s["lost"] >= len(after)
    assert 0 < s["p50_ms"] <= s["p95_ms"] and 0 <= s["accuracy"] <= 1


def test_arrivals_are_a_bounded_poisson_schedule(bench) -> None:
    a = bench.arrivals(50.0, 10.0, 7, seed=3)
    assert a == bench.arrivals(50.0, 10.0, 7, seed=3) and a != bench.arrivals(50.0, 10.0, 7, seed=4)
    times = [t for t, _ in a]
    assert times == sorted(times) and 0 < times[0] and times[-1] <= 10.0 and 400 <= len(a) <= 600
    assert {k for _, k in a} == set(range(7))


def test_summaries_recovery_and_goals(bench) -> None:
    def rec(sent: float, lat: float, ok: bool = True, offloaded: bool = False, pred: int = 1,
            route: str | None = None) -> dict:
        return {"sent_s": sent, "done_s": sent + lat, "latency_s": lat, "status": 200 if ok else None,
                "label": 1, "pred": pred, "offloaded": offloaded, "route": route or ("b" if offloaded else "a")}

    slow = [rec(i / 10, 1.0 + i / 10) for i in range(20)]
    skip = [rec(i / 10, 0.5, route="s", pred=1 if i % 10 else 0) for i in range(20)]
    fast = [rec(i / 10, 0.1, offloaded=i % 2 == 0) for i in range(20)]
    lo, sk, co = bench.summarise(slow, 10.0), bench.summarise(skip, 10.0), bench.summarise(fast, 10.0)
    assert lo["lost"] == 0 and co["offloaded_share"] == 0.5 and co["routes"] == {"a": 10, "b": 10}
    assert co["mean_ms"] == pytest.approx(100.0) and sk["accuracy"] == pytest.approx(0.9)
    # a kill at 1.0 s: latency is high for 0.5 s, then back to normal
    fault = [rec(i / 10, 0.1) for i in range(10)] + [rec(1.0 + i / 10, 1.0 if i < 5 else 0.1) for i in range(20)]
    assert bench.recovery_time(fault, 1.0) == pytest.approx(0.5)
    fs = bench.summarise(fault, 10.0)
    runs = {f"{kind}/{load}": s for load in ("balanced", "heavy")
            for kind, s in (("local-only", lo), ("local-skip", sk), ("codenn", co))}
    report = {"runs": {**runs, "codenn/heavy, host killed": fs}}
    g = bench.goals(report)
    assert g["heavy_mean_latency_cut"] > 0.9 and g["heavy_accuracy_drop"] == 0 and g["met"]
    assert g["fault_lost_requests"] == 0 and g["fault_goal_met"]
    # over the skip path: 5x faster on the mean, 0.1 more accurate
    assert g["vs_skip"]["mean_latency_cut"] == pytest.approx(0.8) and g["vs_skip"]["accuracy_drop"] == pytest.approx(-0.1)
    assert g["vs_skip"]["met"]
    heavy = g["ratios"]["heavy"]
    assert set(heavy) == {"codenn/local-only", "codenn/local-skip", "local-skip/local-only"}
    assert heavy["codenn/local-skip"]["mean_latency_ratio"] == pytest.approx(0.2)
    assert heavy["local-skip/local-only"]["accuracy_diff"] == pytest.approx(-0.1)
    # without the skip runs (an earlier report) the comparison is empty, not an error
    assert bench.goals({"runs": {"local-only/heavy": lo, "codenn/heavy": co, "codenn/heavy, host killed": fs}}
                       )["vs_skip"]["met"] is None

    def info(spec: str, local: float, host: float = 0.0) -> dict:
        return {"spec": spec, "val_accuracy": 0.9, "test_accuracy": 0.91, "local_gflops": local, "host_gflops": host}

    report.update(device="CPU", torch="2", date="2026-12-02", link="conv3x3", epochs=8, local_capacity_rps=10.0,
                  skip_capacity_rps=12.0, duration_s=2.0, original_path="x[:]", skip_path="x[:1] > x[2:]",
                  cross_path="x[:1] > h[1:2] > x[2:]", goals=g,
                  paths={"original": info("x[:]", 0.1), "skip": info("x[:1] > x[2:]", 0.08),
                         "cross": info("x[:1] > h[1:2] > x[2:]", 0.04, 0.002)})
    report["runs"]["codenn/heavy, host killed"].update(killed_at_s=1.0, first_fallback_answered_after_kill_s=0.1,
                                                        recovery_s=0.5)
    table = bench.markdown(report)
    assert "| local-skip/heavy |" in table and "| heavy | codenn/local-skip | x" in table
    assert "a 50%, b 50%" in table and "s 100%" in table and "met." in table


def test_stale_run_directories_are_replaced_and_others_kept(bench, tmp_path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.json").write_text(json.dumps({"config_hash": "old", "metadata": {"run_config": {}}}))
    assert bench.stale_reason(run, "old", {}) is None
    assert not bench.replace_stale(run, "old", {}) and run.exists()
    assert "different configuration" in bench.stale_reason(run, "new", {})
    assert bench.replace_stale(run, "new", {}, log=lambda m: None) and not run.exists()
    run.mkdir()
    (run / "run.json").write_text(json.dumps({"config_hash": "same", "metadata": {"run_config": {}}}))
    assert bench.replace_stale(run, "same", {}, fresh=True, log=lambda m: None) and not run.exists()
    other = tmp_path / "not-a-run"
    other.mkdir()
    (other / "notes.txt").write_text("keep")
    assert not bench.replace_stale(other, "x", {}, fresh=True) and (other / "notes.txt").exists()
    assert not bench.replace_stale(tmp_path / "missing", "x", {}, fresh=True)


def test_best_trained_path_is_the_lowest_cost(bench) -> None:
    from codenn.paths.rows import PathRow

    rows = {s: PathRow.from_dict({"spec": s, "status": st, "cost": c}) for s, st, c in (
        ("a[:1] > a[3:]", "trained", 1.2), ("a[:2] > a[3:]", "trained", 0.9), ("a[:1] > a[2:]", "pruned", 0.1),
        ("a[:1] > h[1:2] > a[3:]", "trained", 0.5))}
    assert bench.best_trained(rows, "skip").spec == "a[:2] > a[3:]"
    assert bench.best_trained(rows, "cross").spec == "a[:1] > h[1:2] > a[3:]"
    with pytest.raises(Exception, match="no trained skip"):
        bench.best_trained({}, "skip")
