"""Where a path to export comes from: a ``codenn search`` run directory.

Kept apart from the export itself, which takes any :class:`codenn.paths.ComposedPath`: only this
function knows how a run directory stores its services and trained links.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch

from codenn.errors import ExportError

if TYPE_CHECKING:
    from codenn.paths.composed import ComposedPath


def load_run_path(
    run_dir: str | os.PathLike[str], spec: str | None = None, *, log: Callable[[str], None] = print
) -> tuple[ComposedPath, torch.Tensor]:
    """Rebuild a trained path of a ``codenn search`` run: its services (base models from the
    cache, trained on first use), its links from ``RUN/links``. ``spec`` defaults to the run's
    selected path. Returns the path (eval mode) and a batch of the local task's test inputs."""
    from codenn.paths.spec import PathSpec
    from codenn.search.store import RunStore
    from codenn.train.data import tensors

    store = RunStore.open(run_dir)
    scenario = store.scenario(log=log)
    trained = store.trained()
    if spec is None:
        spec = store.selected_spec()
        if not spec:
            raise ExportError(
                f"run {os.fspath(run_dir)!r} selected no path (decision: {store.decision()!r}); "
                f"choose one with --spec. Trained paths: {sorted(trained) or 'none'}")
    services = scenario.services
    try:
        canonical = str(PathSpec.parse(spec).resolve({n: s.num_blocks for n, s in services.items()}))
    except KeyError as exc:
        raise ExportError(f"path {spec!r} names a service the run does not have: {exc}; services: "
                          f"{sorted(services)}") from exc
    if canonical not in trained:
        raise ExportError(f"run {os.fspath(run_dir)!r} has no trained links for {spec!r}; trained paths: "
                          f"{sorted(trained) or 'none'}")
    test_accuracy = trained[canonical].test_accuracy
    path = store.trained_path(canonical, services)
    x, _ = tensors(scenario.splits.test, limit=8)
    log(f"loaded {canonical} from {os.fspath(run_dir)} "
        f"(test accuracy {float('nan') if test_accuracy is None else test_accuracy:.3f})")
    return path.eval(), x
