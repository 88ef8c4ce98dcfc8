"""``codenn serve-host`` and ``codenn serve``: the two providers' servers (OIP v2 over HTTP).

Both take the server options of :data:`codenn.config.flags.SERVER_FLAGS` (address, TLS, size
caps, deadlines, connection limits), which become one :class:`~codenn.config.server.ServerConfig`,
and both warn when they listen beyond loopback in clear text.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any, TypeVar

import click
from rich.table import Table

from codenn.cli import console, flag_options, friendly, run_config, run_dir_option, take_values
from codenn.config.flags import HOST_FLAGS, SERVER_FLAGS, apply_flags
from codenn.config.server import ServerConfig

F = TypeVar("F", bound=Callable[..., Any])


def server_options(defaults: ServerConfig, *, host: bool = False) -> Callable[[F], F]:
    """The options of :data:`SERVER_FLAGS` (and :data:`HOST_FLAGS` on a host), defaults shown."""
    return flag_options((*SERVER_FLAGS, *(HOST_FLAGS if host else ())), defaults)


def server_config(kwargs: dict[str, Any], defaults: ServerConfig, *, host: bool = False) -> ServerConfig:
    """The ServerConfig of a command's server options (removed from ``kwargs``)."""
    flags = (*SERVER_FLAGS, *(HOST_FLAGS if host else ()))
    try:
        return apply_flags(defaults, flags, take_values(kwargs, [f.dest for f in flags]))
    except ValueError as exc:  # a ConfigError: options that do not go together (TLS key without certificate)
        raise click.UsageError(str(exc)) from exc


def _announce(config: ServerConfig) -> None:
    """The limits, and beyond loopback without TLS, the warning."""
    console.print(config.summary())
    if config.clear_text_beyond_loopback:
        console.print("[yellow]warning: listening beyond loopback without TLS: bearer tokens and tensors travel "
                      "in clear text; use --ssl-certfile/--ssl-keyfile or a TLS proxy[/yellow]")


HOST_DEFAULTS = ServerConfig(port=8100)
LOCAL_DEFAULTS = ServerConfig(port=8000)


@click.command("serve-host")
@run_dir_option("Run directory of `codenn search` whose trained cross paths this host serves.", required=True,
                exists=True, old=("--links",))
@click.option("--service", required=True, help="This host's service name in the run (e.g. mobilenet_v2).")
@click.option("--token-file", required=True, type=click.Path(dir_okay=False, exists=True),
              help='JSON {"local provider name": "token", ...}; only these bearer tokens get in.')
@server_options(HOST_DEFAULTS, host=True)
@click.option("--spec", "specs", multiple=True, help="Serve only this path (repeatable). Default: every trained "
                                                      "cross path through --service.")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Split-training learning rate of this host's optimizer (default: the run's).")
@click.option("--weight-decay", type=click.FloatRange(min=0), default=None,
              help="Split-training weight decay (default: the run's).")
@click.option("--device", default="cpu", show_default=True, help="Device the host segments run on.")
@click.option("--resume", is_flag=True, help="Load the checkpoints in --save-dir (after their fingerprint check) "
                                              "before serving.")
@click.option("--check", is_flag=True, help="Build the segments and list them, then exit without serving.")
@click.option("--replicas", type=click.IntRange(min=1), default=None,
              help="Serve on Ray Serve with N replicas (pip install 'codenn[ray]'); split training needs 1.")
