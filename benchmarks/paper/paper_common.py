"""Shared set-up for the paper's four experiments (Section IV): options, base models, link training,
JSON and figures.

Why one module: the four scripts must use the same local model, the same data splits, the same
link-training budget and the same cache, so that numbers are comparable across experiments and
base models are trained once (``make experiments`` runs from an empty cache in one go).

Base models are cached as safetensors under ``<cache>/base`` (default ``$CODENN_CACHE/experiments``
or ``~/.cache/codenn/experiments``), apart from the demo's cache, because the hosts here are
trained differently (more samples, more epochs) from the demo's.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import resource
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from codenn.config.base_model import DEFAULT_HOST, DEFAULT_LOCAL, BaseModelSpec
from codenn.config.train import TrainConfig
from codenn.errors import ConfigError, FrozenParameterError
from codenn.model.loading import load_model
from codenn.model.service import Service
from codenn.paths.composed import ComposedPath
from codenn.paths.links import build_link
from codenn.train.base_models import base_model, cache_dir, recalibrate_batchnorm
from codenn.train.data import Splits, tensors
from codenn.train.features import FeatureCache
from codenn.train.lstsq import init_path_links
from codenn.train.tasks import task_splits
from codenn.train.trainer import LinkTrainer, accuracy, path_seed

Log = Callable[[str], None]
ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results" / "paper"
FIGURES = ROOT / "docs" / "figures" / "experiments"
LOCAL = "alexnet"  # the local service's name (architecture: DEFAULT_LOCAL.model, alexnet_cifar)


MIN_SIZE = 16  # the smallest input alexnet_cifar (and MobileNetV2) accept: conv5's pooled map must be >= 1x1


@dataclass(frozen=True)
class Options:
    """What every experiment script accepts; the defaults are the committed run."""

    local_task: str = "digits"
    size: int = 32
    link_epochs: int = 6
    batch_size: int = 64
    lr: float = 1e-3
    limit: int | None = None  # cap on samples per split (tests); None = all
    base_epochs: int | None = None  # override every base model's epochs (tests: 0 = untrained), patience off
    seed: int = 0
    cache: str | None = None
    out_dir: str = str(RESULTS)
    fig_dir: str = str(FIGURES)
    threads: int | None = None
    export: bool = True

    def __post_init__(self) -> None:
        if self.size < MIN_SIZE:
            raise ConfigError(f"--size {self.size} is too small: the CIFAR-sized AlexNet needs inputs of at least "
                              f"{MIN_SIZE}x{MIN_SIZE}")
        if self.link_epochs < 1 or self.batch_size < 1 or not self.lr > 0:
            raise ConfigError(f"link_epochs, batch_size must be >= 1 and lr > 0; got {self.link_epochs}, "
                              f"{self.batch_size}, {self.lr}")
        if self.limit is not None and self.limit < 8:
            raise ConfigError(f"--limit {self.limit} leaves too few samples; use >= 8 or no limit")
        if self.base_epochs is not None and self.base_epochs < 0:
            raise ConfigError(f"--base-epochs must be >= 0, got {self.base_epochs}")

    def train_config(self, *, ls_init: bool = True) -> TrainConfig:
        return TrainConfig(epochs=self.link_epochs, batch_size=self.batch_size, lr=self.lr, ls_init=ls_init,
                           seed=self.seed, progress=False)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options every script takes (also makes stdout line-buffered, for progress in logs)."""
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]  # stdout is a TextIOWrapper here
    d = Options()
    parser.add_argument("--local-task", default=d.local_task,
                        help="digits (offline), 'torchvision:CIFAR10:/path' or 'imagefolder:/path'")
    parser.add_argument("--size", type=int, default=d.size,
                        help=f"input size (default {d.size}, the default scenario's; the CIFAR-sized AlexNet and "
                             f"MobileNetV2 work from {MIN_SIZE} up)")
    parser.add_argument("--link-epochs", type=int, default=d.link_epochs,
                        help=f"link training epochs per path (default {d.link_epochs})")
    parser.add_argument("--batch-size", type=int, default=d.batch_size)
    parser.add_argument("--lr", type=float, default=d.lr, help="link learning rate (AdamW)")
    parser.add_argument("--limit", type=int, default=None, help="cap samples per split (quick runs)")
    parser.add_argument("--base-epochs", type=int, default=None,
                        help="override base-model epochs, without early stopping (0 = untrained; for tests)")
    parser.add_argument("--seed", type=int, default=d.seed)
    parser.add_argument("--cache", default=None, help="base-model cache (default $CODENN_CACHE/experiments)")
    parser.add_argument("--out-dir", default=d.out_dir, help="where JSON results go")
    parser.add_argument("--fig-dir", default=d.fig_dir, help="where PNG figures go")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--no-export", dest="export", action="store_false", help="skip the ONNX export (exp 4)")


