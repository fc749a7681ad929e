"""The package's imports point one way: no module imports itself back through others (counting imports under
TYPE_CHECKING and inside functions, which still tie two modules), and no import hides inside a function."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "generator"


def module_name(path: Path) -> str:
    parts = ("generator",) + path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(parts).removesuffix(".__init__")


def imported(path: Path, modules: set[str]) -> set[str]:
    """The package's modules that a file imports, wherever the import stands."""
    own = module_name(path)
    package = own if path.name == "__init__.py" else own.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            names = [base] + [f"{base}.{a.name}" for a in node.names]
        # A package that re-exports its modules (optvis/__init__.py) is not tied to them by their sibling imports.
        found |= set(names) & modules
    return found - {own}


def import_graph() -> dict[str, set[str]]:
    files = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: imported(path, set(files)) for name, path in files.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
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


def test_no_import_cycle_among_the_package_s_modules():
    graph = import_graph()
    assert len(graph) > 40 and graph["generator.build"]  # the walk found the package and its imports
    assert cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]


def test_the_walk_sees_every_kind_of_import():
    graph = import_graph()
    assert "generator.techniques.dataset.tsne" in graph["generator.techniques.dataset.embedding"]  # from pkg import mod
    assert "generator.optvis.render" in graph["generator.optvis"]  # a package's re-exports
    assert "generator.models" in graph["generator.techniques.base"]  # under TYPE_CHECKING


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_package_import_inside_a_function(path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    hidden = [f"line {node.lineno}: {ast.unparse(node)}"
              for fn in ast.walk(tree) if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef))
              for node in ast.walk(fn)
              if isinstance(node, (ast.Import, ast.ImportFrom))
              and ((getattr(node, "module", None) or "").startswith("generator") or node.level if
                   isinstance(node, ast.ImportFrom) else any(a.name.startswith("generator") for a in node.names))]
    assert hidden == []
