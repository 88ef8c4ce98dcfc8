"""The base weights codenn ships (issue 13): the default host's, recorded and loadable as the
cache would hold them, and the script that makes them, retrained here on a small version."""

from __future__ import annotations

import importlib.util
import json
from dataclasses import asdict, replace
from pathlib import Path

import pytest

from codenn.config.base_model import DEFAULT_HOST
from codenn.errors import ConfigError
from codenn.train import base_models as sc
from codenn.train.base_models import evaluate_model
from codenn.train.data import tensors
from codenn.train.tasks import task_splits

ROOT = Path(__file__).parents[1]


def bundle_script():
    spec = importlib.util.spec_from_file_location("bundle_weights", ROOT / "benchmarks" / "bundle_weights.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_shipped_host_is_the_default_host_and_loads_without_training(tmp_path, monkeypatch, one_torch_thread) -> None:
    weights, meta_file = sc.cached_files(DEFAULT_HOST)
    shipped = sc.BUNDLED_DIR / weights.name
    assert shipped.is_file() and (sc.BUNDLED_DIR / meta_file.name).is_file()
    assert sum(p.stat().st_size for p in sc.BUNDLED_DIR.iterdir()) <= 10 * 2**20  # issue 13's budget
    record = json.loads((sc.BUNDLED_DIR / meta_file.name).read_text())
    assert record["spec"] == json.loads(json.dumps(asdict(DEFAULT_HOST)))
    monkeypatch.setenv("CODENN_CACHE", str(tmp_path))
    lines: list[str] = []
    model, meta = sc.base_model(DEFAULT_HOST, log=lines.append)
    assert any("the weights codenn ships" in line for line in lines) and not any("training" in line for line in lines)
    assert (tmp_path / "base" / weights.name).read_bytes() == shipped.read_bytes()
    x, y = tensors(task_splits("letters", DEFAULT_HOST.size, DEFAULT_HOST.seed).test)
    assert evaluate_model(model, x, y) == pytest.approx(meta["test_accuracy"], abs=1e-6)  # the record is true


def test_the_bundle_script_retrains_a_small_version(tmp_path, one_torch_thread) -> None:
    small = replace(DEFAULT_HOST, epochs=1, patience=0, size=16)
    written = bundle_script().bundle([small], tmp_path / "bundle", log=lambda m: None)
    weights, meta_file = sc.cached_files(small)
    assert [p.name for p in written] == [weights.name, meta_file.name]
    assert json.loads((tmp_path / "bundle" / meta_file.name).read_text())["epochs_run"] == 1
    with pytest.raises(ConfigError, match=r"over the budget of 0.001 MiB; nothing was kept"):
        bundle_script().bundle([small], tmp_path / "tight", budget_mb=0.001, log=lambda m: None)
    assert not list((tmp_path / "tight").iterdir())
