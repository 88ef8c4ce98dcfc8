"""The local provider's server (``codenn serve``): its service as one OIP v2 model whose every
request a :class:`codenn.remote.coordinator.Coordinator` routes to the original model, a skip path or a
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

from codenn.config.routing import RoutingConfig
from codenn.contracts.protocols import Transport
from codenn.errors import ConfigError
from codenn.model.blocks import BoundarySpec
from codenn.model.service import Service
from codenn.paths.composed import ComposedPath
from codenn.paths.rows import PathRow
from codenn.paths.spec import PathSpec, slug
from codenn.remote.coordinator import Coordinator, Route, RouteInfo
from codenn.remote.served_model import Served, tensor_metadata
from codenn.search.store import RunStore

if TYPE_CHECKING:
    from codenn.contracts.plugins import Plugins


class CoordinatedModel:
    """A :class:`codenn.remote.served_model.ServedModel` backed by a coordinator: inference only (it is
    not a TrainableModel, so the app answers split-training calls to it with 404)."""

    def __init__(self, service: Service, coordinator: Coordinator) -> None:
        self.service = service
        self.coordinator = coordinator
        self.name = service.name
        self.local_name = service.name
        self.input_spec: BoundarySpec = service.input_spec
        self.output_spec: BoundarySpec = service.card.boundaries[-1]

    def serve(self, x: torch.Tensor) -> Served:
        """The routed output; the response parameters say which route served it and how."""
        t0 = time.perf_counter()
        y, d = self.coordinator.infer(x)
        return Served(y, time.perf_counter() - t0, {"route": d.route, "offloaded": d.offloaded, "fallback": d.fallback})

    def metadata(self) -> dict[str, Any]:
        return {"name": self.name, "versions": ["1"], "platform": "codenn",
                "inputs": [tensor_metadata("input", self.input_spec)],
                "outputs": [tensor_metadata("output", self.output_spec)],
                "parameters": {"service_card": self.service.card.to_json(indent=None),
                               "routes": json.dumps([r.info.spec for r in self.coordinator.routes]),
                               "stats": json.dumps(self.coordinator.stats())}}


def _info(row: PathRow, host: str | None = None) -> RouteInfo:
    if row.val_accuracy is None:
        raise ConfigError(f"path {row.spec!r} ({row.status}) has no validation accuracy in the run: it cannot be routed")
    return RouteInfo(row.spec, float(row.val_accuracy), float(row.t_local_us), float(row.t_host_us),
                     float(row.t_comm_us), float(row.local_gflops), float(row.host_gflops), host)


def coordinator_from_run(
    run: str | os.PathLike[str] | RunStore,
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
    hosts = dict(hosts or {})
    store = run if isinstance(run, RunStore) else RunStore.open(run)
    name = store.run_config().local.name
    local = store.services(only=[name], log=log, plugins=plugins)[name]
    trained = store.trained()
    original = f"{local.name}[:]"
    if specs:  # the original model is always served; naming it alone serves nothing else
        sizes = store.block_counts()
        wanted = [w for w in (str(PathSpec.parse(s).resolve(sizes)) for s in specs) if w != original]
    else:
        selected = store.selected_spec()
        wanted = [selected] if selected else []
        wanted += [s for s, r in trained.items() if r.kind == "cross" and _host_of(s, local.name) in hosts
                   and s not in wanted]
    nominal = _info(store.original())
    routes = [Route.local(ComposedPath(original, [local]), nominal)]
    for spec in wanted:
        if spec not in trained:
            raise ConfigError(f"run {str(store.root)!r} has no trained path {spec!r}; trained: {sorted(trained) or 'none'}")
        row = trained[spec]
        host = _host_of(spec, local.name)
        if host is None:
            routes.append(Route.local(store.trained_path(spec, {local.name: local}), _info(row)))
        elif host in hosts:
            store.check_trained_on(spec, {local.name: local.fingerprint()})
            routes.append(Route.through_host(local, spec, hosts[host], slug(spec), _info(row, host)))
        else:
            raise ConfigError(f"path {spec!r} goes through host {host!r}, but no transport to it was given; "
                              f"hosts given: {sorted(hosts) or 'none'}")
        log(f"route {spec}: val accuracy {row.val_accuracy:.3f}" + (f", through {host}" if host else ""))
    return local, Coordinator(routes, nominal.accuracy, routing or RoutingConfig())


def _host_of(spec: str, local: str) -> str | None:
    """The host a path visits (None for a local path); codenn serve routes local > host > local only."""
    parsed = PathSpec.parse(spec)
    return parsed.one_host_visit(local=local).host if parsed.hosts else None
