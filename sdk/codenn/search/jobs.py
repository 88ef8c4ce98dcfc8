"""One unit of search work as plain data, and the worker that does it.

Why: the search runs the same work in this process or on other machines (issue 14). A
:class:`PathJob` names its path by spec and carries the links' training state as safetensors
bytes, so a worker rebuilds the path over its *own* copies of the services (loaded from cached
weights and checked by fingerprint): no provider's model is ever sent from one process to
another. Any worker gives the same numbers for a job: links are seeded per path, batches come
from the path's own generator, and the optimizer's and the generator's states travel with it.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors

from codenn.config.train import TrainConfig
from codenn.contracts.plugins import Plugins, get_plugins
from codenn.errors import ConfigError, FrozenParameterError
from codenn.model.profile import resolve_device
from codenn.model.service import Service
from codenn.paths.composed import ComposedPath
from codenn.train.data import Splits, tensors
from codenn.train.features import FeatureCache
from codenn.train.lstsq import init_path_links
from codenn.train.screener import Screener
from codenn.train.trainer import LinkTrainer, accuracy, path_seed

if TYPE_CHECKING:
    from codenn.config.run import RunConfig
    from codenn.config.search import SearchConfig


@dataclass(frozen=True)
class PathJob:
    """Work on one path: screen it, or train it some epochs (and measure it).

    ``state`` is what the path's previous job returned (:attr:`PathJobResult.state`); without it
    the links start from their per-path seed. ``screen`` fits the links by least squares (or
    leaves them at their seed with ``train.ls_init = false``) and measures validation accuracy,
    without training: the fast strategy's screening. Otherwise ``ls_init`` fits the links first
    (a path's first training job), ``epochs`` are trained, and validation accuracy (and test
    accuracy with ``test``) is measured after.
    """

    spec: str
    screen: bool = False
    ls_init: bool = False
    epochs: int = 0
    test: bool = False
    state: bytes | None = None

    def __post_init__(self) -> None:
        if self.epochs < 0 or (self.screen and (self.epochs or self.ls_init)):
            raise ConfigError(f"a path job screens or trains, with epochs >= 0; got {self.describe()}")

    def describe(self) -> str:
        what = "screen" if self.screen else f"{'least squares + ' if self.ls_init else ''}{self.epochs} epoch(s)"
        return f"{self.spec} ({what}{', test' if self.test else ''})"


@dataclass(frozen=True)
class PathJobResult:
    """What a worker measured, and the path's state to continue from."""

    spec: str
    val_accuracy: float
    test_accuracy: float | None
    ls_accuracy: float | None
    ls_initialised: tuple[bool, ...]
    epochs: int
    train_samples: int
    state: bytes
    fingerprints: Mapping[str, str]
    worker: str
    seconds: float


@dataclass(frozen=True)
class WorkerExpectations:
    """What every worker must reproduce before it may work on the search: the services'
    fingerprints (their public cards carry them), the data's digest and the search
    configuration's hash."""

    fingerprints: Mapping[str, str]
    data_digest: str
    search_hash: str


