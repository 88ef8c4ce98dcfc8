"""Scale-out: the host app as a Ray Serve deployment with 2 replicas, on a local one-node Ray
(Serve's HTTP on 127.0.0.1), reached over HTTP with HttpTransport exactly like ``codenn serve-host``.
The Ray tests are slow (~30 s: Ray, Serve and two replica processes start); run them with
``pytest -m slow tests/test_ray_host.py`` after ``pip install 'codenn[ray]'``."""

from __future__ import annotations

import copy
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path as FsPath

import pytest
import torch

from codenn import ConfigError
from codenn.config.server import ServerConfig
from codenn.errors import HostRejectedError
from codenn_adapters import oip
from codenn_adapters.transports import HttpTransport
from split_helpers import TOKENS, free_port, tiny


def test_segment_copies_drop_the_lock_and_pending_graphs() -> None:
    """What Ray ships to a replica: same links and outputs, no training state."""
    t = tiny()
    seg = t.segment(t.path())
    x = seg.input_spec.example(batch=2)
    seg.train_forward(x, 0)
    twin = copy.deepcopy(seg)  # goes through __getstate__/__setstate__ as Ray's serializer does
    assert twin._trainers == {} and twin._lock is not seg._lock
    torch.testing.assert_close(twin.infer(x)[0], seg.infer(x)[0])


def test_missing_ray_names_the_extra(segment, without_ray) -> None:
    from codenn_adapters import ray_host

    with pytest.raises(ray_host.RayMissingError, match=r"pip install 'codenn\[ray\]'"):
        ray_host.host_application([segment], tokens=TOKENS)


@pytest.fixture(scope="module")
def segment():
    t = tiny()
    return t.segment(t.path())


@pytest.fixture(scope="module")
def running(segment):
    ray = pytest.importorskip("ray")
    from ray import serve

    from codenn_adapters.ray_host import deploy_segments

    # replicas unpickle the tiny test services, whose classes live in tests/ (tiny.py)
    python_path = os.pathsep.join(filter(None, [str(FsPath(__file__).parent), os.environ.get("PYTHONPATH")]))
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False,
             runtime_env={"env_vars": {"PYTHONPATH": python_path, "OMP_NUM_THREADS": "1"}})
    try:
        yield deploy_segments([segment], tokens=TOKENS, num_replicas=2, num_cpus=0.5, ready_timeout=120,
                              config=ServerConfig(port=free_port(), max_bytes=256 * 1024))
    finally:
        serve.shutdown()
        ray.shutdown()


def test_bad_options_fail_before_ray_starts(segment) -> None:
    from codenn_adapters.ray_host import host_application

    with pytest.raises(ConfigError, match="num_replicas"):
        host_application([segment], tokens=TOKENS, num_replicas=0)
    with pytest.raises(ConfigError, match="needs num_replicas=1"):
        host_application([segment], tokens=TOKENS, num_replicas=2, config=ServerConfig(save_dir="x"))
    with pytest.raises(ConfigError, match="at least 8 characters"):
        host_application([segment], tokens={"local": "short"})
    with pytest.raises(ConfigError, match="both named"):
        host_application([segment, segment], tokens=TOKENS)


def test_replica_app_is_the_host_app(segment) -> None:
    """What each replica runs, without Ray: a copy (as Ray ships it) serves the same OIP app."""
    from fastapi.testclient import TestClient

    from codenn_adapters.ray_host import REPLICA_HEADER, ReplicaApp

    app = copy.deepcopy(ReplicaApp([segment], {"tokens": TOKENS, "training_refused": "one replica only"}))
    x = segment.input_spec.example(batch=2)
    auth = {"Authorization": f"Bearer {TOKENS['local']}"}
    with TestClient(app) as c:
        body, h = oip.encode_request({"input": x})
        r = c.post(f"/v2/models/{segment.name}/infer", content=body, headers={**h, **auth})
        assert r.status_code == 200 and r.headers[REPLICA_HEADER] == "unknown"  # not inside a Ray replica
        _, out = oip.decode_response(r.content, r.headers.get(oip.HEADER_LENGTH))
        torch.testing.assert_close(out["output"], segment.infer(x)[0])
        assert c.post(f"/v2/models/{segment.name}/infer", content=body, headers=h).status_code == 401
        body, h = oip.encode_request({"input": x}, parameters={"step": 0})
        r = c.post(f"/v2/models/{segment.name}/train/forward", content=body, headers={**h, **auth})
        assert r.status_code == 409 and "off on this host: one replica only" in r.json()["error"]


@pytest.mark.slow
@pytest.mark.ray
def test_two_replicas_answer_like_the_segment(running, segment) -> None:
    import httpx

    from codenn_adapters.ray_host import REPLICA_HEADER

    x = segment.input_spec.example(batch=3)
    want, _ = segment.infer(x)
    with HttpTransport(running.url, token=TOKENS["local"], timeout=30) as tr:
        assert tr.health()
        assert tr.metadata(segment.name)["outputs"][0]["shape"] == [-1, *segment.output_spec.shape]
        reply = tr.infer(segment.name, x)
        torch.testing.assert_close(reply.output, want, rtol=1e-6, atol=1e-6)
        assert reply.host_compute_s > 0

    body, headers = oip.encode_request({"input": x})
    headers["Authorization"] = f"Bearer {TOKENS['other']}"

    def call(_: int) -> str:
        r = httpx.post(f"{running.url}/v2/models/{segment.name}/infer", content=body, headers=headers, timeout=30)
        assert r.status_code == 200, r.text
        _, out = oip.decode_response(r.content, r.headers.get(oip.HEADER_LENGTH))
        torch.testing.assert_close(out["output"], want, rtol=1e-6, atol=1e-6)
        return r.headers[REPLICA_HEADER]

    seen: set[str] = set()
    with ThreadPoolExecutor(8) as pool:
        for _ in range(6):  # at most 48 requests; Ray's router spreads concurrent ones
            seen.update(pool.map(call, range(8)))
            if len(seen) == 2:
                break
    assert len(seen) == 2 and "unknown" not in seen, seen


