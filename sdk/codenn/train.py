"""Link training on frozen blocks: cached prefixes, least-squares initialisation, the trainer.

Frozen means frozen: only link parameters reach the optimizer, services stay in eval mode, and
:func:`train_path` checks every service's SHA-256 fingerprint before and after.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterator, Mapping
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from codenn.errors import ConfigError, FrozenParameterError
from codenn.paths import Path
from codenn.pathspec import Segment
from codenn.service import Service


@dataclass(frozen=True)
class TrainConfig:
    """How links are trained. ``epochs`` is the full budget a path gets."""

    epochs: int = 3
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.0
    distill: float = 0.0
    temperature: float = 2.0
    ls_init: bool = True
    ls_samples: int = 256
    ls_ridge: float = 1e-3
    device: str = "cpu"
    amp: bool | None = None
    seed: int = 0
    progress: bool = True

    def __post_init__(self) -> None:
        checks = {
            "epochs": self.epochs >= 1,
            "batch_size": self.batch_size >= 1,
            "lr": self.lr > 0,
            "weight_decay": self.weight_decay >= 0,
            "distill": 0 <= self.distill <= 1,
            "temperature": self.temperature > 0,
            "ls_samples": self.ls_samples >= 1,
            "ls_ridge": self.ls_ridge >= 0,
        }
        for name, ok in checks.items():
            if not ok:
                raise ConfigError(f"train option {name}={getattr(self, name)!r} is out of range")

    def use_amp(self) -> bool:
        return torch.device(self.device).type == "cuda" if self.amp is None else self.amp

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class FeatureCache:
    """Outputs of frozen service prefixes on a fixed set of inputs, computed once.

    ``get(service, stop)`` is ``service.run(inputs, 0, stop)``: the tensor block ``stop`` consumes.
    A longer prefix starts from the longest cached shorter one, so candidates that share a
    prefix share its forward pass.
    """

    def __init__(self, services: Mapping[str, Service], inputs: torch.Tensor, *, batch_size: int = 256) -> None:
        self.services = dict(services)
        self.inputs = inputs
        self.batch_size = batch_size
        self._cache: dict[tuple[str, int], torch.Tensor] = {}
        self.forward_samples = 0

    def __len__(self) -> int:
        return len(self.inputs)

    def get(self, service: str, stop: int) -> torch.Tensor:
        if stop == 0:
            return self.inputs
        key = (service, stop)
        if key not in self._cache:
            svc = self.services[service]
            done = max((s for (n, s) in self._cache if n == service and s < stop), default=0)
            start = self._cache[(service, done)] if done else self.inputs
            outs = []
            with torch.inference_mode():
                for i in range(0, len(start), self.batch_size):
                    outs.append(svc.run(start[i : i + self.batch_size], done, stop))
            self.forward_samples += len(start)
            self._cache[key] = torch.cat(outs)
        return self._cache[key]


def path_seed(seed: int, spec: str) -> int:
    """A per-path seed independent of the order in which paths are trained."""
    return (seed * 1_000_003 + zlib.crc32(spec.encode())) % (2**31)


# -- least-squares initialisation ---------------------------------------------------------------
def _single_layer(link: nn.Module) -> nn.Conv2d | nn.Linear | None:
    layers = [m for m in link.modules() if any(True for _ in m.parameters(recurse=False))]
    if len(layers) != 1 or not isinstance(layers[0], (nn.Conv2d, nn.Linear)):
        return None
    layer = layers[0]
    if isinstance(layer, nn.Conv2d) and (layer.groups != 1 or layer.padding_mode != "zeros"):
        return None
    return layer


def _capture(link: nn.Module, layer: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    seen: dict[str, torch.Tensor] = {}

    def hook(_m: nn.Module, args: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        seen["in"], seen["out"] = args[0], out

    handle = layer.register_forward_hook(hook)
    try:
        with torch.no_grad():
            y = link(x)
    finally:
        handle.remove()
    return seen["in"], seen["out"], y


def _design(layer: nn.Conv2d | nn.Linear, feats: torch.Tensor) -> torch.Tensor:
    """Rows = output positions, columns = the layer's receptive field (+1 for the bias).

    A Linear acts on the last dim, so every leading position (a token of (B, N, C), a pixel of
    channel-last (B, H, W, C)) is a row, as SN-Net fits its token stitching layers.
    """
    if isinstance(layer, nn.Linear):
        a = feats.reshape(-1, layer.in_features)
    else:
        cols = F.unfold(feats, layer.kernel_size, dilation=layer.dilation, padding=_padding(layer), stride=layer.stride)
        a = cols.transpose(1, 2).reshape(-1, cols.shape[1])
    return torch.cat([a, torch.ones(a.shape[0], 1, dtype=a.dtype, device=a.device)], dim=1).double()


def _padding(layer: nn.Conv2d) -> tuple[int, ...]:
    """A conv's padding as numbers: unfold takes no 'same' / 'valid'."""
    if not isinstance(layer.padding, str):
        return tuple(layer.padding)
    if layer.padding == "valid":
        return (0, 0)
    return tuple(d * (k - 1) // 2 for d, k in zip(layer.dilation, layer.kernel_size))


def _ridge(a: torch.Tensor, y: torch.Tensor, ridge: float) -> torch.Tensor:
    """Solve min ||a w - y||^2 + lam ||w||^2 in the primal or dual form, whichever is smaller."""
    rows, cols = a.shape
    if rows >= cols:
        gram = a.T @ a
        lam = ridge * gram.diagonal().mean().clamp_min(1e-12)
        primal: torch.Tensor = torch.linalg.solve(gram + lam * torch.eye(cols, dtype=a.dtype, device=a.device), a.T @ y)
        return primal
    gram = a @ a.T
    lam = ridge * gram.diagonal().mean().clamp_min(1e-12)
    dual: torch.Tensor = torch.linalg.solve(gram + lam * torch.eye(rows, dtype=a.dtype, device=a.device), y)
    return a.T @ dual


def least_squares_init(link: nn.Module, x: torch.Tensor, target: torch.Tensor, ridge: float = 1e-3) -> bool:
    """Fit a link's single linear layer so that ``link(x) ~ target`` (ridge least squares).

    Applies to links with exactly one parametric layer (Conv2d without groups, or Linear on the
    last dim of any rank) whose output is the link's output up to a reshape, as checked on ``x``;
    returns False otherwise, leaving the link untouched. Parameter-free modules before the layer
    (resampling, layout adapters: permute, reshape, prefix tokens) are fine: the fit sees the
    layer's own input, captured by a hook. The idea follows model-stitching work (SN-Net's
    ``ps_inv``).
    """
    layer = _single_layer(link)
    if layer is None:
        return False
    feats, out, y = _capture(link, layer, x)
    if out.numel() != y.numel() or not torch.equal(out.reshape(y.shape), y):
        return False  # something after the layer is not a pure reshape
    a = _design(layer, feats)
    if isinstance(layer, nn.Linear):
        t = target.reshape(-1, layer.out_features)
    else:
        t = target.reshape(out.shape).flatten(2).transpose(1, 2).reshape(-1, out.shape[1])
    if a.shape[0] != t.shape[0]:
        return False
    w = _ridge(a, t.double(), ridge)
    with torch.no_grad():
        weight, bias = w[:-1].T, w[-1]
        layer.weight.copy_(weight.reshape(layer.weight.shape).to(layer.weight.dtype))
        if layer.bias is not None:
            layer.bias.copy_(bias.to(layer.bias.dtype))
    return True


def init_path_links(path: Path, cache: FeatureCache, samples: int, ridge: float) -> list[bool]:
    """Least-squares-initialise each link in order on the first ``samples`` cached inputs.

    Link *i*'s target is what its destination block normally receives on the same inputs (that
    service's own prefix); earlier links are fitted first, so later ones see their real inputs.
    """
    n = min(samples, len(cache))
    first = path.spec.segments[0]
    h0 = cache.get(path.spec.local, first.end(path.local.num_blocks))[:n]
    done = []
    path.eval()
    for i, link in enumerate(path.links):
        dst = path.spec.segments[i + 1]
        with torch.no_grad():
            x = path.forward_after_prefix(h0, upto_link=i)
        done.append(least_squares_init(link, x, cache.get(dst.service, dst.start)[:n], ridge))
    return done


# -- training ----------------------------------------------------------------------------------
@dataclass
class LinkTrainer:
    """Trains one path's links, step by step, so search strategies can train in rounds."""

    path: Path
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
        self.optimizer = torch.optim.AdamW(params, lr=self.config.lr, weight_decay=self.config.weight_decay) \
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


def accuracy(path: Path, cache: FeatureCache, labels: torch.Tensor, *, batch_size: int = 256,
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


class Screener:
    """Least-squares-initialise and evaluate many candidate paths, sharing work between them.

    Paths that share a prefix (the same segments and link factories up to link *i*) get the same
    least-squares fit for link *i* (the fit overwrites the random initialisation), so the fit and
    the activations after the following frozen segment are computed once and reused, e.g. by
    every cross path with the same ``lout`` and ``hin`` whatever its ``hout`` and ``lin``.
    """

    def __init__(self, train_cache: FeatureCache, val_cache: FeatureCache, val_labels: torch.Tensor, *,
                 samples: int = 256, ridge: float = 1e-3, batch_size: int = 256) -> None:
        self.train_cache, self.val_cache, self.val_labels = train_cache, val_cache, val_labels
        self.samples, self.ridge, self.batch_size = min(samples, len(train_cache)), ridge, batch_size
        self._fits: dict[tuple[Any, ...], tuple[dict[str, torch.Tensor], bool]] = {}
        self._acts: dict[tuple[Any, ...], tuple[torch.Tensor, torch.Tensor]] = {}

    def _batched(self, fn: Any, x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return torch.cat([fn(x[i : i + self.batch_size]) for i in range(0, len(x), self.batch_size)])

    def screen(self, path: Path) -> tuple[list[bool], float]:
        """Fit ``path``'s links in place; return which were fitted and the validation accuracy."""
        segs, factories = path.spec.segments, path.link_factories
        n = self.samples
        calib = self.train_cache.get(path.spec.local, segs[0].end(path.local.num_blocks))[:n]
        val = self.val_cache.get(path.spec.local, segs[0].end(path.local.num_blocks))
        shared, flags = True, []
        path.eval()
        for i, link in enumerate(path.links):
            dst = segs[i + 1]
            service = path.services[dst.service]
            stop = dst.end(service.num_blocks)
            fit_key = (segs[: i + 1], dst.service, dst.start, factories[: i + 1])
            if shared and fit_key in self._fits:
                state, ok = self._fits[fit_key]
                link.load_state_dict(state)
            else:
                with torch.no_grad():
                    ok = least_squares_init(link, calib, self.train_cache.get(dst.service, dst.start)[:n], self.ridge)
                if shared and ok:
                    self._fits[fit_key] = ({k: v.clone() for k, v in link.state_dict().items()}, ok)
            flags.append(ok)
            shared = shared and ok
            act_key = (fit_key, stop)
            if shared and act_key in self._acts:
                calib, val = self._acts[act_key]
                continue

            def run(x: torch.Tensor, link: nn.Module = link, service: Service = service, dst: Segment = dst,
                    stop: int = stop) -> torch.Tensor:
                return service.run(link(x), dst.start, stop)

            calib, val = self._batched(run, calib), self._batched(run, val)
            if shared and i < len(path.links) - 1:
                self._acts[act_key] = (calib, val)
        return flags, int((val.argmax(1).cpu() == self.val_labels).sum()) / len(self.val_labels)
