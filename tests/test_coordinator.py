"""The coordinator: load-aware choice by eq. (1), measured T_cm, host-down fallback with no loss."""

from __future__ import annotations

import threading

import pytest
import torch

from codenn.config.cost import CostModel
from codenn.config.routing import RoutingConfig
from codenn.errors import BoundaryMismatchError, ConfigError
from codenn.paths.composed import ComposedPath
from codenn.remote.coordinator import Coordinator, Route, RouteInfo
from codenn_adapters.transports import InProcessTransport
from split_helpers import SPEC, tiny

SKIP = "local[:2] > local[3:]"


@pytest.fixture(scope="module")
def setup():
    t = tiny()
    cross = t.path(SPEC).eval()
    transport = InProcessTransport([t.segment(cross)])
    original = ComposedPath("local[:]", t.services)
    skip = t.path(SKIP).eval()
    return t, cross, transport, original, skip


def routes(setup, *, cross_acc=0.9, skip_acc=0.7, local_us=1000.0, cross_local_us=200.0, host_us=300.0):
    t, cross, transport, original, skip = setup
    model = t.segment(cross).name
    return [
        Route.local(original, RouteInfo("local[:]", 0.9, local_us, local_gflops=0.0)),
        Route.local(skip, RouteInfo(SKIP, skip_acc, local_us * 0.6)),
        Route.through_host(t.local, SPEC, transport, model,
                           RouteInfo(SPEC, cross_acc, cross_local_us, host_us, 50.0, host="host")),
    ]


def test_cross_route_output_equals_the_in_process_path(setup) -> None:
    t, cross, transport, *_ = setup
    coord = Coordinator(routes(setup), 0.9, RoutingConfig(cost=CostModel(a=40, c_l=1e-3, c_h=1e-4)))
    out, decision = coord.infer(t.x_test)
    with torch.inference_mode():
        expected = cross(t.x_test)
    assert decision.route == SPEC and decision.offloaded and not decision.fallback
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)
    assert decision.comm_s is not None and decision.comm_s >= 0
    assert coord.stats()["hosts"]["host"]["comm_ms"] is not None


def test_idle_prefers_the_accurate_local_model_and_load_shifts_work_to_the_host(setup) -> None:
    # c_l and c_h chosen so that at idle the original (same accuracy, no host time) wins
    cfg = RoutingConfig(cost=CostModel(a=40, b=0.0, c_l=1e-4, c_h=1e-3, d_l=0, d_h=0), workers=1)
    coord = Coordinator(routes(setup, cross_acc=0.9), 0.9, cfg)
    assert coord.choose()[0].info.spec == "local[:]"
    coord._local_queue = 10  # ten requests ahead: local time weighs 11x more
    c_l, _ = coord.weights()
    assert c_l == pytest.approx(1e-4 * 11)
    assert coord.choose()[0].info.spec == SPEC
    coord._local_queue = 0


def test_accuracy_term_keeps_a_worse_skip_path_out(setup) -> None:
    cfg = RoutingConfig(cost=CostModel(a=40, c_l=1e-4, c_h=1e-3, d_l=0, d_h=0))
    coord = Coordinator(routes(setup, skip_acc=0.5), 0.9, cfg)
    assert coord.choose(local_only=True)[0].info.spec == "local[:]"  # exp(40 * 0.4) dominates
    coord = Coordinator(routes(setup, skip_acc=0.9), 0.9, cfg)
    assert coord.choose(local_only=True)[0].info.spec == SKIP  # same accuracy, less time


def test_a_slow_host_raises_its_weight(setup) -> None:
    t, cross, transport, *_ = setup
    cfg = RoutingConfig(cost=CostModel(a=40, b=0, c_l=1e-3, c_h=1e-4, d_l=0, d_h=0))
    coord = Coordinator(routes(setup), 0.9, cfg)
    assert coord.choose()[0].info.spec == SPEC
    cross_route = coord.routes[2]
    # a slow network or a busy local client: only T_cm grows (b = 0 here), the host weight stays
    coord._host_answered("host", round_trip_s=0.5, compute_s=300e-6, comm_s=0.4997)
    assert coord.weights(cross_route)[1] == pytest.approx(1e-4)
    assert coord.stats()["hosts"]["host"]["comm_ms"] == pytest.approx(499.7)
    # the host itself is slow: 50 ms of compute against a nominal 300 µs
    coord._host_answered("host", round_trip_s=0.5, compute_s=0.05, comm_s=0.45)
    _, c_h = coord.weights(cross_route)
    assert c_h == pytest.approx(1e-4 * (0.8 * 300e-6 + 0.2 * 0.05) * 1e6 / 300)
    assert coord.choose()[0].info.spec != SPEC