def data_digest(splits: Splits) -> str:
    """SHA-256 of every split's inputs and labels: two workers search the same data or neither works."""
    digest = hashlib.sha256()
    for part in ("train", "val", "test"):
        x, y = tensors(getattr(splits, part))
        for t in (x, y):
            digest.update(str((part, t.dtype, tuple(t.shape))).encode())
            digest.update(t.contiguous().numpy().tobytes())
    return digest.hexdigest()


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class PathWorker:
    """Holds a search's services, data and feature caches, and runs :class:`PathJob` s on them.

    The search's own process has one (the in-process executor runs every job on it); a remote
    executor builds one per worker process from the run's configuration and cached weights.
    """

    def __init__(self, services: Mapping[str, Service], splits: Splits, config: SearchConfig, *,
                 local: str, plugins: Plugins | None = None, name: str | None = None) -> None:
        self.services, self.splits, self.config, self.local = dict(services), splits, config, local
        self.plugins = plugins or get_plugins()
        self.name = name or worker_name()
        self.device = resolve_device(config.train.device)
        for s in self.services.values():
            s.to(self.device)
        self.fingerprints = {n: s.fingerprint() for n, s in self.services.items()}
        self.labels: dict[str, torch.Tensor] = {}
        self.caches: dict[str, FeatureCache] = {}
        for part in ("train", "val", "test"):
            x, y = tensors(getattr(splits, part))
            shape = self.services[local].input_spec.shape
            if tuple(x.shape[1:]) != shape:
                raise ConfigError(f"{part} inputs have shape {tuple(x.shape[1:])}; local service {local!r} expects {shape}")
            self.labels[part] = y
            self.caches[part] = FeatureCache(self.services, x.to(self.device))
        self._screener: Screener | None = None
        self._digest: str | None = None

    @classmethod
    def from_run(cls, run: RunConfig, *, name: str | None = None) -> PathWorker:
        """A worker over the services ``run`` describes, loaded from this machine's model cache
        (never trained here: :class:`~codenn.errors.MissingWeightsError` names the file), for an
        executor's remote worker. Call :meth:`check` before its first job."""
        from codenn.train.scenario import scenario_from_config

        sc = scenario_from_config(run, log=lambda _m: None, train_missing=False)
        return cls(sc.services, sc.splits, run.search, local=sc.local.name, name=name)

    # -- checks -------------------------------------------------------------------------------
    @property
    def data_digest(self) -> str:
        if self._digest is None:
            self._digest = data_digest(self.splits)
        return self._digest

    def expectations(self) -> WorkerExpectations:
        return WorkerExpectations(dict(self.fingerprints), self.data_digest, self.config.hash())

    def check(self, expected: WorkerExpectations, where: str = "") -> None:
        """Refuse to work on services or data other than the search's, naming which and where."""
        at = f" on worker {where or self.name}"
        if self.config.hash() != expected.search_hash:
            raise ConfigError(f"the search configuration{at} differs from the search's (hash {self.config.hash()} != "
                              f"{expected.search_hash}): is codenn the same version on every node?")
        for name, fp in expected.fingerprints.items():
            if name not in self.fingerprints:
                raise ConfigError(f"service {name!r} is missing{at}; it has {sorted(self.fingerprints)}")
            if self.fingerprints[name] != fp:
                raise FrozenParameterError(
                    f"service {name!r}{at} has fingerprint {self.fingerprints[name][:12]}…, the search's is {fp[:12]}…: "
                    "its cached weights are not the ones the search was started with")
        if self.data_digest != expected.data_digest:
            raise ConfigError(f"the data set {self.splits.name!r}{at} differs from the search's "
                              f"(digest {self.data_digest[:12]}… != {expected.data_digest[:12]}…)")

    # -- work ---------------------------------------------------------------------------------
    def build(self, spec: str) -> ComposedPath:
        """The path with its links at their per-path seed (the same on every worker)."""
        cfg = self.config
        torch.manual_seed(path_seed(cfg.train.seed, spec))
        path = ComposedPath(spec, self.services, link=cfg.link, link_options=cfg.link_options, plugins=self.plugins)
        return path.to(self.device)

    def trainer(self, path: ComposedPath) -> LinkTrainer:
        teacher = self.caches["train"].get(self.local, self.services[self.local].num_blocks) if self.config.train.distill\
            else None
        # the trainer's own before/after hashing is left out: run() checks every service of the
        # path after every job against the fingerprints taken when this worker was set up
        return LinkTrainer(path, self.config.train, self.caches["train"], self.labels["train"], teacher,
                           check_frozen=False)

    def accuracy(self, path: ComposedPath, part: str) -> float:
        return accuracy(path, self.caches[part], self.labels[part], device=str(self.device))

    def run(self, job: PathJob) -> PathJobResult:
        t0 = time.perf_counter()
        train: TrainConfig = self.config.train
        path = self.build(job.spec)
        trainer: LinkTrainer | None = None
        flags: tuple[bool, ...] = ()
        epochs = samples = 0
        if job.state is not None:
            trainer, epochs, samples, flags = restore(job.state, path, self)
        ls_accuracy: float | None = None
        if job.screen:
            if train.ls_init:
                if self._screener is None:
                    self._screener = Screener(self.caches["train"], self.caches["val"], self.labels["val"],
                                              samples=train.ls_samples, ridge=train.ls_ridge)
                fitted, ls_accuracy = self._screener.screen(path)
                flags = tuple(fitted)
            else:
                ls_accuracy = self.accuracy(path, "val")
            val = ls_accuracy
        else:
            if job.ls_init and train.ls_init:
                flags = tuple(init_path_links(path, self.caches["train"], train.ls_samples, train.ls_ridge))
            if job.epochs:
                if trainer is None:
                    trainer = self.trainer(path)
                trainer.epochs_done, trainer.samples_seen = epochs, samples
                trainer.train_epochs(job.epochs)
                epochs, samples = trainer.epochs_done, trainer.samples_seen
            val = self.accuracy(path, "val")
        test = self.accuracy(path, "test") if job.test else None
        now = {n: self.services[n].fingerprint() for n in path.services}
        changed = [n for n in now if now[n] != self.fingerprints[n]]
        if changed:
            raise FrozenParameterError(f"job {job.describe()} on worker {self.name} changed frozen services {changed}")
        return PathJobResult(job.spec, val, test, ls_accuracy, flags, epochs, samples,
                             snapshot(path, trainer, epochs, samples, flags), now, self.name,
                             time.perf_counter() - t0)