def options_from(args: argparse.Namespace) -> Options:
    return Options(**{f: getattr(args, f) for f in Options.__dataclass_fields__})


# -- base models -------------------------------------------------------------------------------
# The local provider is codenn's default scenario's (DEFAULT_LOCAL: the CIFAR-sized AlexNet on
# digits, trained until validation accuracy stops rising, then twice more at a tenth of the learning
# rate). Hosts: full BaseModelSpec recipes, size and seed taken from the options. The AlexNet hosts
# use the local model's recipe on another task, stopped at the first plateau (no learning-rate
# drops: on letters those add about 20 epochs, 6 minutes of a 2-core CPU, for about 6 points of the
# host's own accuracy): letters (pen strokes, which transfer to digits: the paper's ImageNet /
# Food-101 hosts) and shapes (an unrelated task: the control for "does the host's task matter?").
# The MobileNet host is the default scenario's (DEFAULT_HOST, on letters).
HOSTS: dict[str, BaseModelSpec] = {
    "alexnet_letters": replace(DEFAULT_LOCAL, task="letters", epochs=40, lr_drops=0),
    "alexnet_shapes": replace(DEFAULT_LOCAL, task="shapes", epochs=40, lr_drops=0),
    "mobilenet_letters": DEFAULT_HOST,
}
RANDOM_HOSTS: dict[str, tuple[str, str]] = {  # name -> (architecture, task for BN statistics / classes)
    "alexnet_random": (DEFAULT_LOCAL.model, "letters"),
    "mobilenet_random": (DEFAULT_HOST.model, "letters"),
}


# codenn's cache root as it was when this module was imported: use_cache() rewrites $CODENN_CACHE,
# and a second experiment in the same process must not nest another "experiments" folder in it.
_USER_CACHE = cache_dir()


def use_cache(opts: Options) -> Path:
    """Point codenn's base-model cache at the experiments' folder (set before any base_model call)."""
    root = Path(opts.cache) if opts.cache else _USER_CACHE / "experiments"
    os.environ["CODENN_CACHE"] = str(root)
    return root


def _recipe(spec: BaseModelSpec, opts: Options, task: str | None = None) -> BaseModelSpec:
    """``spec`` at the options' size and seed; with ``--base-epochs`` that many epochs, early stopping and
    learning-rate drops off.

    ``--base-epochs 0`` keeps 0 epochs here (a BaseModelSpec cannot): :func:`load_base` then builds the
    model untrained instead of asking the cache.
    """
    changes: dict[str, Any] = {"size": opts.size, "seed": opts.seed}
    if task is not None:
        changes["task"] = task
    if opts.base_epochs is not None:
        changes.update(epochs=max(1, opts.base_epochs), patience=0, lr_drops=0)
    return replace(spec, **changes)


def local_spec(opts: Options) -> BaseModelSpec:
    return _recipe(DEFAULT_LOCAL, opts, task=opts.local_task)


def host_spec(name: str, opts: Options) -> BaseModelSpec:
    return _recipe(HOSTS[name], opts)


