"""A run directory and its one reader and writer. Every write is atomic and durable (:mod:`codenn.fileio`).

Layout::

    RUN/run.json          config, services (cards, fingerprints), original model, selection, summary
    RUN/results.jsonl     one row per path (:class:`codenn.rows.PathRow`), written as each becomes final
    RUN/state.json        where a search stands, for resumption
    RUN/links/NAME.safetensors + NAME.json   trained links and their manifest
    RUN/pareto.png

``codenn search`` and ``codenn train`` write it; ``evaluate``, ``export``, ``serve-host``,
``serve`` and the benchmarks read it through :meth:`RunStore.open`, so a directory either command
wrote is accepted by all of them, and the fingerprint check that guards every reload lives here.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path as FsPath
from typing import Any

import torch

from codenn.config import RunConfig, from_dict
from codenn.errors import ConfigError, FrozenParameterError
from codenn.fileio import atomic_json, atomic_tensors, atomic_write, jsonable
from codenn.paths import Path
from codenn.rows import PathRow
from codenn.service import Service, ServiceCard


def slug(spec: str) -> str:
    """A file name for a path spec: readable, unique (hash suffix)."""
    text = re.sub(r"[^A-Za-z0-9]+", "_", spec).strip("_")
    return f"{text[:80]}-{hashlib.sha256(spec.encode()).hexdigest()[:8]}"


class RunStore:
    """Reads and writes one run directory."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = FsPath(root)

    @classmethod
    def open(cls, root: str | os.PathLike[str]) -> RunStore:
        """An existing, finished-or-running run; refuses anything else here, with one message,
        rather than with a missing key deep inside a reader."""
        store = cls(root)
        store.run_json()
        return store

    # -- rows -----------------------------------------------------------------------------------
    @property
    def results(self) -> FsPath:
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
    def read_json(self, name: str) -> dict[str, Any] | None:
        path = self.root / name
        return json.loads(path.read_text()) if path.exists() else None

    def write_json(self, name: str, data: Any) -> None:
        atomic_json(self.root / name, data)

    def run_json(self) -> dict[str, Any]:
        """run.json of a run written by ``codenn search`` or ``codenn train``."""
        data = self.read_json("run.json")
        if data is None or "run_config" not in data.get("metadata", {}):
            raise ConfigError(f"{str(self.root)!r} is not a codenn search run (no run.json with its configuration, "
                              "as `codenn search` or `codenn train` write it)")
        return data

    def run_config(self) -> RunConfig:
        """The configuration the run was made with (services, search, training, cost)."""
        return from_dict(self.run_json()["metadata"]["run_config"])

    def service_card(self, name: str) -> ServiceCard:
        """A service's public card as the run recorded it (no model is loaded)."""
        cards = self.run_json().get("services", {})
        if name not in cards:
            raise ConfigError(f"run.json of {str(self.root)!r} has no service card for {name!r}; "
                              f"cards: {sorted(cards) or 'none'}")
        return ServiceCard.from_dict(cards[name])

    def block_counts(self) -> dict[str, int]:
        """Each recorded service's number of blocks, to resolve open-ended path specs."""
        return {name: len(card["blocks"]) for name, card in self.run_json().get("services", {}).items()}

    def original(self) -> PathRow:
        """The original local model's row."""
        return PathRow.from_dict(self.run_json()["original"])

    def selected_spec(self) -> str | None:
        """The path the run selected (``codenn train``: the path it trained), or None."""
        return (self.run_json().get("selected") or {}).get("spec")

    def decision(self) -> str | None:
        return self.run_json().get("decision")

    def check_resumable(self, config_hash: str) -> bool:
        """True when the directory holds a run with the same configuration; error if different."""
        run = self.read_json("run.json")
        if run is None:
            if self.results.exists():
                raise ConfigError(f"run directory {str(self.root)!r} has results but no run.json; use a new directory")
            return False
        if run.get("config_hash") != config_hash:
            raise ConfigError(
                f"run directory {str(self.root)!r} holds a run with a different configuration "
                f"({run.get('config_hash')} != {config_hash}); choose a new --out or --fresh to overwrite"
            )
        return True

    def check_fingerprints(self, fingerprints: Mapping[str, str]) -> None:
        """Refuse to resume links trained on other service weights (e.g. a base model retrained)."""
        for spec in self.trained():
            if not self.manifest_file(spec).exists():
                continue
            for name, fp in self.manifest(spec).get("fingerprints", {}).items():
                if name in fingerprints and fingerprints[name] != fp:
                    raise ConfigError(
                        f"run directory {str(self.root)!r} was searched with other weights for service {name!r} "
                        f"(fingerprint {fp[:12]}… there, {fingerprints[name][:12]}… now; the base model was "
                        "retrained or replaced); its results cannot be resumed: choose a new --out or --fresh")

    # -- link files -------------------------------------------------------------------------------
    def links_file(self, spec: str) -> FsPath:
        return self.root / "links" / f"{slug(spec)}.safetensors"

    def manifest_file(self, spec: str) -> FsPath:
        return self.links_file(spec).with_suffix(".json")

    def save_links(self, spec: str, links: torch.nn.Module, manifest: dict[str, Any]) -> FsPath:
        target = self.links_file(spec)
        atomic_tensors(target, dict(links.state_dict()), metadata={"spec": spec})
        atomic_json(self.manifest_file(spec), manifest)
        return target

    def manifest(self, spec: str) -> dict[str, Any]:
        """A trained path's manifest: link factories, sides and options, fingerprints, seed, metrics."""
        target = self.manifest_file(spec)
        if not target.exists():
            raise ConfigError(f"no trained links for path {spec!r} in {str(self.root)!r} (no {target.name})")
        data: dict[str, Any] = json.loads(target.read_text())
        return data

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
        for name, fp in self.manifest(spec)["fingerprints"].items():
            now = fingerprints.get(name)
            if now is not None and now != fp:
                raise FrozenParameterError(f"service {name!r} is not the one path {spec!r} was trained on "
                                           f"(fingerprint {now[:12]}… != {fp[:12]}…)")

    def trained_path(self, spec: str, services: Mapping[str, Service]) -> Path:
        """Rebuild a trained path over ``services`` from its manifest and links, refusing services
        that changed since it was trained."""
        manifest = self.manifest(spec)
        self.check_trained_on(spec, {n: services[n].fingerprint() for n in manifest["fingerprints"] if n in services})
        torch.manual_seed(0)
        path = Path(spec, services, link=manifest["link_factories"], link_options=manifest.get("link_options", {}))
        path.links.load_state_dict(self.load_links(spec))
        return path
