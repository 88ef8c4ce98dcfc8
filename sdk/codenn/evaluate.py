"""Re-measure a finished run: rebuild its services, reload every trained path's links, recompute."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path as FsPath
from typing import Any

from codenn.data import tensors
from codenn.runstore import RunStore
from codenn.scenario import Scenario, scenario_from_config
from codenn.train import FeatureCache, accuracy


def load_run(run_dir: str | FsPath, log: Callable[[str], None] = print) -> tuple[RunStore, Scenario]:
    """A finished run's store and all its services rebuilt from the stored configuration."""
    store = RunStore.open(run_dir)
    return store, scenario_from_config(store.run_config(), log=log)


def evaluate_run(run_dir: str | FsPath, log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Every trained row of ``run_dir`` with its stored and re-measured accuracies."""
    store, scenario = load_run(run_dir, log)
    services = {scenario.local.name: scenario.local, **{h.name: h for h in scenario.hosts}}
    caches = {}
    for part in ("val", "test"):
        x, y = tensors(getattr(scenario.splits, part))
        caches[part] = (FeatureCache(services, x), y)
    out = []
    for spec, row in store.trained().items():
        path = store.trained_path(spec, services)
        out.append({
            "spec": spec, "stored_val": row.val_accuracy, "stored_test": row.test_accuracy,
            "val_accuracy": accuracy(path, *caches["val"]), "test_accuracy": accuracy(path, *caches["test"]),
        })
    return out