def load_base(spec: BaseModelSpec, opts: Options, log: Log = print) -> tuple[nn.Module, dict[str, Any]]:
    """The cached (else trained) base model for ``spec``; untrained with ``--base-epochs 0``."""
    if opts.base_epochs != 0:
        cached = (cache_dir() / "base" / f"{spec.model}-{spec.task}-{spec.key()}.safetensors").is_file()
        model, meta = base_model(spec, log=log)
        return model, {**meta, "trained_in_this_run": not cached}
    return _untrained(spec.model, spec.task, opts, weights="untrained", extra={"epochs": 0})


@functools.lru_cache(maxsize=8)
def splits_of(task: str, size: int, seed: int) -> Splits:
    """A task's splits, made once per process (rendering the 6,000 letters takes seconds)."""
    return task_splits(task, size, seed)


def _untrained(arch: str, task: str, opts: Options, *, weights: str,
               extra: Mapping[str, Any] | None = None) -> tuple[nn.Module, dict[str, Any]]:
    splits = splits_of(task, opts.size, opts.seed)
    torch.manual_seed(opts.seed + 12345)
    model = load_model(arch, num_classes=splits.num_classes)
    x, _ = tensors(splits.train, min(512, 4 * opts.limit) if opts.limit else 512)  # fewer in quick runs
    recalibrate_batchnorm(model, x)
    model.eval()
    return model, {"spec": {"model": arch, "task": task, "weights": weights, **(extra or {})}, "test_accuracy": None}


def random_host(name: str, opts: Options) -> tuple[nn.Module, dict[str, Any]]:
    """A host with random weights: the control for "does a *trained* host matter?".

    Batch-norm statistics are recomputed on 512 of its task's inputs (fewer with a small ``--limit``), as for a
    trained host, so that
    the random network's activations have a sane scale (the CIFAR AlexNet has no batch norm).
    """
    arch, task = RANDOM_HOSTS[name]
    return _untrained(arch, task, opts, weights="random")


@dataclass
class Lab:
    """The services, the local task's tensors and the frozen-prefix caches of one experiment."""

    opts: Options
    services: dict[str, Service]
    data: dict[str, tuple[torch.Tensor, torch.Tensor]]
    caches: dict[str, FeatureCache]
    num_classes: int
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def local(self) -> Service:
        return self.services[LOCAL]

    def verify_frozen(self) -> None:
        """Every service is bit-identical to when it was loaded, and none is trainable.

        Checked once per experiment rather than per path (hashing AlexNet takes about a second).
        """
        for s in self.services.values():
            s.verify_frozen()
            if any(p.requires_grad for p in s.parameters()):
                raise FrozenParameterError(f"service {s.name!r} has trainable parameters")

    def original_accuracy(self, part: str = "test") -> float:
        path = ComposedPath(f"{LOCAL}[:]", self.services)
        return accuracy(path, self.caches[part], self.data[part][1])


def limited(splits: Splits, limit: int | None) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    return {p: tensors(getattr(splits, p), limit) for p in ("train", "val", "test")}


def make_lab(opts: Options, hosts: Sequence[str], log: Log = print) -> Lab:
    """Load (or train and cache) the local model and ``hosts``; cache nothing else yet."""
    unknown = [h for h in hosts if h not in HOSTS and h not in RANDOM_HOSTS]
    if unknown:
        raise ConfigError(f"unknown host {unknown[0]!r}; known: {', '.join([*HOSTS, *RANDOM_HOSTS])}")
    if opts.threads:
        torch.set_num_threads(opts.threads)
    use_cache(opts)
    torch.manual_seed(opts.seed)
    shape = (3, opts.size, opts.size)
    lspec = local_spec(opts)
    model, meta = load_base(lspec, opts, log=log)
    services = {LOCAL: Service(LOCAL, model, input_shape=shape, architecture=lspec.model)}
    info: dict[str, Any] = {LOCAL: meta}
    for name in hosts:
        if name in HOSTS:
            hmodel, hmeta = load_base(host_spec(name, opts), opts, log=log)
        else:
            hmodel, hmeta = random_host(name, opts)
        arch = HOSTS[name].model if name in HOSTS else RANDOM_HOSTS[name][0]
        services[name] = Service(name, hmodel, input_shape=shape, architecture=arch)
        info[name] = hmeta
    splits = splits_of(opts.local_task, opts.size, opts.seed)
    data = limited(splits, opts.limit)
    caches = {p: FeatureCache(services, x) for p, (x, _) in data.items()}
    return Lab(opts, services, data, caches, splits.num_classes, info)


