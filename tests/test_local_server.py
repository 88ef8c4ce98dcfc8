"""The local provider's server (codenn serve): routes from a run, OIP answers naming the route,
and a real host process killed mid-run without losing a request."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
from click.testing import CliRunner
from fastapi.testclient import TestClient

import codenn.contracts.plugins
import codenn.train.scenario
from codenn.config.base_model import DEFAULT_HOST, DEFAULT_LOCAL
from codenn.config.cost import CostModel
from codenn.config.routing import RoutingConfig
from codenn.config.run import RunConfig, ServiceConfig
from codenn.errors import ConfigError
from codenn.fileio import atomic_json
from codenn.paths.composed import ComposedPath
from codenn.paths.rows import PathRow
from codenn.paths.spec import slug
from codenn.remote.coordinator import Coordinator, Route, RouteInfo
from codenn.remote.local_model import CoordinatedModel, coordinator_from_run
from codenn.search.record import LinkManifest
from codenn.search.store import RunStore
from codenn_adapters import oip
from codenn_adapters.host_server import create_app
from codenn_adapters.transports import HttpTransport, InProcessTransport
from split_helpers import SPEC, TOKENS, HostProcess, tiny

SKIP = "local[:2] > local[3:]"
CLIENTS = {"client": "client-token-0123456789"}
# the local work is heavy (its queue weighs a lot), the host nearly free: cross paths win
ROUTING = RoutingConfig(cost=CostModel(a=40, b=0, c_l=1e-2, c_h=1e-6, d_l=0, d_h=0), timeout_s=2.0, retry_after_s=60)


def row(spec: str, kind: str, acc: float, local_us: float, host_us: float = 0.0) -> dict:
    return {"spec": spec, "kind": kind, "status": "trained" if kind != "original" else "original",
            "val_accuracy": acc, "test_accuracy": acc, "t_local_us": local_us, "t_host_us": host_us,
            "t_comm_us": 10.0 if host_us else 0.0, "local_gflops": 0.01, "host_gflops": 0.001 if host_us else 0.0}


@pytest.fixture()
def run_dir(tmp_path, monkeypatch):
    """A run directory as `codenn search` writes it, over the tiny services (base models patched in)."""
    t = tiny()
    monkeypatch.setattr(codenn.train.scenario, "base_model", lambda spec, log=print: (t.local.model, {}))
    run = RunConfig(local=ServiceConfig("local", replace(DEFAULT_LOCAL, size=16)),
                    hosts=(ServiceConfig("host", DEFAULT_HOST),))
    store = RunStore(tmp_path / "run")
    atomic_json(store.root / "run.json", {
        "metadata": {"run_config": run.to_dict()}, "selected": {"spec": SKIP},
        "services": {"local": t.local.card.to_dict(), "host": t.host.card.to_dict()},
        "original": row("local[:]", "original", 0.9, 1000.0)})
    for spec, r in ((SKIP, row(SKIP, "skip", 0.85, 600.0)), (SPEC, row(SPEC, "cross", 0.88, 200.0, 300.0))):
        path = t.path(spec)
        store.save_links(spec, path.links, LinkManifest.from_dict({"spec": spec, "link_factories": list(path.link_factories),
                                            "link_options": {}, "fingerprints": {n: s.fingerprint()
                                                                                 for n, s in path.services.items()}}))
        store.append_row(PathRow.from_dict(r))
    return tmp_path / "run"


def test_coordinator_from_run_builds_the_local_side_only(run_dir) -> None:
    t = tiny()
    cross = t.path(SPEC).eval()
    transport = InProcessTransport([t.segment(cross)])
    local, coord = coordinator_from_run(run_dir, hosts={"host": transport}, routing=ROUTING, plugins=t.plugins,
                                        log=lambda m: None)
    assert [r.info.spec for r in coord.routes] == ["local[:]", SKIP, SPEC]
    assert local.fingerprint() == t.local.fingerprint()
    skip_route, cross_route = coord.routes[1], coord.routes[2]
    assert not skip_route.offloads and cross_route.offloads and cross_route.model == slug(SPEC)
    with torch.inference_mode():
        torch.testing.assert_close(skip_route._run(t.x_test), t.path(SKIP).eval()(t.x_test))
    out, decision = coord.infer(t.x_test)
    assert decision.route == SPEC
    with torch.inference_mode():
        torch.testing.assert_close(out, cross(t.x_test), rtol=1e-5, atol=1e-6)
    # without a transport to the host, the run's cross path is not served by default ...
    _, alone = coordinator_from_run(run_dir, routing=ROUTING, plugins=t.plugins, log=lambda m: None)
    assert [r.info.spec for r in alone.routes] == ["local[:]", SKIP]
    # ... and asking for it is a clear error
    _, only = coordinator_from_run(run_dir, specs=["local[:]"], plugins=t.plugins, log=lambda m: None)
    assert [r.info.spec for r in only.routes] == ["local[:]"]
    with pytest.raises(ConfigError, match="no transport to it was given"):
        coordinator_from_run(run_dir, specs=[SPEC], plugins=t.plugins, log=lambda m: None)
    with pytest.raises(ConfigError, match="no trained path"):
        coordinator_from_run(run_dir, specs=["local[:1] > local[3:]"], plugins=t.plugins, log=lambda m: None)


def test_cli_serve_check_lists_the_routes(run_dir, tmp_path, monkeypatch) -> None:
    from codenn.cli import cli

    t = tiny()
    monkeypatch.setattr(codenn.contracts.plugins, "get_plugins", lambda: t.plugins)
    tokens = tmp_path / "clients.json"
    tokens.write_text(json.dumps(CLIENTS))
    res = CliRunner().invoke(cli, ["serve", "--run", str(run_dir), "--token-file", str(tokens),
                                   "--remote", "host=http://127.0.0.1:9", "--timeout", "0.5", "--check"])
    assert res.exit_code == 0, res.output
    assert "local[:2] > local[3:]" in res.output and "host host at http://127.0.0.1:9: DOWN" in res.output
    res = CliRunner().invoke(cli, ["serve", "--run", str(run_dir), "--token-file", str(tokens), "--remote", "oops"])
    assert res.exit_code != 0 and "must look like HOST=URL" in res.output
    # serve has serve-host's network options: TLS, limits, and the clear-text warning
    res = CliRunner().invoke(cli, ["serve", "--run", str(run_dir), "--token-file", str(tokens), "--host", "0.0.0.0",
                                   "--max-bytes", "4096", "--header-timeout", "3", "--check"])
    assert res.exit_code == 0, res.output
    assert "clear text" in res.output and "body limit 4096 bytes" in res.output and "header timeout 3.0 s" in res.output
    key = tmp_path / "key.pem"
    key.write_text("x")
    res = CliRunner().invoke(cli, ["serve", "--run", str(run_dir), "--token-file", str(tokens), "--ssl-keyfile",
                                   str(key), "--check"])
    assert res.exit_code != 0 and "--ssl-keyfile and --ssl-certfile go together" in res.output
    help_text = CliRunner().invoke(cli, ["serve", "--help"]).output
    assert all(o in help_text for o in ("--ssl-certfile", "--max-response-bytes", "--body-timeout",
                                        "--limit-concurrency", "--keep-alive"))


def test_local_server_offloads_to_a_real_host_and_loses_nothing_when_it_dies(tmp_path) -> None:
    t = tiny()
    cross, original = t.path(SPEC).eval(), ComposedPath("local[:]", t.services).eval()
    host = HostProcess(t, cross, tmp_path / "host")
    try:
        host.wait_ready()
        transport = HttpTransport(host.url, token=TOKENS["local"], timeout=2.0)
        routes = [Route.local(original, RouteInfo("local[:]", 0.9, 1000.0)),
                  Route.through_host(t.local, SPEC, transport, host.name,
                                     RouteInfo(SPEC, 0.88, 200.0, 300.0, 10.0, host="host"))]
        coord = Coordinator(routes, 0.9, ROUTING)
        client = TestClient(create_app([CoordinatedModel(t.local, coord)], tokens=CLIENTS, title="codenn local"))
        auth = {"Authorization": f"Bearer {CLIENTS['client']}"}

        def ask(i: int) -> tuple[torch.Tensor, dict]:
            x = t.x_test[i % 8:i % 8 + 1]
            body, headers = oip.encode_request({"input": x})
            res = client.post("/v2/models/local/infer", content=body, headers={**headers, **auth})
            assert res.status_code == 200, res.text
            header, tensors = oip.decode_response(res.content, res.headers.get(oip.HEADER_LENGTH))
            return tensors["output"], header.parameters

        answers = [ask(i) for i in range(6)]
        assert all(p["route"] == SPEC and p["offloaded"] and not p["fallback"] for _, p in answers)
        with torch.inference_mode():
            torch.testing.assert_close(answers[0][0], cross(t.x_test[:1]), rtol=1e-4, atol=1e-5)
        host.stop()  # the host dies mid-run
        after = [ask(i) for i in range(6, 12)]
        assert after[0][1]["fallback"] and after[0][1]["route"] == "local[:]"
        assert all(p["route"] == "local[:]" and not p["offloaded"] for _, p in after)
        with torch.inference_mode():
            torch.testing.assert_close(after[1][0], original(t.x_test[7:8]))
        stats = coord.stats()
        assert sum(stats["requests"].values()) == 12 and stats["fallbacks"] == 1 and stats["hosts"]["host"]["down"]
        meta = client.get("/v2/models/local", headers=auth).json()
        assert json.loads(meta["parameters"]["routes"]) == ["local[:]", SPEC]
        assert client.post("/v2/models/local/infer", content=b"{}").status_code == 401
        bad, headers = oip.encode_request({"input": torch.randn(1, 3, 5, 5)})
        res = client.post("/v2/models/local/infer", content=bad, headers={**headers, **auth})
        assert res.status_code == 422 and "[-1, 3, 16, 16]" in res.json()["error"]
    finally:
        host.stop()
