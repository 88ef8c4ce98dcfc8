"""benchmarks/faults.py (the package benchmarks/fault_bench) in quick mode against the tiny host of
tests/split_helpers (no AlexNet).

The plan drawing, the report and the command line are checked fast; the parts that need server
processes (fuzz and poisoning probe, slow-drip clients, a SIGKILL during split training, malformed
host replies) are slow tests, each asserting the benchmark's goals.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from codenn.config.cost import CostModel
from codenn.config.routing import RoutingConfig
from codenn.paths.composed import ComposedPath
from codenn.remote.coordinator import Coordinator, Route, RouteInfo
from split_helpers import CONFIG, SPEC, TOKENS, HostProcess, tiny

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
SCRIPT = BENCHMARKS / "faults.py"
PACKAGE = BENCHMARKS / "fault_bench"
HEADER_TIMEOUT, BODY_TIMEOUT = 2.0, 3.0


def load_package() -> None:
    """benchmarks/fault_bench as the package ``fault_bench``, without putting benchmarks/ on sys.path."""
    if "fault_bench" in sys.modules:
        return
    spec = importlib.util.spec_from_file_location("fault_bench", PACKAGE / "__init__.py",
                                                  submodule_search_locations=[str(PACKAGE)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)


load_package()
drip, fuzz, fuzz_build, fuzz_plans, harness, kill, memory, replies, reporting = (
    importlib.import_module(f"fault_bench.{name}")
    for name in ("drip", "fuzz", "fuzz_build", "fuzz_plans", "harness", "kill", "memory", "replies", "report"))


class QuickHost(HostProcess):
    """The tiny host with the benchmark's short header and body deadlines."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, server={"body_timeout_s": BODY_TIMEOUT, "header_timeout_s": HEADER_TIMEOUT}, **kwargs)


def test_plans_are_drawn_built_and_reported() -> None:
    plans = fuzz_plans.draw_plans(120, seed=1)
    assert len(plans) == 120 and plans == fuzz_plans.draw_plans(120, seed=1)  # reproducible
    target = harness.Target("http://127.0.0.1:1", "m", (4, 3, 3), (8,), 1 << 16)
    reqs = [r for p in plans for r in fuzz_build.build(target, p)]
    assert len(reqs) >= 120 and sum(r.kind == "valid" for r in reqs) >= 20
    assert {r.endpoint for r in reqs} >= {"infer", "pair-forward", "pair-backward"}
    assert all(r.method != "POST" or r.body is not None for r in reqs)
    poison = [r for p in fuzz_plans.draw_plans(60, seed=2, poison_only=True) for r in fuzz_build.build(target, p)
              if r.endpoint.startswith("pair-backward")]
    assert poison and all("grad=" in r.kind for r in poison)  # B never gets a finite gradient
    records = [{"endpoint": "infer", "kind": "valid", "status": 200, "ms": 1.0, "reached_model": True},
               {"endpoint": "infer", "kind": "x", "status": 500, "ms": 2.0, "reached_model": False, "message": "boom"},
               {"endpoint": "state", "kind": "x", "status": None, "ms": 3.0, "reached_model": False, "bytes": 0,
                "max_bytes": 1024, "prev": None, "message": "ReadError: e"}]
    s = fuzz.fuzz_summary(records)
    assert s["answers_5xx"] == 1 and s["transport_errors"] == 1 and s["statuses"] == {"200": 1, "500": 1, "None": 1}
    assert s["transport_errors_by_kind"] == {"ReadError": 1}


