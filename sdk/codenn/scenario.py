"""The embedded default scenario and the base-model cache.

A *local* CIFAR-sized AlexNet service trained on scikit-learn's handwritten digits (real data,
32x32) and a *host* MobileNetV2 service trained on letters rendered from matplotlib's fonts (a
different task whose strokes transfer, generated here). Base weights
are trained once and cached as safetensors in the user cache directory (``$CODENN_CACHE``, else
``$XDG_CACHE_HOME/codenn``, else ``~/.cache/codenn``). A user with internet passes
``weights="DEFAULT"`` and starts from torchvision/timm pretrained weights through the same code.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import TensorDataset

from codenn import synthetic
from codenn.data import Splits, image_folder, split_dataset, tensors, torchvision_dataset
from codenn.errors import ConfigError, MissingWeightsError
from codenn.fileio import atomic_json, atomic_write
from codenn.models import load_model, save_safetensors
from codenn.service import Service

TASKS: dict[str, Callable[..., tuple[TensorDataset, int]]] = {
    "digits": synthetic.digits,
    "letters": synthetic.letters,
    "shapes": synthetic.shapes,
    "textures": synthetic.textures,
}


def cache_dir() -> Path:
    root = os.environ.get("CODENN_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "codenn")
    return Path(root)


def task_splits(task: str, size: int = 64, seed: int = 0) -> Splits:
    """A task's data, split 60/20/20 with ``seed``.

    ``task`` is a built-in task (digits, shapes, textures), ``imagefolder:DIR`` (one sub-folder
    per class) or ``torchvision:NAME:ROOT`` (e.g. ``torchvision:CIFAR10:~/data``, already downloaded).
    """
    if task.startswith("imagefolder:"):
        return image_folder(os.path.expanduser(task.split(":", 1)[1]), size=size, seed=seed)
    if task.startswith("torchvision:"):
        _, name, root = (task.split(":", 2) + [""])[:3]
        return torchvision_dataset(name, os.path.expanduser(root or "."), size=size, seed=seed)
    if task not in TASKS:
        raise ConfigError(
            f"unknown task {task!r}; use a built-in task ({', '.join(sorted(TASKS))}), "
            "'imagefolder:DIR' or 'torchvision:NAME:ROOT'"
        )
    dataset, classes = TASKS[task](size=size)
    return split_dataset(dataset, classes, seed=seed, name=task)


@dataclass(frozen=True)
class BaseModelSpec:
    """How a provider's base model is obtained: architecture, task, initial weights, training."""

    model: str
    task: str
    epochs: int
    lr: float
    batch_size: int = 64
    size: int = 64
    weights: str | None = None
    seed: int = 0
    patience: int = 0
    """Early stopping: with patience > 0, training stops once validation accuracy has not risen for
    that many epochs (``epochs`` is then the most), and the best epoch's weights are kept."""
    lr_drops: int = 0
    """With patience: instead of stopping the first times accuracy stops rising, go back to the
    best epoch and go on at a tenth of the learning rate, this many times (a model trained to its
    ceiling, not to its first plateau)."""

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.patience < 0 or self.lr_drops < 0 or not self.lr > 0:
            raise ConfigError(f"base model {self.model!r}: epochs={self.epochs} must be >= 1, patience="
                              f"{self.patience} and lr_drops={self.lr_drops} >= 0, lr={self.lr} > 0")

    def key(self) -> str:
        fields = asdict(self)
        for name in ("patience", "lr_drops"):  # models cached before these existed keep their key
            if not fields[name]:
                fields.pop(name)
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:12]


def replace_head(model: nn.Module, num_classes: int) -> None:
    """Swap the last Linear layer for a fresh one with ``num_classes`` outputs (fine-tuning)."""
    reset = getattr(model, "reset_classifier", None)
    if callable(reset):
        reset(num_classes)  # timm
        return
    last: tuple[nn.Module, str, nn.Linear] | None = None
    for module in model.modules():
        for child_name, child in module.named_children():
            if isinstance(child, nn.Linear):
                last = (module, child_name, child)
    if last is None:
        raise ConfigError(f"{type(model).__name__} has no Linear classifier to replace")
    parent, name, linear = last
    setattr(parent, name, nn.Linear(linear.in_features, num_classes))


