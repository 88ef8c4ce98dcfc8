"""What an export wrote and measured: the per-file entries and the report behind ``export.json``.

The manifest lets a provider verify the file it serves (its blocks, boundary specs, SHA-256)
without re-running the export.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path as FsPath
from typing import TYPE_CHECKING, Any

from codenn.model.blocks import BoundarySpec
from codenn.paths.parts import PathPart

from .checks import Parity
from .contract import INPUT_NAME, OUTPUT_NAME, opset_of
from .leaks import LeakCheck

if TYPE_CHECKING:
    import onnx


@dataclass(frozen=True)
class ExportedFile:
    """One ONNX file of an export and what it holds."""

    name: str  # file name inside the output directory
    role: str  # local | host | merged
    provider: str
    ops: tuple[str, ...]
    input: BoundarySpec
    output: BoundarySpec
    exporter: str  # dynamo | torchscript | compose (merged from the part files) | copy
    opset: int
    dtype: str
    bytes: int
    sha256: str
    parameters: int
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["ops"] = list(self.ops)
        d["input"], d["output"] = self.input.to_dict(), self.output.to_dict()
        return d


@dataclass
class ExportResult:
    """Everything one :func:`export_path` call wrote and measured (also in ``export.json``)."""

    spec: str
    kind: str
    out_dir: str
    dtype: str
    opset: int
    files: list[ExportedFile] = field(default_factory=list)
    parity: list[Parity] = field(default_factory=list)
    leaks: list[LeakCheck] = field(default_factory=list)
    exporter: str = ""
    fallbacks: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    versions: dict[str, str] = field(default_factory=dict)

    def file(self, role_or_name: str) -> ExportedFile:
        """A file by name (``host-h.onnx``), part name (``host-h``) or role (first match)."""
        for f in self.files:
            if role_or_name in (f.name, f.name.removesuffix(".onnx")):
                return f
        for f in self.files:
            if f.role == role_or_name:
                return f
        raise KeyError(f"no exported file {role_or_name!r}; files: {[f.name for f in self.files]}")

    def path_of(self, role_or_name: str) -> str:
        return os.path.join(self.out_dir, self.file(role_or_name).name)

    def worst(self, file: str | None = None) -> Parity:
        rows = [p for p in self.parity if file is None or p.file == file]
        return max(rows, key=lambda p: p.rel)

    @property
    def ok(self) -> bool:
        return all(p.ok for p in self.parity) and all(c.ok for c in self.leaks)

    def to_dict(self) -> dict[str, Any]:
        return {
            "spec": self.spec, "kind": self.kind, "dtype": self.dtype, "opset": self.opset,
            "exporter": self.exporter, "fallbacks": dict(self.fallbacks), "seconds": round(self.seconds, 2),
            "input_name": INPUT_NAME, "output_name": OUTPUT_NAME,
            "files": [f.to_dict() for f in self.files],
            "parity": [p.to_dict() for p in self.parity],
            "leak_checks": [c.to_dict() for c in self.leaks],
            "versions": dict(self.versions),
        }


def sha256_of(file: str) -> str:
    """The file's SHA-256, read in 1 MiB chunks (part files can exceed memory-friendly sizes)."""
    h = hashlib.sha256()
    with open(file, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def file_entry(target: FsPath, model: onnx.ModelProto, part: PathPart, how: str, dtype: str,
               note: str = "") -> ExportedFile:
    """The manifest entry of ``target``, the file exported from ``part``."""
    from codenn.model.blocks import parameter_count

    return ExportedFile(
        name=target.name, role=part.role, provider=part.provider, ops=tuple(op.label for op in part.ops),
        input=part.input_spec, output=part.output_spec, exporter=how, opset=opset_of(model), dtype=dtype,
        bytes=target.stat().st_size, sha256=sha256_of(str(target)), parameters=parameter_count(part), note=note,
    )
