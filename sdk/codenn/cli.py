"""The ``codenn`` command line (click): the core's commands, plus those plugins add.

Commands that need an adapter (``export``, ``serve-host``, ``serve``) come from the
``codenn_register_commands`` hook, loaded the first time click lists or looks up a command, so
this module never imports ``codenn_adapters``. :func:`friendly`, :data:`console` and
:func:`run_config` are the helpers a plugin's commands share with the core's.
"""

from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Callable, Sequence
from functools import wraps
from typing import TYPE_CHECKING, Any, TypeVar, cast

import click
from rich.console import Console
from rich.table import Table

from codenn.errors import CodennError

if TYPE_CHECKING:
    from codenn.config import RunConfig
    from codenn.plugins import Plugins
    from codenn.rows import PathRow
    from codenn.search import Search, SearchResult
    from codenn.service import Service

F = TypeVar("F", bound=Callable[..., Any])
console = Console(width=None if sys.stdout.isatty() else 200)


def friendly(fn: F) -> F:
    """Turn a CodennError into a one-line message and exit status 1, never a traceback."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except CodennError as exc:
            raise click.ClickException(str(exc)) from exc

    return cast(F, wrapper)


def _model_options(fn: F) -> F:
    fn = click.option("--input-size", type=click.IntRange(min=8), default=224, show_default=True,
                      help="Square input resolution (pixels).")(fn)
    fn = click.option("--weights", default=None,
                      help="'DEFAULT' or a weight enum name (torchvision/timm download), or a local .safetensors file. "
                           "Omitted: random initialisation.")(fn)
    fn = click.option("--num-classes", type=click.IntRange(min=1), default=None, help="Classifier outputs.")(fn)
    return fn


def _load(spec: str, *, blocks: int | None, input_size: int, weights: str | None, num_classes: int | None) -> Any:
    """``MODEL`` or ``NAME=MODEL`` -> a Service."""
    from codenn.service import Service

    name, _, model = spec.partition("=") if "=" in spec else (spec, "", spec)
    return Service.from_name(model, name=name, weights=weights, num_classes=num_classes,
                             num_blocks=blocks, input_shape=(3, input_size, input_size))


class PluginCommands(click.Group):
    """A click group that adds the commands of ``codenn_register_commands`` on first use.

    ``plugins`` (default: the process-wide set) is where the commands come from.
    """

    def __init__(self, *args: Any, plugins: Plugins | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.plugins = plugins
        self._loaded = False

    def _load_plugin_commands(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        from codenn.errors import PluginError
        from codenn.plugins import get_plugins

        for entry in (self.plugins or get_plugins()).commands.entries():
            if entry.name in self.commands:
                raise PluginError(
                    f"plugin {entry.owner!r} registered the command {entry.name!r}, which codenn itself "
                    "provides; choose another name"
                )
            self.add_command(entry.obj, entry.name)

    def list_commands(self, ctx: click.Context) -> list[str]:
        self._load_plugin_commands()
        return super().list_commands(ctx)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands:
            self._load_plugin_commands()
        return super().get_command(ctx, cmd_name)


@click.group(cls=PluginCommands, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="codenn")
def cli() -> None:
    """codenn: coordinate frozen DNN services through trainable links."""


@cli.command("plugins")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@friendly
def plugins_cmd(as_json: bool) -> None:
    """List plugins, their versions and what each registered."""
    from codenn.plugins import get_plugins

    infos = get_plugins().info()
    if as_json:
        click.echo(json.dumps([i.to_dict() for i in infos], indent=2))
        return
    table = Table(title="codenn plugins")
    for col in ("plugin", "distribution", "version", "hooks", "registered"):
        table.add_column(col)
    for i in infos:
        reg = "; ".join(f"{k}: {', '.join(v)}" for k, v in i.registered.items())
        table.add_row(i.name, i.distribution or "-", i.version or "-", ", ".join(i.hooks), reg)
    console.print(table)


@cli.command("describe")
@click.argument("model")
@click.option("--blocks", type=click.IntRange(min=1), default=None, help="Block count (splitter default if omitted).")
@_model_options
@friendly
def describe_cmd(model: str, blocks: int | None, input_size: int, weights: str | None, num_classes: int | None) -> None:
    """Print MODEL's service card (JSON): boundaries, per-block params and FLOPs. Never parameters."""
    service = _load(model, blocks=blocks, input_size=input_size, weights=weights, num_classes=num_classes)
    click.echo(service.card.to_json())


