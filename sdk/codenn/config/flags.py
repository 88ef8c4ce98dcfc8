"""Command-line flags as data: which option sets which configuration field.

One table per command family (:data:`SEARCH_FLAGS`, :data:`SERVER_FLAGS`, :data:`HOST_FLAGS`)
maps each option to a dotted field of a configuration dataclass; :func:`apply_flags` sets the
fields the user gave, and every dataclass's ``__post_init__`` validates the result. The face
(:mod:`codenn.cli`) turns the same rows into click options, so an option and the field it sets
are written once.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from codenn.errors import ConfigError

T = TypeVar("T")

KINDS = ("str", "int", "float", "flag", "file", "existing-file", "dir")


@dataclass(frozen=True)
class Flag:
    """One option: its spelling, the field it sets, how it is typed and what it says."""

    option: str
    field: str
    help: str
    kind: str = "str"
    minimum: float | None = None
    min_open: bool = False
    maximum: float | None = None
    choices: tuple[str, ...] = ()
    deprecated: tuple[str, ...] = ()
    """Old spellings still accepted for one release, with a warning naming the new one."""
    invert: bool = False
    """A flag that sets its (boolean) field to False: ``--quiet`` turns ``progress`` off."""

    def __post_init__(self) -> None:
        if not self.option.startswith("--") or self.kind not in KINDS or not self.field:
            raise ConfigError(f"flag {self.option!r}: needs a '--name', a field and a kind in {KINDS}; got {self}")

    @property
    def dest(self) -> str:
        """The keyword the command receives the value under."""
        return self.option.lstrip("-").replace("-", "_")


def _replace(obj: Any, changes: Mapping[str, Any], where: str = "") -> Any:
    """``obj`` with ``changes`` (nested by field path) made at once per object, so that
    ``__post_init__`` checks the result and never a half-changed state (a TLS key without its
    certificate)."""
    if not dataclasses.is_dataclass(obj) or isinstance(obj, type):
        raise ConfigError(f"cannot set {where or 'a field'} on {type(obj).__name__}")
    names = {f.name for f in dataclasses.fields(obj)}
    unknown = sorted(set(changes) - names)
    if unknown:
        raise ConfigError(f"{type(obj).__name__} has no field {unknown}; fields: {sorted(names)}")
    return dataclasses.replace(obj, **{
        name: _replace(getattr(obj, name), value, f"{where}{name}.") if isinstance(value, _Nested) else value
        for name, value in changes.items()})


class _Nested(dict[str, Any]):
    """Changes to a nested configuration object (as opposed to a dict-valued field)."""


def apply_flags(config: T, flags: Sequence[Flag], values: Mapping[str, Any]) -> T:
    """``config`` with the field of every flag the user gave set (None and unset flags: left alone)."""
    changes = _Nested()
    for flag in flags:
        value = values.get(flag.dest)
        if value is None or (flag.kind == "flag" and not value):
            continue
        *parents, leaf = flag.field.split(".")
        level = changes
        for part in parents:
            level = level.setdefault(part, _Nested())
        level[leaf] = (not value) if flag.invert else value
    return _replace(config, changes) if changes else config


def field_default(config: Any, flag: Flag) -> Any:
    """The value ``flag``'s field has in ``config`` (what a command shows as the default)."""
    value = config
    for part in flag.field.split("."):
        value = getattr(value, part)
    return value


SEARCH_FLAGS: tuple[Flag, ...] = (
    Flag("--strategy", "search.strategy", "Search strategy.", choices=("fast", "exhaustive")),
    Flag("--link", "search.link", "Link factory (codenn plugins lists them)."),
    Flag("--epochs", "search.train.epochs", "Full training budget per path.", "int", minimum=1),
    Flag("--screen-keep", "search.fast.screen_keep", "fast: paths kept after least-squares screening.", "int",
         minimum=1),
    Flag("--latency-bound-us", "search.cost.latency_bound_us", "L_T of eq. (2), microseconds.", "float"),
    Flag("--objective", "search.cost.objective", "Objective: paper (eq. 1) or accuracy_throughput."),
    Flag("--device", "search.train.device", "cpu, cuda, cuda:1 ..."),
    Flag("--seed", "search.train.seed", "Seed for link initialisation and batches.", "int"),
    Flag("--quiet", "search.train.progress", "No progress bars.", "flag", invert=True),
    Flag("--executor", "executor.name", "Where path jobs run: inprocess (default) or ray (pip install 'codenn[ray]')."),
    Flag("--address", "executor.address", "ray: the cluster's address (HOST:PORT); default: a local cluster."),
    Flag("--workers", "executor.workers", "ray: worker processes (default: one per CPU of the cluster).", "int",
         minimum=1),
)
"""``codenn search`` / ``codenn train``: fields of :class:`codenn.config.run.RunConfig`."""

SERVER_FLAGS: tuple[Flag, ...] = (
    Flag("--bind", "bind", "Address to listen on.", deprecated=("--host",)),
    Flag("--port", "port", "Port to listen on.", "int", minimum=1, maximum=65535),
    Flag("--ssl-keyfile", "ssl_keyfile", "TLS private key (with --ssl-certfile).", "existing-file"),
    Flag("--ssl-certfile", "ssl_certfile", "TLS certificate (with --ssl-keyfile).", "existing-file"),
    Flag("--max-bytes", "max_bytes", "Largest request body accepted (413 above).", "int", minimum=1024),
    Flag("--max-response-bytes", "max_response_bytes", "Largest answer sent (413 to a request that would need more).",
         "int", minimum=1024),
    Flag("--body-timeout", "body_timeout_s", "Seconds to receive a whole body (408 after) and to deliver an answer.",
         "float", minimum=0, min_open=True),
    Flag("--header-timeout", "header_timeout_s",
         "Seconds to receive a request's headers (the connection closes after).", "float", minimum=0, min_open=True),
    Flag("--limit-concurrency", "limit_concurrency", "Connections and requests at once (503 above).", "int", minimum=1),
    Flag("--keep-alive", "keep_alive_s", "Seconds an idle keep-alive connection stays open.", "int", minimum=1),
)
"""Both servers (``codenn serve-host``, ``codenn serve``): fields of :class:`ServerConfig`."""

HOST_FLAGS: tuple[Flag, ...] = (
    Flag("--save-dir", "save_dir", "Checkpoint split training (links, optimizers, counters) to DIR/NAME.safetensors "
         "every --checkpoint-every steps and at shutdown.", "dir"),
    Flag("--checkpoint-every", "checkpoint_every", "Applied split-training steps between two checkpoints.", "int",
         minimum=1),
)
"""``codenn serve-host`` only: the host's durable split training."""
