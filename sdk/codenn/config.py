"""TOML configuration for ``codenn search`` / ``train`` / ``evaluate``.

A file has the sections ``[local]``, ``[[hosts]]``, ``[search]`` (with ``link_options``),
``[train]``, ``[cost]``, ``[network]``, ``[space]`` and ``[fast]``; every key is optional and
defaults to the embedded scenario. See docs/search.md for every key.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from codenn.cost import CostModel
from codenn.errors import ConfigError
from codenn.profile import Network
from codenn.scenario import DEFAULT_HOST, DEFAULT_LOCAL, BaseModelSpec
from codenn.search import FastConfig, SearchConfig, SpaceConfig
from codenn.train import TrainConfig

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

T = TypeVar("T")

DEFAULT_SPACE = SpaceConfig(hin=1)  # the paper's experiments enter the host at block 1


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

    def to_dict(self) -> dict[str, Any]:
        """The TOML-shaped form: ``from_dict(run.to_dict()) == run``."""
        search = dataclasses.asdict(self.search)
        nested = {k: search.pop(k) for k in ("train", "cost", "network", "space", "fast")}
        return {
            "local": {"name": self.local.name, **dataclasses.asdict(self.local.base)},
            "hosts": [{"name": h.name, **dataclasses.asdict(h.base)} for h in self.hosts],
            "search": search,
            **nested,
        }


def build(cls: type[T], table: Mapping[str, Any], section: str) -> T:
    """Instantiate a config dataclass from a TOML table, naming unknown keys and bad values."""
    if not isinstance(table, Mapping):
        raise ConfigError(f"[{section}] must be a table, got {type(table).__name__}")
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
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
    if table.get("model", default.base.model) != default.base.model and "task" not in table:
        raise ConfigError(f"[{section}] sets model = {table['model']!r}; also set task (one of digits, shapes, textures)")
    base = build(BaseModelSpec, {**dataclasses.asdict(default.base), **table}, section)
    return ServiceConfig(name or base.model, base)


def from_dict(data: Mapping[str, Any]) -> RunConfig:
    known = {"local", "hosts", "search", "train", "cost", "network", "space", "fast"}
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
    return RunConfig(local, hosts, search)


def load(path: str | Path) -> RunConfig:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {str(p)!r} does not exist")
    try:
        data = tomllib.loads(p.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {str(p)!r} is not valid TOML: {exc}") from exc
    return from_dict(data)
