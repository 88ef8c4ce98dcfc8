"""``codenn export``: a trained path to ONNX files per provider side, checked (codenn_adapters.onnx_export)."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import click
from rich.table import Table

from codenn.cli import console, friendly, run_config, run_dir_option


@click.command("export")
@click.argument("run_or_spec", required=False, metavar="[RUN_OR_SPEC]")
@run_dir_option("Run directory of `codenn search`: export its selected path (or --spec).", exists=True)
@click.option("--spec", "chosen", default=None,
              help="A path spec: with --run, that trained path instead of the selected one; alone, the path with "
                   "fresh links through the config's services.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Directory for the ONNX files and export.json.")
@click.option("--config", "config", type=click.Path(dir_okay=False), default=None,
              help="With a path spec: TOML whose services the spec runs through (default: the embedded scenario).")
@click.option("--untrained", is_flag=True,
              help="With a path spec: randomly initialised services of the config's architectures (no base-model training).")
@click.option("--link", default=None, help="With a path spec: link factory of the fresh links (default: the config's).")
@click.option("--fp16", is_flag=True, help="Export half-precision files (parity checked against fp32 PyTorch).")
@click.option("--opset", type=click.IntRange(min=18), default=18, show_default=True, help="ONNX opset.")
@click.option("--exporter", type=click.Choice(["auto", "dynamo", "torchscript"]), default="auto", show_default=True,
              help="auto: torch.onnx dynamo exporter, TorchScript only if dynamo fails.")
@friendly
def export_cmd(run_or_spec: str | None, run_dir: str | None, out: str, chosen: str | None, config: str | None,
               untrained: bool, link: str | None, fp16: bool, opset: int, exporter: str) -> None:
    """Export a path to ONNX: the local side, each host side and one merged file, all checked.

    --run RUN exports a run's selected path (or --spec, one of its trained paths); --spec alone a
    path spec such as 'alexnet[:1] > mobilenet_v2[1:4] > alexnet[5:]' with fresh links.
    """
    from codenn.search.store import load_run_path
    from codenn_adapters.onnx_export import export_path

    log = lambda m: console.print(m)  # noqa: E731
    run_dir, chosen = _legacy_target(run_or_spec, run_dir, chosen)
    if run_dir is not None:
        if config or untrained or link:
            raise click.UsageError("--config, --untrained and --link apply to a path spec, not to a run directory")
        path, real = load_run_path(run_dir, chosen, log=log)
    else:
        if chosen is None or "[" not in chosen:
            raise click.UsageError(f"{chosen!r} is not a path spec (e.g. 'alexnet[:1] > mobilenet_v2[1:4] > alexnet[5:]'); "
                                   "give --run RUN or --spec SPEC")
        path, real = _fresh_path(chosen, config, untrained, link, log)
    result = export_path(path, out, real_inputs=real, fp16=fp16, opset=opset, exporter=exporter, log=log)
    table = Table(title=f"{result.spec}: ONNX files in {result.out_dir} ({result.dtype}, opset {result.opset})")
    for col in ("file", "role", "provider", "runs", "params", "MB", "exporter"):
        table.add_column(col)
    for f in result.files:
        runs = " > ".join(f.ops) if len(f.ops) <= 6 else f"{' > '.join(f.ops[:3])} ... {f.ops[-1]} ({len(f.ops)} ops)"
        table.add_row(f.name, f.role, f.provider, runs, f"{f.parameters:,}", f"{f.bytes / 1e6:.1f}", f.exporter)
    console.print(table)
    parity = Table(title="parity with PyTorch (onnxruntime CPU)")
    for col in ("file", "inputs", "batch", "max abs diff", "output scale", "relative", "tolerance", "ok"):
        parity.add_column(col)
    for p in result.parity:
        parity.add_row(p.file, p.inputs, str(p.batch), f"{p.max_abs:.2e}", f"{p.scale:.3g}", f"{p.rel:.2e}",
                       f"{p.tolerance:g}", "yes" if p.ok else "NO")
    console.print(parity)
    for c in result.leaks:
        console.print(f"{c.file}: no tensor of another provider ({c.tensors_checked} tensors checked against "
                      f"{c.forbidden} of other providers)")
    for name, why in result.fallbacks.items():
        console.print(f"{name}: TorchScript exporter used because the dynamo exporter failed: {why}")
    console.print(f"exporter: {result.exporter}; manifest: {os.path.join(result.out_dir, 'export.json')}; "
                  f"{result.seconds:.1f} s")


def _legacy_target(run_or_spec: str | None, run_dir: str | None, chosen: str | None) -> tuple[str | None, str | None]:
    """(run directory, spec) from ``--run``/``--spec``, or from the positional RUN_OR_SPEC of earlier releases."""
    if run_or_spec is None:
        if run_dir is None and chosen is None:
            raise click.UsageError("what to export? give --run RUN (a run's selected path) or --spec SPEC (fresh links)")
        return run_dir, chosen
    if run_dir is not None:
        raise click.UsageError("give the run directory once: --run RUN")
    new = "--run RUN" if os.path.isdir(run_or_spec) else "--spec SPEC"
    click.echo(f"warning: `codenn export RUN_OR_SPEC` is deprecated and goes away in the next release; use {new}",
               err=True)
    if os.path.isdir(run_or_spec):
        return run_or_spec, chosen
    if "[" not in run_or_spec:
        raise click.UsageError(f"{run_or_spec!r} is neither a run directory nor a path spec "
                               "(e.g. 'alexnet[:1] > mobilenet_v2[1:4] > alexnet[5:]')")
    if chosen:
        raise click.UsageError("--spec names the path to export; give it once")
    return None, run_or_spec


def _fresh_path(spec: str, config: str | None, untrained: bool, link: str | None, log: Callable[[str], None]) -> Any:
    """A path SPEC with fresh links through the services of a config (trained or not), and real inputs."""
    import torch

    from codenn.model.service import Service
    from codenn.paths.composed import ComposedPath
    from codenn.paths.spec import PathSpec
    from codenn.train.data import tensors
    from codenn.train.scenario import scenario_from_config
    from codenn.train.tasks import task_splits

    run = run_config(config)
    size = run.local.base.size
    splits = task_splits(run.local.base.task, size, run.local.base.seed)
    if untrained:
        wanted = {run.local.name: run.local.base, **{h.name: h.base for h in run.hosts}}
        parsed = PathSpec.parse(spec)
        services = []
        for name in dict.fromkeys(s.service for s in parsed.segments):
            if name not in wanted:
                raise click.UsageError(f"path {spec!r} names service {name!r}; the config has {sorted(wanted)}")
            classes = splits.num_classes if name == run.local.name else None
            services.append(Service.from_name(wanted[name].model, name=name, num_classes=classes,
                                              input_shape=(3, size, size)))
    else:
        scenario = scenario_from_config(run, log=log)
        services = [scenario.local, *scenario.hosts]
    torch.manual_seed(run.search.train.seed)
    path = ComposedPath(spec, services, link=link or run.search.link, link_options=run.search.link_options)
    x, _ = tensors(splits.test, limit=8)
    return path.eval(), x
