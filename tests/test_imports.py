"""The package has no import cycles: not at the top of a module, and not hidden inside a function."""
from __future__ import annotations

import ast
from pathlib import Path

import llmcourse

SRC = Path(llmcourse.__file__).parent          # .../src/llmcourse


def module_name(path: Path) -> str:
    """src/llmcourse/course/units.py -> 'llmcourse.course.units'; a package's __init__ -> the package."""
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, modules: set[str]) -> set[str]:
    """The llmcourse modules that `path` imports anywhere in its code (functions included)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:                                   # from . import x, from ..y import z
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            # `from llmcourse import sampling` imports the module llmcourse.sampling
            found |= {f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names}
    return {m for m in found if m in modules and m != name}


def import_graph() -> dict[str, set[str]]:
    paths = sorted(SRC.rglob("*.py"))
    modules = {module_name(p) for p in paths}
    return {module_name(p): imported_modules(p, modules) for p in paths}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle [a, b, ..., a] of the directed graph, or None (depth-first search)."""
    state: dict[str, str] = {}                                 # "active" on the current path, "done" after

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = "active"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "active":
                return path[path.index(nxt):] + [node, nxt]   # nxt is on the current path
            if nxt not in state:
                cycle = visit(nxt, path + [node])
                if cycle:
                    return cycle
        state[node] = "done"
        return None

    for start in sorted(graph):
        if start not in state:
            cycle = visit(start, [])
            if cycle:
                return cycle
    return None


def test_the_import_graph_sees_the_package():
    graph = import_graph()
    assert {"llmcourse.model", "llmcourse.generation", "llmcourse.course.units", "llmcourse.checks.core"} <= set(graph)
    assert "llmcourse.model" in graph["llmcourse.train"]
    assert "llmcourse.sampling" in graph["llmcourse.generation"]


def test_the_package_has_no_import_cycle():
    assert find_cycle(import_graph()) is None


def test_the_cycle_finder_finds_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None
