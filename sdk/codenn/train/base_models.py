"""Base models trained once and cached as safetensors (or copied from the weights codenn ships).

The cache is the user cache directory (``$CODENN_CACHE``, else ``$XDG_CACHE_HOME/codenn``, else
``~/.cache/codenn``). A user with internet passes ``weights="DEFAULT"`` and starts from
torchvision/timm pretrained weights through the same code; a file name never holds a task's raw
text (``imagefolder:/data/x`` is written as ``imagefolder_data_x``).
"""

from __future__ import annotations

import json
import os
import re
import socket
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from codenn.config.base_model import BaseModelSpec
from codenn.errors import ConfigError, MissingWeightsError
from codenn.fileio import atomic_json, atomic_write
from codenn.model.loading import load_model, save_safetensors
from codenn.train.data import Splits, tensors
from codenn.train.tasks import task_splits


def cache_dir() -> Path:
    root = os.environ.get("CODENN_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "codenn")
    return Path(root)


def _file_part(text: str) -> str:
    """``text`` as one portable file-name part: no separators, colons or other special characters."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_.") or "_"


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
    stem = f"{_file_part(spec.model)}-{_file_part(spec.task)}-{spec.key()}"
    return folder / f"{stem}.safetensors", folder / f"{stem}.json"


BUNDLED_DIR = Path(__file__).resolve().parents[1] / "bundled"
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
        model = load_model(spec.model, weights=weights, num_classes=int(classes), input_size=spec.size)
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
        model = load_model(spec.model, num_classes=splits.num_classes, input_size=spec.size)
    else:
        model = load_model(spec.model, weights=spec.weights, input_size=spec.size)
        replace_head(model, splits.num_classes)
    t0 = time.perf_counter()
    fit = _fit(model, splits, spec, log)
    meta = {"spec": asdict(spec), **fit, "train_seconds": round(time.perf_counter() - t0, 1),
            "num_classes": splits.num_classes}
    save_safetensors(model, weights)
    atomic_json(meta_file, meta)
    return model, meta
