"""The local side checks every host reply, and a call's timeout is a total deadline.

A host that answers 200 with the wrong shape, dtype or batch, with NaN or inf, or without a
usable compute time is treated like a down host: the coordinator falls back to a local route,
counts the failure and loses nothing. The HTTP transport maps every odd answer (an error body
that is not a JSON object, a reply too large, a body that drips in byte by byte) onto the
failure contract of :mod:`codenn.remote.transport`, within the call's timeout.
"""

from __future__ import annotations

import http.server
import json
import math
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch

from codenn.config.cost import CostModel
from codenn.config.routing import RoutingConfig
from codenn.contracts.protocols import HostReply, Transport
from codenn.errors import BadHostReplyError, HostRejectedError, HostUnavailableError
from codenn.model.blocks import BoundarySpec
from codenn.paths.composed import ComposedPath
from codenn.remote.coordinator import Coordinator, Route, RouteInfo
from codenn.remote.transport import check_host_reply
from codenn_adapters import oip
from codenn_adapters.transports import HttpTransport, InProcessTransport
from split_helpers import SPEC, tiny

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SKIP = "local[:2] > local[3:]"
SPEC16 = BoundarySpec((16, 4, 4))


# -- check_host_reply ------------------------------------------------------------------------------
def _reply(output: Any = None, host_compute_s: Any = 0.01, round_trip_s: Any = 0.02) -> HostReply:
    return HostReply(torch.zeros(3, 16, 4, 4) if output is None else output, host_compute_s, round_trip_s)


def test_a_good_reply_passes() -> None:
    reply = _reply()
    assert check_host_reply(reply, SPEC16, 3, host="host", model="x") is reply
    check_host_reply(_reply(host_compute_s=0, round_trip_s=0), SPEC16, 3, host="host", model="x")


@pytest.mark.parametrize("reply, match", [
    (_reply(torch.zeros(3, 8, 4, 4)), r"host 'host' answered model 'x' with shape \[3, 8, 4, 4\] float32; "
                                      r"expected \[3, 16, 4, 4\] float32"),
    (_reply(torch.zeros(2, 16, 4, 4)), r"batch of 2 .*expected \[3, 16, 4, 4\] float32"),
    (_reply(torch.zeros(3, 16, 4, 4, dtype=torch.float64)), r"float64; expected \[3, 16, 4, 4\] float32"),
    (_reply(torch.zeros(3, 16, 4, 4, dtype=torch.int64)), r"int64; expected \[3, 16, 4, 4\] float32"),
    (_reply([[0.0]]), r"with a list, not a tensor; expected \[3, 16, 4, 4\] float32"),
    (_reply(torch.zeros(3, 16, 4, 4).index_fill_(1, torch.tensor([2]), math.nan)),
     r"48 non-finite values \(NaN or inf\) of 768"),
    (_reply(torch.zeros(3, 16, 4, 4).index_fill_(0, torch.tensor([1]), -math.inf)), "256 non-finite values"),
    (_reply(host_compute_s=None), "host_compute_s=None; expected a finite number of seconds >= 0"),
    (_reply(host_compute_s="abc"), "host_compute_s='abc'; expected a finite number"),
    (_reply(host_compute_s=-1), "host_compute_s=-1; expected"),
    (_reply(host_compute_s=math.inf), "host_compute_s=inf; expected"),
    (_reply(host_compute_s=math.nan), "host_compute_s=nan; expected"),
    (_reply(host_compute_s=True), "host_compute_s=True; expected"),
    (_reply(round_trip_s=None), "round_trip_s=None; expected"),
    (_reply(round_trip_s=-0.5), "round_trip_s=-0.5; expected"),
])
def test_a_bad_reply_says_what_was_wrong(reply: HostReply, match: str) -> None:
    with pytest.raises(BadHostReplyError, match=match):
        check_host_reply(reply, SPEC16, 3, host="host", model="x")


def test_bad_host_reply_is_a_host_unavailable_error() -> None:
    """What every caller of a transport already catches to fall back."""
    with pytest.raises(HostUnavailableError):
        check_host_reply(_reply(host_compute_s=None), SPEC16, 3, host="host", model="x")


# -- the coordinator treats a bad reply as a failed host -------------------------------------------
class LyingTransport:
    """A host whose answers ``lie`` rewrites (None: the true answer)."""

    name = "lying"

    def __init__(self, inner: InProcessTransport) -> None:
        self.inner = inner
        self.lie: Callable[[HostReply], HostReply] | None = None
        self.calls = 0

    def health(self) -> bool:
        return True

    def metadata(self, model: str) -> dict[str, Any]:
        return self.inner.metadata(model)

    def infer(self, model: str, x: torch.Tensor, timeout: float | None = None) -> HostReply:
        self.calls += 1
        reply = self.inner.infer(model, x, timeout)
        return reply if self.lie is None else self.lie(reply)

    def train_forward(self, model: str, x: torch.Tensor, step: int, timeout: float | None = None) -> HostReply:
        return self.inner.train_forward(model, x, step, timeout)

    def train_backward(self, model: str, step: int, grad: torch.Tensor, timeout: float | None = None) -> float:
        return self.inner.train_backward(model, step, grad, timeout)

    def close(self) -> None:
        self.inner.close()


