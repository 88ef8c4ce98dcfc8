"""codenn's import graph: which modules each module imports, its circles, the layer order of the
core's sub-packages, the longest import chain and the largest functions, for the working tree or
any git revision.

    python benchmarks/import_graph.py                  # the working tree
    python benchmarks/import_graph.py --rev 6b1bb97    # the same, as of a commit (before/after)

Every import counts, inside functions and under ``if TYPE_CHECKING:`` too (a type-level import is
still a dependency a reader follows; only :func:`imported_names` with ``runtime_only=True`` leaves
those out). Importing ``codenn.paths.spec`` also runs ``codenn/paths/__init__.py``, so an import of a
sub-package's module from outside it is an edge to the sub-package too. Prints a table and writes
JSON (``benchmarks/results/import_graph.json``, or ``--json PATH``). tests/test_architecture.py
checks the same rules on every run.
"""

from __future__ import annotations

import argparse
import ast
import json
import subprocess
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"codenn": "sdk", "codenn_plugins": "plugins", "codenn_adapters": "adapters"}
FORBIDDEN = ("codenn_adapters", "codenn_plugins")

LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("ground", ("codenn.errors", "codenn.fileio", "codenn.lazy")),
    ("config", ("codenn.config",)),
    ("contracts", ("codenn.contracts",)),
    ("model", ("codenn.model",)),
    ("paths", ("codenn.paths",)),
    ("train", ("codenn.train",)),
    ("search", ("codenn.search",)),
    ("remote", ("codenn.remote",)),
    ("face", ("codenn.cli", "codenn.testing", "codenn.__main__", "codenn")),
)
"""The core's layers, bottom first: a module may import its own layer and the layers below."""


def sources(rev: str | None = None, packages: Iterable[str] = PACKAGES) -> dict[str, str]:
    """Module name -> source of every module of ``packages``, from the tree or from ``rev``."""
    folders = [f"{PACKAGES[p]}/{p}" for p in packages]
    if rev is None:
        files = {p.relative_to(ROOT).as_posix(): p.read_text() for d in folders for p in (ROOT / d).rglob("*.py")}
    else:
        listing = subprocess.run(["git", "ls-tree", "-r", "--name-only", rev, *folders], cwd=ROOT, check=True,
                                 capture_output=True, text=True).stdout.split()
        files = {f: subprocess.run(["git", "show", f"{rev}:{f}"], cwd=ROOT, check=True, capture_output=True,
                                   text=True).stdout for f in listing if f.endswith(".py")}
    out = {}
    for rel, text in files.items():
        parts = rel.split("/", 1)[1][: -len(".py")].split("/")
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = text
    return out


def core_sources(rev: str | None = None) -> dict[str, str]:
    """The core's modules only (``sdk/codenn``)."""
    return sources(rev, ("codenn",))


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imported_names(source: str, *, runtime_only: bool = False, module: str = "", package: bool = False) -> set[str]:
    """Every module a source imports, at any depth; ``from a import b`` also yields ``a.b``.
    With ``runtime_only`` the imports under ``if TYPE_CHECKING:`` are left out. Relative imports
    are resolved against ``module`` (a ``package``'s ``__init__`` when ``package``)."""
    found: set[str] = set()
    here = module.split(".") if package else module.split(".")[:-1]

    def absolute(node: ast.ImportFrom) -> str | None:
        if node.level == 0:
            return node.module
        if not module or node.level > len(here):
            return None
        base = here[: len(here) - node.level + 1]
        return ".".join([*base, *([node.module] if node.module else [])])

    def visit(node: ast.AST) -> None:
        if runtime_only and isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and (target := absolute(node)):
            found.add(target)
            found.update(f"{target}.{alias.name}" for alias in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(source))
    return found


def _is_package(name: str, modules: Mapping[str, str]) -> bool:
    return any(m.startswith(name + ".") for m in modules)


def import_graph(srcs: Mapping[str, str], *, runtime_only: bool = False) -> dict[str, set[str]]:
    """Module -> the modules of ``srcs`` it imports; a sub-package's ``__init__`` counts when a module
    outside that sub-package imports one of its modules (a top-level package, imported by every
    submodule import, does not)."""
    graph = {}
    for name, text in srcs.items():
        targets = {t for t in imported_names(text, runtime_only=runtime_only, module=name,
                                             package=_is_package(name, srcs)) if t in srcs}
        for t in list(targets):
            parts = t.split(".")
            for i in range(2, len(parts)):
                parent = ".".join(parts[:i])
                if parent in srcs and not (name == parent or name.startswith(parent + ".")):
                    targets.add(parent)
        own_top = name.split(".")[0]
        graph[name] = {t for t in targets if t != name and t != own_top}
    return graph


def own_package_imports(srcs: Mapping[str, str]) -> list[str]:
    """``"a.b.c imports a.b"``: a module that imports its own sub-package's ``__init__`` (which
    imports the module back while it is initialising)."""
    out = []
    for name, text in srcs.items():
        for t in imported_names(text, module=name, package=_is_package(name, srcs)):
            if "." in t and name.startswith(t + ".") and t in srcs and _is_package(t, srcs) and t not in PACKAGES:
                out.append(f"{name} imports {t}")
    return sorted(out)