def _fit(model: nn.Module, splits: Splits, spec: BaseModelSpec, log: Callable[[str], None]) -> dict[str, Any]:
    """Train; with ``spec.patience`` until validation accuracy stops rising (best epoch kept)."""
    x, y = tensors(splits.train)
    xv, yv = tensors(splits.val)
    xt, yt = tensors(splits.test)
    gen = torch.Generator().manual_seed(spec.seed)
    opt = torch.optim.Adam(model.parameters(), lr=spec.lr)
    best: tuple[float, int, dict[str, torch.Tensor]] | None = None
    epochs, drops, since = 0, spec.lr_drops, 0  # since: the last improvement or learning-rate drop
    for epoch in range(spec.epochs):
        model.train()
        t0 = time.perf_counter()
        for idx in torch.randperm(len(y), generator=gen).split(spec.batch_size):
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
        epochs = epoch + 1
        line = f"  {spec.model} on {spec.task}: epoch {epochs}/{spec.epochs} ({time.perf_counter() - t0:.0f} s)"
        if not spec.patience:
            log(line)
            continue
        recalibrate_batchnorm(model, x, spec.batch_size)
        val = evaluate_model(model, xv, yv)
        log(f"{line}, val accuracy {val:.3f}")
        if best is None or val > best[0]:
            best, since = (val, epochs, {k: v.detach().clone() for k, v in model.state_dict().items()}), epochs
        elif epochs - since >= spec.patience and drops:
            drops, since = drops - 1, epochs
            model.load_state_dict(best[2])
            for group in opt.param_groups:
                group["lr"] *= 0.1
            log(f"  val accuracy has not risen for {spec.patience} epochs: back to the best weights (epoch "
                f"{best[1]}), learning rate {opt.param_groups[0]['lr']:.1e}")
        elif epochs - since >= spec.patience:
            log(f"  val accuracy has not risen for {spec.patience} epochs: keeping the best weights")
            break
    if best is not None:
        model.load_state_dict(best[2])
    recalibrate_batchnorm(model, x, spec.batch_size)
    return {"test_accuracy": evaluate_model(model, xt, yt), "val_accuracy": evaluate_model(model, xv, yv),
            "epochs_run": epochs, "best_epoch": best[1] if best is not None else epochs}


def recalibrate_batchnorm(model: nn.Module, x: torch.Tensor, batch_size: int = 64) -> None:
    """Recompute batch-norm running statistics as exact averages over ``x``.

    Short training runs leave running statistics that lag the weights; this pass (no gradients)
    fixes the eval-mode accuracy of MobileNet-style networks trained for a few epochs.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            model(x[i : i + batch_size])
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    model.eval()


def evaluate_model(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 256) -> float:
    model.eval()
    with torch.inference_mode():
        pred = torch.cat([model(x[i : i + batch_size]).argmax(1) for i in range(0, len(x), batch_size)])
    return float((pred == y).float().mean())


def cached_files(spec: BaseModelSpec) -> tuple[Path, Path]:
    """Where the base model for ``spec`` is cached: its weights and its training record."""
    folder = cache_dir() / "base"
    stem = f"{spec.model}-{spec.task}-{spec.key()}"
    return folder / f"{stem}.safetensors", folder / f"{stem}.json"


BUNDLED_DIR = Path(__file__).parent / "bundled"
"""Base weights shipped with codenn, made by ``benchmarks/bundle_weights.py``: the default host's
(MobileNetV2 on letters, 9 MB), so that a first ``make demo`` trains only the local model."""


def _cached(spec: BaseModelSpec, log: Callable[[str], None]) -> bool:
    """Whether ``spec``'s weights are in the cache, copying the bundled ones there first if
    codenn ships them."""
    weights, meta_file = cached_files(spec)
    if weights.is_file() and meta_file.is_file():
        return True
    bundled, bundled_meta = BUNDLED_DIR / weights.name, BUNDLED_DIR / meta_file.name
    if not (bundled.is_file() and bundled_meta.is_file()):
        return False
    log(f"base model {spec.model} on {spec.task}: the weights codenn ships ({bundled.name}), copied to {weights.parent}")
    atomic_write(weights, bundled.read_bytes())
    atomic_write(meta_file, bundled_meta.read_bytes())
    return True


def cached_base_model(spec: BaseModelSpec, *, log: Callable[[str], None] = print) -> tuple[nn.Module, dict[str, object]]:
    """The cached (or bundled) base model for ``spec``, never trained here: a worker of a
    distributed search must search the weights the search started with, not train its own."""
    weights, meta_file = cached_files(spec)
    if not _cached(spec, log):
        raise MissingWeightsError(
            f"no cached weights for base model {spec.model!r} on {spec.task!r} on host {socket.gethostname()!r}: "
            f"expected {weights} (and {meta_file.name}); copy them from the machine that trained them, or run "
            "`codenn search` once on this host")
    return base_model(spec, log=log)


def base_model(spec: BaseModelSpec, *, log: Callable[[str], None] = print) -> tuple[nn.Module, dict[str, object]]:
    """Load the cached base model for ``spec`` (or the bundled one), training and caching it on
    first use."""
    weights, meta_file = cached_files(spec)
    if _cached(spec, log):
        meta = json.loads(meta_file.read_text())
        classes = meta.get("num_classes") or task_splits(spec.task, spec.size, spec.seed).num_classes
        model = load_model(spec.model, weights=weights, num_classes=int(classes))
        return model, meta
    log(f"training base model {spec.model} on {spec.task} (cached in {weights.parent})")
    return train_base_model(spec, weights, meta_file, log=log)


def train_base_model(spec: BaseModelSpec, weights: Path, meta_file: Path, *, log: Callable[[str], None] = print
                     ) -> tuple[nn.Module, dict[str, object]]:
    """Train ``spec``'s base model and write its weights and training record (the cache, or the
    bundle ``benchmarks/bundle_weights.py`` makes)."""
    splits = task_splits(spec.task, spec.size, spec.seed)
    torch.manual_seed(spec.seed)
    if spec.weights is None:
        model = load_model(spec.model, num_classes=splits.num_classes)
    else:
        model = load_model(spec.model, weights=spec.weights)
        replace_head(model, splits.num_classes)
    t0 = time.perf_counter()
    fit = _fit(model, splits, spec, log)
    meta = {"spec": asdict(spec), **fit, "train_seconds": round(time.perf_counter() - t0, 1),
            "num_classes": splits.num_classes}
    save_safetensors(model, weights)
    atomic_json(meta_file, meta)
    return model, meta


@dataclass
class Scenario:
    """Services and the local task's data, ready for a search."""

    local: Service
    hosts: list[Service]
    splits: Splits
    info: dict[str, object] = field(default_factory=dict)


