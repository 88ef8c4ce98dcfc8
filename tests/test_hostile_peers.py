"""A host among untrusted peers: non-finite tensors, per-provider rights, malformed requests,
idempotent and rolled-back training steps, durable checkpoints, and connection deadlines."""

from __future__ import annotations

import json
import socket
import threading
import time

import pytest
import torch
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from codenn.config.server import ServerConfig
from codenn.errors import ConfigError, NonFiniteError
from codenn.remote.access import access_from, load_access
from codenn.remote.host import resume_checkpoints
from codenn.remote.split_state import SegmentStateError
from codenn_adapters import oip
from codenn_adapters.host_server import create_app
from split_helpers import TOKENS, tiny

pytestmark = pytest.mark.usefixtures("one_torch_thread")

LOCAL = {"Authorization": f"Bearer {TOKENS['local']}"}
OTHER = {"Authorization": f"Bearer {TOKENS['other']}"}


@pytest.fixture(scope="module")
def t():
    return tiny()


def _post(client, name: str, endpoint: str, tensors: dict, auth: dict, *, params=None, binary: bool = True):
    body, h = oip.encode_request(tensors, parameters=params, binary=binary, binary_output=binary)
    return client.post(f"/v2/models/{name}/{endpoint}", content=body, headers={**h, **auth})


def _output(r) -> torch.Tensor:
    return oip.decode_response(r.content, r.headers.get(oip.HEADER_LENGTH))[1]["output"]


def _step(client, seg, step: int, auth: dict, grad_scale: float = 1.0):
    x = seg.input_spec.example(batch=4, seed=step)
    r = _post(client, seg.name, "train/forward", {"input": x}, auth, params={"step": step})
    assert r.status_code == 200, r.text
    grad = torch.ones(4, *seg.output_spec.shape) * grad_scale
    return _post(client, seg.name, "train/backward", {"grad": grad}, auth, params={"step": step})


# -- 1. non-finite policy -------------------------------------------------------------------------
def test_a_nan_gradient_is_refused_and_poisons_nothing(t) -> None:
    seg = t.segment(t.path())
    probe = seg.input_spec.example(batch=3, seed=9)
    with TestClient(create_app([seg], tokens=TOKENS), raise_server_exceptions=False) as c:
        before = _output(_post(c, seg.name, "infer", {"input": probe}, LOCAL))
        links = seg.link_state()
        x = seg.input_spec.example(batch=4)
        assert _post(c, seg.name, "train/forward", {"input": x}, LOCAL, params={"step": 0}).status_code == 200
        grad = torch.ones(4, *seg.output_spec.shape)
        grad[1, 0, 0, 0], grad[2, 0, 1, 1] = float("nan"), float("inf")
        r = _post(c, seg.name, "train/backward", {"grad": grad}, LOCAL, params={"step": 0})
        assert r.status_code == 422
        assert "'grad'" in r.json()["error"] and "2 non-finite" in r.json()["error"]
        for key, value in seg.link_state().items():
            assert torch.equal(value, links[key]), key
        assert seg.steps_trained == 0
        # every provider still gets the same, finite answer
        for auth in (LOCAL, OTHER):
            after = _output(_post(c, seg.name, "infer", {"input": probe}, auth))
            assert torch.equal(after, before)


def test_a_step_that_would_make_weights_non_finite_is_rolled_back(t) -> None:
    seg = t.segment(t.path())
    links = seg.link_state()
    x = seg.input_spec.example(batch=4)
    seg.train_forward(x, 0)
    huge = torch.full((4, *seg.output_spec.shape), 3e38)  # finite, but the link gradients overflow
    with pytest.raises(NonFiniteError, match="not applied"):
        seg.train_backward(0, huge)
    for key, value in seg.link_state().items():
        assert torch.equal(value, links[key]), key
    assert seg.steps_trained == 0 and seg.train_state()["steps_trained"] == 0
    # the optimizer holds no poisoned moment: a good step afterwards trains normally
    seg.train_forward(x, 1)
    seg.train_backward(1, torch.ones(4, *seg.output_spec.shape))
    assert all(torch.isfinite(v).all() for v in seg.link_state().values()) and seg.steps_trained == 1


