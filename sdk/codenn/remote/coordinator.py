"""Load-aware routing between a local provider's trained paths, without retraining.

The paper (Section III) lets a provider "handle the task execution time c_{l,h} according to the
load of the local and host services". The coordinator does exactly that at run time: every
request is scored with eq. (1) under the *current* weights

    c_l' = c_l * (1 + local queue / local workers)      (each request ahead adds its service time)
    c_h' = c_h * max(1, host-reported compute time / its nominal time)    (the host's own load)

and T_cm replaced by the measured communication time (round trip minus the host's reported
compute, exponentially smoothed). The host's slowdown is read from what the host reports, not
from the round trip: a busy local server delays its own HTTP client, and that is local load
(already in c_l'), not the host's. The lowest-cost route whose load-adjusted latency meets L_T (eq. (2)) runs; when none
does, the fastest one. A host that fails, misses ``timeout_s`` or answers with something that is
not the boundary its route needs (:func:`codenn.remote.transport.check_host_reply`: shape, dtype,
batch, NaN / inf, compute time) is skipped for ``retry_after_s`` and the request runs on the
best local-only route instead: no request is lost, and nothing a bad reply carried is measured.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch

from codenn.config.routing import RoutingConfig
from codenn.contracts.protocols import Transport
from codenn.errors import ConfigError, TransportError
from codenn.model.service import Service
from codenn.model.timing import Samples, sample
from codenn.paths.composed import ComposedPath
from codenn.paths.cost import PathMeasures, paper_cost
from codenn.paths.spec import PathSpec
from codenn.remote.leg import RemoteLeg


@dataclass(frozen=True)
class RouteInfo:
    """What eq. (1) needs about one route at nominal load (units as in :mod:`codenn.paths.cost`)."""

    spec: str
    accuracy: float
    local_us: float
    host_us: float = 0.0
    comm_us: float = 0.0
    local_gflops: float = 0.0
    host_gflops: float = 0.0
    host: str | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.accuracy <= 1 or min(self.local_us, self.host_us, self.comm_us) < 0:
            raise ConfigError(f"route {self.spec!r}: accuracy must be in [0, 1] and times >= 0, got "
                              f"accuracy={self.accuracy}, local_us={self.local_us}, host_us={self.host_us}, "
                              f"comm_us={self.comm_us}")


Run = Callable[[torch.Tensor], torch.Tensor]


class Route:
    """One servable path: all local (original model, skip paths; ``run``), or local around one
    host segment (``leg``)."""

    def __init__(self, info: RouteInfo, *, run: Run | None = None, leg: RemoteLeg | None = None) -> None:
        if (run is None) == (leg is None):
            raise ConfigError(f"route {info.spec!r} needs either run= (local) or leg= (through a host), not both or neither")
        if (leg is not None) != (info.host is not None) or (leg is not None and leg.host != info.host):
            raise ConfigError(f"route {info.spec!r}: info.host={info.host!r} must be the host of its leg "
                              f"({None if leg is None else leg.host!r})")
        self.info, self._run, self.leg = info, run, leg

    @property
    def offloads(self) -> bool:
        return self.leg is not None

    @property
    def transport(self) -> Transport | None:
        return None if self.leg is None else self.leg.transport

    @property
    def model(self) -> str | None:
        """The name the host serves this route's segment under (None for a local route)."""
        return None if self.leg is None else self.leg.model

    def run_here(self) -> Run:
        """A local route's forward; a cross route has none (its parts are in :attr:`leg`)."""
        if self._run is None:
            raise ConfigError(f"route {self.info.spec!r} runs through host {self.info.host!r}; it has no local forward")
        return self._run

    @classmethod
    def local(cls, path: ComposedPath, info: RouteInfo) -> Route:
        """The original model or a skip path, run in eval mode without gradients."""
        if any(s.service != path.spec.local for s in path.spec.segments):
            raise ConfigError(f"path {path.spec} visits a host; use Route.through_host for it")
        path.eval()

        def run(x: torch.Tensor) -> torch.Tensor:
            with torch.inference_mode():
                out: torch.Tensor = path(x)
                return out

        return cls(info, run=run)

    @classmethod
    def through_host(cls, local: Service, spec: PathSpec | str, transport: Transport, model: str,
                     info: RouteInfo) -> Route:
        """A cross path ``local[:lout+1] > host[..] > local[lin:]`` (:class:`RemoteLeg`): the host serves
        ``model`` and must answer with the input of local block ``lin``."""
        return cls(info, leg=RemoteLeg.of(local, spec, transport, model))