def _nan(out: torch.Tensor) -> torch.Tensor:
    out = out.clone()
    out.view(-1)[0] = math.nan
    return out


LIES: dict[str, tuple[Callable[[HostReply], HostReply], str]] = {
    "shape": (lambda r: HostReply(r.output[:, :-1], r.host_compute_s, r.round_trip_s), "with shape"),
    "dtype": (lambda r: HostReply(r.output.double(), r.host_compute_s, r.round_trip_s), "float64"),
    "batch": (lambda r: HostReply(r.output[:-1], r.host_compute_s, r.round_trip_s), "batch of 7"),
    "nan": (lambda r: HostReply(_nan(r.output), r.host_compute_s, r.round_trip_s), "1 non-finite value"),
    "time-none": (lambda r: _reply(r.output, None, r.round_trip_s), "host_compute_s=None"),
    "time-text": (lambda r: _reply(r.output, "abc", r.round_trip_s), "host_compute_s='abc'"),
    "time-negative": (lambda r: HostReply(r.output, -1, r.round_trip_s), "host_compute_s=-1"),
    "time-inf": (lambda r: HostReply(r.output, math.inf, r.round_trip_s), "host_compute_s=inf"),
}


@pytest.fixture(scope="module")
def setup():
    t = tiny()
    cross = t.path(SPEC).eval()
    segment = t.segment(cross)
    lying = LyingTransport(InProcessTransport([segment]))
    original = ComposedPath("local[:]", t.services).eval()
    return t, cross, segment.name, lying, original


def _coordinator(setup, clock: Callable[[], float]) -> Coordinator:
    t, _, model, lying, original = setup
    routes = [
        Route.local(original, RouteInfo("local[:]", 0.9, 1000.0)),
        Route.local(t.path(SKIP).eval(), RouteInfo(SKIP, 0.5, 600.0)),
        Route.through_host(t.local, SPEC, lying, model, RouteInfo(SPEC, 0.9, 200.0, 300.0, 50.0, host="host")),
    ]
    cfg = RoutingConfig(cost=CostModel(a=40, c_l=1e-3, c_h=1e-4, d_l=0, d_h=0), retry_after_s=5.0)
    return Coordinator(routes, 0.9, cfg, clock=clock)


def test_the_lying_transport_is_a_transport(setup) -> None:
    assert isinstance(setup[3], Transport)


@pytest.mark.parametrize("lie", sorted(LIES))
def test_a_bad_reply_falls_back_locally_and_counts_as_a_failure(setup, lie: str) -> None:
    t, cross, _, lying, original = setup
    now = [0.0]
    coord = _coordinator(setup, lambda: now[0])
    assert coord.choose()[0].info.spec == SPEC
    lying.lie, match = LIES[lie]
    try:
        out, decision = coord.infer(t.x_test)
    finally:
        lying.lie = None
    assert decision.fallback and not decision.offloaded and decision.route == "local[:]"
    assert decision.error is not None and "BadHostReplyError" in decision.error and match in decision.error
    assert "host 'host'" in decision.error and decision.error.startswith(SPEC)
    with torch.inference_mode():
        torch.testing.assert_close(out, original(t.x_test))
    stats = coord.stats()
    assert stats["fallbacks"] == 1 and coord.fallbacks == 1
    assert stats["hosts"]["host"]["failures"] == 1 and stats["hosts"]["host"]["down"]
    assert stats["hosts"]["host"]["compute_ms"] is None  # nothing of the bad reply was measured
    # once retry_after_s has passed, a good reply brings the host back and resets its failures
    now[0] = 6.0
    out, decision = coord.infer(t.x_test)
    assert decision.offloaded and not decision.fallback and decision.error is None
    with torch.inference_mode():
        torch.testing.assert_close(out, cross(t.x_test), rtol=1e-5, atol=1e-6)
    assert coord.stats()["hosts"]["host"]["failures"] == 0 and coord.fallbacks == 1


def test_calibration_marks_a_lying_host_down_and_keeps_its_values(setup) -> None:
    t, _, _, lying, _ = setup
    coord = _coordinator(setup, time.monotonic)
    before = coord.routes[2].info
    lying.lie = LIES["shape"][0]
    try:
        infos = coord.calibrate(t.x_test[:1], repeats=3)
    finally:
        lying.lie = None
    assert infos[SPEC] == before and coord.stats()["hosts"]["host"]["down"]
    assert coord.stats()["hosts"]["host"]["failures"] == 1


