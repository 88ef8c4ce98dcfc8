"""``codenn serve-host`` and ``codenn serve``: the two providers' servers (OIP v2 over HTTP).

Both take the same network options (:func:`network_options`): address, TLS, request and answer
size caps, body and header deadlines, concurrency and keep-alive limits, and both warn when
they listen beyond loopback in clear text.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import click
from rich.table import Table

from codenn.cli import console, friendly, run_config

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def network_options(default_port: int) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """The options every codenn server shares; the command receives them as one ``net`` dict."""
    from codenn_adapters.host_server import DEFAULT_BODY_TIMEOUT_S, DEFAULT_MAX_BYTES, DEFAULT_MAX_RESPONSE_BYTES
    from codenn_adapters.server_limits import ServerLimits

    d = ServerLimits()
    options = [
        click.option("--host", "bind", default="127.0.0.1", show_default=True, help="Address to listen on."),
        click.option("--port", type=click.IntRange(1, 65535), default=default_port, show_default=True),
        click.option("--ssl-keyfile", type=click.Path(dir_okay=False, exists=True), default=None,
                     help="TLS private key (with --ssl-certfile)."),
        click.option("--ssl-certfile", type=click.Path(dir_okay=False, exists=True), default=None,
                     help="TLS certificate (with --ssl-keyfile)."),
        click.option("--max-bytes", type=click.IntRange(min=1024), default=DEFAULT_MAX_BYTES, show_default=True,
                     help="Largest request body accepted (413 above)."),
        click.option("--max-response-bytes", type=click.IntRange(min=1024), default=DEFAULT_MAX_RESPONSE_BYTES,
                     show_default=True, help="Largest answer sent (413 to a request that would need more)."),
        click.option("--body-timeout", type=click.FloatRange(min=0, min_open=True), default=DEFAULT_BODY_TIMEOUT_S,
                     show_default=True, help="Seconds to receive a whole body (408 after) and to deliver an answer."),
        click.option("--header-timeout", type=click.FloatRange(min=0, min_open=True), default=d.header_timeout_s,
                     show_default=True, help="Seconds to receive a request's headers (the connection closes after)."),
        click.option("--limit-concurrency", type=click.IntRange(min=1), default=d.limit_concurrency,
                     show_default=True, help="Connections and requests at once (503 above)."),
        click.option("--keep-alive", type=click.IntRange(min=1), default=d.keep_alive_s, show_default=True,
                     help="Seconds an idle keep-alive connection stays open."),
    ]

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)  # keeps the options click attached to fn below this decorator
        def wrapped(**kwargs: Any) -> Any:
            names = ("bind", "port", "ssl_keyfile", "ssl_certfile", "max_bytes", "max_response_bytes", "body_timeout",
                     "header_timeout", "limit_concurrency", "keep_alive")
            net = {n: kwargs.pop(n) for n in names}
            if bool(net["ssl_keyfile"]) != bool(net["ssl_certfile"]):
                raise click.UsageError("--ssl-keyfile and --ssl-certfile go together")
            return fn(net=net, **kwargs)

        for option in reversed(options):
            wrapped = option(wrapped)
        return wrapped

    return decorate


def _app_limits(net: dict[str, Any]) -> dict[str, Any]:
    return {"max_bytes": net["max_bytes"], "max_response_bytes": net["max_response_bytes"],
            "body_timeout_s": net["body_timeout"]}


def _run(app: Any, net: dict[str, Any]) -> None:
    from codenn_adapters.host_server import serve
    from codenn_adapters.server_limits import ServerLimits

    limits = ServerLimits(limit_concurrency=net["limit_concurrency"], keep_alive_s=net["keep_alive"],
                          header_timeout_s=net["header_timeout"])
    serve(app, host=net["bind"], port=net["port"], ssl_keyfile=net["ssl_keyfile"], ssl_certfile=net["ssl_certfile"],
          limits=limits)


def _announce(net: dict[str, Any]) -> str:
    """The scheme, after printing the limits and, beyond loopback without TLS, the warning."""
    console.print(f"body limit {net['max_bytes']} bytes, answer limit {net['max_response_bytes']} bytes, body "
                  f"timeout {net['body_timeout']} s, header timeout {net['header_timeout']} s, at most "
                  f"{net['limit_concurrency']} connections")
    if net["bind"] not in LOOPBACK and not net["ssl_certfile"]:
        console.print("[yellow]warning: listening beyond loopback without TLS: bearer tokens and tensors travel "
                      "in clear text; use --ssl-certfile/--ssl-keyfile or a TLS proxy[/yellow]")
    return "https" if net["ssl_certfile"] else "http"


@click.command("serve-host")
@click.option("--run", "--links", "run_dir", required=True, type=click.Path(file_okay=False, exists=True),
              help="Run directory of `codenn search` whose trained cross paths this host serves.")
@click.option("--service", required=True, help="This host's service name in the run (e.g. mobilenet_v2).")
@click.option("--token-file", required=True, type=click.Path(dir_okay=False, exists=True),
              help='JSON {"local provider name": "token", ...}; only these bearer tokens get in.')
@network_options(8100)
@click.option("--spec", "specs", multiple=True, help="Serve only this path (repeatable). Default: every trained "
                                                      "cross path through --service.")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Split-training learning rate of this host's optimizer (default: the run's).")
@click.option("--weight-decay", type=click.FloatRange(min=0), default=None,
              help="Split-training weight decay (default: the run's).")
@click.option("--device", default="cpu", show_default=True, help="Device the host segments run on.")
@click.option("--save-dir", type=click.Path(file_okay=False), default=None,
              help="Checkpoint split training (links, optimizers, counters) to DIR/NAME.safetensors every "
                   "--checkpoint-every steps and at shutdown.")
@click.option("--checkpoint-every", type=click.IntRange(min=1), default=20, show_default=True,
              help="Applied split-training steps between two checkpoints.")
@click.option("--resume", is_flag=True, help="Load the checkpoints in --save-dir (after their fingerprint check) "
                                              "before serving.")
@click.option("--check", is_flag=True, help="Build the segments and list them, then exit without serving.")
@click.option("--replicas", type=click.IntRange(min=1), default=None,
              help="Serve on Ray Serve with N replicas (pip install 'codenn[ray]'); split training needs 1.")
@friendly
def serve_host_cmd(run_dir: str, service: str, token_file: str, net: dict[str, Any], specs: tuple[str, ...],
                   lr: float | None, weight_decay: float | None, device: str, save_dir: str | None,
                   checkpoint_every: int, resume: bool, check: bool, replicas: int | None) -> None:
    """Serve this host's part of a run's trained cross paths over the Open Inference Protocol v2.

    Each path 'local[..lout] > SERVICE[hin:hout+1] > local[lin..]' becomes one model (entry
    link, SERVICE's frozen blocks, exit link), named by a URL-safe slug of its spec. Only the
    host-side link weights are loaded; the local provider's model is never built here.
    """
    from codenn_adapters.host_segment import segments_from_run
    from codenn_adapters.host_server import create_app, load_tokens, resume_checkpoints

    access = load_tokens(token_file)
    if replicas is not None and net["ssl_certfile"]:
        raise click.UsageError("--replicas serves through Ray Serve's HTTP proxy, without TLS: put a TLS proxy in front")
    if resume and save_dir is None:
        raise click.UsageError("--resume loads the checkpoints of --save-dir: give --save-dir DIR")
    segments = segments_from_run(run_dir, service, specs=specs, lr=lr, weight_decay=weight_decay, device=device,
                                 log=lambda m: console.print(m))
    if resume:
        resume_checkpoints(segments, save_dir or "", log_line=console.print)
    app = create_app(segments, tokens=access, save_dir=save_dir, checkpoint_every=checkpoint_every, **_app_limits(net))
    scheme = _announce(net)
    table = Table(title=f"{service} serves {len(segments)} model(s) at {scheme}://{net['bind']}:{net['port']}"
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

        running = deploy_segments(segments, tokens=access, num_replicas=replicas, host=net["bind"], port=net["port"],
                                  max_bytes=net["max_bytes"], save_dir=save_dir)
        console.print(f"Ray Serve: {replicas} replica(s) at {running.url}; Ctrl-C stops")
        serve_until_interrupted(running)
        return
    _run(app, net)


@click.command("serve")
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
@network_options(8000)
@click.option("--calibrate/--no-calibrate", default=True, show_default=True,
              help="Measure every route's local time, host compute and T_cm here at start-up, instead of "
                   "trusting the search's profile.")
@click.option("--check", is_flag=True, help="Build the routes and list them, then exit without serving.")
@friendly
def serve_cmd(run_dir: str, token_file: str, remotes: tuple[str, ...], host_token_file: str | None,
              specs: tuple[str, ...], workers: int, timeout: float, retry_after: float, config_file: str | None,
              net: dict[str, Any], calibrate: bool, check: bool) -> None:
    """Serve the local provider's service, routing each request by load (eq. (1), re-weighted).

    One OIP v2 model named after the local service; each answer's parameters name the route that
    served it ('offloaded', 'fallback'). A host that fails or exceeds --timeout is skipped for
    --retry-after seconds and its requests run locally: none is lost.
    """
    from codenn.coordinator import RoutingConfig
    from codenn.runstore import RunStore
    from codenn.transport import make_transport
    from codenn_adapters.host_server import create_app, load_tokens
    from codenn_adapters.local_server import CoordinatedModel, coordinator_from_run

    tokens = load_tokens(token_file)
    host_tokens = {name: p.token for name, p in load_tokens(host_token_file).providers.items()} \
        if host_token_file else {}
    urls = {}
    for item in remotes:
        name, sep, url = item.partition("=")
        if not sep or not name or not url:
            raise click.UsageError(f"--remote {item!r} must look like HOST=URL, e.g. mobilenet_v2=http://127.0.0.1:8100")
        urls[name] = url
    store = RunStore.open(run_dir)  # refuses a directory that is not a run, before anything is built
    cost = (run_config(config_file) if config_file else store.run_config()).search.cost
    routing = RoutingConfig(cost=cost, workers=workers, timeout_s=timeout, retry_after_s=retry_after)
    transports = {name: make_transport("http", url=url, token=host_tokens.get(name), timeout=timeout)
                  for name, url in urls.items()}
    local, coordinator = coordinator_from_run(run_dir, hosts=transports, specs=specs, routing=routing,
                                              log=lambda m: console.print(m))
    if calibrate:
        coordinator.calibrate(local.input_spec.example(batch=1, seed=1))
    scheme = _announce(net)
    table = Table(title=f"{local.name} at {scheme}://{net['bind']}:{net['port']}/v2/models/{local.name}/infer")
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
    _run(create_app([CoordinatedModel(local, coordinator)], tokens=tokens, title="codenn local", **_app_limits(net)), net)
