"""The run directory: atomic durable writes, typed rows, the one reader, and a `train` run every
command accepts."""

from __future__ import annotations

import json
import os
from dataclasses import replace

import pytest
import torch

import codenn.contracts.plugins
import codenn.search.evaluate
import codenn.search.store
import codenn.train.scenario
from codenn.config.base_model import DEFAULT_HOST, DEFAULT_LOCAL
from codenn.config.run import RunConfig, ServiceConfig
from codenn.config.search import SearchConfig
from codenn.config.train import TrainConfig
from codenn.errors import ConfigError, FrozenParameterError
from codenn.fileio import atomic_json, atomic_tensors, atomic_write
from codenn.paths.composed import ComposedPath
from codenn.paths.rows import TERMS, PathRow
from codenn.paths.spec import slug
from codenn.search.record import LinkManifest
from codenn.search.store import RunStore
from codenn.search.strategies import Search
from codenn.train.scenario import Scenario
from tiny import tiny_scenario

CROSS = "local[:1] > host[1:3] > local[3:]"
SKIP = "local[:2] > local[4:]"


@pytest.fixture(scope="module")
def scenario():
    return tiny_scenario()


# -- atomic writes ---------------------------------------------------------------------------------
@pytest.mark.parametrize("write", [
    lambda p: atomic_write(p, b"new"),
    lambda p: atomic_json(p, {"new": True}),
    lambda p: atomic_tensors(p, {"w": torch.ones(2)}),
])
def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch, write) -> None:
    target = tmp_path / "file"
    target.write_bytes(b"old")

    def broken(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken)
    with pytest.raises(OSError, match="disk full"):
        write(target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"] and target.read_bytes() == b"old"


def test_writes_are_fsynced(tmp_path, monkeypatch) -> None:
    synced: list[int] = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real(fd))[1])
    atomic_write(tmp_path / "a" / "b.bin", b"data")
    assert (tmp_path / "a" / "b.bin").read_bytes() == b"data"
    assert len(synced) == (1 if os.name == "nt" else 2)  # the file, then its directory (the rename)


# -- typed rows --------------------------------------------------------------------------------------
def test_path_row_round_trips_through_json() -> None:
    row = PathRow(spec=CROSS, kind="cross", lout=0, hin=1, hout=2, lin=3, status="trained", val_accuracy=0.8,
                  test_accuracy=0.75, ls_initialised=(True, False), epochs=2, t_local_us=10.0,
                  **dict.fromkeys(TERMS, 0.5), cost=3.0, links_file="links/x.safetensors")
    data = json.loads(json.dumps(row.to_dict()))
    assert PathRow.from_dict(data) == row and data["ls_initialised"] == [True, False]
    pruned = PathRow(spec=SKIP, kind="skip", status="pruned", reason="latency")
    assert not set(TERMS) & set(pruned.to_dict())  # unscored rows carry no terms, as before
    assert list(pruned.to_dict())[:7] == ["spec", "kind", "lout", "hin", "hout", "lin", "status"]
    # older or hand-written rows: kind follows from the spec, unknown keys are ignored
    assert PathRow.from_dict({"spec": SKIP, "status": "trained", "future": 1}).kind == "skip"
    with pytest.raises(ConfigError, match="'status'"):
        PathRow.from_dict({"spec": SKIP})


# -- the reader ----------------------------------------------------------------------------------------
def test_store_reads_back_rows_links_and_manifests(scenario, tmp_path) -> None:
    local, host, _, plugins = scenario
    services = {"local": local, "host": host}
    torch.manual_seed(1)
    path = ComposedPath(CROSS, services, link="conv1x1", plugins=plugins)
    store = RunStore(tmp_path)
    fingerprints = {n: s.fingerprint() for n, s in services.items()}
    store.save_links(CROSS, path.links, LinkManifest.from_dict({
        "spec": CROSS, "link_factories": list(path.link_factories), "link_options": {},
                                         "fingerprints": fingerprints}))
    store.append_row(PathRow(spec=CROSS, kind="cross", status="trained", val_accuracy=0.5))
    store.append_row(PathRow(spec=SKIP, kind="skip", status="pruned"))
    store.append_row(PathRow(spec=CROSS, kind="cross", status="trained", val_accuracy=0.7))  # trained again
    assert [(r.spec, r.val_accuracy) for r in store.rows()] == [(SKIP, None), (CROSS, 0.7)]
    assert list(store.trained()) == [CROSS]
    assert store.manifest(CROSS).fingerprints == fingerprints
    host_side = store.load_links(CROSS, prefixes=("0.",))
    assert host_side and all(k.startswith("0.") for k in host_side)
    rebuilt = store.trained_path(CROSS, services)
    x = local.input_spec.example(batch=2)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt.eval()(x), path.eval()(x))
    with pytest.raises(ConfigError, match="no trained links"):
        store.manifest(SKIP)
    with pytest.raises(ConfigError, match="is not a codenn search run"):
        RunStore.open(tmp_path)