def test_a_cross_route_knows_the_boundary_its_host_answers_with(setup) -> None:
    t, _, model, lying, _ = setup
    route = Route.through_host(t.local, SPEC, lying, model, RouteInfo(SPEC, 0.9, 1.0, host="host"))
    assert route.leg is not None and route.leg.expected == t.local.input_of(3)


# -- a misbehaving HTTP host (stdlib server on 127.0.0.1) -------------------------------------------
OUTPUT = torch.zeros(2, 4)
STOP = threading.Event()


def _oip(parameters: dict[str, Any], raw: bytes | None = None) -> tuple[bytes, dict[str, str]]:
    """A valid binary OIP answer; ``raw`` replaces the JSON of ``parameters["host_compute_s"]``
    (a hostile host sends what it likes, e.g. ``1e999``, which JSON readers take for inf)."""
    body, headers = oip.encode_response("m", {"output": OUTPUT}, parameters=parameters)
    if raw is not None:
        head = body[: int(headers[oip.HEADER_LENGTH])]
        new = head.replace(b'"host_compute_s":0', b'"host_compute_s":' + raw)
        body, headers = new + body[len(head):], {**headers, oip.HEADER_LENGTH: str(len(new))}
    return body, headers


ANSWERS: dict[str, tuple[int, bytes, dict[str, str]]] = {
    "list500": (500, b"[1,2]", {"Content-Type": "application/json"}),
    "null500": (500, b"null", {"Content-Type": "application/json"}),
    "text422": (422, b'"text"', {"Content-Type": "application/json"}),
    "error422": (422, b'{"error": "must have shape [-1, 4]"}', {"Content-Type": "application/json"}),
    "ok": (200, *_oip({"host_compute_s": 0.001})),
    "time-null": (200, *_oip({"host_compute_s": None})),
    "time-missing": (200, *_oip({"other": 1})),
    "time-none-at-all": (200, *_oip({})),
    "time-text": (200, *_oip({"host_compute_s": "abc"})),
    "time-negative": (200, *_oip({"host_compute_s": -1})),
    "time-inf": (200, *_oip({"host_compute_s": 0}, raw=b"1e999")),
    "time-bool": (200, *_oip({"host_compute_s": True})),
    "back-list": (200, b"[1]", {"Content-Type": "application/json"}),
    "back-missing": (200, b'{"parameters": {}}', {"Content-Type": "application/json"}),
    "back-params-list": (200, b'{"parameters": [1]}', {"Content-Type": "application/json"}),
    "back-ok": (200, b'{"parameters": {"host_compute_s": 0.25}}', {"Content-Type": "application/json"}),
    "meta-list": (200, b"[1]", {"Content-Type": "application/json"}),
    "meta-ok": (200, b'{"name": "m"}', {"Content-Type": "application/json"}),
}


class _Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args: Any) -> None:  # quiet
        pass

    def do_GET(self) -> None:
        self._answer()

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self._answer()

    def _answer(self) -> None:
        kind = self.path.split("/")[3] if self.path.startswith("/v2/models/") else "health"
        try:
            if kind == "drip":
                self._drip()
            elif kind == "huge":
                self._head(200, {"Content-Length": str(10**9)})
                self.wfile.write(b"\0" * 1000)
            elif kind == "endless":  # HTTP/1.0 without a length: the body ends when the connection closes
                self._head(200, {})
                for _ in range(64):
                    self.wfile.write(b"\0" * 65536)
            elif kind == "health":
                self._head(200, {"Content-Length": "0"})
            else:
                status, body, headers = ANSWERS[kind]
                self._head(status, {**headers, "Content-Length": str(len(body))})
                self.wfile.write(body)
        except OSError:  # the client gave up and closed the connection
            pass

    def _head(self, status: int, headers: dict[str, str]) -> None:
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()

    def _drip(self) -> None:
        """A valid answer, one byte every 0.1 s (5 s for 50 bytes): each read is quick."""
        self._head(200, {"Content-Length": "50"})
        for _ in range(50):
            if STOP.wait(0.1):
                return
            self.wfile.write(b" ")
            self.wfile.flush()


@pytest.fixture(scope="module")
def host() -> Iterator[str]:
    STOP.clear()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        STOP.set()
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def client(host: str) -> Iterator[HttpTransport]:
    with HttpTransport(host, token="t" * 10, timeout=5.0, max_response_bytes=1 << 20) as transport:
        yield transport


X = torch.zeros(2, 4)


