"""A search's path jobs on Ray actors: ``codenn search --executor ray [--address A] [--workers N]``.

Why actors and not tasks or Tune trials: a worker's set-up (loading every service from cached
weights, checking fingerprints, computing the frozen prefixes' feature caches) costs far more
than one job, so each actor sets up once and then takes jobs one at a time; the search keeps
its own rungs (screening, the cost bound, successive halving), each rung waiting for its jobs.
Jobs go to whichever actor is free, in the order the search gives them.

What crosses the wire: the run's configuration (base-model *specs*, never a model), the
fingerprints and data digest every worker must reproduce, and per job the links' state as
safetensors bytes. A worker loads the services from its node's model cache (``$CODENN_CACHE``)
and never trains a base model; missing weights, another fingerprint, other data or another
codenn are errors that name the worker's host.

A worker that dies (its process killed, its node lost) costs the job it was running: the job is
sent again to a fresh actor, up to ``retries`` times. Results come back to the search's own
process, which alone writes the run directory, so the directory is the same whichever executor
ran the jobs.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from codenn import hookimpl
from codenn.config.run import RunConfig, from_dict
from codenn.contracts.registry import Register
from codenn.errors import CodennError, ConfigError, ExecutorError
from codenn.search.jobs import PathJob, PathJobResult, PathWorker, WorkerExpectations, worker_name
from codenn_adapters.ray_support import import_ray

SETUP_TIMEOUT_S = 600.0
"""How long worker set-up (loading services, feature caches) may take before the run gives up."""


class ClusterUnreachableError(ExecutorError):
    """No Ray cluster answers at the address given."""


class WorkerSetupError(ExecutorError):
    """A worker could not be set up: codenn missing on its node, or its node's services or data
    differ from the search's."""


class WorkerLostError(ExecutorError):
    """A job's workers kept dying past the retries allowed."""


def check_reachable(address: str, timeout: float = 3.0) -> None:
    """Fail fast, with the address in the message, when nothing listens there (Ray itself would
    retry for a minute and then print a stack of gRPC errors)."""
    if address in ("auto", "local"):
        return
    target = address.split("://", 1)[-1]
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"Ray address {address!r} is not HOST:PORT (or ray://HOST:PORT, or 'auto')")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as exc:
        raise ClusterUnreachableError(f"no Ray cluster answers at {address!r}: {exc}; start one with "
                                      "`ray start --head` or leave --address out to start a local one") from None


class SearchWorkerActor:
    """One Ray actor: a :class:`~codenn.search.jobs.PathWorker` built from the run's configuration."""

    def __init__(self, run: dict[str, Any], expected: WorkerExpectations, threads: int) -> None:
        import torch

        torch.set_num_threads(threads)
        self.where = worker_name()
        try:
            self.worker = PathWorker.from_run(from_dict(run), name=self.where)
            self.worker.check(expected)
            self.error: str | None = None
        except CodennError as exc:  # reported by ready(), so that the driver names this host
            self.error = f"{type(exc).__name__}: {exc}"

    def ready(self) -> dict[str, Any]:
        return {"worker": self.where, "pid": os.getpid(), "error": self.error}

    def run(self, job: PathJob) -> PathJobResult:
        if self.error is not None:
            raise WorkerSetupError(f"worker {self.where} was not set up: {self.error}")
        return self.worker.run(job)


