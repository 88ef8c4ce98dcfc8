"""Scale-out: a host provider's segments as a Ray Serve deployment with several replicas.

Where one ``codenn serve-host`` process is not enough, the *same* FastAPI app
(:func:`codenn_adapters.host_server.create_app`) runs as the ingress of a Ray Serve deployment
(``@serve.ingress(asgi_app)``): tokens, 401 / 413 / 422 answers, binary OIP tensors are unchanged,
so :class:`~codenn_adapters.transports.HttpTransport` talks to it as to one server. What Ray
copies into every replica is a small ASGI object holding the segments and the app's options
(Ray's own object transfer); each replica builds its own FastAPI app around its own
:class:`HostSegment` copies. Segments are built once here, so a bad run directory fails in this
process, not in a replica's log; the FastAPI app itself is never pickled (its internals change
between FastAPI versions). Ray Serve's proxy spreads requests over the replicas; every answer
carries the replica that computed it in the ``codenn-replica`` header.

Split training needs one replica: a ``train/forward`` keeps its autograd graph in the replica
that ran it, and the matching ``train/backward`` must reach that replica and its optimizer.
Ray Serve routes by load, not by session, so with ``num_replicas > 1`` both training endpoints
answer 409 and say so; inference is stateless and safe on any replica.

Ray is an optional extra (``pip install codenn[ray]``) and is imported only when used; without
it, deploying raises :class:`RayMissingError` (a ``CodennError``).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from typing import Any

from codenn.config.server import ServerConfig
from codenn.errors import ConfigError
from codenn.remote.access import AccessList, access_from
from codenn.remote.segment import HostSegment
from codenn_adapters.host_server import create_app
from codenn_adapters.ray_support import RayMissingError

REPLICA_HEADER = "codenn-replica"
"""Response header naming the replica that answered (Ray Serve's replica id)."""

DEFAULT_APP = "codenn-host"

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


def _ray() -> tuple[Any, Any]:
    """``(ray, ray.serve)``, or a RayMissingError that says how to install them."""
    try:
        import ray
        from ray import serve
    except ImportError as exc:
        raise RayMissingError(
            "serving a host segment on several replicas needs Ray Serve: pip install 'codenn[ray]' "
            f"(or pip install 'ray[serve]>=2.9'); import failed: {exc}") from None
    return ray, serve


def _replica_id() -> str:
    """This replica's id (inside a Ray Serve replica; 'unknown' elsewhere)."""
    try:
        from ray import serve

        ctx = serve.get_replica_context()
    except Exception:  # not in a replica (or Ray missing): the header is informative only
        return "unknown"
    rid = getattr(ctx, "replica_id", None)  # Ray >= 2.10: a ReplicaID; older: replica_tag
    return str(getattr(rid, "unique_id", rid) if rid is not None else getattr(ctx, "replica_tag", "unknown"))


class ReplicaHeader:
    """ASGI middleware adding :data:`REPLICA_HEADER` to every HTTP answer (pure ASGI, so the
    request body still streams to the app's size check)."""

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]]) -> None:
        self.app = app
        self._id: bytes | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self._id is None:
            self._id = _replica_id().encode("latin-1", "replace")

        async def tagged(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (REPLICA_HEADER.encode(), self._id)]
            await send(message)

        await self.app(scope, receive, tagged)


class ReplicaApp:
    """The ASGI app Ray ships to the replicas: segments and ``create_app`` options travel; the
    FastAPI app (with :class:`ReplicaHeader`) is built in the replica on its first ASGI call,
    which is Serve's lifespan startup."""

    def __init__(self, segments: Sequence[HostSegment] | Mapping[str, HostSegment], options: Mapping[str, Any]) -> None:
        self.segments = dict(segments) if isinstance(segments, Mapping) else list(segments)
        self.options = dict(options)
        self._app: ReplicaHeader | None = None

    def build(self) -> ReplicaHeader:
        return ReplicaHeader(create_app(self.segments, **self.options))

    def __getstate__(self) -> dict[str, Any]:
        return {"segments": self.segments, "options": self.options}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.segments, self.options, self._app = state["segments"], state["options"], None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._app is None:
            self._app = self.build()
        await self._app(scope, receive, send)


