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
    """(input of ``layer``, output of ``layer``, output of ``link``) on ``x``."""
    return _capture_between(link, layer, layer, x)


def _capture_between(
    link: nn.Module, first: nn.Module, last: nn.Module, x: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(input of ``first``, output of ``last``, output of ``link``) on ``x``."""
    seen: dict[str, torch.Tensor] = {}

    def take_in(_m: nn.Module, args: tuple[torch.Tensor, ...], _out: torch.Tensor) -> None:
        seen["in"] = args[0]

    def take_out(_m: nn.Module, _args: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        seen["out"] = out

    handles = [first.register_forward_hook(take_in), last.register_forward_hook(take_out)]
    try:
        with torch.no_grad():
            y = link(x)
    finally:
        for handle in handles:
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


def _rows(layer: nn.Conv2d | nn.Linear, t: torch.Tensor) -> torch.Tensor:
    """A layer's output (or a tensor of its shape) as rows = positions, columns = channels."""
    if isinstance(layer, nn.Linear):
        return t.reshape(-1, layer.out_features)
    return t.flatten(2).transpose(1, 2).reshape(-1, t.shape[1])


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


def _fit_single(link: nn.Module, layer: nn.Conv2d | nn.Linear, x: torch.Tensor, target: torch.Tensor,
                ridge: float) -> bool:
    feats, out, y = _capture(link, layer, x)
    if out.numel() != y.numel() or not torch.equal(out.reshape(y.shape), y):
        return False  # something after the layer is not a pure reshape
    if target.numel() != out.numel():
        return False
    a = _design(layer, feats)
    t = _rows(layer, target.reshape(out.shape))
    if a.shape[0] != t.shape[0]:
        return False
    w = _ridge(a, t.double(), ridge)
    with torch.no_grad():
        weight, bias = w[:-1].T, w[-1]
        layer.weight.copy_(weight.reshape(layer.weight.shape).to(layer.weight.dtype))
        if layer.bias is not None:
            layer.bias.copy_(bias.to(layer.bias.dtype))
    return True


# Two-layer links: first layer -> [BatchNorm] -> [ReLU] -> second layer, in one nn.Sequential.
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d)
_TWO_LAYER_RTOL = 1e-4  # link(x) after the fit vs the factorised prediction, relative Frobenius


@dataclass(frozen=True)
class _TwoLayer:
    first: nn.Conv2d | nn.Linear
    second: nn.Conv2d | nn.Linear
    middle: tuple[nn.Module, ...]  # ReLU, Identity, BatchNorm (at most one each of ReLU, BN)

    @property
    def width(self) -> int:
        return self.first.out_channels if isinstance(self.first, nn.Conv2d) else self.first.out_features

    @property
    def relu(self) -> bool:
        return any(isinstance(m, nn.ReLU) for m in self.middle)

    @property
    def norm(self) -> nn.BatchNorm1d | nn.BatchNorm2d | None:
        return next((m for m in self.middle if isinstance(m, _NORMS)), None)