@pytest.mark.parametrize("binary", [True, False])
def test_non_finite_inputs_get_422_and_no_bare_nan_is_ever_sent(t, binary: bool) -> None:
    seg = t.segment(t.path())
    with TestClient(create_app([seg], tokens=TOKENS), raise_server_exceptions=False) as c:
        x = seg.input_spec.example(batch=2)
        x[0, 0, 0, 0] = float("nan")
        if binary:
            r = _post(c, seg.name, "infer", {"input": x}, LOCAL)
        else:  # a hand-written JSON body with the bare token NaN, which Python's json accepts
            body = json.dumps({"inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32",
                                           "data": x.reshape(-1).tolist()}]}).encode()
            assert b"NaN" in body
            r = c.post(f"/v2/models/{seg.name}/infer", content=body, headers={"Content-Type": "application/json",
                                                                               **LOCAL})
        assert r.status_code == 422 and "1 non-finite" in r.json()["error"] and "'input'" in r.json()["error"]
        # finite inputs so large that the output overflows: 422, never a body with NaN or Infinity
        big = torch.full((2, *seg.input_spec.shape), 3e38)
        r = _post(c, seg.name, "infer", {"input": big}, LOCAL, binary=False)
        assert r.status_code in (200, 422)
        if r.status_code == 200:
            assert b"NaN" not in r.content and b"Infinity" not in r.content
            assert torch.isfinite(_output(r)).all()
        else:
            assert "'output'" in r.json()["error"] and "non-finite" in r.json()["error"]


def test_json_encoding_refuses_non_finite_values() -> None:
    with pytest.raises(oip.ProtocolError, match="NaN or inf"):
        oip.encode_response("m", {"output": torch.tensor([1.0, float("inf")])}, binary=False)


# -- 2. per-provider rights -----------------------------------------------------------------------
def test_token_file_rights_and_old_format_defaults(t, tmp_path) -> None:
    seg = t.segment(t.path())  # local service "local"
    old = access_from(TOKENS)
    assert old.providers["local"].may("train", seg) and old.providers["local"].may("infer", seg)
    assert old.providers["other"].may("infer", seg) and not old.providers["other"].may("train", seg)
    file = tmp_path / "tokens.json"
    file.write_text(json.dumps({"local": {"token": TOKENS["local"], "infer": ["local:local"], "train": [str(seg.spec)]},
                                "other": {"token": TOKENS["other"], "infer": [], "train": []}}))
    rights = load_access(file)
    assert rights.providers["local"].may("train", seg) and not rights.providers["other"].may("infer", seg)
    for bad, match in [({"a": {"token": "x" * 8, "write": []}}, "unknown keys"),
                       ({"a": {"token": "x" * 8, "train": "*"}}, "list of patterns"),
                       ({"a": {"token": "x" * 8, "train": ["nope[:1] > > x"]}}, "not a valid path spec"),
                       ({"a": "x" * 8, "b": "x" * 8}, "share one token"),
                       ({"a": 5}, "token string or an object"),
                       ({"a": "short"}, "at least 8")]:
        with pytest.raises(ConfigError, match=match):
            access_from(bad)