def host_application(
    segments: Sequence[HostSegment] | Mapping[str, HostSegment],
    *,
    tokens: Mapping[str, Any] | AccessList,
    num_replicas: int = 2,
    config: ServerConfig | None = None,
    num_cpus: float = 1.0,
    num_gpus: float = 0.0,
) -> Any:
    """The bound Ray Serve application (``serve.Application``) serving ``segments`` on
    ``num_replicas`` replicas of ``num_cpus`` CPUs (and ``num_gpus`` GPUs: segments built on a
    CUDA device need one) each; pass it to ``serve.run``. ``config`` gives the app's limits and
    ``save_dir`` (Serve's proxy owns the address). Bad options fail before Ray is touched."""
    cfg = config or ServerConfig()
    save_dir = cfg.save_dir
    if not isinstance(num_replicas, int) or isinstance(num_replicas, bool) or num_replicas < 1:
        raise ConfigError(f"num_replicas={num_replicas!r} must be an integer >= 1")
    if not num_cpus > 0 or not num_gpus >= 0:
        raise ConfigError(f"num_cpus={num_cpus!r} per replica must be > 0 and num_gpus={num_gpus!r} >= 0")
    if save_dir is not None and num_replicas > 1:
        raise ConfigError("save_dir keeps the links split training changed, which needs num_replicas=1")
    refused = None
    if num_replicas > 1:
        refused = (f"it runs {num_replicas} Ray Serve replicas and a train/backward must reach the replica that "
                   "ran its train/forward; train on a host with one replica (--replicas 1 or plain serve-host)")
    app = ReplicaApp(segments, {"tokens": access_from(tokens), "config": cfg, "training_refused": refused})
    app.build()  # the same checks as serve-host (tokens, limits, names), here rather than in a replica
    _, serve = _ray()

    @serve.deployment(name="CodennHost", num_replicas=num_replicas,
                      ray_actor_options={"num_cpus": num_cpus, "num_gpus": num_gpus})
    @serve.ingress(app)
    class CodennHost:
        """One replica: a copy of the host app with its own segments."""

    return CodennHost.bind()


@dataclass(frozen=True)
class RayHost:
    """A running Ray Serve host: where to reach it and how to take it down."""

    url: str
    app_name: str
    num_replicas: int
    models: tuple[str, ...]

    def delete(self) -> None:
        """Remove this application (Serve and Ray keep running)."""
        _, serve = _ray()
        serve.delete(self.app_name)


def deploy_segments(
    segments: Sequence[HostSegment] | Mapping[str, HostSegment],
    *,
    tokens: Mapping[str, Any] | AccessList,
    num_replicas: int = 2,
    config: ServerConfig | None = None,
    num_cpus: float = 1.0,
    num_gpus: float = 0.0,
    app_name: str = DEFAULT_APP,
    address: str | None = None,
    ready_timeout: float = 60.0,
) -> RayHost:
    """Deploy ``segments`` on Ray Serve at ``http://config.bind:config.port`` (route ``/``) and wait until it
    answers. Joins the Ray cluster at ``address`` (None: ``RAY_ADDRESS`` or a new local one)
    unless this process is already connected. Serve's HTTP address is fixed when Serve first
    starts on a cluster; a Serve already listening elsewhere is reported, not silently used."""
    cfg = config or ServerConfig(port=8000)
    host, port = cfg.bind, cfg.port
    application = host_application(segments, tokens=tokens, num_replicas=num_replicas, config=cfg, num_cpus=num_cpus,
                                   num_gpus=num_gpus)
    ray, serve = _ray()
    models = tuple(segments) if isinstance(segments, Mapping) else tuple(s.name for s in segments)
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False)
    serve.start(http_options={"host": host, "port": port})
    serve.run(application, name=app_name, route_prefix="/")
    reach = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)  # a wildcard bind is reached on loopback
    url = f"http://{f'[{reach}]' if ':' in reach else reach}:{port}"
    _wait_ready(url, ready_timeout)
    return RayHost(url, app_name, num_replicas, models)


def _wait_ready(url: str, timeout: float) -> None:
    import httpx

    deadline, last = time.monotonic() + timeout, "no answer"
    while time.monotonic() < deadline:
        try:
            r = httpx.get(f"{url}/v2", timeout=2.0)
            if r.status_code == 200 and r.json().get("name") == "codenn-host":
                return
            last = f"HTTP {r.status_code}: {r.text[:200]}"
        except (httpx.HTTPError, ValueError) as exc:
            last = f"{type(exc).__name__}: {exc}"
        time.sleep(0.25)
    raise ConfigError(f"the Ray Serve host is not answering at {url} after {timeout} s ({last}); if Serve was "
                      "already running on this cluster with other HTTP options, serve.shutdown() it first")


def serve_until_interrupted(running: RayHost) -> None:
    """Block until Ctrl-C, then delete the application and shut Serve down (``codenn serve-host --replicas``)."""
    _, serve = _ray()
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        running.delete()
        serve.shutdown()