@friendly
def serve_host_cmd(service: str, token_file: str, specs: tuple[str, ...], lr: float | None, weight_decay: float | None,
                   device: str, resume: bool, check: bool, replicas: int | None, **kwargs: Any) -> None:
    """Serve this host's part of a run's trained cross paths over the Open Inference Protocol v2.

    Each path 'local[..lout] > SERVICE[hin:hout+1] > local[lin..]' becomes one model (entry
    link, SERVICE's frozen blocks, exit link), named by a URL-safe slug of its spec. Only the
    host-side link weights are loaded; the local provider's model is never built here.
    """
    from codenn.remote.access import load_access
    from codenn.remote.host import resume_checkpoints, segments_from_run
    from codenn_adapters.host_server import create_app

    run_dir = take_values(kwargs, ["run_dir"])["run_dir"]
    if not run_dir:
        raise click.UsageError("which run? give --run RUN (the run directory whose cross paths this host serves)")
    config = server_config(kwargs, HOST_DEFAULTS, host=True)
    access = load_access(token_file)
    if replicas is not None and config.ssl_certfile:
        raise click.UsageError("--replicas serves through Ray Serve's HTTP proxy, without TLS: put a TLS proxy in front")
    if resume and config.save_dir is None:
        raise click.UsageError("--resume loads the checkpoints of --save-dir: give --save-dir DIR")
    segments = segments_from_run(run_dir, service, specs=specs, lr=lr, weight_decay=weight_decay, device=device,
                                 log=lambda m: console.print(m))
    if resume:
        resume_checkpoints(segments, config.save_dir or "", log_line=console.print)
    app = create_app(segments, tokens=access, config=config)
    _announce(config)
    table = Table(title=f"{service} serves {len(segments)} model(s) at {config.scheme}://{config.bind}:{config.port}"
                        "/v2/models/NAME")
    for col in ("model name", "path", "input", "output", "may infer", "may train"):
        table.add_column(col)
    for seg in segments:
        who = {a: ", ".join(p.name for p in access.providers.values() if p.may(a, seg)) or "-"
               for a in ("infer", "train")}
        table.add_row(seg.name, str(seg.spec), str(list(seg.input_spec.shape)), str(list(seg.output_spec.shape)),
                      who["infer"], who["train"])
    console.print(table)
    for line in access.unmatched(segments):
        console.print(f"[yellow]warning: a right in the token file grants nothing here: {line}[/yellow]")
    if check:
        return
    if replicas is not None:
        from codenn_adapters.ray_host import deploy_segments, serve_until_interrupted

        running = deploy_segments(segments, tokens=access, num_replicas=replicas, config=config)
        console.print(f"Ray Serve: {replicas} replica(s) at {running.url}; Ctrl-C stops")
        serve_until_interrupted(running)
        return
    from codenn_adapters.host_server import serve

    serve(app, config)


def _host_urls(remotes: tuple[str, ...]) -> dict[str, str]:
    urls = {}
    for item in remotes:
        name, sep, url = item.partition("=")
        if not sep or not name or not url:
            raise click.UsageError(f"--remote {item!r} must look like HOST=URL, e.g. mobilenet_v2=http://127.0.0.1:8100")
        urls[name] = url
    return urls


@click.command("serve")
@run_dir_option("Run directory of `codenn search`: the local service, its trained paths and their measures.",
                required=True, exists=True)
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
              help="TOML run config whose [cost] coefficients weigh the routes (default: the run's).")
@server_options(LOCAL_DEFAULTS)
@click.option("--calibrate/--no-calibrate", default=True, show_default=True,
              help="Measure every route's local time, host compute and T_cm here at start-up, instead of "
                   "trusting the search's profile.")
@click.option("--check", is_flag=True, help="Build the routes and list them, then exit without serving.")
@friendly
def serve_cmd(token_file: str, remotes: tuple[str, ...], host_token_file: str | None, specs: tuple[str, ...],
              workers: int, timeout: float, retry_after: float, config_file: str | None, calibrate: bool, check: bool,
              **kwargs: Any) -> None:
    """Serve the local provider's service, routing each request by load (eq. (1), re-weighted).

    One OIP v2 model named after the local service; each answer's parameters name the route that
    served it ('offloaded', 'fallback'). A host that fails or exceeds --timeout is skipped for
    --retry-after seconds and its requests run locally: none is lost.
    """
    from codenn.config.routing import RoutingConfig
    from codenn.remote.access import load_access
    from codenn.remote.local_model import CoordinatedModel, coordinator_from_run
    from codenn.remote.transport import make_transport
    from codenn.search.store import RunStore
    from codenn_adapters.host_server import create_app, serve

    run_dir = take_values(kwargs, ["run_dir"])["run_dir"]
    config = server_config(kwargs, LOCAL_DEFAULTS)
    tokens = load_access(token_file)
    host_tokens = {name: p.token for name, p in load_access(host_token_file).providers.items()} \
        if host_token_file else {}
    urls = _host_urls(remotes)
    store = RunStore.open(run_dir)  # refuses a directory that is not a run, before anything is built
    cost = (run_config(config_file) if config_file else store.run_config()).search.cost
    routing = RoutingConfig(cost=cost, workers=workers, timeout_s=timeout, retry_after_s=retry_after)
    transports = {name: make_transport("http", url=url, token=host_tokens.get(name), timeout=timeout)
                  for name, url in urls.items()}
    local, coordinator = coordinator_from_run(store, hosts=transports, specs=specs, routing=routing,
                                              log=lambda m: console.print(m))
    if calibrate:
        coordinator.calibrate(local.input_spec.example(batch=1, seed=1))
    _announce(config)
    table = Table(title=f"{local.name} at {config.scheme}://{config.bind}:{config.port}/v2/models/{local.name}/infer")
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
    serve(create_app([CoordinatedModel(local, coordinator)], tokens=tokens, config=replace(config, save_dir=None),
                     title="codenn local", role="local"), config)
