"""The import graph of the project, read from the source (no import runs): no module of ``pu_mlc``
or ``tune`` reaches itself through other modules (an import circle), and the library never imports
the search that is built on it. Imports inside functions count: a circle through a lazy import is
still a circle a reader has to untangle."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("pu_mlc", "tune")


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            parts = list(path.relative_to(REPO).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


def _targets(module: str, node: ast.AST, is_package: bool, known: set[str]) -> list[str]:
    """The project modules an import statement of ``module`` names."""
    names = []
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        base = module.split(".") if is_package else module.split(".")[:-1]
        if node.level:
            base = base[:len(base) - (node.level - 1)]
            prefix = ".".join(base + ([node.module] if node.module else []))
        else:
            prefix = node.module or ""
        for alias in node.names:
            candidate = f"{prefix}.{alias.name}"
            names.append(candidate if candidate in known else prefix)
    out = []
    for name in names:
        while name and name not in known:       # a name inside a module: that module
            name = name.rpartition(".")[0]
        if name:
            out.append(name)
    return out


def import_graph() -> dict[str, set[str]]:
    found = modules()
    known = set(found)
    graph: dict[str, set[str]] = {}
    for module, path in found.items():
        deps = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                deps.update(_targets(module, node, path.name == "__init__.py", known))
        deps.discard(module)
        graph[module] = deps
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
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

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_module_of_the_project_imports_itself_through_others():
    assert circles(import_graph()) == []


def test_the_library_never_imports_the_search():
    graph = import_graph()
    assert [(m, d) for m, deps in sorted(graph.items()) if m.startswith("pu_mlc")
            for d in sorted(deps) if d.split(".")[0] == "tune"] == []


def test_the_checker_finds_a_circle_and_a_library_import_of_the_search():
    """The checks above can fail: a planted circle and a planted pu_mlc -> tune edge are seen."""
    graph = import_graph()
    graph["pu_mlc.data.splits"] = graph["pu_mlc.data.splits"] | {"pu_mlc.data.coco"}
    assert ["pu_mlc.data.coco", "pu_mlc.data.splits"] in circles(graph)
    tree = ast.parse("from tune.store import select\nimport tune.cli\n")
    known = set(modules())
    edges = [t for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom))
             for t in _targets("pu_mlc.cli", node, False, known)]
    assert edges == ["tune.store", "tune.cli"]
