"""The default executor: every path job in the search's own process, one after the other.

Other executors (``codenn search --executor ray``) come from plugins through the
``codenn_register_executors`` hook; they run the same :class:`~codenn.pathjob.PathJob` s on
workers of their own, so the rows, links and selection do not depend on where the jobs ran.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from codenn.errors import ConfigError, available
from codenn.pathjob import PathJob, PathJobResult, PathWorker
from codenn.plugins import Plugins, get_plugins
from codenn.protocols import Executor

if TYPE_CHECKING:
    from codenn.config import RunConfig


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


@dataclass(frozen=True)
class ExecutorConfig:
    """``[executor]`` of a run configuration: where the search's jobs run. Not part of the run's
    hash: a run directory written by one executor resumes on another."""

    name: str = "inprocess"
    address: str | None = None
    workers: int | None = None
    threads_per_worker: int = 1
    retries: int = 2

    def __post_init__(self) -> None:
        if self.workers is not None and self.workers < 1:
            raise ConfigError(f"[executor] workers must be >= 1, got {self.workers}")
        if self.threads_per_worker < 1 or self.retries < 0:
            raise ConfigError(f"[executor] needs threads_per_worker >= 1 and retries >= 0, got "
                              f"{self.threads_per_worker} and {self.retries}")


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
