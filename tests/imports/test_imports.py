"""The import graph of every package: no cycle, the layering of ARCHITECTURE.md, every module importable.

The graph is read from the source (every import statement, those inside functions too), so a lazy
import cannot hide a cycle; `from package import name` counts as an import of package.name when that
is a module, else of the package.
"""
from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("golden", "bd_hw", "tb", "formal", "bench")
# ARCHITECTURE.md, "may import": the packages each package must never import.
FORBIDDEN = {"golden": {"bd_hw", "tb", "formal", "bench"}, "bd_hw": {"tb", "formal", "bench"},
             "tb": {"formal", "bench"}, "formal": {"tb", "bench"}}


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


MODULES = _modules()


def _target(name: str) -> str | None:
    """The project module `name` denotes: itself, or the longest prefix that is a module."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _imports(module: str, path: Path) -> set[str]:
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(_target(alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                full = f"{base}.{alias.name}"
                found.add(full if full in MODULES else _target(base))
    found.discard(None)
    found.discard(module)
    return found


GRAPH = {module: _imports(module, path) for module, path in MODULES.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_walk_sees_the_packages_and_their_imports():
    assert {m.partition(".")[0] for m in MODULES} == set(PACKAGES)
    assert "golden.spec" in GRAPH["golden.bd"] and "golden.kernels" in GRAPH["golden.bd"]
    assert "golden.bd" in GRAPH["golden.baselines"]       # an import inside a function counts


def test_no_import_cycle_anywhere():
    assert _cycles(GRAPH) == []


def test_a_planted_cycle_is_found():
    graph = {module: set(targets) for module, targets in GRAPH.items()}
    graph["golden.spec"].add("golden.bd")
    assert any({"golden.bd", "golden.spec"} <= set(c) for c in _cycles(graph))


def test_packages_import_only_what_the_layering_allows():
    wrong = sorted((module, target) for module, targets in GRAPH.items() for target in targets
                   if target.partition(".")[0] in FORBIDDEN.get(module.partition(".")[0], ()))
    assert wrong == []


@pytest.mark.parametrize("module", sorted(m for m in MODULES if not m.endswith(".__main__")))
def test_every_module_imports(module):
    """A module that cannot be imported fails here (the __main__ modules run their command when
    imported; the walk above has parsed them)."""
    importlib.import_module(module)
