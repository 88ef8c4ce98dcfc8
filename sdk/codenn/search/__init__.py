"""Finding the best path: the exhaustive and fast strategies, path jobs and the executors that run
them, and the run directory (:class:`RunStore`, its typed records) every other command reads.

Names are imported on first use (:mod:`codenn.lazy`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from codenn.lazy import lazy_exports

if TYPE_CHECKING:
    from codenn.search.evaluate import evaluate_run
    from codenn.search.executors import InProcessExecutor, executor_for
    from codenn.search.jobs import PathJob, PathJobResult, PathWorker
    from codenn.search.record import LinkManifest, RunRecord, SearchState
    from codenn.search.store import RunStore
    from codenn.search.strategies import Candidate, Search, SearchResult

_EXPORTS = {
    "evaluate_run": "codenn.search.evaluate",
    "InProcessExecutor": "codenn.search.executors",
    "executor_for": "codenn.search.executors",
    "PathJob": "codenn.search.jobs",
    "PathJobResult": "codenn.search.jobs",
    "PathWorker": "codenn.search.jobs",
    "LinkManifest": "codenn.search.record",
    "RunRecord": "codenn.search.record",
    "SearchState": "codenn.search.record",
    "RunStore": "codenn.search.store",
    "Candidate": "codenn.search.strategies",
    "Search": "codenn.search.strategies",
    "SearchResult": "codenn.search.strategies",
}
__all__ = [
    "Candidate", "InProcessExecutor", "LinkManifest", "PathJob", "PathJobResult", "PathWorker", "RunRecord",
    "RunStore", "Search", "SearchResult", "SearchState", "evaluate_run", "executor_for",
]

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
