"""A run's services and data, ready for a search: each provider's base model loaded (or trained
once) and wrapped as a frozen :class:`~codenn.model.service.Service`, and the local task's splits.

:func:`load_service` is the one way a service is rebuilt from its configuration: the search, the
servers, evaluate, export and the path jobs all come through it (most of them by
:meth:`codenn.search.store.RunStore.services`).
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass, field, replace

from codenn.config.base_model import DEFAULT_HOST, DEFAULT_LOCAL, BaseModelSpec
from codenn.config.run import RunConfig, ServiceConfig
from codenn.contracts.plugins import Plugins
from codenn.errors import ConfigError
from codenn.model.service import Service, services_by_name
from codenn.train.base_models import base_model, cached_base_model
from codenn.train.data import Splits
from codenn.train.tasks import task_splits

Log = Callable[[str], None]


@dataclass
class Scenario:
    """Services and the local task's data, ready for a search."""

    local: Service
    hosts: list[Service]
    splits: Splits
    info: dict[str, object] = field(default_factory=dict)

    @property
    def services(self) -> dict[str, Service]:
        """Every service by name, the local one first (what paths are resolved against)."""
        return services_by_name([self.local, *self.hosts])


def load_service(service: ServiceConfig, size: int, *, log: Log = print, train_missing: bool = True,
                 plugins: Plugins | None = None) -> tuple[Service, dict[str, object]]:
    """``service``'s base model at ``size`` x ``size`` pixels (every provider of a run sees the local
    task's input size), frozen and split; with its training record. With ``train_missing=False`` a
    base model that is not cached is a :class:`~codenn.errors.MissingWeightsError`."""
    spec = replace(service.base, size=size)
    model, meta = (base_model if train_missing else cached_base_model)(spec, log=log)
    return Service(service.name, model, input_shape=(3, size, size), architecture=spec.model, plugins=plugins), meta


def scenario_from_config(run: RunConfig, log: Log = print, *, train_missing: bool = True) -> Scenario:
    """The services and data ``run`` describes."""
    size = run.local.base.size
    names = [run.local.name, *(h.name for h in run.hosts)]
    if len(set(names)) != len(names):
        raise ConfigError(f"service names must be distinct and one per host, got {names}")
    info: dict[str, object] = {}
    built = []
    for cfg in (run.local, *run.hosts):
        service, info[cfg.name] = load_service(cfg, size, log=log, train_missing=train_missing)
        built.append(service)
    base = run.local.base
    return Scenario(built[0], built[1:], task_splits(base.task, size, base.seed), info)


def run_services(run: RunConfig, only: Collection[str] | None = None, *, log: Log = print,
                 train_missing: bool = True, plugins: Plugins | None = None) -> dict[str, Service]:
    """The services of ``run`` by name (only those named in ``only``, when given), without its data:
    a host server rebuilds its own service alone, never the local provider's."""
    configs = {c.name: c for c in (run.local, *run.hosts)}
    unknown = sorted(set(only or ()) - set(configs))
    if unknown:
        raise ConfigError(f"the run has no service {unknown}; its services: {sorted(configs)}")
    return {name: load_service(cfg, run.local.base.size, log=log, train_missing=train_missing, plugins=plugins)[0]
            for name, cfg in configs.items() if only is None or name in only}


def build_scenario(local: BaseModelSpec = DEFAULT_LOCAL, hosts: tuple[BaseModelSpec, ...] = (DEFAULT_HOST,), *,
                   local_name: str = "alexnet", host_names: tuple[str, ...] | None = None, log: Log = print,
                   train_missing: bool = True) -> Scenario:
    """Services for a local base model and its hosts (named after their models unless
    ``host_names`` says otherwise); the local task's splits come along."""
    names = host_names or tuple(h.model for h in hosts)
    if len(names) != len(hosts):
        raise ConfigError(f"one name per host, got {len(names)} names for {len(hosts)} hosts")
    run = RunConfig(ServiceConfig(local_name, local), tuple(ServiceConfig(n, h) for n, h in zip(names, hosts)))
    return scenario_from_config(run, log, train_missing=train_missing)
