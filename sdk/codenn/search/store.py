"""A run directory and its one reader and writer. Every write is atomic and durable (:mod:`codenn.fileio`).

Layout::

    RUN/run.json          :class:`~codenn.search.record.RunRecord`: config, service cards, original, selection
    RUN/results.jsonl     one :class:`~codenn.paths.rows.PathRow` per path, written as each becomes final
    RUN/state.json        :class:`~codenn.search.record.SearchState`: where a fast search stands, to resume
    RUN/links/NAME.safetensors + NAME.json   trained links and their :class:`~codenn.search.record.LinkManifest`
    RUN/pareto.png

``codenn search`` and ``codenn train`` write it; ``evaluate``, ``export``, ``serve-host``,
``serve`` and the benchmarks read it through :meth:`RunStore.open`, so a directory either command
wrote is accepted by all of them. The fingerprint check that guards every reload, and the one
way to rebuild a run's services (:meth:`RunStore.services`), live here.
"""

from __future__ import annotations

import json
import os
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

import torch

from codenn.config.run import RunConfig
from codenn.contracts.plugins import Plugins
from codenn.errors import ConfigError, ExportError, FrozenParameterError
from codenn.fileio import atomic_json, atomic_tensors, atomic_write, jsonable
from codenn.model.service import Service, ServiceCard
from codenn.paths.composed import ComposedPath
from codenn.paths.rows import PathRow
from codenn.paths.spec import PathSpec, slug
from codenn.search.record import LinkManifest, RunRecord, SearchState
from codenn.train.data import tensors
from codenn.train.scenario import Log, Scenario, run_services, scenario_from_config


