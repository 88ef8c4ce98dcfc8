"""The run directory's records as types: ``run.json`` (:class:`RunRecord`), each trained path's
link manifest (:class:`LinkManifest`) and where a fast search stands (:class:`SearchState`).

:class:`codenn.search.store.RunStore` alone writes and reads them. The JSON layout is the one
earlier versions wrote, so older run directories load; keys a reader does not know are ignored
and missing optional ones take their defaults (a hand-made run.json in a test, or one from a
newer version, still reads).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from codenn.config.run import RunConfig, from_dict
from codenn.errors import ConfigError
from codenn.model.service import ServiceCard
from codenn.paths.rows import PathRow


def _mapping(value: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ConfigError(f"{what} must be a JSON object, got {type(value).__name__}")
    return value


@dataclass(frozen=True)
class RunRecord:
    """What ``run.json`` says about a run: its configuration (as given and as hashed), every
    service's public card, the data, the original model's row, the selection and decision, the
    Pareto front, totals, and the base models' training records."""

    run_config: RunConfig | None = None
    """The whole run's configuration; None for a search started from Python without one (the
    commands that rebuild services need it: :meth:`RunStore.open` refuses such a directory)."""
    config_hash: str = ""
    search: Mapping[str, Any] = field(default_factory=dict)
    """The search configuration as written (``SearchConfig.to_dict()``); ``run_config`` is the typed form."""
    services: Mapping[str, ServiceCard] = field(default_factory=dict)
    data: Mapping[str, Any] = field(default_factory=dict)
    original: PathRow | None = None
    selected: PathRow | None = None
    decision: str | None = None
    pareto: tuple[str, ...] = ()
    totals: Mapping[str, Any] = field(default_factory=dict)
    base_models: Mapping[str, Any] = field(default_factory=dict)
    metadata: Mapping[str, Any] = field(default_factory=dict)
    """Anything else a caller recorded (``Search(metadata=...)``), besides ``run_config`` and ``base_models``."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "config": dict(self.search), "config_hash": self.config_hash,
            "services": {n: c.to_dict() for n, c in self.services.items()},
            "data": dict(self.data), "original": self.original.to_dict() if self.original else None,
            "selected": self.selected.to_dict() if self.selected else None, "decision": self.decision,
            "pareto": list(self.pareto), "totals": dict(self.totals),
            "metadata": {**self.metadata, **({"run_config": self.run_config.to_dict()} if self.run_config else {}),
                         **({"base_models": dict(self.base_models)} if self.base_models else {})},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "run.json") -> RunRecord:
        """The record ``data`` holds (a ConfigError names what does not fit)."""
        data = _mapping(data, where)
        meta = dict(_mapping(data.get("metadata") or {}, f"{where}: metadata"))
        raw = meta.pop("run_config", None)
        run = None if raw is None else from_dict(_mapping(raw, f"{where}: metadata.run_config"))
        cards = _mapping(data.get("services") or {}, f"{where}: services")
        # a row's role says its status where a hand-written record leaves it out
        rows = {k: PathRow.from_dict({"status": status, **data[k]}) if isinstance(data.get(k), Mapping) else None
                for k, status in (("original", "original"), ("selected", "trained"))}
        return cls(run, str(data.get("config_hash") or ""), dict(data.get("config") or {}),
                   {n: ServiceCard.from_dict(c) for n, c in cards.items()}, dict(data.get("data") or {}),
                   rows["original"], rows["selected"], data.get("decision"), tuple(data.get("pareto") or ()),
                   dict(data.get("totals") or {}), dict(meta.pop("base_models", None) or {}), meta)


@dataclass(frozen=True)
class LinkManifest:
    """How a trained path's links were built and on which services: enough to rebuild the path
    (factories, options) and to refuse services that changed since (fingerprints)."""

    spec: str
    link_factories: tuple[str, ...]
    link_sides: tuple[str, ...] = ()
    link_options: Mapping[str, Any] = field(default_factory=dict)
    fingerprints: Mapping[str, str] = field(default_factory=dict)
    paper_form: str | None = None
    seed: int | None = None
    metrics: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"spec": self.spec, "paper_form": self.paper_form, "link_factories": list(self.link_factories),
                "link_sides": list(self.link_sides), "link_options": dict(self.link_options),
                "fingerprints": dict(self.fingerprints), "seed": self.seed, "metrics": dict(self.metrics)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "manifest") -> LinkManifest:
        factories = data.get("link_factories")
        if not isinstance(data.get("spec"), str) or not isinstance(factories, list):
            raise ConfigError(f"{where} needs a string 'spec' and a list 'link_factories'; got {str(dict(data))[:200]}")
        return cls(data["spec"], tuple(factories), tuple(data.get("link_sides") or ()),
                   dict(data.get("link_options") or {}), dict(data.get("fingerprints") or {}), data.get("paper_form"),
                   data.get("seed"), dict(data.get("metrics") or {}))


@dataclass(frozen=True)
class SearchState:
    """Where a fast search stands between halving rungs (``state.json``), to resume it."""

    rung: int
    survivors: tuple[str, ...]
    epochs: Mapping[str, int]

    def to_dict(self) -> dict[str, Any]:
        return {"rung": self.rung, "survivors": list(self.survivors), "epochs": dict(self.epochs)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SearchState:
        return cls(int(data["rung"]), tuple(data["survivors"]), {k: int(v) for k, v in data["epochs"].items()})