def test_error_bodies_that_are_not_objects_keep_the_contract(client: HttpTransport) -> None:
    with pytest.raises(HostUnavailableError, match=r"answered 500 .*\[1,2\]"):
        client.infer("list500", X)
    with pytest.raises(HostUnavailableError, match="answered 500 .*null"):
        client.infer("null500", X)
    with pytest.raises(HostRejectedError, match='answered 422 .*"text"') as info:
        client.infer("text422", X)
    assert info.value.status == 422
    with pytest.raises(HostRejectedError, match=r"answered 422 .*: must have shape \[-1, 4\]$"):
        client.infer("error422", X)


def test_a_good_answer_still_passes(client: HttpTransport) -> None:
    reply = client.infer("ok", X)
    assert reply.host_compute_s == 0.001 and reply.round_trip_s > 0
    torch.testing.assert_close(reply.output, OUTPUT)
    assert client.train_forward("ok", X, step=1).host_compute_s == 0.001
    assert client.train_backward("back-ok", 1, X) == 0.25
    assert client.metadata("meta-ok") == {"name": "m"}
    assert client.health()


@pytest.mark.parametrize("model, shown", [
    ("time-null", "host_compute_s=None"), ("time-missing", "host_compute_s=None"),
    ("time-none-at-all", "host_compute_s=None"), ("time-text", "host_compute_s='abc'"),
    ("time-negative", "host_compute_s=-1"), ("time-inf", "host_compute_s=inf"), ("time-bool", "host_compute_s=True"),
])
def test_a_200_answer_without_a_usable_compute_time_is_bad(client: HttpTransport, model: str, shown: str) -> None:
    with pytest.raises(BadHostReplyError, match=f"{shown}; expected a finite number of seconds >= 0"):
        client.infer(model, X)
    with pytest.raises(BadHostReplyError, match=shown):
        client.train_forward(model, X, step=1)


@pytest.mark.parametrize("model, match", [
    ("back-list", "not a JSON object"), ("back-missing", "host_compute_s=None"),
    ("back-params-list", "host_compute_s=None"), ("time-null", "not a JSON object"),
])
def test_a_200_answer_to_train_backward_must_be_an_object_with_a_time(client: HttpTransport, model: str,
                                                                       match: str) -> None:
    with pytest.raises(BadHostReplyError, match=match):
        client.train_backward(model, 1, X)


def test_metadata_that_is_not_an_object_is_bad(client: HttpTransport) -> None:
    with pytest.raises(BadHostReplyError, match="not a JSON object"):
        client.metadata("meta-list")


def test_the_timeout_is_a_total_deadline(client: HttpTransport) -> None:
    """Each byte comes well within any per-phase timeout; the whole answer would take 5 s."""
    t0 = time.perf_counter()
    with pytest.raises(HostUnavailableError, match=r"within 0.5 s \(total\)"):
        client.infer("drip", X, timeout=0.5)
    elapsed = time.perf_counter() - t0
    assert 0.45 < elapsed < 0.5 + 0.3
    reply = client.infer("ok", X)  # the transport is still usable
    assert reply.host_compute_s == 0.001


def test_the_deadline_holds_for_concurrent_callers(client: HttpTransport) -> None:
    took: list[float] = []
    errors: list[BaseException] = []

    def call() -> None:
        t0 = time.perf_counter()
        try:
            client.infer("drip", X, timeout=0.4)
        except HostUnavailableError as exc:
            errors.append(exc)
        took.append(time.perf_counter() - t0)

    threads = [threading.Thread(target=call) for _ in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert len(errors) == 4 and max(took) < 0.4 + 0.3


def test_a_reply_larger_than_the_cap_is_bad(client: HttpTransport) -> None:
    with pytest.raises(BadHostReplyError, match=r"1000000000 bytes.*at most 1048576"):
        client.infer("huge", X)
    with pytest.raises(BadHostReplyError, match="more than 1048576 bytes"):  # no length given: counted while read
        client.infer("endless", X)


def test_a_closed_transport_says_so(host: str) -> None:
    from codenn.errors import TransportError

    transport = HttpTransport(host, timeout=1.0)
    transport.close()
    assert transport.health() is False
    with pytest.raises(TransportError, match="closed"):
        transport.infer("ok", X)


def test_options_are_checked(host: str) -> None:
    from codenn.errors import ConfigError

    with pytest.raises(ConfigError, match="max_response_bytes"):
        HttpTransport(host, max_response_bytes=0)


def test_a_json_error_body_is_read_as_oip_says(client: HttpTransport) -> None:
    """Kept from before: ``{"error": ...}`` bodies show their message only."""
    with pytest.raises(HostRejectedError) as info:
        client.infer("error422", X)
    assert json.dumps("must have shape [-1, 4]")[1:-1] in str(info.value)