@cli.command("split")
@click.argument("model")
@click.option("--blocks", type=click.IntRange(min=1), required=True, help="Block count.")
@click.option("--check", is_flag=True, help="Compare the composed blocks with the original model.")
@_model_options
@friendly
def split_cmd(model: str, blocks: int, check: bool, input_size: int, weights: str | None, num_classes: int | None) -> None:
    """Split MODEL into blocks and list them; --check prints the recomposition error."""
    service = _load(model, blocks=blocks, input_size=input_size, weights=weights, num_classes=num_classes)
    table = Table(title=f"{service.name}: {service.num_blocks} blocks ({service.splitter_name} splitter)")
    for col in ("block", "name", "params", "MFLOPs", "output boundary"):
        table.add_column(col)
    for card, spec in zip(service.card.blocks, service.boundaries):
        table.add_row(str(card.index), card.name, f"{card.params:,}", f"{card.flops / 1e6:.2f}",
                      spec.summary())
    console.print(table)
    if check:
        from codenn.testing import recomposition_error

        for mode in ("eval", "train"):
            err = recomposition_error(service.model, [b.module for b in service.blocks],
                                      service.input_spec, train=mode == "train")
            click.echo(f"recomposition max abs diff ({mode} mode, fp32): {err:.3e}")


@cli.command("paths")
@click.argument("local")
@click.argument("hosts", nargs=-1)
@click.option("--blocks", type=click.IntRange(min=2), default=None, help="Block count for every service.")
@click.option("--skip/--no-skip", default=True, show_default=True, help="Include skip paths.")
@click.option("--min-skipped", type=click.IntRange(min=0), default=1, show_default=True,
              help="Local blocks every path must skip.")
@click.option("--max-hosts", type=click.IntRange(min=0), default=1, show_default=True,
              help="Longest chain of hosts in one path.")
@click.option("--limit", type=click.IntRange(min=0), default=20, show_default=True, help="Paths to list (0: all).")
@click.option("--paper-form", is_flag=True, help="List paths as lout/hin/hout/lin.")
@_model_options
@friendly
def paths_cmd(local: str, hosts: Sequence[str], blocks: int | None, skip: bool, min_skipped: int, max_hosts: int,
              limit: int, paper_form: bool, input_size: int, weights: str | None, num_classes: int | None) -> None:
    """Count and list candidate paths from LOCAL through HOSTS (models; NAME=MODEL to rename)."""
    from codenn.pathspace import PathSpace

    services: list[Service] = []
    for spec in (local, *hosts):
        s = _load(spec, blocks=blocks, input_size=input_size, weights=None if services else weights,
                  num_classes=num_classes)
        if any(o.name == s.name for o in services):
            raise click.UsageError(f"two services are named {s.name!r}; write NAME=MODEL, e.g. host={s.name}")
        services.append(s)
    space = PathSpace.between(services[0], services[1:], skip=skip, min_skipped=min_skipped, max_hosts=max_hosts)
    counts = space.counts()
    blocks_txt = ", ".join(f"{s.name}: {s.num_blocks} blocks" for s in services)
    click.echo(f"path space ({blocks_txt}): {counts['total']} paths ({counts['skip']} skip, {counts['cross']} cross)")
    for i, p in enumerate(space):
        if limit and i >= limit:
            click.echo(f"... {counts['total'] - limit} more (--limit 0 lists all)")
            break
        click.echo(p.paper_form() if paper_form and len(p.segments) <= 3 else str(p))


def run_config(config: str | None, **overrides: Any) -> RunConfig:
    """The run configuration of ``--config`` (or the embedded scenario) with command-line overrides."""
    import dataclasses

    from codenn import config as cfgmod

    run = cfgmod.load(config) if config else cfgmod.RunConfig()
    search = run.search
    train_over = {k: overrides.pop(k) for k in ("epochs", "device", "seed") if overrides.get(k) is not None}
    if train_over:
        search = dataclasses.replace(search, train=dataclasses.replace(search.train, **train_over))
    if overrides.get("latency_bound_us") is not None:
        bound = overrides.pop("latency_bound_us")
        search = dataclasses.replace(search, cost=dataclasses.replace(search.cost, latency_bound_us=bound))
    if overrides.get("objective") is not None:
        search = dataclasses.replace(search, cost=dataclasses.replace(search.cost, objective=overrides.pop("objective")))
    if overrides.get("screen_keep") is not None:
        search = dataclasses.replace(search, fast=dataclasses.replace(search.fast, screen_keep=overrides.pop("screen_keep")))
    rest = {k: v for k, v in overrides.items() if v is not None and k in ("strategy", "link")}
    if rest:
        search = dataclasses.replace(search, **rest)
    if overrides.get("quiet"):
        search = dataclasses.replace(search, train=dataclasses.replace(search.train, progress=False))
    executor = {key: overrides[opt] for opt, key in (("executor", "name"), ("address", "address"), ("workers", "workers"))
                if overrides.get(opt) is not None}
    return dataclasses.replace(run, search=search, executor=dataclasses.replace(run.executor, **executor))