# -- training one path -------------------------------------------------------------------------
def cross_spec(host: str, hout: int, *, lout: int = 0, hin: int = 1, lin: int = 5) -> str:
    return f"{LOCAL}[:{lout + 1}] > {host}[{hin}:{hout + 1}] > {LOCAL}[{lin}:]"


def skip_spec(lout: int, lin: int) -> str:
    return f"{LOCAL}[:{lout + 1}] > {LOCAL}[{lin}:]"


def just_links(lab: Lab, host: str, link: str = "paper", *, lout: int = 0, hin: int = 1, lin: int = 5) -> nn.Module:
    """The cross path's entry link followed by an exit link, host blocks removed (paper, Fig. 6).

    The entry link maps local block ``lout``'s output to host block ``hin``'s input, as in the cross
    path; the exit link maps that to local block ``lin``'s input. The pair is one skip link.
    """
    src, mid, dst = lab.local.card.output_of(lout), lab.services[host].card.input_of(hin), lab.local.card.input_of(lin)
    torch.manual_seed(path_seed(lab.opts.seed, f"just-links {host} {link}"))
    return nn.Sequential(build_link(src, mid, link), build_link(mid, dst, link))


def train_path(lab: Lab, spec: str, link: str = "paper", *, ls_init: bool = True,
               links: Sequence[nn.Module] | None = None, label: str | None = None,
               log: Log = print) -> dict[str, Any]:
    """Least-squares-initialise (optionally) and train one path's links; measure it.

    Reported accuracy is on the test split; ``val_accuracy`` is kept for selection-style uses.
    """
    t0 = time.perf_counter()
    cfg = lab.opts.train_config(ls_init=ls_init)
    torch.manual_seed(path_seed(cfg.seed, f"{spec}|{link}"))
    path = ComposedPath(spec, lab.services, link=link, links=links)
    (_, ytr), (_, yval), (_, yte) = lab.data["train"], lab.data["val"], lab.data["test"]
    fitted: list[bool] = []
    ls_acc = None
    if ls_init:
        fitted = init_path_links(path, lab.caches["train"], cfg.ls_samples, cfg.ls_ridge)
        if any(fitted):
            ls_acc = accuracy(path, lab.caches["test"], yte)
    LinkTrainer(path, cfg, lab.caches["train"], ytr, check_frozen=False).train_epochs(cfg.epochs)
    st = path.stats()
    try:
        ix = path.spec.indices
        indices = {"lout": ix.lout, "hin": ix.hin, "hout": ix.hout, "lin": ix.lin}
    except Exception:  # noqa: BLE001 - paths the paper's indices cannot express
        indices = {"lout": None, "hin": None, "hout": None, "lin": None}
    row = {
        "label": label or spec, "spec": str(path.spec), "kind": path.spec.kind, **indices,
        "link": link if links is None else "custom", "ls_init": ls_init, "ls_fitted": fitted,
        "ls_test_accuracy": ls_acc,
        "val_accuracy": accuracy(path, lab.caches["val"], yval),
        "test_accuracy": accuracy(path, lab.caches["test"], yte),
        "link_params": st.link_params, "skipped_params": st.skipped_params, "local_params": st.local_params,
        "host_params": st.host_params, "host_block_params": st.host_params - st.host_link_params,
        "local_gflops": st.local_flops / 1e9, "host_gflops": st.host_flops / 1e9,
        "seconds": round(time.perf_counter() - t0, 2),
    }
    log(f"  {row['label']:<55} link {row['link']:<10} ls {int(ls_init)}  test {row['test_accuracy']:.3f}  "
        f"links {row['link_params']:>9,}  ({row['seconds']:.0f} s)")
    return row


