"""`codenn serve-host`: options and errors (fast), and a run directory served end to end (slow)."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
from click.testing import CliRunner
from fastapi.testclient import TestClient

from codenn.cli import cli
from codenn.config.run import from_dict
from codenn.fileio import atomic_json
from codenn.paths.composed import ComposedPath
from codenn.paths.rows import PathRow
from codenn.search.record import LinkManifest
from codenn.search.store import RunStore
from codenn_adapters import oip

TOKENS = {"mnv3": "local-provider-token-0123"}
RUN_CONFIG = {
    "local": {"name": "mnv3", "model": "mobilenet_v3_small", "task": "digits", "size": 32, "epochs": 1, "lr": 2e-3},
    "hosts": [{"name": "host", "model": "mobilenet_v3_small", "task": "shapes", "epochs": 1, "lr": 2e-3}],
    "train": {"lr": 2e-3, "weight_decay": 0.01},
}


@pytest.fixture
def runner(tmp_path, monkeypatch) -> CliRunner:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tokens.json").write_text(json.dumps(TOKENS))
    return CliRunner()


def test_serve_host_help_and_errors(runner, tmp_path) -> None:
    res = runner.invoke(cli, ["serve-host", "--help"])
    assert res.exit_code == 0 and "--token-file" in res.output and "Open Inference" in res.output
    (tmp_path / "empty").mkdir()
    res = runner.invoke(cli, ["serve-host", "--run", "empty", "--service", "host", "--token-file", "tokens.json"])
    assert res.exit_code == 1 and "is not a codenn search run" in res.output and "Traceback" not in res.output
    (tmp_path / "bad.json").write_text('{"mnv3": "short"}')
    res = runner.invoke(cli, ["serve-host", "--run", "empty", "--service", "host", "--token-file", "bad.json"])
    assert res.exit_code == 1 and "at least 8 characters" in res.output
    (tmp_path / "bad.json").write_text("[1, 2")
    res = runner.invoke(cli, ["serve-host", "--run", "empty", "--service", "host", "--token-file", "bad.json"])
    assert res.exit_code == 1 and "cannot be read as JSON" in res.output
    (tmp_path / "bad.json").write_text('{"mnv3": {"token": "long-enough-token", "train": "*"}}')
    res = runner.invoke(cli, ["serve-host", "--run", "empty", "--service", "host", "--token-file", "bad.json"])
    assert res.exit_code == 1 and "mnv3.train must be a list of patterns" in res.output
    res = runner.invoke(cli, ["serve-host", "--run", "empty", "--service", "host", "--token-file", "tokens.json",
                              "--resume"])
    assert res.exit_code != 0 and "--resume loads the checkpoints of --save-dir" in res.output
    help_text = runner.invoke(cli, ["serve-host", "--help"]).output
    assert all(o in help_text for o in ("--resume", "--checkpoint-every", "--header-timeout", "--max-response-bytes"))


@pytest.mark.slow
def test_serve_host_serves_a_runs_cross_paths(runner, tmp_path, monkeypatch) -> None:
    """A run directory (as `codenn search` writes it) -> host segments with only host-side links."""
    monkeypatch.setenv("CODENN_CACHE", str(tmp_path / "cache"))
    from codenn.model.service import Service
    from codenn.remote.host import segments_from_run
    from codenn.train.base_models import base_model
    from codenn_adapters.host_server import create_app

    run = from_dict(RUN_CONFIG)
    torch.manual_seed(0)
    local = Service.from_name("mobilenet_v3_small", name="mnv3", num_classes=10, input_shape=(3, 32, 32))
    model, _ = base_model(replace(run.hosts[0].base, size=32))  # hosts run at the local input size
    host = Service("host", model, input_shape=(3, 32, 32), architecture="mobilenet_v3_small")
    spec = "mnv3[:1] > host[1:3] > mnv3[3:]"
    path = ComposedPath(spec, [local, host], link="conv1x1").eval()
    store = RunStore(tmp_path / "run")
    canonical = str(path.spec)
    store.save_links(canonical, path.links, LinkManifest.from_dict({
        "spec": canonical, "link_factories": list(path.link_factories), "link_options": {},
                                             "fingerprints": {"mnv3": local.fingerprint(), "host": host.fingerprint()}}))
    store.append_row(PathRow(spec=canonical, kind="cross", status="trained"))
    store.append_row(PathRow(spec="mnv3[:2] > mnv3[4:]", kind="skip", status="trained"))  # a skip path: nothing for the host
    atomic_json(store.root / "run.json", {"services": {"mnv3": local.card.to_dict(), "host": host.card.to_dict()},
                                  "metadata": {"run_config": run.to_dict()}})
    res = runner.invoke(cli, ["serve-host", "--run", "run", "--service", "host", "--token-file", "tokens.json", "--check"])
    assert res.exit_code == 0, res.output
    (segment,) = segments_from_run(tmp_path / "run", "host", log=lambda m: None)
    assert segment.name in res.output and canonical in res.output
    # --resume loads a checkpoint after the fingerprint check; a split-trained step is in it
    segment.train_forward(local.run(local.input_spec.example(batch=2), 0, 1), 0, "mnv3")
    segment.train_backward(0, torch.ones(2, *segment.output_spec.shape), "mnv3")
    segment.save_checkpoint(tmp_path / "ckpt" / f"{segment.name}.safetensors")
    res = runner.invoke(cli, ["serve-host", "--run", "run", "--service", "host", "--token-file", "tokens.json",
                              "--save-dir", "ckpt", "--resume", "--check"])
    assert res.exit_code == 0 and "resumed" in res.output and "1 split-training steps" in res.output, res.output
    (segment,) = segments_from_run(tmp_path / "run", "host", log=lambda m: None)
    assert segment.lr == 2e-3 and segment.weight_decay == 0.01
    with TestClient(create_app([segment], tokens=TOKENS)) as client:
        h = local.run(local.input_spec.example(batch=2), 0, 1)
        body, headers = oip.encode_request({"input": h})
        r = client.post(f"/v2/models/{segment.name}/infer", content=body,
                        headers={**headers, "Authorization": f"Bearer {TOKENS['mnv3']}"})
        assert r.status_code == 200, r.text
        _, out = oip.decode_response(r.content, r.headers[oip.HEADER_LENGTH])
    with torch.no_grad():
        want = path.links[1](host.run(path.links[0](h), 1, 3))
    torch.testing.assert_close(out["output"], want, rtol=1e-5, atol=1e-6)
    res = runner.invoke(cli, ["serve-host", "--run", "run", "--service", "host", "--token-file", "tokens.json",
                              "--spec", "mnv3[:1] > host[1:4] > mnv3[3:]", "--check"])
    assert res.exit_code == 1 and "no trained cross path" in res.output
