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
from collections.abc import Callable, Mapping, Sequence
from functools import wraps
from typing import TYPE_CHECKING, Any, TypeVar, cast

import click
from rich.console import Console
from rich.table import Table

from codenn.config.flags import Flag
from codenn.errors import CodennError

if TYPE_CHECKING:
    from codenn.config.run import RunConfig
    from codenn.contracts.plugins import Plugins
    from codenn.model.service import Service
    from codenn.paths.rows import PathRow
    from codenn.search.strategies import Search, SearchResult

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
    from codenn.model.service import Service

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
        from codenn.contracts.plugins import get_plugins
        from codenn.errors import PluginError

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
    from codenn.contracts.plugins import get_plugins

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
@click.option("--blocks", type=click.IntRange(min=1), default=None,
              help="Block count (default: the splitter's, capped at the model's maximum).")
@click.option("--check", is_flag=True, help="Compare the composed blocks with the original model.")
@_model_options
@friendly
def split_cmd(model: str, blocks: int | None, check: bool, input_size: int, weights: str | None, num_classes: int | None) -> None:
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
    from codenn.paths.space import PathSpace

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


def run_config(config: str | None, values: Mapping[str, Any] | None = None) -> RunConfig:
    """The run configuration of ``--config`` (or the embedded scenario) with the command line's
    :data:`~codenn.config.flags.SEARCH_FLAGS` values set."""
    from codenn.config.flags import SEARCH_FLAGS, apply_flags
    from codenn.config.run import RunConfig, load

    run = load(config) if config else RunConfig()
    return apply_flags(run, SEARCH_FLAGS, values or {})


def _click_type(flag: Flag) -> Any:
    if flag.choices:
        return click.Choice(list(flag.choices))
    if flag.kind in ("int", "float"):
        if flag.minimum is None and flag.maximum is None:
            return int if flag.kind == "int" else float
        if flag.kind == "int":
            return click.IntRange(None if flag.minimum is None else int(flag.minimum),
                                  None if flag.maximum is None else int(flag.maximum), min_open=flag.min_open)
        return click.FloatRange(flag.minimum, flag.maximum, min_open=flag.min_open)
    return {"file": click.Path(dir_okay=False), "existing-file": click.Path(dir_okay=False, exists=True),
            "dir": click.Path(file_okay=False)}.get(flag.kind, str)


def _warn_deprecated(old: str, new: str) -> Callable[[click.Context, click.Parameter, Any], Any]:
    def callback(_ctx: click.Context, _param: click.Parameter, value: Any) -> Any:
        if value is not None and value is not False:
            click.echo(f"warning: {old} is deprecated and goes away in the next release; use {new}", err=True)
        return value

    return callback


def deprecated_alias(old: str, new: str, dest: str, **click_kwargs: Any) -> Callable[[F], F]:
    """A hidden option ``old`` whose value :func:`take_values` gives to ``dest`` (with a warning)."""
    return click.option(old, f"{dest}__deprecated_{old.strip('-').replace('-', '_')}", hidden=True, default=None,
                        callback=_warn_deprecated(old, new), expose_value=True, **click_kwargs)


def flag_options(flags: Sequence[Flag], defaults: Any = None) -> Callable[[F], F]:
    """Click options for ``flags``; with ``defaults`` (a config object) each shows its field's value
    there as its default, else an unset option leaves the field as the configuration has it."""
    from codenn.config.flags import field_default

    def decorate(fn: F) -> F:
        for flag in reversed(flags):
            if flag.kind == "flag":
                fn = click.option(flag.option, flag.dest, is_flag=True, help=flag.help)(fn)
            else:
                default = None if defaults is None else field_default(defaults, flag)
                fn = click.option(flag.option, flag.dest, type=_click_type(flag), default=default,
                                  show_default=defaults is not None, help=flag.help)(fn)
            for old in flag.deprecated:
                fn = deprecated_alias(old, flag.option, flag.dest, type=_click_type(flag))(fn)
        return fn

    return decorate


def take_values(kwargs: dict[str, Any], dests: Sequence[str]) -> dict[str, Any]:
    """Remove ``dests`` (and their deprecated aliases, which win when given) from a command's
    keyword arguments and return them."""
    out = {d: kwargs.pop(d, None) for d in dests}
    for key in [k for k in kwargs if k.split("__deprecated_", 1)[0] in out and "__deprecated_" in k]:
        value = kwargs.pop(key)
        if value is not None:
            out[key.split("__deprecated_", 1)[0]] = value
    return out