def _search_options(fn: F) -> F:
    for opt in reversed([
        click.option("--config", "config", type=click.Path(dir_okay=False), default=None,
                     help="TOML file: services, data, coefficients, L_T, strategy, device, budget."),
        click.option("--strategy", type=click.Choice(["fast", "exhaustive"]), default=None, help="Search strategy."),
        click.option("--link", default=None, help="Link factory (codenn plugins lists them)."),
        click.option("--epochs", type=click.IntRange(min=1), default=None, help="Full training budget per path."),
        click.option("--screen-keep", type=click.IntRange(min=1), default=None,
                     help="fast: paths kept after least-squares screening."),
        click.option("--latency-bound-us", type=float, default=None, help="L_T of eq. (2), microseconds."),
        click.option("--objective", default=None, help="Objective: paper (eq. 1) or accuracy_throughput."),
        click.option("--device", default=None, help="cpu, cuda, cuda:1 ..."),
        click.option("--seed", type=int, default=None, help="Seed for link initialisation and batches."),
        click.option("--quiet", is_flag=True, help="No progress bars."),
        click.option("--executor", default=None,
                     help="Where path jobs run: inprocess (default) or ray (pip install 'codenn[ray]')."),
        click.option("--address", default=None, help="ray: the cluster's address (HOST:PORT); default: a local cluster."),
        click.option("--workers", type=click.IntRange(min=1), default=None,
                     help="ray: worker processes (default: one per CPU of the cluster)."),
    ]):
        fn = opt(fn)
    return fn


def _print_ranked(result: SearchResult, top: int = 12) -> None:
    table = Table(title=f"paths ranked by cost ({result.totals['trained']} trained, {result.totals['pruned']} pruned)")
    for col in ("#", "path", "lout/hin/hout/lin", "val acc", "test acc", "latency ms", "local GFLOPs",
                "host GFLOPs", "link params", "cost", "L_T"):
        table.add_column(col, justify="left" if col in ("path", "lout/hin/hout/lin") else "right",
                         no_wrap=col == "path")

    def add(rank: str, r: PathRow) -> None:
        ix = "/".join("-" if v is None else str(v) for v in (r.lout, r.hin, r.hout, r.lin))
        table.add_row(rank, r.spec, ix, f"{r.val_accuracy:.3f}", f"{r.test_accuracy:.3f}",
                      f"{r.latency_us / 1e3:.2f}", f"{r.local_gflops:.4f}", f"{r.host_gflops:.4f}",
                      f"{r.link_params:,}", f"{r.cost:.4f}", "ok" if r.feasible else "over")

    add("orig", result.original)
    for i, r in enumerate(result.ranked()[:top], 1):
        add(str(i), r)
    console.print(table)
    o = result.original
    console.print(f"original local model: L_A = {o.val_accuracy:.3f} (validation), "
                  f"{o.test_accuracy:.3f} (test), cost {o.cost:.4f}")
    _print_screened(result)
    if result.selected:
        s = result.selected
        console.print(f"selected: [bold]{s.spec}[/bold] — test accuracy {s.test_accuracy:.3f}, "
                      f"local compute {s.local_gflops:.4f} vs {o.local_gflops:.4f} GFLOPs, cost {s.cost:.4f}")
    console.print(f"decision: {result.decision}")
    t = result.totals
    console.print(f"{t['paths']} paths, {t['trained']} trained, {t['train_samples']:,} training sample-steps, "
                  f"{t['wall_seconds']:.0f} s; run directory: {result.run_dir}")


