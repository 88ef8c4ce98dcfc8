"""Where the search's path jobs run (``[executor]``)."""

from __future__ import annotations

from dataclasses import dataclass

from codenn.errors import ConfigError


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