def test_403_for_a_provider_without_rights_and_nothing_of_others_is_revealed(t) -> None:
    seg = t.segment(t.path())
    tokens = {"local": TOKENS["local"],
              "other": {"token": TOKENS["other"], "infer": ["local:other"], "train": ["local:other"]}}
    with TestClient(create_app([seg], tokens=tokens), raise_server_exceptions=False) as c:
        x = seg.input_spec.example(batch=2)
        for endpoint, params in (("infer", None), ("train/forward", {"step": 0})):
            r = _post(c, seg.name, endpoint, {"input": x}, OTHER, params=params)
            assert r.status_code == 403
            assert "'other'" in r.json()["error"] and seg.name in r.json()["error"]
        assert c.get(f"/v2/models/{seg.name}", headers=OTHER).status_code == 403
        assert c.get(f"/v2/models/{seg.name}/train/state", headers=OTHER).status_code == 403
        r = c.get("/v2/models/nope", headers=OTHER)
        assert r.status_code == 404 and seg.name not in r.json()["error"]  # not even the name of others' models
        assert seg.name in c.get("/v2/models/nope", headers=LOCAL).json()["error"]


def test_split_training_state_is_per_provider(t) -> None:
    seg = t.segment(t.path())
    tokens = {"local": TOKENS["local"], "other": {"token": TOKENS["other"], "infer": ["*"], "train": ["*"]}}
    with TestClient(create_app([seg], tokens=tokens), raise_server_exceptions=False) as c:
        x = seg.input_spec.example(batch=4)
        for step in (7, 8):
            assert _post(c, seg.name, "train/forward", {"input": x}, LOCAL, params={"step": step}).status_code == 200
        # the other provider cannot complete (or even see) the local provider's pending steps
        grad = torch.ones(4, *seg.output_spec.shape)
        r = _post(c, seg.name, "train/backward", {"grad": grad}, OTHER, params={"step": 7})
        assert r.status_code == 409 and "none" in r.json()["error"] and "7, 8" not in r.json()["error"]
        assert "8" not in r.json()["error"].split("pending steps:")[1]
        state = c.get(f"/v2/models/{seg.name}/train/state", headers=OTHER).json()["parameters"]
        assert state == {"steps_trained": 0, "last_step": None, "next_step": 0, "pending_steps": []}
        assert _post(c, seg.name, "train/backward", {"grad": grad}, LOCAL, params={"step": 7}).status_code == 200
        mine = c.get(f"/v2/models/{seg.name}/train/state", headers=LOCAL).json()["parameters"]
        assert mine["steps_trained"] == 1 and mine["next_step"] == 8 and mine["pending_steps"] == [8]


# -- 3. malformed requests are 4xx, never 5xx ------------------------------------------------------
def test_a_5000_digit_integer_is_a_400_not_a_500(t) -> None:
    seg = t.segment(t.path())
    with TestClient(create_app([seg], tokens=TOKENS), raise_server_exceptions=False) as c:
        huge = "9" * 5000
        body = ('{"inputs": [{"name": "input", "datatype": "FP32", "shape": [' + huge + '], "data": [1]}]}').encode()
        r = c.post(f"/v2/models/{seg.name}/infer", content=body, headers={"Content-Type": "application/json", **LOCAL})
        assert r.status_code == 400 and "not valid JSON" in r.json()["error"]
        body = json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [2**70, 0], "data": []}]}).encode()
        r = c.post(f"/v2/models/{seg.name}/infer", content=body, headers={"Content-Type": "application/json", **LOCAL})
        assert r.status_code == 422 and "sizes must be between 0" in r.json()["error"]
        body = json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1],
                                       "parameters": {"binary_data_size": 2**70}}]}).encode()
        r = c.post(f"/v2/models/{seg.name}/infer", content=body + b"abcd",
                   headers={oip.HEADER_LENGTH: str(len(body)), **LOCAL})
        assert r.status_code == 422


def test_an_answer_over_the_response_cap_is_a_413(t) -> None:
    seg = t.segment(t.path())
    per_sample = int(torch.Size(seg.output_spec.shape).numel()) * 4
    cap = 3 * per_sample + 1024  # three samples and a JSON header fit
    app = create_app([seg], tokens=TOKENS, config=ServerConfig(max_response_bytes=cap))
    with TestClient(app, raise_server_exceptions=False) as c:
        r = _post(c, seg.name, "infer", {"input": seg.input_spec.example(batch=4)}, LOCAL)
        assert r.status_code == 413 and f"limit of {cap}" in r.json()["error"] and "at most 3 samples" in r.text
        assert _post(c, seg.name, "infer", {"input": seg.input_spec.example(batch=1)}, LOCAL).status_code == 200


