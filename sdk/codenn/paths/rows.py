"""One path's result row, as written to ``results.jsonl`` and held by a search result.

A row is typed so that readers (the command line, the servers, the benchmarks) use attributes the
type checker knows instead of string keys; its JSON form is unchanged, so older run directories
still load.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from codenn.errors import ConfigError
from codenn.paths.spec import PathSpec

# the six terms of eq. (1), each a field of a row once the path has a validation accuracy
TERMS = ("accuracy_term", "comm_term", "local_time_term", "host_time_term", "local_compute_term", "host_compute_term")


@dataclass(frozen=True, kw_only=True)
class PathRow:
    """Every term of eq. (1) for one path, its status and why (units as in :mod:`codenn.paths.cost`).

    ``status`` is ``original``, ``trained`` or ``pruned``; accuracies, terms and cost are None for
    a path pruned before it was ever scored.
    """

    spec: str
    kind: str
    lout: int | None = None
    hin: int | None = None
    hout: int | None = None
    lin: int | None = None
    status: str
    reason: str = ""
    val_accuracy: float | None = None
    test_accuracy: float | None = None
    ls_accuracy: float | None = None
    ls_initialised: tuple[bool, ...] = ()
    epochs: int = 0
    train_samples: int = 0
    t_comm_us: float = 0.0
    t_local_us: float = 0.0
    t_host_us: float = 0.0
    latency_us: float = 0.0
    feasible: bool = True
    link_params: int = 0
    local_params: int = 0
    host_params: int = 0
    skipped_params: int = 0
    local_gflops: float = 0.0
    host_gflops: float = 0.0
    accuracy_term: float | None = None
    comm_term: float | None = None
    local_time_term: float | None = None
    host_time_term: float | None = None
    local_compute_term: float | None = None
    host_compute_term: float | None = None
    cost: float | None = None
    links_file: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The results.jsonl form: today's keys in today's order; terms absent until scored."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name in TERMS and value is None:
                continue
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PathRow:
        """A row from its JSON form. Only ``spec`` and ``status`` are required (``kind`` follows
        from the spec); keys this version does not know are ignored, so newer rows still load."""
        if not isinstance(data, Mapping) or not isinstance(data.get("spec"), str) or not isinstance(data.get("status"), str):
            raise ConfigError(f"a result row needs a string 'spec' and a string 'status'; got {str(data)[:200]}")
        known = {k: v for k, v in data.items() if k in _FIELDS}
        known.setdefault("kind", PathSpec.parse(data["spec"]).kind)
        known["ls_initialised"] = tuple(known.get("ls_initialised") or ())
        return cls(**known)


_FIELDS = frozenset(f.name for f in dataclasses.fields(PathRow))


def pareto_front(rows: Sequence[PathRow]) -> list[str]:
    """Specs not dominated on (higher val accuracy, lower local GFLOPs, lower latency)."""

    def key(r: PathRow) -> tuple[float, float, float]:
        return (-(r.val_accuracy or 0.0), r.local_gflops, r.latency_us)

    front = []
    for r in rows:
        kr = key(r)
        if not any(all(a <= b for a, b in zip(key(o), kr)) and key(o) != kr for o in rows):
            front.append(r.spec)
    return front
