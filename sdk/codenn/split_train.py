"""Cross paths split across providers: inference and link training through a Transport.

The local provider holds its own service and its labels; the host holds its blocks and the
path's two links (entry and exit, paper Section III-C) behind a :class:`codenn.transport.Transport`.
Only the paper's shape is supported, ``local[..lout] > host[hin..hout] > local[lin..]``:

- forward: the local provider runs its frozen prefix and sends the boundary activations; the
  host runs entry link, its frozen blocks, exit link and returns the result; the local provider
  finishes with its frozen suffix and computes the loss with labels it never sends;
- backward: the local provider sends dL/d(host output); the host back-propagates into its own
  links and steps its own AdamW (back-propagation stops after the entry link).

Nothing else crosses: no parameters either way, no labels. With the same seed, batches and
optimizer settings this computes the same updates as :class:`codenn.train.LinkTrainer` on the
whole path in one process (AdamW is per parameter), which the tests check.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from codenn.errors import ConfigError, FrozenParameterError
from codenn.pathspec import PathSpec
from codenn.service import Service, ServiceCard
from codenn.train import FeatureCache, TrainConfig, path_seed
from codenn.transport import HostReply, Transport


@dataclass(frozen=True)
class RemoteSegment:
    """What the local side knows about a host's served segment, all from its public metadata."""

    model: str
    spec: PathSpec
    host_card: ServiceCard
    lout: int
    lin: int
    lr: float | None
    weight_decay: float | None

    @classmethod
    def discover(cls, transport: Transport, model: str, local: Service, spec: PathSpec | str | None = None
                 ) -> RemoteSegment:
        """Read ``model``'s metadata from the host and check it is a path through ``local``."""
        meta = transport.metadata(model)
        params = meta.get("parameters") or {}
        try:
            card = ServiceCard.from_json(params["service_card"])
            served = PathSpec.parse(params["path"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"host model {model!r} did not publish a codenn path and service card "
                              f"(parameters.path, parameters.service_card): {exc}") from exc
        sizes = {local.name: local.num_blocks, card.name: card.num_blocks}
        served = served.resolve(sizes)  # PathSpecError names a service that is neither local nor this host
        wanted = served if spec is None else (PathSpec.parse(spec) if isinstance(spec, str) else spec).resolve(sizes)
        if str(wanted) != str(served):
            raise ConfigError(f"host model {model!r} serves {str(served)!r}, not {str(wanted)!r}")
        visit = served.one_host_visit(sizes, local=local.name, host=card.name)
        for key, got in (("input", local.card.output_of(visit.lout)), ("output", local.card.input_of(visit.lin))):
            published = (meta.get(f"{key}s") or [{}])[0].get("shape")
            if published != [-1, *got.shape]:
                raise ConfigError(f"host model {model!r} publishes {key} shape {published}, but {local.name}'s "
                                  f"boundary there is {[-1, *got.shape]}")
        return cls(model, served, card, visit.lout, visit.lin, _float(params.get("lr")),
                   _float(params.get("weight_decay")))


def _float(v: object) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


class RemotePath:
    """Inference through a host: ``local[..lout]`` here, the host segment there, ``local[lin..]`` here."""

    def __init__(self, local: Service, transport: Transport, model: str, spec: PathSpec | str | None = None) -> None:
        self.local, self.transport = local, transport
        self.segment = RemoteSegment.discover(transport, model, local, spec)
        self.last_reply: HostReply | None = None

    @property
    def spec(self) -> PathSpec:
        return self.segment.spec

    def run_prefix(self, x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return self.local.run(x, 0, self.segment.lout + 1)

    def forward_after_prefix(self, h: torch.Tensor, timeout: float | None = None) -> torch.Tensor:
        """Send ``h`` to the host and finish locally; raises HostUnavailableError when it is down/slow."""
        reply = self.transport.infer(self.segment.model, h, timeout=timeout)
        self.last_reply = reply
        with torch.inference_mode():
            return self.local.run(reply.output.to(h.device), self.segment.lin)

    def __call__(self, x: torch.Tensor, timeout: float | None = None) -> torch.Tensor:
        return self.forward_after_prefix(self.run_prefix(x), timeout=timeout)


@dataclass
class SplitTrainer:
    """Trains a cross path's host-side links from the local side, through a transport.

    The counterpart of :class:`codenn.train.LinkTrainer` (same batches for the same seed and
    path, same loss); the optimizer lives on the host, with the host's ``lr``/``weight_decay``,
    which must equal ``config.lr``/``config.weight_decay``. ``train_cache`` needs only the local
    service. Communication and host compute times are summed per call for T_cm.
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
        self.generator = torch.Generator().manual_seed(path_seed(self.config.seed, str(self.segment.spec)))
        self.prefix = self.train_cache.get(self.local.name, self.segment.lout + 1)

    def _batches(self) -> Iterator[torch.Tensor]:
        order = torch.randperm(len(self.labels), generator=self.generator)
        for i in range(0, len(order), self.config.batch_size):
            yield order[i : i + self.config.batch_size]

    def train_step(self, h: torch.Tensor, y: torch.Tensor, teacher: torch.Tensor | None = None) -> float:
        """One split step on prefix outputs ``h`` and labels ``y`` (which stay here); returns the loss."""
        cfg = self.config
        step = self.steps
        reply = self.transport.train_forward(self.model, h, step, timeout=self.timeout)
        z = reply.output.to(h.device).requires_grad_(True)
        logits = self.local.run(z, self.segment.lin).float()
        loss = F.cross_entropy(logits, y)
        if cfg.distill and teacher is not None:
            t = cfg.temperature
            soft = F.log_softmax(teacher / t, dim=1)
            kd = F.kl_div(F.log_softmax(logits / t, dim=1), soft, log_target=True, reduction="batchmean")
            loss = (1 - cfg.distill) * loss + cfg.distill * kd * t * t
        (grad,) = torch.autograd.grad(loss, z)
        back = self.transport.train_backward(self.model, step, grad, timeout=self.timeout)
        self.steps += 1
        self.comm_s += reply.comm_s
        self.host_compute_s += reply.host_compute_s + back
        return float(loss.detach())

    def train_epochs(self, epochs: int) -> float:
        """Train ``epochs`` more epochs; returns the last epoch's mean loss."""
        device = torch.device(self.config.device)
        loss_sum, count = math.nan, 0
        for _ in range(epochs):
            loss_sum, count = 0.0, 0
            for idx in self._batches():
                teacher = self.teacher_logits[idx].to(device) if self.teacher_logits is not None else None
                loss = self.train_step(self.prefix[idx].to(device), self.labels[idx].to(device), teacher)
                loss_sum += loss * len(idx)
                count += len(idx)
                self.samples_seen += len(idx)
            self.epochs_done += 1
        if self.local.fingerprint() != self.fingerprint:
            raise FrozenParameterError(f"split training of {self.segment.spec} changed the local service {self.local.name!r}")
        return loss_sum / max(count, 1)

