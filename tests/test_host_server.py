"""The host server: OIP endpoints, tokens, size cap, shape checks, a fuzz, and a real uvicorn
process on 127.0.0.1 serving inference and split training (with the wire inspected)."""

from __future__ import annotations

import json

import pytest
import torch
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from codenn import ConfigError
from codenn.config.server import ServerConfig
from codenn.errors import HostRejectedError, HostUnavailableError
from codenn.remote.leg import RemotePath
from codenn.remote.split_trainer import SplitTrainer
from codenn.train.trainer import LinkTrainer
from codenn_adapters import oip
from codenn_adapters.host_server import create_app
from codenn_adapters.transports import HttpTransport
from split_helpers import CONFIG, TOKENS, HostProcess, clone_links, tiny

AUTH = {"Authorization": f"Bearer {TOKENS['local']}"}


@pytest.fixture(scope="module")
def t():
    return tiny()


@pytest.fixture(scope="module")
def segment(t):
    return t.segment(t.path())


@pytest.fixture(scope="module")
def client(segment):
    app = create_app([segment], tokens=TOKENS, config=ServerConfig(max_bytes=256 * 1024))
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


def _infer(client, name: str, x: torch.Tensor, *, headers=None, binary: bool = True):
    body, h = oip.encode_request({"input": x}, binary=binary, binary_output=binary)
    return client.post(f"/v2/models/{name}/infer", content=body, headers={**h, **(AUTH if headers is None else headers)})


# -- the app, in process (fast) -------------------------------------------------------------------
def test_health_and_metadata(client, segment) -> None:
    assert client.get("/v2/health/live").json() == {"live": True}
    assert client.get("/v2/health/ready").status_code == 200
    assert "binary_tensor_data" in client.get("/v2").json()["extensions"]
    meta = client.get(f"/v2/models/{segment.name}", headers=AUTH).json()
    assert meta["inputs"][0] == {"name": "input", "datatype": "FP32", "shape": [-1, *segment.input_spec.shape]}
    assert meta["outputs"][0]["shape"] == [-1, *segment.output_spec.shape]
    card = json.loads(meta["parameters"]["service_card"])
    assert card["name"] == "host" and card["fingerprint"] == meta["parameters"]["fingerprint_now"]
    assert client.get(f"/v2/models/{segment.name}/ready", headers=AUTH).json()["ready"] is True


@pytest.mark.parametrize("binary", [True, False])
def test_infer_binary_and_json(client, segment, binary: bool) -> None:
    x = segment.input_spec.example(batch=3)
    r = _infer(client, segment.name, x, binary=binary)
    assert r.status_code == 200, r.text
    header, tensors = oip.decode_response(r.content, r.headers.get(oip.HEADER_LENGTH))
    want, _ = segment.infer(x)
    torch.testing.assert_close(tensors["output"], want, rtol=1e-6, atol=1e-6)
    assert header.parameters["host_compute_s"] > 0 and header.model_name == segment.name


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong-token-xyz"}, {"Authorization": "Basic abc"}])
def test_401_without_a_registered_token(client, segment, headers) -> None:
    r = _infer(client, segment.name, segment.input_spec.example(batch=1), headers=headers)
    assert r.status_code == 401 and "bearer token" in r.json()["error"]
    assert r.headers["WWW-Authenticate"] == "Bearer"
    assert client.get(f"/v2/models/{segment.name}", headers=headers).status_code == 401


def test_413_for_large_payloads(client, segment) -> None:
    big = torch.zeros(64, *segment.input_spec.shape)  # 512 KiB > 256 KiB
    r = _infer(client, segment.name, big)
    assert r.status_code == 413 and "limit of 262144 bytes" in r.json()["error"]

    def chunks():  # no Content-Length: the cap holds while streaming
        for _ in range(40):
            yield b"x" * 8192

    r = client.post(f"/v2/models/{segment.name}/infer", content=chunks(), headers=AUTH)
    assert r.status_code == 413