def _search_options(fn: F) -> F:
    from codenn.config.flags import SEARCH_FLAGS

    fn = flag_options(SEARCH_FLAGS)(fn)
    return click.option("--config", "config", type=click.Path(dir_okay=False), default=None,
                        help="TOML file: services, data, coefficients, L_T, strategy, device, budget.")(fn)


def _search_values(kwargs: dict[str, Any]) -> dict[str, Any]:
    from codenn.config.flags import SEARCH_FLAGS

    return take_values(kwargs, [f.dest for f in SEARCH_FLAGS])


def run_dir_option(help: str, *, required: bool = False, default: str | None = None, exists: bool = False,
                   old: Sequence[str] = ()) -> Callable[[F], F]:
    """``--run RUN``, the one spelling of a run directory on every command (``old`` spellings
    still accepted for one release, with a warning)."""

    def decorate(fn: F) -> F:
        fn = click.option("--run", "run_dir", required=required and not old, default=default, show_default=bool(default),
                          type=click.Path(file_okay=False, exists=exists), help=help)(fn)
        for spelling in old:
            fn = deprecated_alias(spelling, "--run", "run_dir", type=click.Path(file_okay=False, exists=exists))(fn)
        return fn

    return decorate


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

    from codenn.search.executors import executor_for
    from codenn.search.strategies import Search
    from codenn.train.scenario import scenario_from_config

    executor = executor_for(run)  # an unknown name fails before any base model is trained
    scenario = scenario_from_config(run, log=lambda m: console.print(m))
    if fresh and os.path.isdir(out):
        shutil.rmtree(out)
    return Search(scenario.local, scenario.hosts, scenario.splits, run.search, run_dir=out,
                  log=lambda m: console.print(m), metadata={"base_models": scenario.info}, executor=executor,
                  run_config=run)


def run_search(run: RunConfig, out: str | None, fresh: bool = False) -> SearchResult:
    """Search ``run``'s path space; the run directory defaults to runs/STRATEGY-CONFIGHASH (the hash
    of the whole run configuration: services and search)."""
    return _search(run, out or f"runs/{run.search.strategy}-{run.hash()[:8]}", fresh).run()


@cli.command("search")
@_search_options
@run_dir_option("Run directory (default runs/STRATEGY-CONFIGHASH; resumes if it exists).", old=("--out",))
@click.option("--fresh", is_flag=True, help="Delete the run directory first instead of resuming.")
@friendly
def search_cmd(config: str | None, fresh: bool, **kwargs: Any) -> None:
    """Search the path space (default: the embedded scenario) and write a run directory."""
    run = run_config(config, _search_values(kwargs))
    _print_ranked(run_search(run, take_values(kwargs, ["run_dir"])["run_dir"], fresh))


@cli.command("train")
@click.argument("spec")
@_search_options
@run_dir_option("Run directory (evaluate, export, serve-host and serve accept it); adds to a run of the same config.",
                default="runs/train", old=("--out",))
@click.option("--fresh", is_flag=True, help="Delete the run directory first (needed when the config changed).")
@friendly
def train_cmd(spec: str, config: str | None, fresh: bool, **kwargs: Any) -> None:
    """Train one path SPEC (e.g. 'alexnet[:1] > mobilenet_v2[1:4] > alexnet[5:]') into a run directory."""
    run = run_config(config, _search_values(kwargs))
    row = _search(run, take_values(kwargs, ["run_dir"])["run_dir"], fresh).train_one(spec)
    click.echo(json.dumps(row.to_dict(), indent=2))


@cli.command("evaluate")
@click.argument("legacy_run", required=False, metavar="[RUN]", type=click.Path(file_okay=False))
@run_dir_option("Run directory of `codenn search` or `codenn train`.")
@friendly
def evaluate_cmd(legacy_run: str | None, run_dir: str | None) -> None:
    """Re-measure every trained path of a run: reload services and links, recompute accuracy."""
    from codenn.search.evaluate import evaluate_run

    if legacy_run is not None:
        if run_dir is not None:
            raise click.UsageError("give the run directory once: --run RUN")
        click.echo("warning: `codenn evaluate RUN` is deprecated and goes away in the next release; use "
                   "`codenn evaluate --run RUN`", err=True)
        run_dir = legacy_run
    if run_dir is None:
        raise click.UsageError("which run? give --run RUN (a directory `codenn search` or `codenn train` wrote)")
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
    _print_ranked(run_search(run_config(None), None))


def main(argv: Sequence[str] | None = None) -> None:
    try:
        cli.main(args=list(argv) if argv is not None else None, prog_name="codenn")
    except CodennError as exc:  # a broken plugin found while listing commands
        click.echo(f"Error: {exc}", err=True)
        sys.exit(1)
