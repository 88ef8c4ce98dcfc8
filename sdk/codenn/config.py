"""The search's configuration dataclasses, and TOML files for ``codenn search`` / ``train`` / ``evaluate``.

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
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from codenn.cost import CostModel
from codenn.errors import ConfigError
from codenn.executor import ExecutorConfig
from codenn.profile import Network
from codenn.scenario import DEFAULT_HOST, DEFAULT_LOCAL, BaseModelSpec
from codenn.train import TrainConfig

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

T = TypeVar("T")

STRATEGIES = ("exhaustive", "fast")
# The accuracy assumed when bounding a path's cost before training: "perfect" (1.0) never drops a
# path that could win; "original" (L_A) also drops paths that would need to beat the original
# model's accuracy, which cross paths sometimes do.
BOUND_ACCURACIES = ("perfect", "original")


@dataclass(frozen=True)
class SpaceConfig:
    """Which candidate paths to consider (see :class:`codenn.pathspace.PathSpace`)."""

    skip: bool = True
    cross: bool = True
    min_skipped: int = 1
    max_hosts: int = 1
    hin: int | None = None
    hout: int | None = None


@dataclass(frozen=True)
class FastConfig:
    """Knobs of the fast strategy."""

    screen_keep: int = 8
    eta: int = 2
    first_rung_epochs: int = 1
    final_keep: int = 2
    bound_accuracy: str = "perfect"
    keep_cross: int = 2
    """The best cross paths (by cost at each stage) that go on whatever their rank: a least-squares
    estimate or one epoch underrates a path through another provider's blocks far more than a skip
    path, and the point of the search is to see what the hosts offer."""

    def __post_init__(self) -> None:
        if self.keep_cross < 0:
            raise ConfigError(f"fast search needs keep_cross >= 0; got {self.keep_cross}")
        if self.screen_keep < 1 or self.eta < 2 or self.first_rung_epochs < 1 or self.final_keep < 1:
            raise ConfigError(
                f"fast search needs screen_keep >= 1, eta >= 2, first_rung_epochs >= 1, final_keep >= 1; got {self}"
            )
        if self.bound_accuracy not in BOUND_ACCURACIES:
            raise ConfigError(f"bound_accuracy {self.bound_accuracy!r} is not one of {BOUND_ACCURACIES}")


@dataclass(frozen=True)
class SearchConfig:
    """Everything one search needs besides its services and data; its hash names the run."""

    strategy: str = "fast"
    link: str = "conv1x1"
    link_options: dict[str, Any] = field(default_factory=dict)
    train: TrainConfig = field(default_factory=TrainConfig)
    cost: CostModel = field(default_factory=CostModel)
    network: Network = field(default_factory=Network)
    space: SpaceConfig = field(default_factory=SpaceConfig)
    fast: FastConfig = field(default_factory=FastConfig)
    profile_batch: int = 1
    profile_repeats: int = 10

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ConfigError(f"unknown search strategy {self.strategy!r}; choose one of {STRATEGIES}")
        if self.profile_batch < 1 or self.profile_repeats < 1:
            raise ConfigError(f"profile_batch and profile_repeats must be >= 1, got {self.profile_batch}, "
                              f"{self.profile_repeats}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def hash(self) -> str:
        d = self.to_dict()
        d["train"].pop("progress", None)
        return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]


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
