"""Link training on frozen blocks.

Frozen means frozen: only link parameters reach the optimizer, services stay in eval mode, and
:class:`LinkTrainer` checks every service's SHA-256 fingerprint before and after training.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from codenn.config.train import TrainConfig
from codenn.errors import ConfigError, FrozenParameterError
from codenn.paths.composed import ComposedPath
from codenn.train.features import FeatureCache


def path_seed(seed: int, spec: str) -> int:
    """A per-path seed independent of the order in which paths are trained."""
    return (seed * 1_000_003 + zlib.crc32(spec.encode())) % (2**31)



@dataclass
class LinkTrainer:
    """Trains one path's links, step by step, so search strategies can train in rounds."""

    path: ComposedPath
    config: TrainConfig
    train_cache: FeatureCache
    labels: torch.Tensor
    teacher_logits: torch.Tensor | None = None
    epochs_done: int = 0
    samples_seen: int = 0
    # Fingerprint the services here and after every train_epochs call. Hashing a large model
    # (AlexNet: 57M parameters) takes about a second, so a caller training many short paths on
    # the same services may pass False and call Service.verify_frozen() itself once at the end.
    check_frozen: bool = True

    def __post_init__(self) -> None:
        params = list(self.path.trainable_parameters())
        frozen = {id(p) for s in self.path.services.values() for p in s.parameters()}
        if any(id(p) in frozen for p in params):
            raise FrozenParameterError(f"path {self.path.spec}: a service parameter was offered for training")
        self.fingerprints = {n: s.fingerprint() for n, s in self.path.services.items()} if self.check_frozen else {}
        self.optimizer = torch.optim.AdamW(params, lr=self.config.lr, weight_decay=self.config.weight_decay)\
            if params else None
        self.generator = torch.Generator().manual_seed(path_seed(self.config.seed, str(self.path.spec)))
        first = self.path.spec.segments[0]
        self.prefix = self.train_cache.get(self.path.spec.local, first.end(self.path.local.num_blocks))

    def _batches(self) -> Iterator[torch.Tensor]:
        order = torch.randperm(len(self.labels), generator=self.generator)
        for i in range(0, len(order), self.config.batch_size):
            yield order[i : i + self.config.batch_size]

    def train_epochs(self, epochs: int) -> float:
        """Train ``epochs`` more epochs; returns the last epoch's mean loss."""
        cfg = self.config
        device = torch.device(cfg.device)
        autocast = torch.autocast(device.type, dtype=torch.bfloat16) if cfg.use_amp() else nullcontext()
        loss_sum, count = math.nan, 0
        for _ in range(epochs):
            self.path.train()
            loss_sum, count = 0.0, 0
            for idx in self._batches():
                h = self.prefix[idx].to(device)
                y = self.labels[idx].to(device)
                with autocast:
                    logits = self.path.forward_after_prefix(h).float()
                loss = F.cross_entropy(logits, y)
                if cfg.distill and self.teacher_logits is not None:
                    t = cfg.temperature
                    teacher = F.log_softmax(self.teacher_logits[idx].to(device) / t, dim=1)
                    kd = F.kl_div(F.log_softmax(logits / t, dim=1), teacher, log_target=True, reduction="batchmean")
                    loss = (1 - cfg.distill) * loss + cfg.distill * kd * t * t
                if self.optimizer is not None:
                    self.optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    self.optimizer.step()
                loss_sum += float(loss.detach()) * len(idx)
                count += len(idx)
                self.samples_seen += len(idx)
            self.epochs_done += 1
        if self.check_frozen:
            self.verify_frozen()
        return loss_sum / max(count, 1)

    def verify_frozen(self) -> None:
        now = {n: s.fingerprint() for n, s in self.path.services.items()}
        changed = [n for n in now if now[n] != self.fingerprints[n]]
        if changed:
            raise FrozenParameterError(f"training path {self.path.spec} changed frozen services {changed}")


def accuracy(path: ComposedPath, cache: FeatureCache, labels: torch.Tensor, *, batch_size: int = 256,
             device: str = "cpu") -> float:
    """Top-1 accuracy of ``path`` on a cached split."""
    if len(labels) == 0:
        raise ConfigError("cannot measure accuracy on an empty split")
    first = path.spec.segments[0]
    prefix = cache.get(path.spec.local, first.end(path.local.num_blocks))
    path.eval()
    correct = 0
    with torch.inference_mode():
        for i in range(0, len(labels), batch_size):
            logits = path.forward_after_prefix(prefix[i : i + batch_size].to(device))
            correct += int((logits.argmax(1).cpu() == labels[i : i + batch_size]).sum())
    return correct / len(labels)