def test_a_fingerprint_mismatch_is_refused(scenario, tmp_path) -> None:
    local, host, _, plugins = scenario
    path = ComposedPath(SKIP, {"local": local}, link="conv1x1", plugins=plugins)
    store = RunStore(tmp_path)
    store.save_links(SKIP, path.links, LinkManifest.from_dict({
        "spec": SKIP, "link_factories": list(path.link_factories), "link_options": {},
                                        "fingerprints": {"local": "0" * 64}}))
    with pytest.raises(FrozenParameterError, match="service 'local' is not the one path .* was trained on"):
        store.check_trained_on(SKIP, {"local": local.fingerprint()})
    with pytest.raises(FrozenParameterError, match="was trained on"):
        store.trained_path(SKIP, {"local": local})
    store.check_trained_on(SKIP, {"host": host.fingerprint()})  # services the manifest does not name pass


# -- `codenn train` writes a run every reader accepts ------------------------------------------------
def test_a_trained_path_is_a_run_that_evaluate_serve_host_and_serve_accept(scenario, tmp_path, monkeypatch) -> None:
    from codenn.remote.host import segments_from_run
    from codenn.remote.local_model import coordinator_from_run
    from codenn_adapters.transports import InProcessTransport

    local, host, splits, plugins = scenario
    run = RunConfig(local=ServiceConfig("local", replace(DEFAULT_LOCAL, size=16)),
                    hosts=(ServiceConfig("host", DEFAULT_HOST),))
    models = {DEFAULT_LOCAL.model: local.model, DEFAULT_HOST.model: host.model}
    monkeypatch.setattr(codenn.train.scenario, "base_model", lambda spec, log=print: (models[spec.model], {}))
    monkeypatch.setattr(codenn.contracts.plugins, "get_plugins", lambda: plugins)
    monkeypatch.setattr(codenn.search.store, "scenario_from_config", lambda cfg, log=print: Scenario(local, [host], splits))
    cfg = SearchConfig(train=TrainConfig(epochs=1, progress=False), profile_repeats=2)
    search = Search(local, [host], splits, cfg, plugins=plugins, run_dir=tmp_path / "run", log=lambda m: None,
                    metadata={"run_config": run.to_dict()})
    row = search.train_one(CROSS)
    assert row.status == "trained" and row.spec == CROSS and row.val_accuracy is not None

    store = RunStore.open(tmp_path / "run")
    assert store.selected_spec() == CROSS and store.original().status == "original"
    assert store.run_config() == run and [r.spec for r in store.rows()] == [CROSS]

    (measured,) = codenn.search.evaluate.evaluate_run(tmp_path / "run", log=lambda m: None)
    assert measured["spec"] == CROSS and measured["val_accuracy"] == pytest.approx(row.val_accuracy)

    (segment,) = segments_from_run(tmp_path / "run", "host", log=lambda m: None)
    assert str(segment.spec) == CROSS

    _, coordinator = coordinator_from_run(tmp_path / "run", hosts={"host": InProcessTransport([segment])},
                                          plugins=plugins, log=lambda m: None)
    assert [r.info.spec for r in coordinator.routes] == ["local[:]", CROSS]
    assert coordinator.routes[1].offloads and coordinator.routes[1].model == slug(CROSS) == segment.name

    # the same directory under another configuration is refused, not mixed
    other = replace(cfg, link="conv3x3")
    with pytest.raises(ConfigError, match="different configuration"):
        Search(local, [host], splits, other, plugins=plugins, run_dir=tmp_path / "run",
               log=lambda m: None).train_one(SKIP)
