"""The core's import graph: which codenn modules each module imports, its cycles, and any import
of a plugin or adapter package, for the working tree or any git revision.

    python benchmarks/import_graph.py                  # the working tree
    python benchmarks/import_graph.py --rev 318633b    # the same, as of a commit (before/after)

Every import counts, inside functions too (a lazy import is still a dependency); imports under
``if TYPE_CHECKING:`` do not, since they never run. Prints a table and writes JSON
(``benchmarks/results/import_graph.json``, or ``--json PATH``). tests/test_architecture.py
checks the same rules on every run.
"""

from __future__ import annotations

import argparse
import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CORE_DIR = "sdk/codenn"
FORBIDDEN = ("codenn_adapters", "codenn_plugins")


def core_sources(rev: str | None = None) -> dict[str, str]:
    """Module name -> source of every ``sdk/codenn`` module, from the tree or from ``rev``."""
    if rev is None:
        files = {p.relative_to(ROOT).as_posix(): p.read_text() for p in (ROOT / CORE_DIR).rglob("*.py")}
    else:
        listing = subprocess.run(["git", "ls-tree", "-r", "--name-only", rev, CORE_DIR], cwd=ROOT, check=True,
                                 capture_output=True, text=True).stdout.split()
        files = {f: subprocess.run(["git", "show", f"{rev}:{f}"], cwd=ROOT, check=True, capture_output=True,
                                   text=True).stdout for f in listing if f.endswith(".py")}
    out = {}
    for rel, text in files.items():
        parts = rel[len("sdk/"):-len(".py")].split("/")
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = text
    return out


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imported_names(source: str, *, runtime_only: bool = True) -> set[str]:
    """Every module a source imports, at any depth; ``from a import b`` also yields ``a.b``."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if runtime_only and isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(source))
    return found


def import_graph(sources: dict[str, str]) -> dict[str, set[str]]:
    """codenn module -> the codenn modules it imports (the package ``codenn`` itself excluded)."""
    return {name: {t for t in imported_names(text) if t in sources and t not in (name, "codenn")}
            for name, text in sources.items()}


def forbidden_imports(sources: dict[str, str]) -> list[str]:
    """``"codenn.x imports codenn_adapters.y"`` for each plugin or adapter module a core module
    imports (TYPE_CHECKING imports included: the rule is about the code, not the run)."""
    out = set()
    for name, text in sources.items():
        targets = {t for t in imported_names(text, runtime_only=False) if t.split(".")[0] in FORBIDDEN}
        out.update(f"{name} imports {t}" for t in targets if t.rsplit(".", 1)[0] not in targets)
    return sorted(out)


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rev", default=None, help="git revision to read instead of the working tree")
    parser.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "import_graph.json"))
    args = parser.parse_args(argv)
    sources = core_sources(args.rev)
    graph = import_graph(sources)
    found, bad = cycles(graph), forbidden_imports(sources)
    print(f"| module | imports ({args.rev or 'working tree'}) |\n| --- | --- |")
    for name in sorted(graph):
        print(f"| {name} | {', '.join(sorted(m.removeprefix('codenn.') for m in graph[name])) or '-'} |")
    print(f"\n{len(graph)} modules, {sum(map(len, graph.values()))} edges, {len(found)} cycle(s), "
          f"{len(bad)} import(s) of {' or '.join(FORBIDDEN)}")
    for c in found:
        print("cycle: " + " <-> ".join(c))
    for line in bad:
        print("forbidden: " + line)
    report = {"rev": args.rev, "modules": len(graph), "edges": sum(map(len, graph.values())),
              "graph": {k: sorted(v) for k, v in sorted(graph.items())}, "cycles": found, "forbidden": bad}
    sys.path.insert(0, str(ROOT / "sdk"))
    from codenn.fileio import atomic_json

    atomic_json(Path(args.json), report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