def original_row(lab: Lab) -> dict[str, Any]:
    st = ComposedPath(f"{LOCAL}[:]", lab.services).stats()
    return {"label": "original", "spec": f"{LOCAL}[:]", "val_accuracy": lab.original_accuracy("val"),
            "test_accuracy": lab.original_accuracy("test"), "local_params": st.local_params,
            "local_gflops": st.local_flops / 1e9}


def recovered(cross: float, baseline: float, original: float) -> float | None:
    """The share of the accuracy a baseline loses that the cross path wins back (paper, Exp. 1).

    None when the baseline loses nothing (it matches or beats the original): there is no drop.
    """
    drop = original - baseline
    return None if drop < 1e-9 else (cross - baseline) / drop


# -- output ------------------------------------------------------------------------------------
def cpu_seconds() -> float:
    """User + system CPU time of this process so far, all threads: on a shared machine, CPU seconds
    divided by the cores used estimate the wall time on dedicated cores better than wall time does."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def environment(opts: Options) -> dict[str, Any]:
    return {"torch": torch.__version__, "threads": torch.get_num_threads(), "device": "cpu",
            "cpu": platform.processor() or platform.machine(), "python": platform.python_version(),
            "options": asdict(opts), "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def base_models(lab: Lab) -> dict[str, Any]:
    out = {}
    for name, meta in lab.info.items():
        svc = lab.services[name]
        spec = meta.get("spec", {})
        out[name] = {"architecture": spec.get("model"), "task": spec.get("task"), "epochs": spec.get("epochs"),
                     "lr": spec.get("lr"), "batch_size": spec.get("batch_size"), "patience": spec.get("patience"),
                     "epochs_run": meta.get("epochs_run"), "best_epoch": meta.get("best_epoch"),
                     "weights": spec.get("weights"), "test_accuracy": meta.get("test_accuracy"),
                     "val_accuracy": meta.get("val_accuracy"), "train_seconds": meta.get("train_seconds"),
                     "trained_in_this_run": meta.get("trained_in_this_run"),
                     "blocks": svc.num_blocks}
    return out


def write_json(path: Path, data: Mapping[str, Any]) -> None:
    from codenn.fileio import atomic_write

    atomic_write(path, json.dumps(data, indent=2, default=str).encode())


def save_figure(fig: Any, path: Path) -> None:
    """Small PNGs (dpi 90), written atomically."""
    import matplotlib.pyplot as plt

    from codenn.fileio import atomic_file

    try:
        atomic_file(path, lambda tmp: fig.savefig(tmp, dpi=90, format="png"))
    finally:
        plt.close(fig)


def pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def finish(name: str, result: dict[str, Any], opts: Options, t0: float, plot: Callable[[dict[str, Any], Path], None],
           log: Log = print) -> dict[str, Any]:
    """Stamp wall time and environment, write ``<out_dir>/<name>.json`` and ``<fig_dir>/<name>.png``."""
    result["frozen_verified"] = True
    result["environment"] = environment(opts)
    result["wall_seconds"] = round(time.perf_counter() - t0, 1)
    result["process_cpu_seconds"] = round(cpu_seconds(), 1)
    out = Path(opts.out_dir) / f"{name}.json"
    fig = Path(opts.fig_dir) / f"{name}.png"
    plot(result, fig)
    result["figure"] = str(fig.relative_to(ROOT)) if fig.is_relative_to(ROOT) else str(fig)
    write_json(out, result)
    log(f"wrote {out} and {fig} ({result['wall_seconds']:.0f} s)")
    return result


def replace_opts(opts: Options, **changes: Any) -> Options:
    return replace(opts, **changes)
