"""A search's run directory: rows, link files, checkpoints, state. Every write is atomic.

Layout::

    RUN/run.json          config, services (cards, fingerprints), original model, summary
    RUN/results.jsonl     one row per path, appended as each path's outcome becomes final
    RUN/state.json        where a search stands, for resumption
    RUN/links/NAME.safetensors + NAME.json   trained links and their manifest
    RUN/ckpt/NAME.safetensors                links + optimizer + RNG of a path mid-search
    RUN/pareto.png
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from codenn.errors import ConfigError


def slug(spec: str) -> str:
    """A file name for a path spec: readable, unique (hash suffix)."""
    text = re.sub(r"[^A-Za-z0-9]+", "_", spec).strip("_")
    return f"{text[:80]}-{hashlib.sha256(spec.encode()).hexdigest()[:8]}"


def atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_json(path: Path, data: Any) -> None:
    atomic_write(path, json.dumps(data, indent=2, default=_jsonable).encode())


def atomic_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, tmp, metadata=metadata)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _jsonable(obj: Any) -> Any:
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    if isinstance(obj, (set, tuple)):
        return list(obj)
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


class RunStore:
    """Reads and writes one run directory."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    # -- rows -----------------------------------------------------------------------------------
    @property
    def results(self) -> Path:
        return self.root / "results.jsonl"

    def append_row(self, row: dict[str, Any]) -> None:
        """Append one row; the file is rewritten atomically so a crash never leaves half a line."""
        lines = self.results.read_bytes() if self.results.exists() else b""
        atomic_write(self.results, lines + json.dumps(row, default=_jsonable).encode() + b"\n")

    def rows(self) -> Iterator[dict[str, Any]]:
        if not self.results.exists():
            return
        for line in self.results.read_text().splitlines():
            if line.strip():
                yield json.loads(line)

    def rewrite_rows(self, rows: list[dict[str, Any]]) -> None:
        atomic_write(self.results, b"".join(json.dumps(r, default=_jsonable).encode() + b"\n" for r in rows))

    # -- run metadata and state -----------------------------------------------------------------
    def read_json(self, name: str) -> dict[str, Any] | None:
        path = self.root / name
        return json.loads(path.read_text()) if path.exists() else None

    def write_json(self, name: str, data: Any) -> None:
        atomic_json(self.root / name, data)

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

    def check_fingerprints(self, fingerprints: dict[str, str]) -> None:
        """Refuse to resume links trained on other service weights (e.g. a base model retrained)."""
        for row in self.rows():
            manifest_file = self.links_file(row["spec"]).with_suffix(".json")
            if row.get("status") != "trained" or not manifest_file.exists():
                continue
            recorded = json.loads(manifest_file.read_text()).get("fingerprints", {})
            for name, fp in recorded.items():
                if name in fingerprints and fingerprints[name] != fp:
                    raise ConfigError(
                        f"run directory {str(self.root)!r} was searched with other weights for service {name!r} "
                        f"(fingerprint {fp[:12]}… there, {fingerprints[name][:12]}… now; the base model was "
                        "retrained or replaced); its results cannot be resumed: choose a new --out or --fresh")

    # -- link files -------------------------------------------------------------------------------
    def links_file(self, spec: str) -> Path:
        return self.root / "links" / f"{slug(spec)}.safetensors"

    def save_links(self, spec: str, links: torch.nn.Module, manifest: dict[str, Any]) -> Path:
        target = self.links_file(spec)
        atomic_tensors(target, dict(links.state_dict()), metadata={"spec": spec})
        atomic_json(target.with_suffix(".json"), manifest)
        return target

    def load_links(self, spec: str) -> dict[str, torch.Tensor]:
        target = self.links_file(spec)
        if not target.exists():
            raise ConfigError(f"no trained links for path {spec!r} in {str(self.root)!r}")
        return load_file(str(target))

    def ckpt_file(self, spec: str) -> Path:
        return self.root / "ckpt" / f"{slug(spec)}.safetensors"
