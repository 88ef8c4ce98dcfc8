"""The `codenn` command line, end to end through click's runner."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from codenn.cli import cli
from codenn.config.run import RunConfig, from_dict, load
from codenn.errors import ConfigError


@pytest.fixture
def runner(tmp_path, monkeypatch) -> CliRunner:
    monkeypatch.setenv("CODENN_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    return CliRunner()


def test_plugins_json_lists_builtins(runner) -> None:
    res = runner.invoke(cli, ["plugins", "--json"])
    assert res.exit_code == 0, res.output
    names = {p["name"]: p for p in json.loads(res.output)}
    assert names["objectives"]["registered"] == {"objectives": ["paper", "accuracy_throughput"]}
    assert "alexnet" in names["alexnet"]["registered"]["splitters"]


def test_describe_split_and_paths(runner) -> None:
    res = runner.invoke(cli, ["describe", "resnet18", "--blocks", "4", "--input-size", "32"])
    assert res.exit_code == 0, res.output
    card = json.loads(res.output)
    assert len(card["blocks"]) == 4 and "weight" not in res.output
    res = runner.invoke(cli, ["split", "alexnet", "--blocks", "7", "--check", "--input-size", "64"])
    assert res.exit_code == 0, res.output
    assert "recomposition max abs diff (eval mode, fp32): 0.000e+00" in res.output
    assert "recomposition max abs diff (train mode, fp32): 0.000e+00" in res.output
    res = runner.invoke(cli, ["paths", "alexnet", "mobilenet_v2", "--input-size", "64", "--limit", "3", "--paper-form"])
    assert res.exit_code == 0, res.output
    assert "435 paths (15 skip, 420 cross)" in res.output
    assert "alexnet: lout=0 lin=2" in res.output


def test_bad_input_is_a_one_line_error(runner, tmp_path) -> None:
    res = runner.invoke(cli, ["describe", "no_such_net"])
    assert res.exit_code == 1 and "unknown model 'no_such_net'" in res.output and "Traceback" not in res.output
    res = runner.invoke(cli, ["split", "alexnet", "--blocks", "12", "--input-size", "64"])
    assert res.exit_code == 1 and "valid block counts are 1..8" in res.output
    bad = tmp_path / "bad.toml"
    bad.write_text("[cost]\nalpha = 3\n")
    res = runner.invoke(cli, ["search", "--config", str(bad)])
    assert res.exit_code == 1 and "[cost] has unknown key(s) ['alpha']" in res.output
    bad.write_text("[local]\nmodel = 'resnet18'\n")
    res = runner.invoke(cli, ["search", "--config", str(bad)])
    assert res.exit_code == 1 and "also set task" in res.output


def test_config_round_trip_and_errors(tmp_path, small_search_toml) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(small_search_toml)
    run = load(cfg)
    assert run.local.name == "mnv3" and run.hosts[0].base.task == "shapes"
    assert run.search.space.hin == 1 and run.search.fast.screen_keep == 3
    assert from_dict(run.to_dict()) == run
    assert from_dict({}) == RunConfig()
    with pytest.raises(ConfigError, match="unknown section"):
        from_dict({"serach": {}})
    with pytest.raises(ConfigError, match="not valid TOML"):
        cfg.write_text("[local\n")
        load(cfg)


def test_search_train_evaluate_end_to_end(runner, tmp_path, small_search_toml) -> None:
    cfg = tmp_path / "small.toml"
    cfg.write_text(small_search_toml)
    res = runner.invoke(cli, ["search", "--config", str(cfg), "--out", "run", "--quiet"])
    assert res.exit_code == 0, res.output
    assert "selected:" in res.output and "decision:" in res.output and "L_A =" in res.output
    rows = [json.loads(line) for line in (tmp_path / "run" / "results.jsonl").read_text().splitlines()]
    assert {"trained", "pruned"} >= {r["status"] for r in rows}
    # what the host offered is shown even when no cross path is trained: the best screened ones
    screened = [r for r in rows if r["kind"] == "cross" and r["status"] == "pruned" and r.get("ls_accuracy") is not None]
    if screened:
        assert "best cross paths screened out" in res.output and "LS val acc" in res.output
        best = min(screened, key=lambda r: r["cost"])
        assert best["spec"][:20] in res.output
    else:
        assert "cross paths:" in res.output
    assert (tmp_path / "cache" / "base").is_dir() and list((tmp_path / "cache" / "base").glob("*.safetensors"))
    # the same command again resumes: nothing left to train
    again = runner.invoke(cli, ["search", "--config", str(cfg), "--out", "run", "--quiet"])
    assert again.exit_code == 0 and f"{len(rows)} paths already final" in again.output
    res = runner.invoke(cli, ["evaluate", "run"])
    assert res.exit_code == 0, res.output
    trained = [r for r in rows if r["status"] == "trained"]
    for r in trained:
        assert r["spec"] in res.output
    res = runner.invoke(cli, ["train", "mnv3[:2] > mnv3[4:]", "--config", str(cfg), "--out", "one"])
    assert res.exit_code == 0, res.output
    row = json.loads(res.output[res.output.index("{"):])
    assert row["status"] == "trained" and row["epochs"] == 2 and row["spec"] == "mnv3[:2] > mnv3[4:]"
    res = runner.invoke(cli, ["train", "mnv3[:2] > vgg[1:2] > mnv3[4:]", "--config", str(cfg), "--out", "one"])
    assert res.exit_code == 1 and "unknown service 'vgg'" in res.output
