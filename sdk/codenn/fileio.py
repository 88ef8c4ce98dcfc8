"""Atomic, durable file writes: every file codenn writes goes through here.

A file is written to a temporary name beside its target, flushed and fsynced, renamed over the
target (``os.replace``, atomic on POSIX and Windows), and the directory is fsynced so that the
rename itself survives a crash. A reader therefore sees the old file or the new one, never half
of one, and a failed write leaves neither a temporary file nor a changed target behind.
"""

from __future__ import annotations

import errno
import json
import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

__all__ = ["atomic_file", "atomic_json", "atomic_tensors", "atomic_write", "jsonable"]


def _fsync_file(path: str) -> None:
    with open(path, "rb+") as fh:
        os.fsync(fh.fileno())


def _fsync_dir(folder: Path) -> None:
    """Persist a rename; skipped where directories cannot be opened (Windows) or fsynced."""
    if os.name == "nt":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError as exc:  # some file systems refuse fsync on a directory; the rename still happened
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(fd)


def atomic_file(path: str | os.PathLike[str], write: Callable[[str], object]) -> None:
    """The one write protocol: ``write`` fills a temporary file (its name is passed; no suffix to
    guess a format from), which then replaces ``path``."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        _fsync_file(tmp)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(target.parent)


def atomic_write(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically and durably."""
    atomic_file(path, lambda tmp: Path(tmp).write_bytes(data))


def jsonable(obj: Any) -> Any:
    """``json.dumps`` fallback for codenn's own objects (anything with ``to_dict``), sets, tuples, paths."""
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    if isinstance(obj, (set, tuple)):
        return list(obj)
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def atomic_json(path: str | os.PathLike[str], data: Any) -> None:
    """Write ``data`` as indented JSON atomically and durably."""
    atomic_write(path, json.dumps(data, indent=2, default=jsonable).encode())


def atomic_tensors(path: str | os.PathLike[str], tensors: Mapping[str, torch.Tensor],
                   metadata: dict[str, str] | None = None) -> None:
    """Write tensors as safetensors atomically and durably (copied to contiguous CPU memory first)."""
    from safetensors.torch import save_file

    state = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    atomic_file(path, lambda tmp: save_file(state, tmp, metadata=metadata))
