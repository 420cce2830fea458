"""The package's modules import each other without cycles.

Every `import` / `from ... import` of an nncift module counts, including the ones inside
functions (a deferred import hides a cycle from Python, not from a reader): each module is
parsed with `ast`, its nncift imports become edges, and any cycle fails the test.
"""

from __future__ import annotations

import ast
from pathlib import Path

import nncift

PACKAGE = Path(nncift.__file__).parent


def _module_name(path: Path) -> str:
    parts = ["nncift", *path.relative_to(PACKAGE).with_suffix("").parts]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The module `name` refers to: itself, or the package holding a name imported from it."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def _imports(module: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """nncift modules `module` imports anywhere in its source (top level or in functions)."""
    is_package = path.name == "__init__.py"
    package = module if is_package else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package
                for _ in range(node.level - 1):
                    anchor = anchor.rpartition(".")[0]
                base = f"{anchor}.{base}" if base else anchor
            # `from nncift.cli import main` imports the submodule nncift.cli.main (the
            # package's __init__ runs first for every submodule; those edges are implicit).
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                names.append(sub if sub in modules else base)
        for name in names:
            if name == "nncift" or name.startswith("nncift."):
                target = _resolve(name, modules)
                if target is not None and target != module:
                    found.add(target)
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    graph = {m: _imports(m, p, modules) for m, p in modules.items()}
    # Importing nncift.a.b runs nncift.a/__init__ first; the package itself (nncift) is the
    # public facade that re-exports everything, so edges into it are not followed.
    for m in graph:
        graph[m].discard("nncift")
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                components.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return components


def test_graph_sees_deferred_imports() -> None:
    graph = _graph()
    # A top-level import and one inside a function body are both edges.
    assert "nncift.errors" in graph["nncift.valuation"]
    assert "nncift.influence.store" in graph["nncift.valuation"]  # imported inside methods
    assert "nncift.cli.main" in graph["nncift.cli"]


def test_cycle_detection_works() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles() -> None:
    cycles = _cycles(_graph())
    assert not cycles, "import cycles among nncift modules:\n" + "\n".join(
        " <-> ".join(c) for c in cycles
    )