def test_422_names_expected_and_received_shape(client, segment) -> None:
    r = _infer(client, segment.name, torch.zeros(2, 5, 3, 3))
    assert r.status_code == 422
    msg = r.json()["error"]
    assert f"{[-1, *segment.input_spec.shape]}" in msg and "[2, 5, 3, 3]" in msg
    r = _infer(client, segment.name, torch.zeros(2, *segment.input_spec.shape, dtype=torch.float64))
    assert r.status_code == 422 and "FP64" in r.json()["error"]
    r = _infer(client, segment.name, torch.zeros(0, *segment.input_spec.shape))
    assert r.status_code == 422
    body, h = oip.encode_request({"x": segment.input_spec.example(batch=1)})
    r = client.post(f"/v2/models/{segment.name}/infer", content=body, headers={**h, **AUTH})
    assert r.status_code == 422 and "named 'input'" in r.json()["error"]


def test_other_client_errors(client, segment) -> None:
    x = segment.input_spec.example(batch=1)
    assert _infer(client, "nope", x).status_code == 404
    r = client.post(f"/v2/models/{segment.name}/infer", content=b"{oops", headers=AUTH)
    assert r.status_code == 400 and "error" in r.json()
    body, h = oip.encode_request({"input": x})
    r = client.post(f"/v2/models/{segment.name}/train/forward", content=body, headers={**h, **AUTH})
    assert r.status_code == 422 and "parameters.step" in r.json()["error"]
    body, h = oip.encode_request({"grad": torch.zeros(1, *segment.output_spec.shape)}, parameters={"step": 999})
    r = client.post(f"/v2/models/{segment.name}/train/backward", content=body, headers={**h, **AUTH})
    assert r.status_code == 409 and "no pending forward for step 999" in r.json()["error"]


def test_split_training_endpoints_and_save_on_shutdown(t, tmp_path) -> None:
    from safetensors.torch import load_file

    seg = t.segment(t.path())
    before = seg.link_state()
    x = seg.input_spec.example(batch=4)
    with TestClient(create_app([seg], tokens=TOKENS, config=ServerConfig(save_dir=str(tmp_path)))) as c:
        body, h = oip.encode_request({"input": x}, parameters={"step": 0})
        r = c.post(f"/v2/models/{seg.name}/train/forward", content=body, headers={**h, **AUTH})
        assert r.status_code == 200, r.text
        header, out = oip.decode_response(r.content, r.headers[oip.HEADER_LENGTH])
        assert header.parameters["step"] == 0 and out["output"].shape == (4, *seg.output_spec.shape)
        body, h = oip.encode_request({"grad": torch.ones_like(out["output"])}, parameters={"step": 0},
                                     binary_output=False)
        r = c.post(f"/v2/models/{seg.name}/train/backward", content=body, headers={**h, **AUTH})
        assert r.status_code == 200 and r.json()["parameters"]["steps_trained"] == 1
        body, h = oip.encode_request({"grad": torch.ones(4, 1, 1, 1)}, parameters={"step": 0})
        r = c.post(f"/v2/models/{seg.name}/train/backward", content=body, headers={**h, **AUTH})
        assert r.status_code == 422
    saved = load_file(str(tmp_path / f"{seg.name}.safetensors"))
    assert {k for k in saved if not k.startswith("optimizer/")} == before.keys()
    for key, value in seg.link_state().items():
        torch.testing.assert_close(saved[key], value, rtol=0, atol=0)
    assert any(not torch.equal(saved[k], before[k]) for k in before)  # one AdamW step moved the links


def test_create_app_checks_its_options(segment) -> None:
    with pytest.raises(ConfigError, match="token"):
        create_app([segment], tokens={})
    with pytest.raises(ConfigError, match="at least 8"):
        create_app([segment], tokens={"local": "short"})
    with pytest.raises(ConfigError, match="both named"):
        create_app([segment, segment], tokens=TOKENS)
    with pytest.raises(ConfigError, match="max_bytes"):
        create_app([segment], tokens=TOKENS, config=ServerConfig(max_bytes=10))


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=True) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)