def _same_size_conv(conv: nn.Conv2d) -> bool:
    """Stride 1, odd kernel, 'same' zero padding: output position p reads middle position p."""
    kernel, dilation = conv.kernel_size, conv.dilation
    padding = _padding(conv)
    return (
        conv.groups == 1 and conv.padding_mode == "zeros" and tuple(conv.stride) == (1, 1)
        and all(k % 2 == 1 for k in kernel)
        and tuple(padding) == tuple(d * (k // 2) for d, k in zip(dilation, kernel))
    )


def _two_layers(link: nn.Module) -> _TwoLayer | None:
    """``link``'s two linear layers and what lies between them, or None for any other structure."""
    params = [m for m in link.modules() if any(True for _ in m.parameters(recurse=False))]
    layers = [m for m in params if isinstance(m, (nn.Conv2d, nn.Linear))]
    if len(layers) != 2:
        return None
    first, second = layers
    seq = next((s for s in link.modules() if isinstance(s, nn.Sequential)
                and any(c is first for c in s) and any(c is second for c in s)), None)
    if seq is None:
        return None
    children = list(seq)
    i = next(n for n, c in enumerate(children) if c is first)
    j = next(n for n, c in enumerate(children) if c is second)
    middle = tuple(children[i + 1 : j])
    if j <= i or not all(type(m) in (nn.ReLU, nn.Identity, *_NORMS) for m in middle):
        return None
    norms = [m for m in middle if isinstance(m, _NORMS)]
    if sum(isinstance(m, nn.ReLU) for m in middle) > 1 or len(norms) > 1:
        return None
    if any(m not in (first, second, *norms) for m in params):
        return None  # a parametric module outside the two layers and the norm
    if norms and not (norms[0].affine and norms[0].track_running_stats):
        return None
    if isinstance(first, nn.Conv2d) and isinstance(second, nn.Conv2d):
        if first.groups != 1 or first.padding_mode != "zeros" or not _same_size_conv(second):
            return None
        width = first.out_channels
        ok = second.in_channels == width
    elif isinstance(first, nn.Linear) and isinstance(second, nn.Linear):
        width = first.out_features
        ok = second.in_features == width
    else:
        return None
    if not ok or second.bias is None or (norms and norms[0].num_features != width):
        return None
    return _TwoLayer(first, second, middle)


class _EvalMode:
    """Put every module of ``link`` in eval mode for a while (BatchNorm must not update)."""

    def __init__(self, link: nn.Module) -> None:
        self.link = link
        self.modes = [(m, m.training) for m in link.modules()]

    def __enter__(self) -> None:
        self.link.eval()

    def __exit__(self, *_exc: object) -> None:
        for m, mode in self.modes:
            m.training = mode


def _reduced_rank(a: torch.Tensor, w: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Best rank-``rank`` linear map (and free bias) for the ridge fit ``w`` of design ``a``.

    Reduced-rank regression: project the map onto the top principal directions of its centred
    fitted values, ``M = W P_r P_r^T``, and keep the bias that predicts the same mean. This
    minimises ||A W - A M||_F over rank-r M (the truncated SVD of W itself minimises ||W - M||,
    which weighs the input directions by their weights rather than by their variance).
    """
    w_lin, bias = w[:-1], w[-1]
    x = a[:, :-1]
    mean = x.mean(0)
    fitted = x @ w_lin - mean @ w_lin  # centred, without a centred copy of the design
    _, vecs = torch.linalg.eigh(fitted.T @ fitted)
    p = vecs[:, -rank:]
    m = w_lin @ p @ p.T
    return m, bias + mean @ (w_lin - m)


def _fit_two_layers(link: nn.Module, two: _TwoLayer, x: torch.Tensor, target: torch.Tensor,
                    ridge: float) -> bool:
    first, second = two.first, two.second
    with _EvalMode(link):
        feats, out, y = _capture_between(link, first, second, x)
    if target.numel() != out.numel() or out.numel() != y.numel():
        return False
    a = _design(first, feats)
    t = _rows(second, target.reshape(out.shape)).double()
    if a.shape[0] != t.shape[0]:
        return False
    width, cout = two.width, t.shape[1]
    rank = min(width // 2 if two.relu else width, a.shape[1] - 1, cout)
    if rank < 1:
        return False
    m, bias = _reduced_rank(a, _ridge(a, t, ridge), rank)
    u, s, vh = torch.linalg.svd(m.T, full_matrices=False)  # (cout, cols) = U S V^T
    rank = int((s[:rank] > s[0] * 1e-7).sum()) if s[0] > 0 else 0
    if rank < 1:
        return False
    root = s[:rank].sqrt()
    left = root[:, None] * vh[:rank]  # first layer rows: sqrt(S_r) V_r^T
    right = u[:, :rank] * root  # second layer columns: U_r sqrt(S_r)
    if two.relu:  # relu(z) - relu(-z) = z: the rank-r map passes the ReLU exactly
        left, right = torch.cat([left, -left]), torch.cat([right, -right], dim=1)
    used = left.shape[0]

    # First layer: fitted rows, zero bias; unused channels keep their random rows, and the second
    # layer reads them with zero weights, so they do not change the output but still learn.
    w1 = first.weight.detach().double().reshape(width, -1).clone()
    w1[:used] = left
    new: dict[nn.Module, dict[str, torch.Tensor]] = {first: {"weight": w1.reshape(first.weight.shape)}}
    b1 = None
    if first.bias is not None:
        b1 = first.bias.detach().double().clone()
        b1[:used] = 0
        new[first]["bias"] = b1
    w2 = torch.zeros(second.weight.shape, dtype=torch.float64, device=a.device)
    if isinstance(second, nn.Conv2d):  # the centre tap; the other taps start at zero
        w2[:, :used, second.kernel_size[0] // 2, second.kernel_size[1] // 2] = right
    else:
        w2[:, :used] = right
    new[second] = {"weight": w2, "bias": bias}

    norm = two.norm
    if norm is not None:  # identity in eval mode, about identity on a training batch
        h = a[:, :-1] @ w1.T + (b1 if b1 is not None else 0)
        for mod in two.middle:
            if mod is norm:
                break
            if isinstance(mod, nn.ReLU):
                h = h.clamp_min(0)
        mu, var = h.mean(0), h.var(0, unbiased=False)
        scale = (var + norm.eps).sqrt()
        new[norm] = {"weight": scale, "bias": mu, "running_mean": mu, "running_var": var}

    names = {id(mod): name for name, mod in link.named_modules()}
    state = {
        (f"{names[id(mod)]}.{key}" if names[id(mod)] else key): value.to(getattr(mod, key).dtype)
        for mod, values in new.items() for key, value in values.items()
    }
    with _EvalMode(link), torch.no_grad():
        check = torch.func.functional_call(link, state, (x,))
    pred = a[:, :-1] @ m + bias
    if check.numel() != out.numel():
        return False
    got = _rows(second, check.reshape(out.shape)).double()
    if not torch.isfinite(got).all() or (got - pred).norm() > _TWO_LAYER_RTOL * pred.norm().clamp_min(1e-12):
        return False  # something about the link is not the structure assumed here
    with torch.no_grad():
        for mod, values in new.items():
            for key, value in values.items():
                getattr(mod, key).copy_(value)
    return True


def least_squares_init(link: nn.Module, x: torch.Tensor, target: torch.Tensor, ridge: float = 1e-3) -> bool:
    """Fit a link's linear layer(s) so that ``link(x) ~ target`` (ridge least squares).

    One layer: links with exactly one parametric layer (Conv2d without groups, or Linear on the
    last dim of any rank) whose output is the link's output up to a reshape, as checked on ``x``.
    Parameter-free modules before the layer (resampling, layout adapters: permute, reshape, prefix
    tokens) are fine: the fit sees the layer's own input, captured by a hook. The idea follows
    model-stitching work (SN-Net's ``ps_inv``).

    Two layers (bottleneck, reduced, ``mlp`` with ReLU or no activation): a first Conv2d / Linear,
    then only ReLU, Identity or one BatchNorm, then a second layer of the same kind (a stride-1
    'same' conv with a bias) in the same ``nn.Sequential``. The full map from the first layer's
    receptive field to the target is fitted as for one layer, reduced to the best rank r for its
    fitted values (reduced-rank regression) and factored by SVD, ``M^T = U_r S_r V_r^T``: the first
    layer gets ``sqrt(S_r) V_r^T`` (bias 0), the second ``U_r sqrt(S_r)`` in its centre tap (other
    taps 0) and the bias. r is the middle width with no activation; with a ReLU, r = width // 2
    and the first layer emits ``[A; -A]`` read by ``[B, -B]`` (``relu(z) - relu(-z) = z``), so
    the map passes the ReLU exactly. A BatchNorm gets the middle's statistics as running stats and
    ``weight = sqrt(var + eps)``, ``bias = mean``: the identity in eval mode. Middle channels left
    over keep their random first-layer rows and get zero second-layer columns. The fitted link is
    checked on ``x`` (eval mode) against the factorised prediction before anything is written.

    Returns False, leaving the link untouched, for any other structure.
    """
    layer = _single_layer(link)
    if layer is not None:
        return _fit_single(link, layer, x, target, ridge)
    two = _two_layers(link)
    if two is not None:
        return _fit_two_layers(link, two, x, target, ridge)
    return False


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
