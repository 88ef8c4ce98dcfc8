"""Re-measure a finished run: rebuild its services, reload every trained path's links, recompute."""

from __future__ import annotations

import os
from typing import Any

from codenn.search.store import RunStore
from codenn.train.data import tensors
from codenn.train.features import FeatureCache
from codenn.train.scenario import Log
from codenn.train.trainer import accuracy


def evaluate_run(run: str | os.PathLike[str] | RunStore, log: Log = print) -> list[dict[str, Any]]:
    """Every trained row of ``run`` with its stored and re-measured accuracies."""
    store = run if isinstance(run, RunStore) else RunStore.open(run)
    scenario = store.scenario(log=log)
    services = scenario.services
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
