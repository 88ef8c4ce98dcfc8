"""Paths through frozen blocks: the path syntax (:class:`PathSpec`), the path space, the composed
path with its links (:class:`ComposedPath`), link building, the objectives and a path's result row.

``codenn.paths.Path`` is the old name of :class:`ComposedPath`; it still works for one release,
with a DeprecationWarning (it shadowed :class:`pathlib.Path` wherever both were needed).

Names are imported on first use (:mod:`codenn.lazy`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from codenn.lazy import lazy_exports

if TYPE_CHECKING:
    from codenn.paths.composed import ComposedPath, PathStats
    from codenn.paths.cost import PathMeasures, accuracy_throughput, paper_cost
    from codenn.paths.links import build_link, check_link
    from codenn.paths.parts import PathPart, merged_part, split_path
    from codenn.paths.rows import PathRow, pareto_front
    from codenn.paths.space import PathSpace
    from codenn.paths.spec import PaperIndices, PathSpec, Segment, slug

_EXPORTS = {
    "ComposedPath": "codenn.paths.composed",
    "PathStats": "codenn.paths.composed",
    "PathMeasures": "codenn.paths.cost",
    "accuracy_throughput": "codenn.paths.cost",
    "paper_cost": "codenn.paths.cost",
    "build_link": "codenn.paths.links",
    "check_link": "codenn.paths.links",
    "PathPart": "codenn.paths.parts",
    "merged_part": "codenn.paths.parts",
    "split_path": "codenn.paths.parts",
    "PathRow": "codenn.paths.rows",
    "pareto_front": "codenn.paths.rows",
    "PathSpace": "codenn.paths.space",
    "PaperIndices": "codenn.paths.spec",
    "PathSpec": "codenn.paths.spec",
    "Segment": "codenn.paths.spec",
    "slug": "codenn.paths.spec",
}
__all__ = [
    "ComposedPath", "PaperIndices", "PathMeasures", "PathPart", "PathRow", "PathSpace", "PathSpec", "PathStats", "Segment",
    "accuracy_throughput", "build_link", "check_link", "merged_part", "paper_cost", "pareto_front", "split_path", "slug",
]

_getattr, __dir__ = lazy_exports(__name__, _EXPORTS)


_warned: list[bool] = []


def __getattr__(name: str) -> Any:
    if name == "Path":
        import warnings

        if not _warned:  # `from codenn.paths import Path` looks the name up twice
            _warned.append(True)
            warnings.warn("codenn.paths.Path is now codenn.paths.ComposedPath (also codenn.ComposedPath); the old name "
                          "goes away in the next release", DeprecationWarning, stacklevel=2)
        name = "ComposedPath"
    return _getattr(name)
