"""The default executor: every path job in the search's own process, one after the other.

Other executors (``codenn search --executor ray``) come from plugins through the
``codenn_register_executors`` hook; they run the same :class:`~codenn.search.jobs.PathJob` s on
workers of their own, so the rows, links and selection do not depend on where the jobs ran.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from codenn.contracts.plugins import Plugins, get_plugins
from codenn.contracts.protocols import Executor
from codenn.errors import ConfigError, available
from codenn.search.jobs import PathJob, PathJobResult, PathWorker

if TYPE_CHECKING:
    from codenn.config.run import RunConfig


class InProcessExecutor:
    """Runs jobs on the search's own worker, in the order given (the search's historic order)."""

    name = "inprocess"

    def __init__(self) -> None:
        self.worker: PathWorker | None = None

    def start(self, worker: PathWorker) -> None:
        self.worker = worker

    def map(self, jobs: Sequence[PathJob]) -> Iterator[PathJobResult]:
        for job in jobs:
            if self.worker is None:
                raise ConfigError("the in-process executor was not started (Search.run starts it)")
            yield self.worker.run(job)

    def close(self) -> None:
        self.worker = None


def executor_for(run: RunConfig, plugins: Plugins | None = None) -> Executor:
    """The executor ``run.executor`` names: the core's in-process one, or a plugin's."""
    cfg = run.executor
    if cfg.name == InProcessExecutor.name:
        return InProcessExecutor()
    registry = (plugins or get_plugins()).executors
    if cfg.name not in registry.names():
        raise ConfigError(f"unknown executor {cfg.name!r}; valid: {available([InProcessExecutor.name, *registry.names()])}"
                          " (ray needs pip install 'codenn[ray]')")
    return registry.build(cfg.name, run, address=cfg.address, workers=cfg.workers,
                          threads_per_worker=cfg.threads_per_worker, retries=cfg.retries)