_FAULTS = ["none", "none", "none", "none", "shape", "datatype", "nan", "inf", "huge", "short", "long", "length",
           "name", "step"]


@st.composite
def _requests(draw, seg):
    """Requests around the real spec: valid ones and ones with exactly one fault (a shape near
    the spec, another datatype, non-finite or overflowing values, a truncated or oversized binary
    part, a wrong header length, a wrong tensor name, a bad step), so most reach the model."""
    import numpy as np

    endpoint = draw(st.sampled_from(["infer", "infer", "train/forward", "train/backward"]))
    fault = draw(st.sampled_from(_FAULTS))
    spec = seg.output_spec if endpoint == "train/backward" else seg.input_spec
    shape = [draw(st.integers(1, 4)), *spec.shape]
    if fault == "shape":
        shape = draw(st.sampled_from([shape[1:], [*shape, 1], [0, *shape[1:]], [*shape[:-1], shape[-1] + 1],
                                      draw(st.lists(st.integers(0, 20), max_size=6))]))
    datatype = draw(st.sampled_from(sorted(oip.DATATYPES))) if fault == "datatype" else "FP32"
    n = min(int(np.prod(shape)) if shape else 1, 50_000)
    raw = torch.randn(n, generator=torch.Generator().manual_seed(draw(st.integers(0, 2**16))))
    if fault in ("nan", "inf") and n:
        raw[draw(st.integers(0, n - 1))] = float("nan") if fault == "nan" else float("-inf")
    elif fault == "huge":
        raw = raw * 3e38
    with np.errstate(all="ignore"):
        data = raw.numpy().astype(oip.DATATYPES[datatype][0]).tobytes()
    if fault == "short":
        data = data[: max(0, len(data) - draw(st.integers(1, 8)))]
    elif fault == "long":
        data = data + b"\0" * draw(st.integers(1, 8))
    name = "grad" if endpoint == "train/backward" else "input"
    step = draw(st.sampled_from([-1, 2**64, "1", None])) if fault == "step" else draw(st.integers(0, 3))
    params = {} if endpoint == "infer" else {"step": step}
    head = json.dumps({"inputs": [{"name": "x" if fault == "name" else name, "shape": shape, "datatype": datatype,
                                   "parameters": {"binary_data_size": len(data)}}],
                       "parameters": params}).encode()
    length = len(head) + (draw(st.sampled_from([-1, 3, -len(head)])) if fault == "length" else 0)
    return endpoint, head + data, str(length)


