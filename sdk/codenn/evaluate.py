"""Re-measure a finished run: rebuild its services, reload every trained path's links, recompute."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path as FsPath
from typing import Any

import torch

from codenn.config import RunConfig, from_dict
from codenn.data import tensors
from codenn.errors import ConfigError, FrozenParameterError
from codenn.paths import Path
from codenn.runstore import RunStore
from codenn.scenario import Scenario, scenario_from_config
from codenn.service import Service
from codenn.train import FeatureCache, accuracy


def read_run(run_dir: str | FsPath) -> tuple[RunStore, dict[str, Any], RunConfig]:
    """A finished run's store, its run.json and its configuration; no model is built (a host or
    a local provider rebuilds only its own service from it)."""
    store = RunStore(run_dir)
    run_json = store.read_json("run.json")
    if run_json is None or "run_config" not in run_json.get("metadata", {}):
        raise ConfigError(f"{str(run_dir)!r} is not a codenn search run (no run.json written by `codenn search`)")
    return store, run_json, from_dict(run_json["metadata"]["run_config"])


def load_run(run_dir: str | FsPath, log: Callable[[str], None] = print) -> tuple[RunStore, dict[str, Any], Scenario]:
    """A finished run's store, its run.json and all its services rebuilt from the stored configuration."""
    store, run_json, run = read_run(run_dir)
    return store, run_json, scenario_from_config(run, log=log)


def trained_path(store: RunStore, spec: str, services: Mapping[str, Service]) -> Path:
    """Rebuild a trained path from its manifest and links, refusing services that changed."""
    manifest = json.loads(store.links_file(spec).with_suffix(".json").read_text())
    for name, fp in manifest["fingerprints"].items():
        if services[name].fingerprint() != fp:
            raise FrozenParameterError(
                f"service {name!r} is not the one path {spec!r} was trained on (fingerprint "
                f"{services[name].fingerprint()[:12]}… != {fp[:12]}…)")
    torch.manual_seed(0)
    path = Path(spec, services, link=manifest["link_factories"], link_options=manifest["link_options"])
    path.links.load_state_dict(store.load_links(spec))
    return path


def evaluate_run(run_dir: str | FsPath, log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Every trained row of ``run_dir`` with its stored and re-measured accuracies."""
    store, _, scenario = load_run(run_dir, log)
    services = {scenario.local.name: scenario.local, **{h.name: h for h in scenario.hosts}}
    caches = {}
    for part in ("val", "test"):
        x, y = tensors(getattr(scenario.splits, part))
        caches[part] = (FeatureCache(services, x), y)
    out = []
    for row in store.rows():
        if row["status"] != "trained":
            continue
        path = trained_path(store, row["spec"], services)
        out.append({
            "spec": row["spec"], "stored_val": row["val_accuracy"], "stored_test": row["test_accuracy"],
            "val_accuracy": accuracy(path, *caches["val"]), "test_accuracy": accuracy(path, *caches["test"]),
        })
    return out