@pytest.mark.slow
@pytest.mark.ray
def test_same_http_contract(running, segment) -> None:
    x = segment.input_spec.example(batch=1)
    with HttpTransport(running.url, token="wrong-token-xyz") as tr:
        with pytest.raises(HostRejectedError, match="bearer token") as exc:
            tr.infer(segment.name, x)
        assert exc.value.status == 401
    with HttpTransport(running.url, token=TOKENS["local"], timeout=30) as tr:
        with pytest.raises(HostRejectedError) as exc:
            tr.infer(segment.name, torch.zeros(64, *segment.input_spec.shape))  # 512 KiB > 256 KiB
        assert exc.value.status == 413
        with pytest.raises(HostRejectedError) as exc:
            tr.infer(segment.name, torch.zeros(2, 5, 3, 3))
        assert exc.value.status == 422 and "[2, 5, 3, 3]" in str(exc.value)
        with pytest.raises(HostRejectedError, match="2 Ray Serve replicas") as exc:
            tr.train_forward(segment.name, x, 0)
        assert exc.value.status == 409
        assert tr.infer(segment.name, x).output.shape == (1, *segment.output_spec.shape)  # still up


@pytest.mark.slow
@pytest.mark.ray
def test_one_replica_trains_like_in_process(running, segment, tmp_path) -> None:
    """With one replica, split training goes through Ray as through serve-host (same update),
    and the replica writes the trained links to save_dir when the app is deleted."""
    from safetensors.torch import load_file

    from codenn_adapters.ray_host import deploy_segments

    port = int(running.url.rsplit(":", 1)[1])
    one = deploy_segments([segment], tokens=TOKENS, num_replicas=1, num_cpus=0.5, ready_timeout=120,
                          config=ServerConfig(port=port, save_dir=str(tmp_path)))
    here = copy.deepcopy(segment)
    x = segment.input_spec.example(batch=4)
    with HttpTransport(one.url, token=TOKENS["local"], timeout=30) as tr:
        out = tr.train_forward(segment.name, x, 0).output
        torch.testing.assert_close(out, here.train_forward(x, 0)[0], rtol=1e-5, atol=1e-5)
        grad = torch.ones_like(out) / out.numel()
        tr.train_backward(segment.name, 0, grad)
        here.train_backward(0, grad)
        assert tr.metadata(segment.name)["parameters"]["steps_trained"] == 1
        torch.testing.assert_close(tr.infer(segment.name, x).output, here.infer(x)[0], rtol=1e-5, atol=1e-5)
    one.delete()
    saved = load_file(str(tmp_path / f"{segment.name}.safetensors"))
    for key, value in here.link_state().items():
        torch.testing.assert_close(saved[key], value, rtol=1e-5, atol=1e-5)


def test_serve_host_replicas_option(segment, tmp_path, monkeypatch) -> None:
    """`codenn serve-host --replicas N` hands the same segments to deploy_segments (Ray patched out)."""
    import json

    from click.testing import CliRunner

    from codenn.cli import cli
    from codenn.remote import host as host_side
    from codenn_adapters import ray_host

    (tmp_path / "run").mkdir()
    (tmp_path / "tokens.json").write_text(json.dumps(TOKENS))
    (tmp_path / "tls.pem").write_text("x")
    calls: list[dict] = []

    def deploy(segments, **options):
        calls.append({"segments": segments, **options})
        return ray_host.RayHost(f"http://127.0.0.1:{options['config'].port}", "codenn-host", options["num_replicas"],
                                tuple(s.name for s in segments))

    monkeypatch.setattr(host_side, "segments_from_run", lambda *a, **k: [segment])
    monkeypatch.setattr(ray_host, "deploy_segments", deploy)
    monkeypatch.setattr(ray_host, "serve_until_interrupted", lambda running: None)
    base = ["serve-host", "--run", str(tmp_path / "run"), "--service", "host", "--token-file",
            str(tmp_path / "tokens.json"), "--port", "8123"]
    res = CliRunner().invoke(cli, [*base, "--replicas", "3"])
    assert res.exit_code == 0, res.output
    assert "3 replica(s) at http://127.0.0.1:8123" in res.output
    (call,) = calls
    assert call["segments"] == [segment] and call["num_replicas"] == 3
    assert {n: p.token for n, p in call["tokens"].providers.items()} == TOKENS
    res = CliRunner().invoke(cli, [*base, "--replicas", "2", "--ssl-certfile", str(tmp_path / "tls.pem"),
                                   "--ssl-keyfile", str(tmp_path / "tls.pem")])
    assert res.exit_code == 2 and "TLS proxy" in res.output
    assert CliRunner().invoke(cli, [*base, "--replicas", "0"]).exit_code == 2