def test_host_down_falls_back_locally_and_loses_nothing(setup) -> None:
    t, cross, transport, original, _ = setup
    now = [0.0]
    # host time and T_cm weigh nothing here: what the host's wall-clock compute measured on a loaded
    # machine must not decide which route this test of the fallback logic takes
    cfg = RoutingConfig(cost=CostModel(a=40, b=0, c_l=1e-3, c_h=0, d_l=0, d_h=0), retry_after_s=5.0)
    coord = Coordinator(routes(setup, skip_acc=0.5), 0.9, cfg, clock=lambda: now[0])
    transport.fail = True
    try:
        out, decision = coord.infer(t.x_test)
        assert decision.fallback and not decision.offloaded and decision.route == "local[:]"
        assert "HostUnavailableError" in decision.error
        with torch.inference_mode():
            torch.testing.assert_close(out, original(t.x_test))
        # the host is skipped (no second failed call) until retry_after_s has passed
        calls = transport.calls
        _, d2 = coord.infer(t.x_test)
        assert not d2.offloaded and not d2.fallback and transport.calls == calls
        assert coord.stats()["hosts"]["host"]["down"] and coord.stats()["fallbacks"] == 1
    finally:
        transport.fail = False
    now[0] = 6.0
    # half-open: while one request probes the host, the others stay local
    coord._hosts["host"].probing = True
    assert coord.choose()[0].info.spec == "local[:]"
    coord._hosts["host"].probing = False
    _, d3 = coord.infer(t.x_test)
    assert d3.offloaded and not d3.fallback and not coord._hosts["host"].probing
    # a probe that fails puts the host back out for retry_after_s
    transport.fail = True
    try:
        now[0] = 7.0
        coord._host_failed("host")
        now[0] = 13.0
        _, probe = coord.infer(t.x_test)
        assert probe.fallback and coord._hosts["host"].failures == 2 and not coord._hosts["host"].probing
        assert not coord.available(coord.routes[2])
    finally:
        transport.fail = False
    # a request that fails before reaching the host (bad input) does not leave the probe taken
    now[0] = 20.0
    assert coord.choose()[0].info.spec == SPEC and coord._hosts["host"].failures  # the next request probes
    with pytest.raises(BoundaryMismatchError):
        coord.infer(torch.randn(1, 3, 5, 5))
    assert not coord._hosts["host"].probing and coord.available(coord.routes[2])


def test_a_timeout_counts_as_down(setup) -> None:
    t, cross, transport, *_ = setup
    cfg = RoutingConfig(cost=CostModel(a=40, c_l=1e-3, c_h=1e-4, d_l=0, d_h=0), timeout_s=0.05)
    coord = Coordinator(routes(setup, skip_acc=0.5), 0.9, cfg)
    transport.delay_s = 0.2
    try:
        _, decision = coord.infer(t.x_test)
    finally:
        transport.delay_s = 0.0
    assert decision.fallback and "did not answer within" in decision.error


def test_concurrent_requests_are_all_answered(setup) -> None:
    t, *_ = setup
    coord = Coordinator(routes(setup), 0.9, RoutingConfig(cost=CostModel(c_l=1e-3), workers=2))
    results: list[object] = []

    def worker() -> None:
        for _ in range(5):
            results.append(coord.infer(t.x_test[:2])[1])

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert len(results) == 20 and sum(coord.stats()["requests"].values()) == 20
    assert coord.local_queue == 0


def test_calibration_measures_local_host_and_wire_times_here(setup) -> None:
    t, cross, transport, *_ = setup
    coord = Coordinator(routes(setup, local_us=1e9, cross_local_us=1e9, host_us=1e9), 0.9, RoutingConfig())
    transport.delay_s = 0.02
    try:
        infos = coord.calibrate(t.x_test[:1], repeats=3)
    finally:
        transport.delay_s = 0.0
    assert set(infos) == {"local[:]", SKIP, SPEC}
    assert all(0 < i.local_us < 1e8 for i in infos.values())
    assert 0 < infos[SPEC].host_us < 1e8 and infos[SPEC].comm_us >= 0.02 * 1e6 * 0.9
    assert coord.routes[2].info is infos[SPEC]
    transport.fail = True
    try:
        again = coord.calibrate(t.x_test[:1], repeats=3)  # a down host keeps its values, is marked down
    finally:
        transport.fail = False
    assert again[SPEC] == infos[SPEC] and coord.stats()["hosts"]["host"]["down"]


def test_bad_set_ups_are_clear_errors(setup) -> None:
    t, cross, transport, original, skip = setup
    rs = routes(setup)
    with pytest.raises(ConfigError, match="at least one local route"):
        Coordinator([rs[2]], 0.9)
    with pytest.raises(ConfigError, match="unique"):
        Coordinator([rs[0], rs[0]], 0.9)
    with pytest.raises(ConfigError, match="visits a host"):
        Route.local(cross, RouteInfo(SPEC, 0.9, 1.0))
    with pytest.raises(ConfigError, match="not local > host > local"):
        Route.through_host(t.local, SKIP, transport, "m", RouteInfo(SKIP, 0.9, 1.0, host="host"))
    with pytest.raises(ConfigError, match="accuracy must be in"):
        RouteInfo("x", 1.5, 1.0)
    with pytest.raises(ConfigError, match="workers"):
        RoutingConfig(workers=0)