# -- the state a path's next job continues from -----------------------------------------------------
def snapshot(path: ComposedPath, trainer: LinkTrainer | None, epochs: int, samples: int, flags: tuple[bool, ...]) -> bytes:
    """Links, optimizer moments and the batch generator as safetensors bytes (no pickle)."""
    out = {f"links.{k}": v.detach().cpu().clone().contiguous() for k, v in path.links.state_dict().items()}
    if trainer is not None:
        out["generator"] = trainer.generator.get_state()
        if trainer.optimizer is not None:
            for i, state in trainer.optimizer.state_dict()["state"].items():
                for key, value in state.items():
                    t = value if isinstance(value, torch.Tensor) else torch.tensor(value)
                    out[f"opt.{i}.{key}"] = t.detach().cpu().clone().contiguous()
    meta = {"epochs": str(epochs), "samples": str(samples), "ls_initialised": json.dumps(list(flags)),
            "trainer": str(trainer is not None)}
    return save_tensors(out, metadata=meta)


def state_links(state: bytes) -> dict[str, torch.Tensor]:
    """The link tensors of a job's state, keyed as ``path.links.state_dict()``."""
    return {k[len("links."):]: v for k, v in load_tensors(state).items() if k.startswith("links.")}


def restore(state: bytes, path: ComposedPath, worker: PathWorker) -> tuple[LinkTrainer | None, int, int, tuple[bool, ...]]:
    """Load ``state`` into ``path``; rebuild its trainer where the state had one."""
    data = load_tensors(state)
    meta = _metadata(state)
    path.links.load_state_dict(state_links(state))
    trainer: LinkTrainer | None = None
    if meta.get("trainer") == "True":
        trainer = worker.trainer(path)
        trainer.generator.set_state(data["generator"])
        if trainer.optimizer is not None:
            groups = trainer.optimizer.state_dict()["param_groups"]
            opt: dict[int, dict[str, torch.Tensor]] = {}
            for key, value in data.items():
                if key.startswith("opt."):
                    _, i, name = key.split(".", 2)
                    opt.setdefault(int(i), {})[name] = value
            trainer.optimizer.load_state_dict({"state": opt, "param_groups": groups})
    return trainer, int(meta.get("epochs", 0)), int(meta.get("samples", 0)), tuple(json.loads(meta.get("ls_initialised", "[]")))


def _metadata(state: bytes) -> dict[str, str]:
    """The ``__metadata__`` of safetensors bytes (8-byte little-endian header length, JSON header)."""
    size = int.from_bytes(state[:8], "little")
    header: dict[str, Any] = json.loads(state[8 : 8 + size])
    meta: dict[str, str] = header.get("__metadata__", {})
    return meta