@st.composite
def _bodies(draw):
    """Raw bytes, arbitrary JSON, and near-valid OIP requests with mutated fields."""
    kind = draw(st.sampled_from(["bytes", "json", "oip"]))
    if kind == "bytes":
        return draw(st.binary(max_size=512)), draw(st.none() | st.integers(-5, 600).map(str)
                                                | st.text(st.characters(min_codepoint=33, max_codepoint=126), max_size=4))
    if kind == "json":
        return json.dumps(draw(_json_values)).encode(), None
    shape = draw(st.lists(st.integers(-2, 20) | st.just(2**40), min_size=0, max_size=5))
    entry = {"name": draw(st.sampled_from(["input", "grad", ""])), "shape": shape,
             "datatype": draw(st.sampled_from(["FP32", "FP16", "INT64", "BOOL", "BYTES", "fp32"]))}
    binary = draw(st.binary(max_size=256))
    if draw(st.booleans()):
        entry["parameters"] = {"binary_data_size": draw(st.integers(-4, 300) | st.just(len(binary)) | _json_values)}
    else:
        entry["data"] = draw(st.lists(st.floats(width=32) | st.integers() | st.text(max_size=2), max_size=40))
    header = {"inputs": [entry], "parameters": {"step": draw(st.integers(-3, 5) | _json_values),
                                                "binary_data_output": draw(st.booleans())}}
    head = json.dumps(header).encode()
    return head + binary, str(len(head)) if draw(st.booleans()) else None


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(body=_bodies(), endpoint=st.sampled_from(["infer", "train/forward", "train/backward"]))
def test_fuzzed_bodies_never_crash_the_server(client, segment, body, endpoint) -> None:
    content, length = body
    headers = dict(AUTH)
    if length is not None:
        headers[oip.HEADER_LENGTH] = length
    r = client.post(f"/v2/models/{segment.name}/{endpoint}", content=content, headers=headers)
    assert r.status_code < 500, r.text
    assert r.status_code == 200 or "error" in r.json()
    assert client.get("/v2/health/live").status_code == 200


# -- a real server process on 127.0.0.1 -----------------------------------------------------------
@pytest.fixture(scope="module")
def served(t, tmp_path_factory):
    """(host server process, the in-process reference path, an untouched copy of it)."""
    reference = t.path()
    server = HostProcess(t, reference, tmp_path_factory.mktemp("host"), max_bytes=512 * 1024)
    try:
        server.wait_ready()
        yield server, reference
    finally:
        server.stop()


def _record(wire: list):
    """httpx event hooks that keep every request and response body as it crossed the wire."""

    def on_request(request) -> None:
        wire.append(("request", request.url.path, request.headers, request.content))

    def on_response(response) -> None:
        response.read()
        wire.append(("response", response.request.url.path, response.headers, response.content))

    return {"request": [on_request], "response": [on_response]}