class RunStore:
    """Reads and writes one run directory."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    @classmethod
    def open(cls, root: str | os.PathLike[str]) -> RunStore:
        """An existing run written by ``codenn search`` or ``codenn train``; refuses anything else
        here, with one message, rather than with a missing key deep inside a reader."""
        store = cls(root)
        store.run_config()
        return store

    def exists(self) -> bool:
        """Whether the directory holds any part of a run (its record or results)."""
        return (self.root / "run.json").exists() or self.results.exists()

    # -- rows -----------------------------------------------------------------------------------
    @property
    def results(self) -> Path:
        return self.root / "results.jsonl"

    def append_row(self, row: PathRow) -> None:
        """Add one path's final row, replacing an earlier row of the same path (a path trained
        again); the file is rewritten atomically so a crash never leaves half a line."""
        kept = [line for line in self._lines() if json.loads(line).get("spec") != row.spec]
        text = "".join(f"{line}\n" for line in kept) + json.dumps(row.to_dict(), default=jsonable) + "\n"
        atomic_write(self.results, text.encode())

    def _lines(self) -> list[str]:
        if not self.results.exists():
            return []
        return [line for line in self.results.read_text().splitlines() if line.strip()]

    def rows(self) -> list[PathRow]:
        """Every path's row, in the order they became final."""
        return [PathRow.from_dict(json.loads(line)) for line in self._lines()]

    def trained(self) -> dict[str, PathRow]:
        """The rows of trained paths (the ones with links), by canonical spec."""
        return {r.spec: r for r in self.rows() if r.status == "trained"}

    # -- run.json and state -----------------------------------------------------------------------
    def _read(self, name: str) -> Any:
        path = self.root / name
        if not path.exists():
            return None
        try:
            return json.loads(path.read_text())
        except ValueError as exc:
            raise ConfigError(f"{str(path)!r} is not valid JSON: {exc}") from None

    def write_record(self, record: RunRecord) -> None:
        atomic_json(self.root / "run.json", record.to_dict())

    def record(self) -> RunRecord:
        """run.json as a :class:`RunRecord` (ConfigError when there is none)."""
        data = self._read("run.json")
        if data is None:
            raise ConfigError(f"{str(self.root)!r} is not a codenn search run (no run.json, as `codenn search` or "
                              "`codenn train` write it)")
        return RunRecord.from_dict(data, f"run.json of {str(self.root)!r}")

    def run_config(self) -> RunConfig:
        """The configuration the run was made with (services, search, training, cost)."""
        run = self.record().run_config
        if run is None:
            raise ConfigError(f"{str(self.root)!r} is not a codenn search run (its run.json has no run configuration, "
                              "as `codenn search` or `codenn train` write it)")
        return run

    def service_card(self, name: str) -> ServiceCard:
        """A service's public card as the run recorded it (no model is loaded)."""
        cards = self.record().services
        if name not in cards:
            raise ConfigError(f"run.json of {str(self.root)!r} has no service card for {name!r}; "
                              f"cards: {sorted(cards) or 'none'}")
        return cards[name]

    def block_counts(self) -> dict[str, int]:
        """Each recorded service's number of blocks, to resolve open-ended path specs."""
        return {name: card.num_blocks for name, card in self.record().services.items()}

    def original(self) -> PathRow:
        """The original local model's row."""
        row = self.record().original
        if row is None:
            raise ConfigError(f"run.json of {str(self.root)!r} has no original model's row")
        return row

    def selected_spec(self) -> str | None:
        """The path the run selected (``codenn train``: the path it trained), or None."""
        selected = self.record().selected
        return None if selected is None else selected.spec

    def decision(self) -> str | None:
        return self.record().decision

    def state(self) -> SearchState | None:
        data = self._read("state.json")
        return None if data is None else SearchState.from_dict(data)

    def save_state(self, state: SearchState) -> None:
        atomic_json(self.root / "state.json", state.to_dict())

    # -- the run's services ---------------------------------------------------------------------
    def services(self, only: Collection[str] | None = None, *, log: Log = print, train_missing: bool = True,
                 plugins: Plugins | None = None) -> dict[str, Service]:
        """The run's services rebuilt from its configuration (only those named in ``only``): the one
        way every reader gets them. A host rebuilds its own service alone, never the local one."""
        return run_services(self.run_config(), only, log=log, train_missing=train_missing, plugins=plugins)

    def scenario(self, *, log: Log = print) -> Scenario:
        """Every service of the run and the local task's data (what evaluate and export measure on)."""
        return scenario_from_config(self.run_config(), log)

    def check_resumable(self, config_hash: str) -> bool:
        """True when the directory holds a run with the same configuration; error if different."""
        if self._read("run.json") is None:
            if self.results.exists():
                raise ConfigError(f"run directory {str(self.root)!r} has results but no run.json; use a new directory")
            return False
        held = self.record().config_hash
        if held != config_hash:
            raise ConfigError(
                f"run directory {str(self.root)!r} holds a run with a different configuration "
                f"({held} != {config_hash}); choose a new --run or --fresh to overwrite"
            )
        return True

    def check_fingerprints(self, fingerprints: Mapping[str, str]) -> None:
        """Refuse to resume links trained on other service weights (e.g. a base model retrained)."""
        for spec in self.trained():
            if not self.manifest_file(spec).exists():
                continue
            for name, fp in self.manifest(spec).fingerprints.items():
                if name in fingerprints and fingerprints[name] != fp:
                    raise ConfigError(
                        f"run directory {str(self.root)!r} was searched with other weights for service {name!r} "
                        f"(fingerprint {fp[:12]}… there, {fingerprints[name][:12]}… now; the base model was "
                        "retrained or replaced); its results cannot be resumed: choose a new --run or --fresh")

    # -- link files -------------------------------------------------------------------------------
    def links_file(self, spec: str) -> Path:
        return self.root / "links" / f"{slug(spec)}.safetensors"

    def manifest_file(self, spec: str) -> Path:
        return self.links_file(spec).with_suffix(".json")

    def save_links(self, spec: str, links: torch.nn.Module, manifest: LinkManifest) -> Path:
        target = self.links_file(spec)
        atomic_tensors(target, dict(links.state_dict()), metadata={"spec": spec})
        atomic_json(self.manifest_file(spec), manifest.to_dict())
        return target

    def manifest(self, spec: str) -> LinkManifest:
        """A trained path's manifest: link factories, sides and options, fingerprints, seed, metrics."""
        target = self.manifest_file(spec)
        if not target.exists():
            raise ConfigError(f"no trained links for path {spec!r} in {str(self.root)!r} (no {target.name})")
        return LinkManifest.from_dict(json.loads(target.read_text()), f"manifest {str(target)!r}")

    def load_links(self, spec: str, prefixes: tuple[str, ...] | None = None) -> dict[str, torch.Tensor]:
        """A trained path's link tensors; with ``prefixes`` only the keys that start with one
        (a host reads its own links only: the others are never loaded)."""
        from safetensors import safe_open

        target = self.links_file(spec)
        if not target.exists():
            raise ConfigError(f"no trained links for path {spec!r} in {str(self.root)!r}")
        with safe_open(str(target), framework="pt") as fh:
            return {k: fh.get_tensor(k) for k in fh.keys() if prefixes is None or k.startswith(prefixes)}

    def check_trained_on(self, spec: str, fingerprints: Mapping[str, str]) -> None:
        """Refuse a service whose weights are not the ones ``spec``'s links were trained on.

        ``fingerprints`` maps service names to their current fingerprint; services the manifest
        does not name (or the caller does not have) are not compared.
        """
        for name, fp in self.manifest(spec).fingerprints.items():
            now = fingerprints.get(name)
            if now is not None and now != fp:
                raise FrozenParameterError(f"service {name!r} is not the one path {spec!r} was trained on "
                                           f"(fingerprint {now[:12]}… != {fp[:12]}…)")

    def trained_path(self, spec: str, services: Mapping[str, Service]) -> ComposedPath:
        """Rebuild a trained path over ``services`` from its manifest and links, refusing services
        that changed since it was trained."""
        manifest = self.manifest(spec)
        self.check_trained_on(spec, {n: services[n].fingerprint() for n in manifest.fingerprints if n in services})
        torch.manual_seed(0)
        path = ComposedPath(spec, services, link=list(manifest.link_factories), link_options=dict(manifest.link_options))
        path.links.load_state_dict(self.load_links(spec))
        return path

    def load_path(self, spec: str | None = None, *, log: Log = print, inputs: int = 8
                  ) -> tuple[ComposedPath, torch.Tensor]:
        """A trained path of the run rebuilt over all its services (``spec``, default the selected
        path), in eval mode, and ``inputs`` real inputs of the local task's test split (what an
        export checks parity on)."""
        scenario = self.scenario(log=log)
        trained = self.trained()
        if spec is None:
            spec = self.selected_spec()
            if not spec:
                raise ExportError(f"run {str(self.root)!r} selected no path (decision: {self.decision()!r}); choose one "
                                  f"with --spec. Trained paths: {sorted(trained) or 'none'}")
        services = scenario.services
        try:
            canonical = str(PathSpec.parse(spec).resolve({n: s.num_blocks for n, s in services.items()}))
        except KeyError as exc:
            raise ExportError(f"path {spec!r} names a service the run does not have: {exc}; services: "
                              f"{sorted(services)}") from exc
        if canonical not in trained:
            raise ExportError(f"run {str(self.root)!r} has no trained links for {spec!r}; trained paths: "
                              f"{sorted(trained) or 'none'}")
        path = self.trained_path(canonical, services)
        x, _ = tensors(scenario.splits.test, limit=inputs)
        accuracy = trained[canonical].test_accuracy
        log(f"loaded {canonical} from {self.root} (test accuracy {float('nan') if accuracy is None else accuracy:.3f})")
        return path.eval(), x


def load_run_path(run_dir: str | os.PathLike[str], spec: str | None = None, *, log: Log = print
                  ) -> tuple[ComposedPath, torch.Tensor]:
    """:meth:`RunStore.load_path` of the run at ``run_dir``."""
    return RunStore.open(run_dir).load_path(spec, log=log)
