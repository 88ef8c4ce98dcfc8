"""Transports: registry, OIP messages, in-process delay/bandwidth/failure injection, T_cm, HTTP failures."""

from __future__ import annotations

import socket
import threading
import time

import pytest
import torch

from codenn.contracts.plugins import create_plugins
from codenn.contracts.protocols import HostReply, Transport
from codenn.errors import HostRejectedError, HostUnavailableError, TransportError
from codenn.remote.transport import make_transport
from codenn_adapters import oip
from codenn_adapters.transports import HttpTransport, InProcessTransport
from split_helpers import tiny


@pytest.fixture(scope="module")
def segment():
    t = tiny()
    return t.segment(t.path())


@pytest.fixture
def h(segment) -> torch.Tensor:
    return segment.input_spec.example(batch=3)


def test_builtin_transports_are_registered() -> None:
    plugins = create_plugins()
    assert {"in-process", "http"} <= set(plugins.transports.names())
    assert plugins.transports.owner("http") == "transports"
    info = {p.name: p for p in plugins.info()}
    assert set(info["transports"].registered["transports"]) == {"in-process", "http"}


def test_make_transport_builds_protocol_objects(segment) -> None:
    local = make_transport("in-process", segments=[segment])
    remote = make_transport("http", url="http://127.0.0.1:9", timeout=0.5)
    assert isinstance(local, Transport) and isinstance(remote, Transport)
    remote.close()


def test_host_reply_comm_time() -> None:
    reply = HostReply(torch.zeros(1), host_compute_s=0.02, round_trip_s=0.05)
    assert reply.comm_s == pytest.approx(0.03)
    assert HostReply(torch.zeros(1), 0.05, 0.04).comm_s == 0.0
    with pytest.raises(AttributeError):
        reply.round_trip_s = 1.0  # type: ignore[misc]  # writing a frozen field is the point


# -- OIP messages ---------------------------------------------------------------------------------
@pytest.mark.parametrize("binary", [True, False])
def test_oip_round_trip(binary: bool) -> None:
    x = torch.randn(2, 3, 4, 4)
    body, headers = oip.encode_request({"input": x}, parameters={"step": 4}, binary=binary)
    header, tensors = oip.decode_request(body, headers.get(oip.HEADER_LENGTH))
    assert header.parameters["step"] == 4 and oip.wants_binary_output(header)
    torch.testing.assert_close(tensors["input"], x, rtol=0, atol=0)
    body, headers = oip.encode_response("m", {"output": x[:, :1]}, parameters={"host_compute_s": 0.5}, binary=binary)
    header, tensors = oip.decode_response(body, headers.get(oip.HEADER_LENGTH))
    assert header.model_name == "m" and header.parameters == {"host_compute_s": 0.5}
    torch.testing.assert_close(tensors["output"], x[:, :1], rtol=0, atol=0)
    if binary:
        assert headers["Content-Type"] == oip.BINARY_TYPE and len(body) > x[:, :1].numel() * 4


@pytest.mark.parametrize("body, length, status, match", [
    (b"{not json", None, 400, "not valid JSON"),
    (b'{"inputs": [{"name": "input", "shape": [2], "datatype": "FP32"}]}', None, 422, "neither JSON data"),
    (b'{"inputs": [{"name": "input", "shape": [2], "datatype": "FP99", "data": [1, 2]}]}', None, 422, "datatype"),
    (b'{"inputs": [{"name": "input", "shape": [3], "datatype": "FP32", "data": [1, 2]}]}', None, 422, "needs 3 values"),
    (b'{"inputs": [{"name": "input", "shape": [2], "datatype": "FP32", "data": ["a", {}]}]}', None, 422, "not a"),
    (b'{"inputs": [{"name": "input", "shape": [2], "datatype": "FP32", "data": [1e39, 2]}]}', None, 422, "overflow"),
    (b'{"inputs": 5}', None, 422, "InferRequestHeader"),
    (b'{"inputs": [{"name": "input", "shape": [2], "datatype": "FP32",'
     b' "parameters": {"binary_data_size": 8}}]}' + b"\0" * 4, "head", 422, "only 4 follow"),
    (b"{}", "12x", 400, "must be an integer"),
    (b"{}", 99, 400, "between 1 and the body length"),
])
def test_oip_rejects_malformed_messages(body: bytes, length, status: int, match: str) -> None:
    if length == "head":  # the JSON header is everything but the 4 trailing bytes
        length = len(body) - 4
    with pytest.raises(oip.ProtocolError, match=match) as info:
        oip.decode_request(body, length)
    assert info.value.status == status


# -- in-process transport -------------------------------------------------------------------------
def test_in_process_infer_equals_the_segment(segment, h) -> None:
    transport = InProcessTransport(segment)
    reply = transport.infer(segment.name, h)
    want, _ = segment.infer(h)
    torch.testing.assert_close(reply.output, want, rtol=0, atol=0)
    assert reply.round_trip_s >= reply.host_compute_s > 0
    assert transport.bytes_sent == h.numel() * 4 and transport.bytes_received == want.numel() * 4
    assert transport.health() and transport.metadata(segment.name)["name"] == segment.name


def test_in_process_delay_and_bandwidth_are_charged_to_communication(segment, h) -> None:
    slept: list[float] = []
    transport = InProcessTransport(segment, delay_s=0.25, bandwidth=1000.0, sleep=slept.append)
    reply = transport.infer(segment.name, h)
    out_bytes = reply.output.numel() * 4
    assert slept == [pytest.approx(0.25 + (h.numel() * 4 + out_bytes) / 1000.0)]
    real = InProcessTransport(segment, delay_s=0.05)
    reply = real.infer(segment.name, h)
    assert reply.round_trip_s >= 0.05 and reply.comm_s >= 0.05 - 1e-3
    assert reply.comm_s == pytest.approx(reply.round_trip_s - reply.host_compute_s)