@dataclass(frozen=True)
class Decision:
    """What happened to one request."""

    route: str
    offloaded: bool
    fallback: bool
    cost: float
    c_l: float
    c_h: float
    latency_s: float
    comm_s: float | None = None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class _HostState:
    def __init__(self) -> None:
        self.round_trip_s: float | None = None
        self.compute_s: float | None = None
        self.comm_s: float | None = None
        self.down_until = 0.0
        self.failures = 0
        self.probing = False  # after a failure, one request at a time tries the host again


class Coordinator:
    """Routes each request to the route of lowest load-adjusted eq. (1) cost; thread-safe."""

    def __init__(self, routes: Sequence[Route], original_accuracy: float, config: RoutingConfig | None = None,
                 *, clock: Callable[[], float] = time.monotonic) -> None:
        if not routes:
            raise ConfigError("a coordinator needs at least one route")
        names = [r.info.spec for r in routes]
        if len(set(names)) != len(names):
            raise ConfigError(f"route specs must be unique, got {names}")
        if not any(not r.offloads for r in routes):
            raise ConfigError("a coordinator needs at least one local route to fall back to when a host fails; "
                              f"got only host routes {names}")
        self.routes = list(routes)
        self.original_accuracy = original_accuracy
        self.config = config or RoutingConfig()
        self._clock = clock
        self._lock = threading.Lock()
        self._slots = threading.Semaphore(self.config.workers)
        self._local_queue = 0
        self._hosts = {r.info.host: _HostState() for r in routes if r.info.host is not None}
        self.counts = {n: 0 for n in names}
        self.fallbacks = 0

    # -- load ---------------------------------------------------------------------------------
    @property
    def local_queue(self) -> int:
        """Requests waiting for or running local compute now."""
        return self._local_queue

    def weights(self, route: Route | None = None) -> tuple[float, float]:
        """(c_l', c_h') now; c_h' for ``route``'s host (the nominal c_h without one)."""
        cfg = self.config
        c_l = cfg.cost.c_l * (1 + self._local_queue / cfg.workers)
        c_h = cfg.cost.c_h
        if route is not None and route.info.host is not None:
            state = self._hosts[route.info.host]
            if state.compute_s is not None and route.info.host_us > 0:
                c_h *= max(1.0, state.compute_s * 1e6 / route.info.host_us)
        return c_l, c_h

    def _measures(self, route: Route) -> PathMeasures:
        info = route.info
        comm_us = info.comm_us
        measured = None if info.host is None else self._hosts[info.host].comm_s
        if measured is not None:
            comm_us = measured * 1e6
        return PathMeasures(info.spec, info.accuracy, comm_us, info.local_us, info.host_us, info.local_gflops,
                            info.host_gflops, 0.0, 0.0)

    def score(self, route: Route) -> tuple[float, float]:
        """(eq. (1) cost under the current weights, load-adjusted latency in µs)."""
        c_l, c_h = self.weights(route)
        m = self._measures(route)
        model = replace(self.config.cost, c_l=c_l, c_h=c_h)
        latency = m.t_local_us * (1 + self._local_queue / self.config.workers) + m.t_comm_us + \
            m.t_host_us * (c_h / self.config.cost.c_h if self.config.cost.c_h else 1.0)
        return paper_cost(m, self.original_accuracy, model), latency

    def available(self, route: Route) -> bool:
        """A host route is out while its host is left alone after a failure, and, once that time
        is up, while one probing request is finding out whether the host is back."""
        if route.info.host is None:
            return True
        s = self._hosts[route.info.host]
        return s.down_until <= self._clock() and not s.probing

    def choose(self, *, local_only: bool = False) -> tuple[Route, float]:
        """The route to use now and its cost."""
        bound = self.config.cost.latency_bound_us
        scored = [(r, *self.score(r)) for r in self.routes if self.available(r) and not (local_only and r.offloads)]
        feasible = [s for s in scored if bound is None or s[2] <= bound]
        if feasible:
            route, cost, _ = min(feasible, key=lambda s: s[1])
        else:
            route, cost, _ = min(scored, key=lambda s: s[2])
        return route, cost

    def calibrate(self, x: torch.Tensor, repeats: int = 10) -> dict[str, RouteInfo]:
        """Measure every route's nominal times here, now (a search's profile may come from another
        machine or a busy one): local time of local routes, of a cross route's two local
        segments, and the host's reported compute and T_cm. A host that fails, or answers with a
        reply :meth:`RemoteLeg.check` refuses, keeps the given values and is marked down. Returns
        the new infos by spec."""
        out: dict[str, RouteInfo] = {}
        for i, route in enumerate(self.routes):
            info, leg = route.info, route.leg
            if leg is None:
                info = replace(info, local_us=nominal_latency_us(route.run_here(), x, repeats))
            else:
                h = leg.prefix(x)
                batch = int(x.shape[0])
                try:
                    replies = [leg.call(h, self.config.timeout_s)
                               for _ in range(max(3, repeats // 2))]
                except TransportError:
                    self._host_failed(leg.host)
                    out[info.spec] = info
                    continue
                replies = replies[1:]  # the first call opens the connection
                n = max(1, batch)
                host_us = Samples(tuple(r.host_compute_s for r in replies), n).median() * 1e6 / n
                comm_us = Samples(tuple(r.comm_s for r in replies), n).median() * 1e6 / n
                local_us = nominal_latency_us(leg.prefix, x, repeats) + \
                    nominal_latency_us(leg.suffix, replies[0].output, repeats)
                info = replace(info, local_us=local_us, host_us=host_us, comm_us=comm_us)
            self.routes[i].info = info
            out[info.spec] = info
        return out

    # -- running ------------------------------------------------------------------------------
    def _local(self, fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        with self._lock:
            self._local_queue += 1
        try:
            with self._slots:
                return fn(x)
        finally:
            with self._lock:
                self._local_queue -= 1

    def infer(self, x: torch.Tensor) -> tuple[torch.Tensor, Decision]:
        """Run one request (a batch) on the chosen route; fall back locally if its host fails."""
        t0 = time.perf_counter()
        with self._lock:
            route, cost = self.choose()
            c_l, c_h = self.weights(route)
            if route.info.host is not None and self._hosts[route.info.host].failures:
                self._hosts[route.info.host].probing = True  # this request is the probe
        leg = route.leg
        if leg is None:
            out = self._local(route.run_here(), x)
            return out, self._done(route, cost, c_l, c_h, t0)
        batch = int(x.shape[0])
        try:
            h = self._local(leg.prefix, x)
            # checked before anything of it is measured or used: a wrong answer is a failed host
            reply = leg.call(h, self.config.timeout_s)
        except TransportError as exc:
            self._host_failed(leg.host)
            with self._lock:
                local, local_cost = self.choose(local_only=True)
                self.fallbacks += 1
            out = self._local(local.run_here(), x)
            return out, self._done(local, local_cost, c_l, c_h, t0, fallback=True,
                                   error=f"{route.info.spec}: {type(exc).__name__}: {exc}")
        except BaseException:  # bad input, interrupted: the host was not judged, free its probe
            with self._lock:
                self._hosts[leg.host].probing = False
            raise
        self._host_answered(leg.host, reply.round_trip_s, reply.host_compute_s / max(1, batch), reply.comm_s)
        out = self._local(leg.suffix, reply.output)
        return out, self._done(route, cost, c_l, c_h, t0, comm_s=reply.comm_s)

    def _done(self, route: Route, cost: float, c_l: float, c_h: float, t0: float, *, fallback: bool = False,
              comm_s: float | None = None, error: str | None = None) -> Decision:
        with self._lock:
            self.counts[route.info.spec] += 1
        return Decision(route.info.spec, route.offloads, fallback, cost, c_l, c_h, time.perf_counter() - t0,
                        comm_s, error)

    def _host_answered(self, host: str, round_trip_s: float, compute_s: float, comm_s: float) -> None:
        """Smooth what one reply measured (``compute_s`` per sample, as RouteInfo.host_us)."""
        a = self.config.smoothing

        def ewma(old: float | None, new: float) -> float:
            return new if old is None else (1 - a) * old + a * new

        with self._lock:
            s = self._hosts[host]
            s.round_trip_s = ewma(s.round_trip_s, round_trip_s)
            s.compute_s = ewma(s.compute_s, compute_s)
            s.comm_s = ewma(s.comm_s, comm_s)
            s.failures = 0
            s.probing = False

    def _host_failed(self, host: str) -> None:
        with self._lock:
            s = self._hosts[host]
            s.failures += 1
            s.probing = False
            s.down_until = self._clock() + self.config.retry_after_s

    def stats(self) -> dict[str, Any]:
        """Requests per route, fallbacks, and each host's measured state."""
        with self._lock:
            return {
                "requests": dict(self.counts),
                "fallbacks": self.fallbacks,
                "local_queue": self._local_queue,
                "hosts": {h: {"round_trip_ms": None if s.round_trip_s is None else s.round_trip_s * 1e3,
                              "compute_ms": None if s.compute_s is None else s.compute_s * 1e3,
                              "comm_ms": None if s.comm_s is None else s.comm_s * 1e3,
                              "down": s.down_until > self._clock(), "failures": s.failures}
                          for h, s in self._hosts.items()},
            }


def nominal_latency_us(fn: Callable[[torch.Tensor], Any], x: torch.Tensor, repeats: int = 10) -> float:
    """Median time of ``fn(x)`` in µs per sample (a RouteInfo's unit, when no profile exists)."""
    samples = sample(fn, [x], warmup=1, repeats=repeats)
    return samples.median() * 1e6 / samples.batch

