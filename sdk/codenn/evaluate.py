"""Re-measure a finished run: rebuild its services, reload every trained path's links, recompute."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path as FsPath
from typing import Any

import torch

from codenn.config import from_dict
from codenn.data import tensors
from codenn.errors import ConfigError, FrozenParameterError
from codenn.paths import Path
from codenn.runstore import RunStore
from codenn.scenario import scenario_from_config
from codenn.train import FeatureCache, accuracy


def evaluate_run(run_dir: str | FsPath, log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Every trained row of ``run_dir`` with its stored and re-measured accuracies."""
    store = RunStore(run_dir)
    run_json = store.read_json("run.json")
    if run_json is None or "run_config" not in run_json.get("metadata", {}):
        raise ConfigError(f"{str(run_dir)!r} is not a codenn search run (no run.json written by `codenn search`)")
    run = from_dict(run_json["metadata"]["run_config"])
    scenario = scenario_from_config(run, log=log)
    services = {scenario.local.name: scenario.local, **{h.name: h for h in scenario.hosts}}
    caches = {}
    for part in ("val", "test"):
        x, y = tensors(getattr(scenario.splits, part))
        caches[part] = (FeatureCache(services, x), y)
    out = []
    for row in store.rows():
        if row["status"] != "trained":
            continue
        manifest = json.loads(FsPath(row["links_file"]).with_suffix(".json").read_text())
        for name, fp in manifest["fingerprints"].items():
            if services[name].fingerprint() != fp:
                raise FrozenParameterError(
                    f"service {name!r} is not the one path {row['spec']!r} was trained on (fingerprint "
                    f"{services[name].fingerprint()[:12]}… != {fp[:12]}…)")
        torch.manual_seed(0)
        path = Path(row["spec"], services, link=manifest["link_factories"], link_options=manifest["link_options"])
        path.links.load_state_dict(store.load_links(row["spec"]))
        out.append({
            "spec": row["spec"], "stored_val": row["val_accuracy"], "stored_test": row["test_accuracy"],
            "val_accuracy": accuracy(path, *caches["val"]), "test_accuracy": accuracy(path, *caches["test"]),
        })
    return out
