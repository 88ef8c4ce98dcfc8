"""The ``codenn`` command line (click)."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Sequence
from functools import wraps
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.table import Table

from codenn.errors import CodennError

F = TypeVar("F", bound=Callable[..., Any])
console = Console(width=None if sys.stdout.isatty() else 200)


def _friendly(fn: F) -> F:
    """Turn a CodennError into a one-line message and exit status 1, never a traceback."""

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


def _run_config(config: str | None, **overrides: Any) -> Any:
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
    return dataclasses.replace(run, search=search)


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
    ]):
        fn = opt(fn)
    return fn


def _print_ranked(result: Any, top: int = 12) -> None:
    table = Table(title=f"paths ranked by cost ({result.totals['trained']} trained, {result.totals['pruned']} pruned)")
    for col in ("#", "path", "lout/hin/hout/lin", "val acc", "test acc", "latency ms", "local GFLOPs",
                "host GFLOPs", "link params", "cost", "L_T"):
        table.add_column(col, justify="left" if col in ("path", "lout/hin/hout/lin") else "right",
                         no_wrap=col == "path")

    def add(rank: str, r: dict[str, Any]) -> None:
        ix = "/".join("-" if r[k] is None else str(r[k]) for k in ("lout", "hin", "hout", "lin"))
        table.add_row(rank, r["spec"], ix, f"{r['val_accuracy']:.3f}", f"{r['test_accuracy']:.3f}",
                      f"{r['latency_us'] / 1e3:.2f}", f"{r['local_gflops']:.4f}", f"{r['host_gflops']:.4f}",
                      f"{r['link_params']:,}", f"{r['cost']:.4f}", "ok" if r["feasible"] else "over")

    add("orig", result.original)
    for i, r in enumerate(result.ranked()[:top], 1):
        add(str(i), r)
    console.print(table)
    o = result.original
    console.print(f"original local model: L_A = {o['val_accuracy']:.3f} (validation), "
                  f"{o['test_accuracy']:.3f} (test), cost {o['cost']:.4f}")
    if result.selected:
        s = result.selected
        console.print(f"selected: [bold]{s['spec']}[/bold] — test accuracy {s['test_accuracy']:.3f}, "
                      f"local compute {s['local_gflops']:.4f} vs {o['local_gflops']:.4f} GFLOPs, cost {s['cost']:.4f}")
    console.print(f"decision: {result.decision}")
    t = result.totals
    console.print(f"{t['paths']} paths, {t['trained']} trained, {t['train_samples']:,} training sample-steps, "
                  f"{t['wall_seconds']:.0f} s; run directory: {result.run_dir}")


def run_search(run: Any, out: str | None, fresh: bool = False) -> Any:
    """Build the scenario for ``run`` (training base models on first use) and search."""
    import shutil

    from codenn.scenario import scenario_from_config
    from codenn.search import Search

    scenario = scenario_from_config(run, log=lambda m: console.print(m))
    out = out or f"runs/{run.search.strategy}-{run.search.hash()[:8]}"
    if fresh and os.path.isdir(out):
        shutil.rmtree(out)
    search = Search(scenario.local, scenario.hosts, scenario.splits, run.search, run_dir=out,
                    log=lambda m: console.print(m), metadata={"run_config": run.to_dict(),
                                                              "base_models": scenario.info})
    return search.run()


@cli.command("search")
@_search_options
@click.option("--out", default=None, help="Run directory (default runs/STRATEGY-CONFIGHASH; resumes if it exists).")
@click.option("--fresh", is_flag=True, help="Delete the run directory first instead of resuming.")
@_friendly
def search_cmd(config: str | None, out: str | None, fresh: bool, **overrides: Any) -> None:
    """Search the path space (default: the embedded scenario) and write a run directory."""
    run = _run_config(config, **overrides)
    _print_ranked(run_search(run, out, fresh))


@cli.command("train")
@click.argument("spec")
@_search_options
@click.option("--out", default="runs/train", show_default=True, help="Where the links and manifest go.")
@_friendly
def train_cmd(spec: str, config: str | None, out: str, **overrides: Any) -> None:
    """Train one path SPEC (e.g. 'alexnet[:1] > mobilenet_v2[1:4] > alexnet[5:]') and save its links."""
    from codenn.scenario import scenario_from_config
    from codenn.search import Search

    run = _run_config(config, **overrides)
    scenario = scenario_from_config(run, log=lambda m: console.print(m))
    search = Search(scenario.local, scenario.hosts, scenario.splits, run.search, run_dir=out,
                    log=lambda m: console.print(m))
    row = search.train_one(spec)
    click.echo(json.dumps(row, indent=2))


@cli.command("evaluate")
@click.argument("run_dir", type=click.Path(file_okay=False))
@_friendly
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


@cli.command("export")
@click.argument("run_or_spec")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Directory for the ONNX files and export.json.")
@click.option("--spec", "chosen", default=None,
              help="With a run directory: export this trained path instead of the selected one.")
@click.option("--config", "config", type=click.Path(dir_okay=False), default=None,
              help="With a path spec: TOML whose services the spec runs through (default: the embedded scenario).")
@click.option("--untrained", is_flag=True,
              help="With a path spec: randomly initialised services of the config's architectures (no base-model training).")
@click.option("--link", default=None, help="With a path spec: link factory of the fresh links (default: the config's).")
@click.option("--fp16", is_flag=True, help="Export half-precision files (parity checked against fp32 PyTorch).")
@click.option("--opset", type=click.IntRange(min=18), default=18, show_default=True, help="ONNX opset.")
@click.option("--exporter", type=click.Choice(["auto", "dynamo", "torchscript"]), default="auto", show_default=True,
              help="auto: torch.onnx dynamo exporter, TorchScript only if dynamo fails.")
@_friendly
def export_cmd(run_or_spec: str, out: str, chosen: str | None, config: str | None, untrained: bool, link: str | None,
               fp16: bool, opset: int, exporter: str) -> None:
    """Export a path to ONNX: the local side, each host side and one merged file, all checked.

    RUN_OR_SPEC is a run directory of `codenn search` (its selected path, or --spec) or a path
    spec such as 'alexnet[:1] > mobilenet_v2[1:4] > alexnet[5:]' (fresh links).
    """
    from codenn_adapters.onnx_export import export_path, load_run_path

    log = lambda m: console.print(m)  # noqa: E731
    if os.path.isdir(run_or_spec):
        if config or untrained or link:
            raise click.UsageError("--config, --untrained and --link apply to a path spec, not to a run directory")
        path, real = load_run_path(run_or_spec, chosen, log=log)
    else:
        if "[" not in run_or_spec:
            raise click.UsageError(f"{run_or_spec!r} is neither a run directory nor a path spec "
                                   "(e.g. 'alexnet[:1] > mobilenet_v2[1:4] > alexnet[5:]')")
        if chosen:
            raise click.UsageError("--spec applies to a run directory; give the path spec as RUN_OR_SPEC")
        path, real = _fresh_path(run_or_spec, config, untrained, link, log)
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


def _fresh_path(spec: str, config: str | None, untrained: bool, link: str | None, log: Callable[[str], None]) -> Any:
    """A path SPEC with fresh links through the services of a config (trained or not), and real inputs."""
    import torch

    from codenn.data import tensors
    from codenn.paths import Path
    from codenn.pathspec import PathSpec
    from codenn.scenario import scenario_from_config, task_splits
    from codenn.service import Service

    run = _run_config(config)
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
    path = Path(spec, services, link=link or run.search.link, link_options=run.search.link_options)
    x, _ = tensors(splits.test, limit=8)
    return path.eval(), x


@cli.command("serve-host")
@click.option("--run", "--links", "run_dir", required=True, type=click.Path(file_okay=False, exists=True),
              help="Run directory of `codenn search` whose trained cross paths this host serves.")
@click.option("--service", required=True, help="This host's service name in the run (e.g. mobilenet_v2).")
@click.option("--token-file", required=True, type=click.Path(dir_okay=False, exists=True),
              help='JSON {"local provider name": "token", ...}; only these bearer tokens get in.')
@click.option("--host", "bind", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(1, 65535), default=8100, show_default=True)
@click.option("--max-bytes", type=click.IntRange(min=1024), default=64 * 1024 * 1024, show_default=True,
              help="Largest request body accepted (413 above).")
@click.option("--spec", "specs", multiple=True, help="Serve only this path (repeatable). Default: every trained "
                                                      "cross path through --service.")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Split-training learning rate of this host's optimizer (default: the run's).")
@click.option("--weight-decay", type=click.FloatRange(min=0), default=None,
              help="Split-training weight decay (default: the run's).")
@click.option("--device", default="cpu", show_default=True, help="Device the host segments run on.")
@click.option("--ssl-keyfile", type=click.Path(dir_okay=False, exists=True), default=None, help="TLS key (uvicorn).")
@click.option("--ssl-certfile", type=click.Path(dir_okay=False, exists=True), default=None, help="TLS certificate.")
@click.option("--save-dir", type=click.Path(file_okay=False), default=None,
              help="On shutdown, write the links that split training changed to DIR/NAME.safetensors.")
@click.option("--check", is_flag=True, help="Build the segments and list them, then exit without serving.")
@click.option("--replicas", type=click.IntRange(min=1), default=None,
              help="Serve on Ray Serve with N replicas (pip install 'codenn[ray]'); split training needs 1.")
@_friendly
def serve_host_cmd(run_dir: str, service: str, token_file: str, bind: str, port: int, max_bytes: int,
                   specs: tuple[str, ...], lr: float | None, weight_decay: float | None, device: str,
                   ssl_keyfile: str | None, ssl_certfile: str | None, save_dir: str | None, check: bool,
                   replicas: int | None) -> None:
    """Serve this host's part of a run's trained cross paths over the Open Inference Protocol v2.

    Each path 'local[..lout] > SERVICE[hin:hout+1] > local[lin..]' becomes one model (entry
    link, SERVICE's frozen blocks, exit link), named by a URL-safe slug of its spec. Only the
    host-side link weights are loaded; the local provider's model is never built here.
    """
    from codenn_adapters.host_segment import segments_from_run
    from codenn_adapters.host_server import create_app, load_tokens, serve

    tokens = load_tokens(token_file)
    if bool(ssl_keyfile) != bool(ssl_certfile):
        raise click.UsageError("--ssl-keyfile and --ssl-certfile go together")
    if replicas is not None and ssl_certfile:
        raise click.UsageError("--replicas serves through Ray Serve's HTTP proxy, without TLS: put a TLS proxy in front")
    segments = segments_from_run(run_dir, service, specs=specs, lr=lr, weight_decay=weight_decay, device=device,
                                 log=lambda m: console.print(m))
    app = create_app(segments, tokens=tokens, max_bytes=max_bytes, save_dir=save_dir)
    scheme = "https" if ssl_certfile else "http"
    table = Table(title=f"{service} serves {len(segments)} model(s) at {scheme}://{bind}:{port}/v2/models/NAME")
    for col in ("model name", "path", "input", "output"):
        table.add_column(col)
    for seg in segments:
        table.add_row(seg.name, str(seg.spec), str(list(seg.input_spec.shape)), str(list(seg.output_spec.shape)))
    console.print(table)
    console.print(f"tokens for: {', '.join(sorted(tokens))}; body limit {max_bytes} bytes")
    if bind not in ("127.0.0.1", "localhost", "::1") and not ssl_certfile:
        console.print("[yellow]warning: listening beyond loopback without TLS: bearer tokens and tensors travel "
                      "in clear text; use --ssl-certfile/--ssl-keyfile or a TLS proxy[/yellow]")
    if check:
        return
    if replicas is not None:
        from codenn_adapters.ray_host import deploy_segments, serve_until_interrupted

        running = deploy_segments(segments, tokens=tokens, num_replicas=replicas, host=bind, port=port,
                                  max_bytes=max_bytes, save_dir=save_dir)
        console.print(f"Ray Serve: {replicas} replica(s) at {running.url}; Ctrl-C stops")
        serve_until_interrupted(running)
        return
    serve(app, host=bind, port=port, ssl_keyfile=ssl_keyfile, ssl_certfile=ssl_certfile)


@cli.command("serve")
@click.option("--run", "run_dir", required=True, type=click.Path(file_okay=False, exists=True),
              help="Run directory of `codenn search`: the local service, its trained paths and their measures.")
@click.option("--token-file", required=True, type=click.Path(dir_okay=False, exists=True),
              help='JSON {"client name": "token", ...}: who may call this server.')
@click.option("--remote", "remotes", multiple=True, metavar="HOST=URL",
              help="A host provider's server, e.g. mobilenet_v2=http://127.0.0.1:8100 (repeatable).")
@click.option("--host-token-file", type=click.Path(dir_okay=False, exists=True), default=None,
              help='JSON {"host name": "token"}: the bearer token this provider presents to each host.')
@click.option("--spec", "specs", multiple=True,
              help="Serve this path besides the original model (repeatable). Default: the run's selected path and "
                   "every trained cross path through a --remote host.")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Local compute slots (the local load is the queue per slot).")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=1.0, show_default=True,
              help="Seconds to wait for a host before running the request locally.")
@click.option("--retry-after", type=click.FloatRange(min=0), default=2.0, show_default=True,
              help="Seconds a failed host is left alone.")
@click.option("--config", "config_file", type=click.Path(dir_okay=False, exists=True), default=None,
              help="TOML run config whose [search.cost] coefficients weigh the routes (default: the run's).")
@click.option("--host", "bind", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(1, 65535), default=8000, show_default=True)
@click.option("--calibrate/--no-calibrate", default=True, show_default=True,
              help="Measure every route's local time, host compute and T_cm here at start-up, instead of "
                   "trusting the search's profile.")
@click.option("--check", is_flag=True, help="Build the routes and list them, then exit without serving.")
@_friendly
def serve_cmd(run_dir: str, token_file: str, remotes: tuple[str, ...], host_token_file: str | None,
              specs: tuple[str, ...], workers: int, timeout: float, retry_after: float, config_file: str | None,
              bind: str, port: int, calibrate: bool, check: bool) -> None:
    """Serve the local provider's service, routing each request by load (eq. (1), re-weighted).

    One OIP v2 model named after the local service; each answer's parameters name the route that
    served it ('offloaded', 'fallback'). A host that fails or exceeds --timeout is skipped for
    --retry-after seconds and its requests run locally: none is lost.
    """
    from codenn.config import from_dict
    from codenn.coordinator import RoutingConfig
    from codenn.runstore import RunStore
    from codenn.transport import make_transport
    from codenn_adapters.host_server import create_app, load_tokens, serve
    from codenn_adapters.local_server import CoordinatedModel, coordinator_from_run

    tokens = load_tokens(token_file)
    host_tokens = load_tokens(host_token_file) if host_token_file else {}
    urls = {}
    for item in remotes:
        name, sep, url = item.partition("=")
        if not sep or not name or not url:
            raise click.UsageError(f"--remote {item!r} must look like HOST=URL, e.g. mobilenet_v2=http://127.0.0.1:8100")
        urls[name] = url
    run_json = RunStore(run_dir).read_json("run.json") or {}
    if config_file or "run_config" not in run_json.get("metadata", {}):
        cost = _run_config(config_file).search.cost
    else:
        cost = from_dict(run_json["metadata"]["run_config"]).search.cost
    routing = RoutingConfig(cost=cost, workers=workers, timeout_s=timeout, retry_after_s=retry_after)
    transports = {name: make_transport("http", url=url, token=host_tokens.get(name), timeout=timeout)
                  for name, url in urls.items()}
    local, coordinator = coordinator_from_run(run_dir, hosts=transports, specs=specs, routing=routing,
                                              log=lambda m: console.print(m))
    if calibrate:
        coordinator.calibrate(local.input_spec.example(batch=1, seed=1))
    table = Table(title=f"{local.name} at http://{bind}:{port}/v2/models/{local.name}/infer")
    for col in ("route", "val accuracy", "local µs", "host µs", "T_cm µs", "through", "cost now"):
        table.add_column(col)
    for r in coordinator.routes:
        i = r.info
        table.add_row(i.spec, f"{i.accuracy:.3f}", f"{i.local_us:.0f}", f"{i.host_us:.0f}", f"{i.comm_us:.0f}",
                      i.host or "-", f"{coordinator.score(r)[0]:.4f}")
    console.print(table)
    for name, transport in transports.items():
        console.print(f"host {name} at {urls[name]}: {'up' if transport.health() else 'DOWN (requests run locally)'}")
    if check:
        return
    serve(create_app([CoordinatedModel(local, coordinator)], tokens=tokens, title="codenn local"), host=bind, port=port)


@cli.command("demo")
@_friendly
def demo_cmd() -> None:
    """Run the main job on the embedded default scenario (codenn search with its defaults)."""
    run = _run_config(None)
    _print_ranked(run_search(run, None))


def main(argv: Sequence[str] | None = None) -> None:
    cli.main(args=list(argv) if argv is not None else None, prog_name="codenn")
