"""The ``codenn`` command line (click)."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from functools import wraps
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.table import Table

from codenn.errors import CodennError

F = TypeVar("F", bound=Callable[..., Any])
console = Console()


def _friendly(fn: F) -> F:
    """Turn a CodennError into a one-line message and exit status 2, never a traceback."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except CodennError as exc:
            raise click.ClickException(str(exc)) from exc

    return wrapper  # type: ignore[return-value]


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


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="codenn")
def cli() -> None:
    """codenn: coordinate frozen DNN services through trainable links."""


@cli.command("plugins")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@_friendly
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
@_friendly
def describe_cmd(model: str, blocks: int | None, input_size: int, weights: str | None, num_classes: int | None) -> None:
    """Print MODEL's service card (JSON): boundaries, per-block params and FLOPs. Never parameters."""
    service = _load(model, blocks=blocks, input_size=input_size, weights=weights, num_classes=num_classes)
    click.echo(service.card.to_json())


@cli.command("split")
@click.argument("model")
@click.option("--blocks", type=click.IntRange(min=1), required=True, help="Block count.")
@click.option("--check", is_flag=True, help="Compare the composed blocks with the original model.")
@_model_options
@_friendly
def split_cmd(model: str, blocks: int, check: bool, input_size: int, weights: str | None, num_classes: int | None) -> None:
    """Split MODEL into blocks and list them; --check prints the recomposition error."""
    service = _load(model, blocks=blocks, input_size=input_size, weights=weights, num_classes=num_classes)
    table = Table(title=f"{service.name}: {service.num_blocks} blocks ({service.splitter_name} splitter)")
    for col in ("block", "name", "params", "MFLOPs", "output boundary"):
        table.add_column(col)
    for card, spec in zip(service.card.blocks, service.boundaries):
        table.add_row(str(card.index), card.name, f"{card.params:,}", f"{card.flops / 1e6:.2f}",
                      f"{spec.layout} {tuple(spec.shape)}")
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
@_friendly
def paths_cmd(local: str, hosts: Sequence[str], blocks: int | None, skip: bool, min_skipped: int, max_hosts: int,
              limit: int, paper_form: bool, input_size: int, weights: str | None, num_classes: int | None) -> None:
    """Count and list candidate paths from LOCAL through HOSTS (models; NAME=MODEL to rename)."""
    from codenn.pathspace import PathSpace

    services = []
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


@cli.command("demo")
@_friendly
def demo_cmd() -> None:
    """Run the embedded default scenario."""
    from codenn.demo import run_demo

    run_demo(console)


def main(argv: Sequence[str] | None = None) -> None:
    cli.main(args=list(argv) if argv is not None else None, prog_name="codenn")
