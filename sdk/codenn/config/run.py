"""A run's whole configuration (services, search, executor) and its TOML file.

A file has the sections ``[local]``, ``[[hosts]]``, ``[search]`` (with ``link_options``),
``[train]``, ``[cost]``, ``[network]``, ``[space]`` and ``[fast]``; every key is optional and
defaults to the embedded scenario. See docs/search.md for every key.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from codenn.config.base_model import DEFAULT_HOST, DEFAULT_LOCAL, BaseModelSpec
from codenn.config.cost import CostModel
from codenn.config.executor import ExecutorConfig
from codenn.config.network import Network
from codenn.config.search import DEFAULT_SPACE, FastConfig, SearchConfig, SpaceConfig
from codenn.config.train import TrainConfig
from codenn.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

T = TypeVar("T")


@dataclass(frozen=True)
class ServiceConfig:
    """One provider's service: its base model spec and the name it has in path specs."""

    name: str
    base: BaseModelSpec


@dataclass(frozen=True)
class RunConfig:
    local: ServiceConfig = field(default_factory=lambda: ServiceConfig("alexnet", DEFAULT_LOCAL))
    hosts: tuple[ServiceConfig, ...] = (ServiceConfig("mobilenet_v2", DEFAULT_HOST),)
    search: SearchConfig = field(default_factory=lambda: SearchConfig(space=DEFAULT_SPACE))
    executor: ExecutorConfig = field(default_factory=ExecutorConfig)

    def to_dict(self) -> dict[str, Any]:
        """The TOML-shaped form: ``from_dict(run.to_dict()) == run``."""
        search = dataclasses.asdict(self.search)
        nested = {k: search.pop(k) for k in ("train", "cost", "network", "space", "fast")}
        executor = {k: v for k, v in dataclasses.asdict(self.executor).items() if v is not None}  # TOML has no null
        return {
            "local": {"name": self.local.name, **dataclasses.asdict(self.local.base)},
            "hosts": [{"name": h.name, **dataclasses.asdict(h.base)} for h in self.hosts],
            "search": search,
            **nested,
            "executor": executor,
        }

    def hash(self) -> str:
        """Names the default run directory: the search *and* the services' base models, so that a
        changed model (a new default scenario) starts a new run instead of refusing to resume.
        Where the jobs run (``[executor]``) is not part of it."""
        d = self.to_dict()
        d.pop("executor")
        d["train"].pop("progress", None)
        return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]


def build(cls: type[T], table: Mapping[str, Any], section: str) -> T:
    """Instantiate a config dataclass from a TOML table, naming unknown keys and bad values."""
    if not isinstance(table, Mapping):
        raise ConfigError(f"[{section}] must be a table, got {type(table).__name__}")
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]  # every T here is a config dataclass
    unknown = sorted(set(table) - names)
    if unknown:
        raise ConfigError(f"[{section}] has unknown key(s) {unknown}; valid keys: {sorted(names)}")
    try:
        return cls(**table)
    except TypeError as exc:
        raise ConfigError(f"[{section}]: {exc}") from exc


def _service(table: Mapping[str, Any], section: str, default: ServiceConfig) -> ServiceConfig:
    table = dict(table)
    name = table.pop("name", None)
    start = default.base
    if table.get("model", start.model) != start.model:
        if "task" not in table:
            raise ConfigError(f"[{section}] sets model = {table['model']!r}; also set task (one of digits, letters, "
                              "shapes, textures, imagefolder:DIR, torchvision:NAME:ROOT)")
        # another architecture starts from the generic defaults (64x64, fixed epochs), not from the
        # default model's tuning (its input size, batch, early stopping)
        start = BaseModelSpec(table["model"], table["task"], epochs=start.epochs, lr=start.lr)
    base = build(BaseModelSpec, {**dataclasses.asdict(start), **table}, section)
    # the default model keeps the default service name ("alexnet" for alexnet_cifar); another model
    # is named after itself unless the table names it
    return ServiceConfig(name or (default.name if base.model == default.base.model else base.model), base)


def from_dict(data: Mapping[str, Any]) -> RunConfig:
    known = {"local", "hosts", "search", "train", "cost", "network", "space", "fast", "executor"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"unknown section(s) {unknown}; valid sections: {sorted(known)}")
    default = RunConfig()
    local = _service(data.get("local", {}), "local", default.local)
    hosts_data = data.get("hosts")
    if hosts_data is None:
        hosts = default.hosts
    else:
        if not isinstance(hosts_data, list) or not hosts_data:
            raise ConfigError("[[hosts]] must be a non-empty array of tables")
        hosts = tuple(_service(h, f"hosts[{i}]", default.hosts[0]) for i, h in enumerate(hosts_data))
    search_table = dict(data.get("search", {}))
    search = build(SearchConfig, {
        **search_table,
        "train": build(TrainConfig, data.get("train", {}), "train"),
        "cost": build(CostModel, data.get("cost", {}), "cost"),
        "network": build(Network, data.get("network", {}), "network"),
        "space": build(SpaceConfig, {**dataclasses.asdict(DEFAULT_SPACE), **data.get("space", {})}, "space"),
        "fast": build(FastConfig, data.get("fast", {}), "fast"),
    }, "search")
    return RunConfig(local, hosts, search, build(ExecutorConfig, data.get("executor", {}), "executor"))


def load(path: str | Path) -> RunConfig:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {str(p)!r} does not exist")
    try:
        data = tomllib.loads(p.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {str(p)!r} is not valid TOML: {exc}") from exc
    return from_dict(data)