def forbidden_imports(srcs: Mapping[str, str]) -> list[str]:
    """``"codenn.x imports codenn_adapters.y"`` for each plugin or adapter module a core module
    imports (TYPE_CHECKING imports included), and each plugin module an adapter imports."""
    out = set()
    for name, text in srcs.items():
        top = name.split(".")[0]
        banned = FORBIDDEN if top == "codenn" else ("codenn_plugins",) if top == "codenn_adapters" else \
            ("codenn_adapters",) if top == "codenn_plugins" else ()
        targets = {t for t in imported_names(text, module=name, package=_is_package(name, srcs))
                   if t.split(".")[0] in banned}
        out.update(f"{name} imports {t}" for t in targets if t.rsplit(".", 1)[0] not in targets)
    return sorted(out)


def layer_of(module: str) -> int | None:
    """The index in :data:`LAYERS` of a core module (None outside the core)."""
    best: tuple[int, int] | None = None
    for i, (_, prefixes) in enumerate(LAYERS):
        for p in prefixes:
            if module == p or module.startswith(p + ".") and p != "codenn":
                if best is None or len(p) > best[1]:
                    best = (i, len(p))
    return None if best is None else best[0]


def upward_imports(graph: Mapping[str, set[str]]) -> list[str]:
    """``"codenn.model.service (model) imports codenn.search.store (search)"`` for every core import
    that goes up the layer order."""
    out = []
    for name, targets in graph.items():
        here = layer_of(name)
        if here is None:
            continue
        for t in sorted(targets):
            there = layer_of(t)
            if there is not None and there > here:
                out.append(f"{name} ({LAYERS[here][0]}) imports {t} ({LAYERS[there][0]})")
    return sorted(out)


def unlayered(srcs: Mapping[str, str]) -> list[str]:
    """Core modules :data:`LAYERS` does not place."""
    return sorted(m for m in srcs if m.split(".")[0] == "codenn" and layer_of(m) is None)


def cycles(graph: Mapping[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def strongconnect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(max(1000, 10 * len(graph)))
    for v in sorted(graph):
        if v not in index:
            strongconnect(v)
    return sorted(found)


def longest_chain(graph: Mapping[str, set[str]]) -> list[str]:
    """The longest chain of imports (a DAG's longest path; on a graph with circles, within its
    condensation's first member of each circle)."""
    memo: dict[str, list[str]] = {}
    visiting: set[str] = set()

    def walk(v: str) -> list[str]:
        if v in memo:
            return memo[v]
        visiting.add(v)
        best: list[str] = []
        for w in sorted(graph.get(v, ())):
            if w not in visiting:
                chain = walk(w)
                if len(chain) > len(best):
                    best = chain
        visiting.discard(v)
        memo[v] = [v, *best]
        return memo[v]

    return max((walk(v) for v in sorted(graph)), key=len, default=[])


def functions(srcs: Mapping[str, str]) -> list[tuple[int, str]]:
    """(lines, "module.function") of every function and method, longest first."""
    out = []
    for name, text in srcs.items():
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno is not None:
                out.append((node.end_lineno - node.lineno + 1, f"{name}.{node.name}"))
    return sorted(out, reverse=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rev", default=None, help="git revision to read instead of the working tree")
    parser.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "import_graph.json"))
    args = parser.parse_args(argv)
    srcs = sources(args.rev)
    graph = import_graph(srcs)
    core = {k: v for k, v in graph.items() if k.split(".")[0] == "codenn"}
    found, runtime = cycles(graph), cycles(import_graph(srcs, runtime_only=True))
    bad, up, own = forbidden_imports(srcs), upward_imports(graph), own_package_imports(srcs)
    chain, largest = longest_chain(core), functions(srcs)[:5]
    runtime_core = {k: v for k, v in import_graph(srcs, runtime_only=True).items() if k.split(".")[0] == "codenn"}
    run_chain = longest_chain(runtime_core)
    print(f"| module | imports ({args.rev or 'working tree'}) |\n| --- | --- |")
    for name in sorted(graph):
        print(f"| {name} | {', '.join(sorted(graph[name])) or '-'} |")
    print(f"\n{len(graph)} modules ({len(core)} in the core), {sum(map(len, graph.values()))} edges "
          f"({sum(map(len, core.values()))} in the core), {len(found)} circle(s) with type-level imports, "
          f"{len(runtime)} at run time, {len(bad)} forbidden import(s), {len(up)} upward import(s)")
    print(f"longest import chain in the core, type-level imports included ({len(chain) - 1} imports): "
          f"{' -> '.join(chain)}")
    print(f"longest import chain in the core at run time ({len(run_chain) - 1} imports): {' -> '.join(run_chain)}")
    print("largest functions: " + ", ".join(f"{n} ({lines} lines)" for lines, n in largest))
    for label, lines in (("circle", [" <-> ".join(c) for c in found]), ("forbidden", bad), ("upward", up),
                         ("own package", own)):
        for line in lines:
            print(f"{label}: {line}")
    result = {"rev": args.rev, "modules": len(graph), "core_modules": len(core), "edges": sum(map(len, graph.values())),
              "core_edges": sum(map(len, core.values())), "cycles": found, "runtime_cycles": runtime, "forbidden": bad,
              "upward": up, "own_package": own, "longest_chain": chain, "longest_chain_length": len(chain) - 1,
              "runtime_longest_chain": run_chain, "runtime_longest_chain_length": len(run_chain) - 1,
              "largest_functions": largest, "layers": [name for name, _ in LAYERS],
              "graph": {k: sorted(v) for k, v in sorted(graph.items())}}
    target = Path(args.json)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_text(json.dumps(result, indent=2))
    tmp.replace(target)  # never half a file
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
