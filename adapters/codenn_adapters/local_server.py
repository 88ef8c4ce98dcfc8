"""The local provider's server (``codenn serve``): its service as one OIP v2 model whose every
request a :class:`codenn.coordinator.Coordinator` routes to the original model, a skip path or a
cross path through a host, by the current load.

The HTTP layer is the host server's (:func:`codenn_adapters.host_server.create_app`: tokens,
size cap, shape checks, binary tensors); each answer's ``parameters`` say which route served it,
whether it was offloaded and whether a failing host made it fall back.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch

from codenn.blocks import BoundarySpec
from codenn.coordinator import Coordinator, Route, RouteInfo, RoutingConfig
from codenn.errors import ConfigError, FrozenParameterError
from codenn.pathspec import PathSpec
from codenn.runstore import slug
from codenn.service import Service
from codenn.transport import Transport
from codenn_adapters.host_segment import SegmentStateError

if TYPE_CHECKING:
    from codenn.plugins import Plugins


class CoordinatedModel:
    """A served model (the host server's contract) backed by a coordinator."""

    steps_trained = 0

    def __init__(self, service: Service, coordinator: Coordinator) -> None:
        self.service = service
        self.coordinator = coordinator
        self.name = service.name
        self.input_spec: BoundarySpec = service.input_spec
        self.output_spec: BoundarySpec = service.card.boundaries[-1]

    def infer(self, x: torch.Tensor) -> tuple[torch.Tensor, float, dict[str, Any]]:
        t0 = time.perf_counter()
        y, d = self.coordinator.infer(x)
        return y, time.perf_counter() - t0, {"route": d.route, "offloaded": d.offloaded, "fallback": d.fallback}

    def metadata(self) -> dict[str, Any]:
        from codenn_adapters.oip import datatype_of

        def tensor(name: str, spec: BoundarySpec) -> dict[str, Any]:
            return {"name": name, "datatype": datatype_of(spec.dtype), "shape": [-1, *spec.shape]}

        return {"name": self.name, "versions": ["1"], "platform": "codenn",
                "inputs": [tensor("input", self.input_spec)], "outputs": [tensor("output", self.output_spec)],
                "parameters": {"service_card": self.service.card.to_json(indent=None),
                               "routes": json.dumps([r.info.spec for r in self.coordinator.routes]),
                               "stats": json.dumps(self.coordinator.stats())}}

    def train_forward(self, x: torch.Tensor, step: int) -> Any:
        raise SegmentStateError(f"{self.name!r} is a local provider's service: it serves inference only")

    train_backward = train_forward


def _info(row: Mapping[str, Any], host: str | None = None) -> RouteInfo:
    return RouteInfo(row["spec"], float(row["val_accuracy"]), float(row["t_local_us"]), float(row["t_host_us"]),
                     float(row["t_comm_us"]), float(row["local_gflops"]), float(row["host_gflops"]), host)


def coordinator_from_run(
    run_dir: str | os.PathLike[str],
    *,
    hosts: Mapping[str, Transport] | None = None,
    specs: Sequence[str] = (),
    routing: RoutingConfig | None = None,
    plugins: Plugins | None = None,
    log: Callable[[str], None] = print,
) -> tuple[Service, Coordinator]:
    """The local service of a ``codenn search`` run (rebuilt alone: no host model is loaded) and a
    coordinator over its original model and ``specs`` (default: the run's selected path and every
    trained cross path through a host in ``hosts``). Accuracies and nominal times come from the run."""
    from codenn.evaluate import read_run, trained_path
    from codenn.paths import Path
    from codenn.scenario import base_model

    hosts = dict(hosts or {})
    store, run_json, run = read_run(run_dir)
    model, _ = base_model(run.local.base, log=log)
    size = run.local.base.size
    local = Service(run.local.name, model, input_shape=(3, size, size), architecture=run.local.base.model,
                    plugins=plugins)
    cards = run_json.get("services", {})
    sizes = {name: int(len(card["blocks"])) for name, card in cards.items()}
    trained = {r["spec"]: r for r in store.rows() if r.get("status") == "trained"}
    original = f"{local.name}[:]"
    if specs:  # the original model is always served; naming it alone serves nothing else
        wanted = [w for w in (str(PathSpec.parse(s).resolve(sizes)) for s in specs) if w != original]
    else:
        selected = (run_json.get("selected") or {}).get("spec")
        wanted = [selected] if selected else []
        wanted += [s for s, r in trained.items() if r.get("kind") == "cross" and _host_of(s, local.name) in hosts
                   and s not in wanted]
    routes = [Route.local(Path(original, [local]), _info(run_json["original"]))]
    for spec in wanted:
        if spec not in trained:
            raise ConfigError(f"run {os.fspath(run_dir)!r} has no trained path {spec!r}; trained: {sorted(trained) or 'none'}")
        row = trained[spec]
        host = _host_of(spec, local.name)
        manifest = json.loads(store.links_file(spec).with_suffix(".json").read_text())
        expected = manifest["fingerprints"].get(local.name)
        if expected is not None and expected != local.fingerprint():
            raise FrozenParameterError(f"service {local.name!r} is not the one path {spec!r} was trained on "
                                       f"(fingerprint {local.fingerprint()[:12]}… != {expected[:12]}…)")
        if host is None:
            routes.append(Route.local(trained_path(store, spec, {local.name: local}), _info(row)))
        elif host in hosts:
            routes.append(Route.through_host(local, spec, hosts[host], slug(spec), _info(row, host)))
        else:
            raise ConfigError(f"path {spec!r} goes through host {host!r}, but no transport to it was given; "
                              f"hosts given: {sorted(hosts) or 'none'}")
        log(f"route {spec}: val accuracy {row['val_accuracy']:.3f}" + (f", through {host}" if host else ""))
    return local, Coordinator(routes, float(run_json["original"]["val_accuracy"]), routing or RoutingConfig())


def _host_of(spec: str, local: str) -> str | None:
    others = {s.service for s in PathSpec.parse(spec).segments if s.service != local}
    if len(others) > 1:
        raise ConfigError(f"path {spec!r} visits several hosts {sorted(others)}; codenn serve routes one-host paths")
    return next(iter(others), None)