def _print_screened(result: SearchResult, top: int = 5) -> None:
    """What the hosts offered: the best cross paths the search dropped before full training, with
    the least-squares estimate they were judged on and why they were dropped."""
    cross = [r for r in result.rows if r.kind == "cross"]
    screened = sorted((r for r in cross if r.status == "pruned" and r.ls_accuracy is not None),
                      key=lambda r: math.inf if r.cost is None else r.cost)
    if not screened:
        if cross:
            trained = sum(r.status == "trained" for r in cross)
            console.print(f"cross paths: {len(cross)} considered, {trained} trained, "
                          f"{len(cross) - trained} pruned before screening (latency or cost bound)")
        return
    table = Table(title=f"best cross paths screened out ({len(screened)} screened by least squares, "
                        f"{sum(r.status == 'trained' for r in cross)} trained, {len(cross)} considered)")
    for col in ("path", "lout/hin/hout/lin", "LS val acc", "est. cost", "local GFLOPs", "host GFLOPs", "why dropped"):
        table.add_column(col, justify="left" if col in ("path", "lout/hin/hout/lin", "why dropped") else "right",
                         no_wrap=col == "path")
    for r in screened[:top]:
        ix = "/".join("-" if v is None else str(v) for v in (r.lout, r.hin, r.hout, r.lin))
        table.add_row(r.spec, ix, f"{r.ls_accuracy:.3f}", "-" if r.cost is None else f"{r.cost:.4f}",
                      f"{r.local_gflops:.4f}", f"{r.host_gflops:.4f}", r.reason)
    console.print(table)


def _search(run: RunConfig, out: str, fresh: bool) -> Search:
    """A Search over ``run``'s scenario (base models trained on first use) writing to ``out``,
    with the configuration recorded so that every other command can reload the run."""
    import shutil

    from codenn.executor import executor_for
    from codenn.scenario import scenario_from_config
    from codenn.search import Search

    executor = executor_for(run)  # an unknown name fails before any base model is trained
    scenario = scenario_from_config(run, log=lambda m: console.print(m))
    if fresh and os.path.isdir(out):
        shutil.rmtree(out)
    return Search(scenario.local, scenario.hosts, scenario.splits, run.search, run_dir=out,
                  log=lambda m: console.print(m), metadata={"run_config": run.to_dict(), "base_models": scenario.info},
                  executor=executor)


def run_search(run: RunConfig, out: str | None, fresh: bool = False) -> SearchResult:
    """Search ``run``'s path space; the run directory defaults to runs/STRATEGY-CONFIGHASH (the hash
    of the whole run configuration: services and search)."""
    return _search(run, out or f"runs/{run.search.strategy}-{run.hash()[:8]}", fresh).run()


@cli.command("search")
@_search_options
@click.option("--out", default=None, help="Run directory (default runs/STRATEGY-CONFIGHASH; resumes if it exists).")
@click.option("--fresh", is_flag=True, help="Delete the run directory first instead of resuming.")
@friendly
def search_cmd(config: str | None, out: str | None, fresh: bool, **overrides: Any) -> None:
    """Search the path space (default: the embedded scenario) and write a run directory."""
    run = run_config(config, **overrides)
    _print_ranked(run_search(run, out, fresh))


@cli.command("train")
@click.argument("spec")
@_search_options
@click.option("--out", default="runs/train", show_default=True,
              help="Run directory (evaluate, export, serve-host and serve accept it); adds to a run of the same config.")
@click.option("--fresh", is_flag=True, help="Delete the run directory first (needed when the config changed).")
@friendly
def train_cmd(spec: str, config: str | None, out: str, fresh: bool, **overrides: Any) -> None:
    """Train one path SPEC (e.g. 'alexnet[:1] > mobilenet_v2[1:4] > alexnet[5:]') into a run directory."""
    row = _search(run_config(config, **overrides), out, fresh).train_one(spec)
    click.echo(json.dumps(row.to_dict(), indent=2))


@cli.command("evaluate")
@click.argument("run_dir", type=click.Path(file_okay=False))
@friendly
def evaluate_cmd(run_dir: str) -> None:
    """Re-measure every trained path of RUN_DIR: reload services and links, recompute accuracy."""
    from codenn.evaluate import evaluate_run

    rows = evaluate_run(run_dir, log=lambda m: console.print(m))
    table = Table(title=f"re-measured paths in {run_dir}")
    for col in ("path", "stored val", "now val", "stored test", "now test"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["spec"], f"{r['stored_val']:.3f}", f"{r['val_accuracy']:.3f}", f"{r['stored_test']:.3f}",
                      f"{r['test_accuracy']:.3f}")
    console.print(table)


@cli.command("demo")
@friendly
def demo_cmd() -> None:
    """Run the main job on the embedded default scenario (codenn search with its defaults)."""
    run = run_config(None)
    _print_ranked(run_search(run, None))


def main(argv: Sequence[str] | None = None) -> None:
    try:
        cli.main(args=list(argv) if argv is not None else None, prog_name="codenn")
    except CodennError as exc:  # a broken plugin found while listing commands
        click.echo(f"Error: {exc}", err=True)
        sys.exit(1)