DEFAULT_LOCAL = BaseModelSpec("alexnet_cifar", "digits", epochs=60, lr=1e-3, batch_size=32, size=32, patience=4,
                              lr_drops=2)
"""The paper's local provider: a CIFAR-sized AlexNet on 32x32 handwritten digits, trained until
validation accuracy stops rising (so no skip path can beat an under-trained original)."""
DEFAULT_HOST = BaseModelSpec("mobilenet_v2", "letters", epochs=30, lr=2e-3, size=32, patience=4)
"""The host provider: MobileNetV2 on rendered letters, a task whose pen strokes transfer to digits."""


def build_scenario(
    local: BaseModelSpec = DEFAULT_LOCAL,
    hosts: tuple[BaseModelSpec, ...] = (DEFAULT_HOST,),
    *,
    local_name: str = "alexnet",
    host_names: tuple[str, ...] | None = None,
    log: Callable[[str], None] = print,
    train_missing: bool = True,
) -> Scenario:
    """Services for a local base model and its hosts; the local task's splits come along. With
    ``train_missing=False`` a base model that is not cached is a :class:`MissingWeightsError`."""
    load = base_model if train_missing else cached_base_model
    names = host_names or tuple(h.model for h in hosts)
    if len(names) != len(hosts) or len({local_name, *names}) != len(hosts) + 1:
        raise ConfigError(f"service names must be distinct and one per host, got {local_name!r} and {names}")
    shape = (3, local.size, local.size)
    model, meta = load(local, log=log)
    local_service = Service(local_name, model, input_shape=shape, architecture=local.model)
    host_services: list[Service] = []
    info: dict[str, object] = {local_name: meta}
    for name, spec in zip(names, hosts):
        spec = replace(spec, size=local.size)
        hmodel, hmeta = load(spec, log=log)
        host_services.append(Service(name, hmodel, input_shape=shape, architecture=spec.model))
        info[name] = hmeta
    return Scenario(local_service, host_services, task_splits(local.task, local.size, local.seed), info)


def scenario_from_config(run: Any, log: Callable[[str], None] = print, *, train_missing: bool = True) -> Scenario:
    """The services and data a :class:`codenn.config.RunConfig` describes."""
    return build_scenario(run.local.base, tuple(h.base for h in run.hosts), local_name=run.local.name,
                          host_names=tuple(h.name for h in run.hosts), log=log, train_missing=train_missing)
