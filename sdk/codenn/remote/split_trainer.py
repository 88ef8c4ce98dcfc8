"""Cross paths split across providers: inference and link training through a Transport.

The local provider holds its own service and its labels; the host holds its blocks and the
path's two links (entry and exit, paper Section III-C) behind a :class:`codenn.remote.transport.Transport`.
Only the paper's shape is supported, ``local[..lout] > host[hin..hout] > local[lin..]``:

- forward: the local provider runs its frozen prefix and sends the boundary activations; the
  host runs entry link, its frozen blocks, exit link and returns the result; the local provider
  finishes with its frozen suffix and computes the loss with labels it never sends;
- backward: the local provider sends dL/d(host output); the host back-propagates into its own
  links and steps its own AdamW (back-propagation stops after the entry link).

Nothing else crosses: no parameters either way, no labels. With the same seed, batches and
optimizer settings this computes the same updates as :class:`codenn.train.LinkTrainer` on the
whole path in one process (AdamW is per parameter), which the tests check.

Every host reply is checked (:func:`codenn.remote.transport.check_host_reply`) before it is used: a host
that answers the wrong shape or NaN is a failed host, not a source of silent garbage.

Training survives crashes on either side (:meth:`SplitTrainer.fit`): the host checkpoints its
links and optimizer (``codenn serve-host --save-dir --resume``), the trainer checkpoints its own
counters, and the batch of every step is a pure function of the seed and the step index, so a
restarted trainer asks the host which step it holds (``train_state``) and goes on from there.
A backward whose answer was lost is sent again; the host recognises it and does not apply it twice.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path as FsPath
from typing import Any, Protocol, runtime_checkable

import torch
import torch.nn.functional as F

from codenn.config.train import TrainConfig
from codenn.contracts.protocols import Transport
from codenn.errors import ConfigError, FrozenParameterError, HostRejectedError, HostUnavailableError
from codenn.model.service import Service
from codenn.paths.spec import PathSpec
from codenn.remote.leg import RemoteSegment
from codenn.remote.transport import check_host_reply
from codenn.train.features import FeatureCache
from codenn.train.trainer import path_seed

CHECKPOINT_FORMAT = "codenn-split-trainer/1"


@runtime_checkable
class ResumableTransport(Protocol):
    """A transport that can tell a provider which split-training step the host holds for it."""

    def train_state(self, model: str, timeout: float | None = None) -> dict[str, Any]:
        """``{"next_step": int, "steps_trained": int, ...}`` of the calling provider only."""
        ...


@dataclass
class SplitTrainer:
    """Trains a cross path's host-side links from the local side, through a transport.

    The counterpart of :class:`codenn.train.LinkTrainer` (same batches for the same seed and
    path, same loss); the optimizer lives on the host, with the host's ``lr``/``weight_decay``,
    which must equal ``config.lr``/``config.weight_decay``. ``train_cache`` needs only the local
    service. Communication and host compute times are summed per call for T_cm.

    ``steps`` counts this training run's steps; the host numbers them from ``step_base`` (the
    host's next step for this provider when the run began), so a host that served an earlier run
    never mistakes a new step for an old one. ``lost_steps`` counts steps done here that a host
    restart took back (at most its checkpoint interval).
    """

    local: Service
    transport: Transport
    model: str
    config: TrainConfig
    train_cache: FeatureCache
    labels: torch.Tensor
    spec: PathSpec | str | None = None
    teacher_logits: torch.Tensor | None = None
    timeout: float | None = None
    epochs_done: int = 0
    samples_seen: int = 0
    steps: int = 0
    comm_s: float = 0.0
    host_compute_s: float = 0.0
    step_base: int | None = None
    lost_steps: int = 0
    backward_retries: int = 0
    segment: RemoteSegment = field(init=False)

    def __post_init__(self) -> None:
        if self.config.use_amp():
            raise ConfigError("split training runs in float32: set TrainConfig(amp=False)")
        self.segment = RemoteSegment.discover(self.transport, self.model, self.local, self.spec)
        for name in ("lr", "weight_decay"):
            host, mine = getattr(self.segment, name), getattr(self.config, name)
            if host is not None and not math.isclose(host, mine, rel_tol=1e-9, abs_tol=0.0):
                raise ConfigError(f"the host trains {self.model!r} with {name}={host}, but this config says "
                                  f"{name}={mine}; make them equal (codenn serve-host --{name.replace('_', '-')})")
        if len(self.labels) != len(self.train_cache):
            raise ConfigError(f"{len(self.labels)} labels for {len(self.train_cache)} cached inputs")
        self.fingerprint = self.local.fingerprint()
        self.seed = path_seed(self.config.seed, str(self.segment.spec))
        self.prefix = self.train_cache.get(self.local.name, self.segment.lout + 1)
        self.expected = self.local.card.input_of(self.segment.lin)
        self.steps_per_epoch = max(1, math.ceil(len(self.labels) / self.config.batch_size))
        self._order: tuple[int, torch.Tensor] | None = None
        self._epoch_loss = [0.0, 0]

    # -- the schedule: a pure function of the seed and the step index ----------------------------
    def batch(self, index: int) -> torch.Tensor:
        """Sample indices of this run's step ``index`` (LinkTrainer's order: one randperm per epoch)."""
        epoch, j = divmod(index, self.steps_per_epoch)
        if self._order is None or self._order[0] != epoch:
            gen = torch.Generator().manual_seed(self.seed)
            for _ in range(epoch):
                torch.randperm(len(self.labels), generator=gen)
            self._order = (epoch, torch.randperm(len(self.labels), generator=gen))
        bs = self.config.batch_size
        return self._order[1][j * bs : (j + 1) * bs]

    # -- one step ------------------------------------------------------------------------------
    def _host_step(self) -> int:
        if self.step_base is None:
            self.step_base = self._host_next_step() or 0
        return self.step_base + self.steps

    def _host_next_step(self) -> int | None:
        if isinstance(self.transport, ResumableTransport):
            return int(self.transport.train_state(self.model, timeout=self.timeout)["next_step"])
        return None

    def train_step(self, h: torch.Tensor, y: torch.Tensor, teacher: torch.Tensor | None = None) -> float:
        """One split step on prefix outputs ``h`` and labels ``y`` (which stay here); returns the loss.

        A backward whose answer is lost (HostUnavailableError) is sent once more with the same
        gradient: the host answers it from its ledger if it had applied it."""
        cfg = self.config
        step = self._host_step()
        reply = self.transport.train_forward(self.model, h, step, timeout=self.timeout)
        check_host_reply(reply, self.expected, int(h.shape[0]), host=self.segment.host_card.name, model=self.model)
        z = reply.output.to(h.device).requires_grad_(True)
        logits = self.local.run(z, self.segment.lin).float()
        loss = F.cross_entropy(logits, y)
        if cfg.distill and teacher is not None:
            t = cfg.temperature
            soft = F.log_softmax(teacher / t, dim=1)
            kd = F.kl_div(F.log_softmax(logits / t, dim=1), soft, log_target=True, reduction="batchmean")
            loss = (1 - cfg.distill) * loss + cfg.distill * kd * t * t
        (grad,) = torch.autograd.grad(loss, z)
        try:
            back = self.transport.train_backward(self.model, step, grad, timeout=self.timeout)
        except HostUnavailableError:
            self.backward_retries += 1
            back = self.transport.train_backward(self.model, step, grad, timeout=self.timeout)
        self.steps += 1
        self.comm_s += reply.comm_s
        self.host_compute_s += reply.host_compute_s + back
        return float(loss.detach())

    def _run_step(self) -> None:
        device = torch.device(self.config.device)
        idx = self.batch(self.steps)
        teacher = self.teacher_logits[idx].to(device) if self.teacher_logits is not None else None
        loss = self.train_step(self.prefix[idx].to(device), self.labels[idx].to(device), teacher)
        self._epoch_loss[0] += loss * len(idx)
        self._epoch_loss[1] += len(idx)
        self.samples_seen += len(idx)

    # -- whole runs ------------------------------------------------------------------------------
    def train_epochs(self, epochs: int) -> float:
        """Train ``epochs`` more epochs; returns the last epoch's mean loss."""
        return self.fit(self.steps // self.steps_per_epoch + epochs)

    def fit(self, epochs: int, *, checkpoint: str | FsPath | None = None, checkpoint_every: int = 10,
            wait_for_host_s: float = 0.0) -> float:
        """Train until ``epochs`` epochs are done in all, resuming where ``checkpoint`` and the host
        say this run stands; returns the last epoch's mean loss (NaN if none ended here).

        With ``checkpoint``, the trainer's counters are written there (atomically) every
        ``checkpoint_every`` steps, on any failure and at the end. With ``wait_for_host_s`` > 0, a
        host that goes away (or restarts and no longer holds a pending step) is waited for that
        long; training then goes on from the step the host holds."""
        if epochs < 0 or checkpoint_every < 1 or wait_for_host_s < 0:
            raise ConfigError(f"epochs={epochs} must be >= 0, checkpoint_every={checkpoint_every} >= 1, "
                              f"wait_for_host_s={wait_for_host_s} >= 0")
        file = None if checkpoint is None else FsPath(checkpoint)
        if file is not None and file.exists():
            self._load(file)
        self._align()
        target, last = epochs * self.steps_per_epoch, math.nan
        try:
            while self.steps < target:
                try:
                    self._run_step()
                except (HostUnavailableError, HostRejectedError) as exc:
                    if isinstance(exc, HostRejectedError) and exc.status != 409 or wait_for_host_s <= 0:
                        raise
                    self._wait_for_host(wait_for_host_s, exc)
                    self._align()
                    continue
                if self.steps % self.steps_per_epoch == 0:
                    last = self._epoch_loss[0] / max(self._epoch_loss[1], 1)
                    self._epoch_loss = [0.0, 0]
                    self.epochs_done += 1
                if file is not None and self.steps % checkpoint_every == 0:
                    self.save(file)
        finally:
            if file is not None:
                self.save(file)
        if self.local.fingerprint() != self.fingerprint:
            raise FrozenParameterError(f"split training of {self.segment.spec} changed the local service {self.local.name!r}")
        return last

    def _wait_for_host(self, seconds: float, cause: Exception) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.transport.health():
                return
            time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))
        raise HostUnavailableError(f"host of {self.model!r} did not come back within {seconds} s after: {cause}")

    def _align(self) -> None:
        """Go on from the step the host holds for this run (a restarted host may hold fewer)."""
        host_next = self._host_next_step()
        if host_next is None:
            return
        if self.step_base is None:
            self.step_base = host_next - self.steps
        index = host_next - self.step_base
        if index < 0:
            raise ConfigError(f"the host holds step {host_next} of {self.model!r} for this provider, before this "
                              f"run's first step {self.step_base}: it resumed from an older checkpoint than this "
                              "run; start a fresh run (delete the trainer checkpoint)")
        if index != self.steps:
            self.lost_steps += max(0, self.steps - index)
            self.steps = index
            self.epochs_done = index // self.steps_per_epoch
            self._epoch_loss = [0.0, 0]

    # -- the trainer's own checkpoint ------------------------------------------------------------
    def _identity(self) -> dict[str, Any]:
        return {"format": CHECKPOINT_FORMAT, "model": self.model, "spec": str(self.segment.spec), "seed": self.seed,
                "batch_size": self.config.batch_size, "samples": len(self.labels)}

    def save(self, file: str | FsPath) -> None:
        """Write this trainer's counters atomically (JSON; no tensors: the links live on the host)."""
        from codenn.fileio import atomic_json

        atomic_json(file, {**self._identity(), "steps": self.steps, "step_base": self.step_base,
                           "epochs_done": self.epochs_done, "samples_seen": self.samples_seen, "comm_s": self.comm_s,
                           "host_compute_s": self.host_compute_s, "lost_steps": self.lost_steps,
                           "epoch_loss": self._epoch_loss})

    def _load(self, file: FsPath) -> None:
        try:
            data = json.loads(file.read_text())
        except (OSError, ValueError) as exc:
            raise ConfigError(f"trainer checkpoint {str(file)!r} cannot be read as JSON: {exc}") from None
        mine = self._identity()
        differ = {k: (data.get(k) if isinstance(data, dict) else None, v) for k, v in mine.items()
                  if not isinstance(data, dict) or data.get(k) != v}
        if differ:
            raise ConfigError(f"trainer checkpoint {str(file)!r} is of another run: (saved, now) = {differ}")
        self.steps, self.step_base = int(data["steps"]), data["step_base"]
        self.epochs_done, self.samples_seen = int(data["epochs_done"]), int(data["samples_seen"])
        self.comm_s, self.host_compute_s = float(data["comm_s"]), float(data["host_compute_s"])
        self.lost_steps, self._epoch_loss = int(data["lost_steps"]), list(data["epoch_loss"])