class RayExecutor:
    """Runs a search's jobs on ``workers`` Ray actors of ``threads_per_worker`` CPUs each, on the
    cluster at ``address`` or on a local one started for the run."""

    name = "ray"

    def __init__(self, run: RunConfig, *, address: str | None = None, workers: int | None = None,
                 threads_per_worker: int = 1, retries: int = 2, log: Callable[[str], None] = print) -> None:
        self._ray: Any = import_ray("codenn search --executor ray")  # before any base model is trained
        self.run_config, self.address, self.workers = run, address, workers
        self.threads, self.retries, self.log = threads_per_worker, retries, log
        self.actors: list[Any] = []
        self.retried: list[str] = []
        self._owns_ray = False
        self._started = False
        self.setup_seconds = 0.0
        """Cluster start (or connection) and every worker's set-up, in seconds."""

    # -- life cycle ---------------------------------------------------------------------------
    def start(self, worker: PathWorker) -> None:
        t0 = time.perf_counter()
        ray = self._ray
        self._started = True
        if self.address:
            check_reachable(self.address)
        if not ray.is_initialized():
            options: dict[str, Any] = {"include_dashboard": False, "logging_level": "ERROR", "log_to_driver": False}
            if self.address:
                options["address"] = self.address
            else:
                options["num_cpus"] = (self.workers or max(1, (os.cpu_count() or 1) // self.threads)) * self.threads
            try:
                ray.init(**options)
            except Exception as exc:  # Ray raises ConnectionError, RuntimeError, ... depending on version
                where = repr(self.address) if self.address else "a local Ray cluster"
                raise ClusterUnreachableError(f"could not connect to {where}: {type(exc).__name__}: {exc}") from None
            self._owns_ray = True
        count = self.workers or max(1, int(ray.cluster_resources().get("CPU", 1)) // self.threads)
        run = dataclasses.replace(self.run_config, search=worker.config).to_dict()
        self._spawn_args = (run, worker.expectations(), self.threads)
        self._actor_cls = ray.remote(num_cpus=self.threads, max_restarts=0, max_task_retries=0)(SearchWorkerActor)
        self.actors = [self._spawn() for _ in range(count)]
        for info in self._get([a.ready.remote() for a in self.actors], "setting up workers"):
            if info["error"]:
                raise WorkerSetupError(f"worker {info['worker']} of the Ray cluster {self._where()} cannot search: "
                                       f"{info['error']}")
        self.setup_seconds = time.perf_counter() - t0
        self.log(f"  {count} Ray worker(s) ready on {self._where()} ({self.threads} thread(s) each)")

    def _where(self) -> str:
        return repr(self.address) if self.address else "a local cluster"

    def _spawn(self) -> Any:
        return self._actor_cls.remote(*self._spawn_args)

    def _get(self, refs: Any, what: str) -> Any:
        """``ray.get`` with the failures a user can act on turned into errors that say so."""
        ray = self._ray
        try:
            return ray.get(refs, timeout=SETUP_TIMEOUT_S)
        except ray.exceptions.GetTimeoutError:
            raise WorkerSetupError(f"{what} on {self._where()} took over {SETUP_TIMEOUT_S:.0f} s") from None
        except ray.exceptions.RayActorError as exc:
            text = str(exc)
            if "ModuleNotFoundError" in text or "No module named" in text:
                raise WorkerSetupError(f"codenn is not importable on the Ray cluster {self._where()}: install it on every "
                                       f"node (pip install 'codenn[ray]'); the worker said: {_last_line(text)}") from None
            raise WorkerSetupError(f"{what} on {self._where()} failed: {_last_line(text)}") from None

    def close(self) -> None:
        ray = self._ray
        if not self._started:
            return
        for actor in self.actors:
            try:
                ray.kill(actor)
            except Exception:  # already dead: nothing to release
                pass
        self.actors = []
        if self._owns_ray:
            ray.shutdown()
            self._owns_ray = False

    def worker_pids(self) -> list[int]:
        """The process id of every live worker (a test kills one)."""
        return [info["pid"] for info in self._get([a.ready.remote() for a in self.actors], "asking workers")]

    # -- jobs ---------------------------------------------------------------------------------
    def map(self, jobs: Sequence[PathJob]) -> Iterator[PathJobResult]:
        if not jobs:
            return
        ray = self._ray
        if not self.actors:
            raise ConfigError("the Ray executor was not started (Search.run starts it)")
        queue: deque[PathJob] = deque(jobs)
        idle = list(range(len(self.actors)))
        pending: dict[Any, tuple[int, PathJob]] = {}
        attempts: dict[str, int] = {}
        while queue or pending:
            while queue and idle:
                slot, job = idle.pop(0), queue.popleft()
                pending[self.actors[slot].run.remote(job)] = (slot, job)
            (ref,), _ = ray.wait(list(pending), num_returns=1)
            slot, job = pending.pop(ref)
            try:
                result = ray.get(ref)
            except ray.exceptions.RayActorError as exc:
                attempts[job.spec] = attempts.get(job.spec, 0) + 1
                if attempts[job.spec] > self.retries:
                    raise WorkerLostError(f"job {job.describe()} lost its worker {attempts[job.spec]} times "
                                          f"(retries = {self.retries}): {_last_line(str(exc))}") from None
                self.retried.append(job.spec)
                self.log(f"  a Ray worker died running {job.describe()}; running it again on a new worker")
                self.actors[slot] = self._spawn()
                queue.appendleft(job)
                idle.append(slot)
                continue
            except ray.exceptions.RayTaskError as exc:
                cause = getattr(exc, "cause", None)
                if isinstance(cause, CodennError):
                    raise cause from None
                raise ExecutorError(f"job {job.describe()} failed on a Ray worker: {_last_line(str(exc))}") from None
            idle.append(slot)
            yield result


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else text


def ray_executor(run: RunConfig, *, address: str | None = None, workers: int | None = None, threads_per_worker: int = 1,
                 retries: int = 2) -> RayExecutor:
    """The ``ray`` executor's factory (``[executor] name = "ray"``)."""
    return RayExecutor(run, address=address, workers=workers, threads_per_worker=threads_per_worker, retries=retries)


@hookimpl
def codenn_register_executors(register: Register[Callable[..., RayExecutor]]) -> None:
    register("ray", ray_executor,
             description="path jobs on Ray actors (a local cluster, or --address); pip install 'codenn[ray]'")