def test_report_goals_and_table() -> None:
    summary = fuzz.fuzz_summary([{"endpoint": "infer", "kind": "valid", "status": 200, "ms": 1.0,
                                  "reached_model": True}] * 1500)
    report = {
        "device": "CPU", "torch": "x", "date": "2026-01-01", "cross_path": "a > b > a", "command": "faults.py",
        "wall_s": 1.0, "peak_mib": {"A": 100.0, "B": None},
        "fuzz": {"A": summary, "B": summary, "step_sequences": {"two steps in flight": [200, 200, 200, 409]}, "kinds_tried": 1,
                 "clients": 8, "fuzz_s": 1.0, "steps_trained_A": 3, "steps_trained_B": 0,
                 "probe_A": {"answers": 17, "poisoned": 0, "max_abs_diff": None},
                 "probe_B": {"answers": 17, "poisoned": 0, "max_abs_diff": 0.0}, "up_A": True, "up_B": True},
        "drip": {"up": True, "header_closed_in_time": 8, "header_connections": 8, "body_408_in_time": 8,
                 "body_connections": 8, "drippers": 16, "drip_s": 5.0, "header_closed_max_s": 2.1,
                 "header_timeout_s": 2.0, "body_answers": {"408": 8}, "body_closed_max_s": 3.1, "body_timeout_s": 3.0,
                 "normal_before": {"p95_ms": 5.0}, "normal_during": {"p95_ms": 6.0, "failed": 0, "requests": 10}},
        "kill": {"killed": True, "lost_steps": 3, "checkpoint_every": 5, "steps_done": 20, "steps_target": 20,
                 "final_links_finite": True, "steps_before_kill": 8, "host_steps_after_restart": 5,
                 "backward_retries": 1, "restart_s": 1.0, "recover_s": 1.5, "host_steps_final": 20},
        "pending": {"graphs": 4, "batch": 64, "request_kib": 64.0, "rss_before_mib": 1000.0, "rss_after_mib": 1800.0,
                    "mib_per_graph": 200.0, "max_pending": 16, "max_batch": 256, "bound_mib": 12800.0},
        "replies": {"lost": 0, "bad_replies_accepted": 0, "requests": 46, "bad_requests": 44, "fallbacks": 44,
                    "good_offloaded": 2, "modes": {"good": {"requests": 2}, "nan": {}}, "drip_held_max_s": 0.6,
                    "drip_held_median_s": 0.6},
    }
    report["goals"] = reporting.goals(report)
    assert all(g["met"] for g in report["goals"].values()), report["goals"]
    table = reporting.markdown(report)
    assert "| 5xx answers | 0 | 0 | yes |" in table and "| 200 | 1500 | 1500 |" in table
    report["fuzz"]["step_sequences"]["two steps in flight"][-1] = 500
    assert not reporting.goals(report)["answers_5xx"]["met"]
    json.dumps(report)