def _pieces(t: torch.Tensor, width: int = 4) -> list[bytes]:
    """Byte strings of ``width`` consecutive float32 values from a tensor (where it has that many)."""
    flat = t.detach().float().contiguous().reshape(-1).numpy()
    if flat.size < width:
        return []
    return [flat[i : i + width].tobytes() for i in range(0, flat.size - width + 1, max(1, flat.size // 8))]


def test_real_server_infer_and_errors(t, served) -> None:
    server, reference = served
    with HttpTransport(server.url, token=TOKENS["local"], timeout=30) as transport:
        assert transport.health()
        remote = RemotePath(t.local, transport, server.name)
        reference.eval()
        with torch.no_grad():
            want = reference(t.x_test)
        torch.testing.assert_close(remote(t.x_test), want, rtol=1e-4, atol=1e-5)  # another process, other threads
        reply = remote.last_reply
        assert reply is not None and reply.round_trip_s > reply.host_compute_s > 0 and reply.comm_s > 0
        json_transport = HttpTransport(server.url, token=TOKENS["local"], binary=False)
        h = remote.run_prefix(t.x_test)
        torch.testing.assert_close(json_transport.infer(server.name, h).output, transport.infer(server.name, h).output)
        json_transport.close()
        for bad, status in ((torch.zeros(1, 2, 3, 3), 422), (torch.zeros(512, *h.shape[1:]), 413)):
            with pytest.raises(HostRejectedError) as info:
                transport.infer(server.name, bad)
            assert info.value.status == status
    with HttpTransport(server.url, token="not-a-registered-token") as intruder:
        with pytest.raises(HostRejectedError) as info:
            intruder.infer(server.name, h)
        assert info.value.status == 401
    assert server.alive()


def test_real_server_split_training_keeps_secrets(t, served) -> None:
    server, reference = served
    local_fp = t.local.fingerprint()
    wire: list[tuple[str, str, dict[str, str], bytes]] = []
    with HttpTransport(server.url, token=TOKENS["local"], timeout=30, event_hooks=_record(wire)) as transport:
        host_fp = transport.metadata(server.name)["parameters"]["fingerprint_now"]
        remote = SplitTrainer(t.local, transport, server.name, CONFIG, t.local_cache(), t.y)
        in_process = t.path()
        clone_links(reference, in_process)  # the server started from these link weights
        trainer = LinkTrainer(in_process, CONFIG, t.full_cache(), t.y)
        assert remote.train_epochs(1) == pytest.approx(trainer.train_epochs(1), rel=1e-4)
        after = transport.metadata(server.name)["parameters"]
        assert after["fingerprint_now"] == host_fp == t.host.fingerprint()  # host blocks frozen
        assert after["steps_trained"] == remote.steps == 5
        assert t.local.fingerprint() == local_fp  # local service frozen
        # same result as in-process training on the same seed, seen through the host's outputs
        in_process.eval()
        with torch.no_grad():
            want = in_process(t.x_test)
        torch.testing.assert_close(RemotePath(t.local, transport, server.name)(t.x_test), want, rtol=1e-4, atol=1e-5)
    assert remote.comm_s > 0
    sent = b"".join(body for kind, _, _, body in wire if kind == "request")
    received = b"".join(body for kind, _, _, body in wire if kind == "response")
    segment_in, segment_out = reference.link_specs[0][0].shape, reference.link_specs[1][1].shape
    # what went to the host: boundary activations and output gradients, nothing else
    trained = [(u, h, b) for k, u, h, b in wire if k == "request" and "/train/" in u and not u.endswith("/state")]
    assert len(trained) == 2 * remote.steps
    for url, headers, body in trained:
        header, tensors = oip.decode_request(body, headers.get(oip.HEADER_LENGTH))
        name, spec = ("input", segment_in) if url.endswith("/forward") else ("grad", segment_out)
        assert list(tensors) == [name] and tuple(tensors[name].shape[1:]) == spec
        assert tensors[name].dtype == torch.float32
        assert set(header.parameters) <= {"step", "binary_data_output"}
        assert set(header.model_dump(exclude_none=True)) <= {"inputs", "outputs", "parameters"}
    # labels never leave the local side (no window of their int64 bytes, no mention of them)
    for i in range(0, len(t.y) - 4, 8):
        assert t.y[i : i + 4].numpy().tobytes() not in sent
    assert b"label" not in sent.lower()
    # no local parameter reaches the host; no host parameter (blocks or trained links) reaches the local side
    for p in t.local.parameters():
        assert not any(piece in sent for piece in _pieces(p))
    for p in [*t.host.parameters(), *in_process.links.parameters()]:
        assert not any(piece in received for piece in _pieces(p))
    assert server.alive()


def test_real_server_concurrent_requests(t, served) -> None:
    from concurrent.futures import ThreadPoolExecutor

    server, _ = served
    with HttpTransport(server.url, token=TOKENS["other"], timeout=30) as transport:
        h = t.local.run(t.x_test, 0, 1)
        want = transport.infer(server.name, h).output
        with ThreadPoolExecutor(8) as pool:
            replies = list(pool.map(lambda i: transport.infer(server.name, h), range(16)))
    for reply in replies:
        torch.testing.assert_close(reply.output, want, rtol=0, atol=0)


def test_killed_host_is_unavailable_at_once(t, served) -> None:
    """Runs last: the host process dies; the next calls fail fast with HostUnavailableError."""
    import time

    server, _ = served
    with HttpTransport(server.url, token=TOKENS["local"], timeout=5) as transport:
        h = t.local.run(t.x_test, 0, 1)
        transport.infer(server.name, h)  # a pooled keep-alive connection now exists
        server.proc.kill()
        server.proc.wait()
        for _ in range(2):
            t0 = time.perf_counter()
            with pytest.raises(HostUnavailableError):
                transport.infer(server.name, h, timeout=2)
            assert time.perf_counter() - t0 < 2.5
        assert transport.health() is False
