"""The layering rules of docs/architecture.md, checked on the source.

- The core (``codenn``) imports no plugin and no adapter; adapters import no plugin.
- No import circle anywhere in the three packages, type-level (``TYPE_CHECKING``) imports included.
- The core's sub-packages are layered, bottom first: ground (errors, fileio, lazy) < config <
  contracts < model < paths < train < search < remote < face (cli, testing); every import runs
  down (or stays within a layer), and no module imports its own sub-package's ``__init__``.
- Configuration is a leaf: ``codenn.config`` imports nothing of codenn but ``codenn.errors``, and
  importing it loads no torch.
- Adapters hold only what needs a third-party server, runtime or cluster library.
- No function over 80 lines in sdk, plugins or adapters.
- Every error class is a CodennError; every type-ignore comment carries its reason.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
import subprocess
import sys
from pathlib import Path

import pytest

import codenn
import codenn_adapters
import codenn_plugins
from codenn.errors import CodennError

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from import_graph import (  # noqa: E402
    LAYERS,
    core_sources,
    cycles,
    forbidden_imports,
    functions,
    import_graph,
    imported_names,
    own_package_imports,
    sources,
    unlayered,
    upward_imports,
)

MAX_FUNCTION_LINES = 80
ADAPTER_LIBRARIES = ("fastapi", "starlette", "anyio", "httpx", "uvicorn", "h11", "onnx", "onnxruntime", "onnxscript",
                     "ray", "pydantic", "click")
"""What an adapter module is there for (pydantic: the OIP wire messages; click: the adapters' commands)."""


def test_core_imports_no_plugin_and_adapters_no_plugin() -> None:
    assert forbidden_imports(sources()) == []


def test_no_import_circle_anywhere_type_level_imports_included() -> None:
    graph = import_graph(sources())
    assert len(graph) > 80 and "codenn.contracts.plugins" in graph["codenn.paths.links"]  # the walk found real edges
    assert cycles(graph) == []


def test_imports_run_down_the_layers() -> None:
    srcs = core_sources()
    assert unlayered(srcs) == []
    assert upward_imports(import_graph(srcs)) == []
    assert own_package_imports(sources()) == []
    assert [name for name, _ in LAYERS] == ["ground", "config", "contracts", "model", "paths", "train", "search",
                                            "remote", "face"]


def test_the_checks_catch_a_cycle_an_upward_import_and_an_adapter_import() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
    srcs = {"codenn.x": "def f():\n    from codenn_adapters.runtimes import make_runtime\n",
            "codenn.y": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import codenn.x\n"}
    assert forbidden_imports(srcs) == ["codenn.x imports codenn_adapters.runtimes"]
    assert import_graph(srcs) == {"codenn.x": set(), "codenn.y": {"codenn.x"}}  # type-level imports count
    assert import_graph(srcs, runtime_only=True) == {"codenn.x": set(), "codenn.y": set()}
    assert upward_imports({"codenn.model.service": {"codenn.search.store"}}) == [
        "codenn.model.service (model) imports codenn.search.store (search)"]
    nested = {"codenn.train": "from codenn.train.features import F\n", "codenn.train.features": "import codenn.train\n",
              "codenn.search.jobs": "from codenn.train.features import F\n"}
    assert own_package_imports(nested) == ["codenn.train.features imports codenn.train"]
    assert "codenn.train" in import_graph(nested)["codenn.search.jobs"]  # a sub-package's __init__ runs too
    assert imported_names("from .partition import split\n", module="pkg.sub.pipeline") >= {"pkg.sub.partition"}


def test_configuration_is_a_leaf_that_loads_no_torch() -> None:
    for name, text in core_sources().items():
        if name == "codenn.config" or name.startswith("codenn.config."):
            mine = {t for t in imported_names(text) if t.split(".")[0] == "codenn"}
            assert all(t.startswith(("codenn.errors", "codenn.config")) for t in mine), (name, sorted(mine))
    code = "import sys, codenn.config; codenn.config.RunConfig().hash(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_adapters_hold_only_what_needs_a_third_party_library() -> None:
    plain = []
    for name, text in sources(packages=("codenn_adapters",)).items():
        if name.endswith("__init__") or name in ("codenn_adapters", "codenn_adapters.onnx_export"):
            continue
        used = {t.split(".")[0] for t in imported_names(text, module=name)} | ({"onnx"} if "torch.onnx" in text else set())
        if not used & set(ADAPTER_LIBRARIES) and "import_ray" not in text:
            plain.append(name)
    assert plain == [], f"adapter modules that need no adapter library (they belong in codenn): {plain}"


def test_no_function_over_80_lines() -> None:
    long = [(n, f) for n, f in functions(sources()) if n > MAX_FUNCTION_LINES]
    assert long == [], f"functions over {MAX_FUNCTION_LINES} lines: {long}"


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