def test_fuzz_requests_around_the_real_spec_reach_the_model_and_never_5xx(t) -> None:
    seg = t.segment(t.path())
    probe = seg.input_spec.example(batch=2, seed=5)
    seen: dict[int, int] = {}
    with TestClient(create_app([seg], tokens=TOKENS), raise_server_exceptions=False) as c:
        before = _output(_post(c, seg.name, "infer", {"input": probe}, OTHER))

        @settings(max_examples=300, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        @given(_requests(seg))
        def run(request) -> None:
            endpoint, body, length = request
            r = c.post(f"/v2/models/{seg.name}/{endpoint}", content=body,
                       headers={oip.HEADER_LENGTH: length, "Content-Type": oip.BINARY_TYPE, **LOCAL})
            seen[r.status_code] = seen.get(r.status_code, 0) + 1
            assert r.status_code < 500, (r.status_code, r.text)
            if r.status_code == 200 and endpoint != "train/backward":
                assert torch.isfinite(_output(r)).all()

        run()
        after = _output(_post(c, seg.name, "infer", {"input": probe}, OTHER))
    assert seen.get(200, 0) >= 10, seen  # the fuzz reaches inference and training, not only the parser
    assert set(seen) <= {200, 400, 409, 413, 422}, seen
    assert torch.isfinite(after).all()
    if seg.steps_trained == 0:  # no valid step was applied: the answers must not have moved at all
        assert torch.equal(after, before)


# -- 5. idempotent backward, checkpoints and resume ------------------------------------------------
def test_a_retried_backward_is_answered_not_applied_twice(t) -> None:
    seg = t.segment(t.path())
    with TestClient(create_app([seg], tokens=TOKENS), raise_server_exceptions=False) as c:
        assert _step(c, seg, 0, LOCAL).status_code == 200
        links = seg.link_state()
        grad = torch.ones(4, *seg.output_spec.shape)
        again = _post(c, seg.name, "train/backward", {"grad": grad}, LOCAL, params={"step": 0})
        assert again.status_code == 200 and again.json()["parameters"]["steps_trained"] == 1
        assert all(torch.equal(v, links[k]) for k, v in seg.link_state().items())
        other = _post(c, seg.name, "train/backward", {"grad": grad * 2}, LOCAL, params={"step": 0})
        assert other.status_code == 409 and "another gradient" in other.json()["error"]
        x = seg.input_spec.example(batch=4)
        r = _post(c, seg.name, "train/forward", {"input": x}, LOCAL, params={"step": 0})
        assert r.status_code == 409 and "next step is 1" in r.json()["error"]


def test_a_backward_on_links_changed_since_its_forward_is_a_409_not_a_500(t) -> None:
    """Two steps in flight: the second applied step changes the links the first one's graph saw."""
    seg = t.segment(t.path())
    tokens = {"local": TOKENS["local"], "other": {"token": TOKENS["other"], "infer": ["*"], "train": ["*"]}}
    with TestClient(create_app([seg], tokens=tokens), raise_server_exceptions=False) as c:
        x = seg.input_spec.example(batch=4)
        grad = torch.ones(4, *seg.output_spec.shape)
        for step in (0, 1):
            assert _post(c, seg.name, "train/forward", {"input": x}, LOCAL, params={"step": step}).status_code == 200
        assert _post(c, seg.name, "train/forward", {"input": x}, OTHER, params={"step": 0}).status_code == 200
        assert _post(c, seg.name, "train/backward", {"grad": grad}, LOCAL, params={"step": 1}).status_code == 200
        for auth in (LOCAL, OTHER):  # the same holds across providers: the links are shared
            r = _post(c, seg.name, "train/backward", {"grad": grad}, auth, params={"step": 0})
            assert r.status_code == 409 and "send train/forward for it again" in r.json()["error"]
        assert _step(c, seg, 2, LOCAL).status_code == 200 and seg.steps_trained == 2
        # a refused (rolled-back) step between the two: still a 409 for the older one, never a 500
        for step in (3, 4):
            assert _post(c, seg.name, "train/forward", {"input": x}, LOCAL, params={"step": step}).status_code == 200
        r = _post(c, seg.name, "train/backward", {"grad": torch.full_like(grad, 1e38)}, LOCAL, params={"step": 4})
        assert r.status_code == 422
        r = _post(c, seg.name, "train/backward", {"grad": grad}, LOCAL, params={"step": 3})
        assert r.status_code in (200, 409), r.text


def test_checkpoints_resume_links_and_optimizer_exactly(t, tmp_path) -> None:
    path = t.path()
    seg, twin, reference = t.segment(path), t.segment(path), t.segment(path)
    with TestClient(create_app([seg], tokens=TOKENS, config=ServerConfig(save_dir=str(tmp_path), checkpoint_every=2))) as c:
        for step in range(3):
            assert _step(c, seg, step, LOCAL).status_code == 200
        assert (tmp_path / f"{seg.name}.safetensors").exists()  # written at step 2
    # the shutdown wrote step 3 too; a restarted host resumes it
    assert resume_checkpoints([twin], tmp_path) == {twin.name: 3}
    assert twin.train_state("local") == seg.train_state("local")
    for step in range(4):
        x = seg.input_spec.example(batch=4, seed=step)
        grad = torch.ones(4, *seg.output_spec.shape)
        reference.train_forward(x, step, "local")
        reference.train_backward(step, grad, "local")
        if step == 3:  # the one step after the restart: same update as without the restart
            twin.train_forward(x, step, "local")
            twin.train_backward(step, grad, "local")
    for key, value in reference.link_state().items():
        torch.testing.assert_close(twin.link_state()[key], value, rtol=0, atol=0)


def test_resume_refuses_a_checkpoint_of_other_host_blocks(t, tmp_path) -> None:
    seg = t.segment(t.path())
    seg.train_forward(seg.input_spec.example(batch=2), 0)
    seg.train_backward(0, torch.ones(2, *seg.output_spec.shape))
    file = tmp_path / "ckpt.safetensors"
    seg.save_checkpoint(file)
    with torch.no_grad():
        block = next(p for p in t.host.parameters())
        block.add_(1.0)
    try:
        with pytest.raises(ConfigError, match="fingerprint"):
            t.segment(t.path()).load_checkpoint(file)
    finally:
        with torch.no_grad():
            block.sub_(1.0)
    (tmp_path / "junk.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(ConfigError, match="cannot be read"):
        seg.load_checkpoint(tmp_path / "junk.safetensors")


def test_segment_state_errors_for_a_foreign_step(t) -> None:
    seg = t.segment(t.path())
    seg.train_forward(seg.input_spec.example(batch=2), 3, "a")
    with pytest.raises(SegmentStateError, match="from 'b'; your pending steps: none"):
        seg.train_backward(3, torch.ones(2, *seg.output_spec.shape), "b")


# -- 3. deadlines on a real uvicorn server ---------------------------------------------------------
@pytest.fixture
def live_server(t):
    import uvicorn

    from codenn_adapters.server_limits import deadline_protocol
    from split_helpers import free_port

    seg = t.segment(t.path())
    lim = ServerConfig(body_timeout_s=1.0, header_timeout_s=1.0, limit_concurrency=32)
    app = create_app([seg], tokens=TOKENS, config=lim)
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error", http=deadline_protocol(1.0),
                            limit_concurrency=lim.limit_concurrency, timeout_keep_alive=lim.keep_alive_s)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    yield seg, port
    server.should_exit = True
    thread.join(timeout=10)


def _closed_within(sock: socket.socket, seconds: float) -> tuple[bool, bytes]:
    sock.settimeout(seconds)
    got = b""
    try:
        while True:
            chunk = sock.recv(4096)
            if not chunk:
                return True, got
            got += chunk
    except TimeoutError:
        return False, got


def test_slow_drip_headers_and_bodies_are_cut_off(live_server) -> None:
    seg, port = live_server
    # headers that never complete: the connection is closed after the header deadline
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(b"POST /v2/models/x/infer HTTP/1.1\r\nHost: a\r\n")
        t0 = time.monotonic()
        closed, _ = _closed_within(s, 5.0)
        assert closed and time.monotonic() - t0 < 3.0
    # a body that drips: 408 after the body deadline
    body, h = oip.encode_request({"input": seg.input_spec.example(batch=1)})
    head = (f"POST /v2/models/{seg.name}/infer HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer {TOKENS['local']}\r\n"
            f"{oip.HEADER_LENGTH}: {h[oip.HEADER_LENGTH]}\r\nContent-Length: {len(body)}\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(head + body[:10])
        t0 = time.monotonic()
        closed, got = _closed_within(s, 5.0)
        assert got.startswith(b"HTTP/1.1 408") and time.monotonic() - t0 < 3.0, got[:200]
    # and the server still answers others
    import httpx

    r = httpx.post(f"http://127.0.0.1:{port}/v2/models/{seg.name}/infer", content=body, headers={**h, **LOCAL})
    assert r.status_code == 200