def test_the_script_keeps_its_command_line() -> None:
    """``python benchmarks/faults.py`` (what ``make bench-faults`` runs) still parses every option."""
    out = subprocess.run([sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True, timeout=120, check=True)
    for option in ("--quick", "--fuzz", "--out", "--run", "--poison-fuzz", "--per-mode", "--kill-at", "--pin-batch"):
        assert option in out.stdout, (option, out.stdout)
    assert harness.OUT == "benchmarks/results/faults.json"  # the default --out


@pytest.mark.slow
def test_fuzz_poisoning_and_slow_drip_against_the_tiny_host(tmp_path) -> None:
    t = tiny()
    path = t.path(SPEC).eval()
    tokens = harness.token_file("local")
    hosts = [QuickHost(t, path, tmp_path / name, tokens=tokens, max_bytes=1 << 20) for name in ("a", "b")]
    try:
        for h in hosts:
            h.wait_ready()
        a, b = (harness.Target.discover(h.url, h.name, harness.TOKENS["trainer"], 1 << 20) for h in hosts)
        x = torch.randn(4, *a.input_shape)
        r = fuzz.fuzz_and_probe(a, b, x, n_fuzz=100, n_poison=40, clients=8, seed=0)
        assert r["A"]["requests"] >= 100 and r["B"]["requests"] >= 40 and r["A"]["reached_model"] >= 20
        assert r["A"]["answers_5xx"] == 0 and r["B"]["answers_5xx"] == 0, (r["A"]["examples_5xx"], r["B"]["examples_5xx"])
        assert all(s is not None and s < 500 for q in r["step_sequences"].values() for s in q), r["step_sequences"]
        assert r["up_A"] and r["up_B"] and all(h.alive() for h in hosts)
        assert r["probe_B"]["poisoned"] == 0 and r["probe_A"]["poisoned"] == 0 and r["steps_trained_B"] == 0
        d = drip.slow_drip(a.url, a.model, harness.TOKENS["reader"], x, drippers=16, drip_s=3.0, before_s=1.0,
                            header_timeout=HEADER_TIMEOUT, body_timeout=BODY_TIMEOUT)
        assert d["header_connections"] >= 8 and d["header_closed_in_time"] == d["header_connections"], d
        assert d["body_connections"] >= 8 and d["body_408_in_time"] == d["body_connections"], d
        assert d["normal_during"]["answered"] > 0 and d["normal_during"]["failed"] == 0
        assert all(h.alive() for h in hosts) and harness.peak_rss_mib(hosts[0].proc.pid) > 0
        p = memory.pending_memory(a, harness.TOKENS["pinner"], hosts[0].proc.pid, graphs=2, batch=8)
        assert p["statuses"] == [200, 200] and p["max_pending"] >= 1 and p["rss_after_mib"] > 0
    finally:
        for h in hosts:
            h.stop()


@pytest.mark.slow
def test_kill_during_split_training_loses_at_most_the_checkpoint_interval(tmp_path) -> None:
    from codenn.remote.host import checkpoint_file
    from codenn.remote.split_trainer import SplitTrainer
    from codenn_adapters.transports import HttpTransport

    t = tiny()
    path = t.path(SPEC).eval()
    save_dir = tmp_path / "save"
    host = HostProcess(t, path, tmp_path / "host", save_dir=save_dir, checkpoint_every=5)
    try:
        host.wait_ready()
        transport = kill.RecordingTransport(HttpTransport(host.url, token=TOKENS["local"], timeout=30))
        trainer = SplitTrainer(t.local, transport, host.name, CONFIG, t.local_cache(), t.y)

        def restart() -> None:
            host.restart(resume=True)
            host.wait_ready()

        k = kill.kill_during_training(trainer, transport, epochs=4, kill_at=7, checkpoint_every=5,
                                       host_checkpoint=checkpoint_file(save_dir, host.name),
                                       trainer_checkpoint=tmp_path / "trainer.json", kill=host.kill, restart=restart,
                                       host_pid=lambda: host.proc.pid, wait_for_host_s=60)
        transport.inner.close()
    finally:
        host.stop()  # graceful: the host writes its last checkpoint
    assert k["killed"] and k["steps_before_kill"] >= 7 and k["host_steps_after_restart"] == 5
    assert k["lost_steps"] <= 5 and k["steps_done"] == k["steps_target"] == 20
    assert k["recover_s"] is not None and k["recover_s"] > 0 and k["restart_s"] > 0, k
    final = kill.checkpoint_steps(checkpoint_file(save_dir, host.name))
    assert final["links_finite"] and final["steps"] == 20


@pytest.mark.slow
def test_malformed_host_replies_lose_no_local_request(tmp_path) -> None:
    from codenn_adapters.transports import HttpTransport

    t = tiny()
    path = t.path(SPEC).eval()
    host = HostProcess(t, path, tmp_path / "host")
    try:
        host.wait_ready()
        fake = replies.FakeHost(host.url, drip_cap_s=3.0, hang_s=1.0)
        transport = HttpTransport(fake.url, token=TOKENS["local"], timeout=0.5)
        try:
            original = ComposedPath("local[:]", t.services)
            routes = [Route.local(original, RouteInfo("local[:]", 0.9, 1000.0, local_gflops=0.0)),
                      Route.through_host(t.local, SPEC, transport, host.name,
                                         RouteInfo(SPEC, 0.9, 200.0, 300.0, 50.0, host="host"))]
            coord = Coordinator(routes, 0.9, RoutingConfig(cost=CostModel(a=40, c_l=1e-3, c_h=1e-4), timeout_s=0.5,
                                                           retry_after_s=0.0))

            def send(i: int) -> dict:
                try:
                    _, d = coord.infer(t.x_test[i % len(t.x_test):][:1])
                except Exception as exc:  # a lost request
                    return {"status": None, "error": repr(exc)}
                return {"status": 200, "fallback": d.fallback, "offloaded": d.offloaded}

            r = replies.malformed_replies(send, fake, per_mode=2)
        finally:
            transport.close()
            fake.close()
    finally:
        host.stop()
    assert r["lost"] == 0 and r["bad_replies_accepted"] == 0, r
    assert not r["fake_host_errors"] and r["fake_host_answered"] == {m: 2 for m in replies.BAD_MODES}, r
    assert r["drip_connections"] == 2 and r["drip_held_max_s"] < 3.5
    assert r["good_offloaded"] == 2 and r["fallbacks"] == r["bad_requests"] == 2 * len(replies.BAD_MODES), r