def test_in_process_failures_and_timeouts(segment, h) -> None:
    transport = InProcessTransport(segment)
    transport.fail = True
    assert not transport.health()
    with pytest.raises(HostUnavailableError, match="down"):
        transport.infer(segment.name, h)
    transport.fail = False
    transport.infer(segment.name, h)  # back up
    flaky = InProcessTransport(segment, fail_rate=0.5, seed=1)
    outcomes = []
    for _ in range(20):
        try:
            flaky.infer(segment.name, h)
            outcomes.append(True)
        except HostUnavailableError:
            outcomes.append(False)
    assert 0 < sum(outcomes) < 20
    slept: list[float] = []
    slow = InProcessTransport(segment, delay_s=5.0, sleep=slept.append)
    with pytest.raises(HostUnavailableError, match="within 0.2 s"):
        slow.infer(segment.name, h, timeout=0.2)
    assert slept and slept[0] <= 0.2
    with pytest.raises(HostRejectedError) as info:
        transport.infer("nope", h)
    assert info.value.status == 404
    with pytest.raises(HostRejectedError, match="expects shape") as info:
        transport.infer(segment.name, torch.zeros(2, 1, 2, 2))
    assert info.value.status == 422
    transport.close()
    with pytest.raises(TransportError, match="closed"):
        transport.infer(segment.name, h)


# -- HTTP transport failures (loopback only) ------------------------------------------------------
def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_http_to_a_down_host_is_unavailable(h) -> None:
    transport = HttpTransport(f"http://127.0.0.1:{_closed_port()}", token="x" * 10, timeout=1.0)
    assert transport.health() is False
    t0 = time.perf_counter()
    with pytest.raises(HostUnavailableError, match="unreachable"):
        transport.infer("m", h)
    assert time.perf_counter() - t0 < 1.0
    transport.close()


def test_http_timeout_is_unavailable(h) -> None:
    """A host that accepts the connection but never answers: the read timeout fires."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                pass

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        transport = HttpTransport(f"http://127.0.0.1:{port}", token="x" * 10, timeout=5.0)
        t0 = time.perf_counter()
        with pytest.raises(HostUnavailableError, match="within 0.3 s"):
            transport.infer("m", h, timeout=0.3)
        assert 0.25 < time.perf_counter() - t0 < 2.0
        transport.close()
    finally:
        stop.set()
        thread.join()
        for conn in held:
            conn.close()
        server.close()


def test_http_transport_checks_its_options() -> None:
    from codenn import ConfigError

    with pytest.raises(ConfigError, match="http://"):
        HttpTransport("127.0.0.1:8100")
    with pytest.raises(ConfigError, match="timeout"):
        HttpTransport("http://127.0.0.1:8100", timeout=0)


def test_http_maps_host_answers_to_the_failure_contract(h) -> None:
    """5xx and malformed answers: the host is unusable (fall back); 4xx: the request was refused."""
    import httpx

    answers = {
        "/v2/models/down/infer": httpx.Response(503, json={"error": "overloaded"}),
        "/v2/models/crash/infer": httpx.Response(500, text="Internal Server Error"),
        "/v2/models/garbage/infer": httpx.Response(200, content=b"\x00\x01 not OIP"),
        "/v2/models/shape/infer": httpx.Response(422, json={"error": "must have shape [-1, 8, 16, 16]"}),
        "/v2/models/secret/infer": httpx.Response(401, json={"error": "missing or invalid bearer token"}),
    }
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return answers[request.url.path]

    transport = HttpTransport("http://127.0.0.1:1", token="t" * 10, transport=httpx.MockTransport(handler))
    for model in ("down", "crash", "garbage"):
        with pytest.raises(HostUnavailableError):
            transport.infer(model, h)
    with pytest.raises(HostRejectedError, match=r"422.*\[-1, 8, 16, 16\]") as info:
        transport.infer("shape", h)
    assert info.value.status == 422
    with pytest.raises(HostRejectedError) as info:
        transport.infer("secret", h)
    assert info.value.status == 401
    assert all(r.headers["authorization"] == "Bearer " + "t" * 10 for r in seen)
    assert seen[0].headers[oip.HEADER_LENGTH] and seen[0].headers["content-type"] == oip.BINARY_TYPE


def test_register_transports_hook(bare_plugins, segment) -> None:
    from codenn import DuplicateNameError, PluginError, UnknownNameError, hookimpl

    class Throwaway:
        @hookimpl
        def codenn_register_transports(self, register):
            register("not-a-transport", lambda **options: object(), description="returns the wrong thing")
            register("sim", lambda **options: InProcessTransport(**options), description="simulated host")

    bare_plugins.register(Throwaway(), name="throwaway")
    assert bare_plugins.transports.owner("sim") == "throwaway"
    assert bare_plugins.transports.entry("sim").description == "simulated host"
    assert isinstance(make_transport("sim", plugins=bare_plugins, segments=segment), InProcessTransport)
    wrong_kind = r"'not-a-transport' \(plugin 'throwaway'\) returned object; it must return a codenn.remote.transport.Transport"
    with pytest.raises(PluginError, match=wrong_kind):
        make_transport("not-a-transport", plugins=bare_plugins)
    with pytest.raises(UnknownNameError, match="Available names: 'not-a-transport', 'sim'"):
        make_transport("carrier-pigeon", plugins=bare_plugins)

    class Again:
        @hookimpl
        def codenn_register_transports(self, register):
            register("sim", lambda **options: None)

    bare_plugins.register(Again(), name="again")
    with pytest.raises(DuplicateNameError, match="'again' registered the transport 'sim'"):
        bare_plugins.transports
