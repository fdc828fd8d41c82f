"""The package's shape: its modules import each other without a loop, of any kind.

Every import counts: at the top, inside a function, or only for type checking. A loop
of any of them means two modules that cannot be read, or changed, one without the other.
"""

from __future__ import annotations

import ast
from pathlib import Path

import resilient_runpod

PACKAGE = Path(resilient_runpod.__file__).resolve().parent


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _imported(module: str, path: Path, node: ast.Import | ast.ImportFrom) -> list[str]:
    """The names *node* imports, absolute: a submodule where the name is one, else its parent."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    base = package[: len(package) - node.level + 1] if node.level else []
    stem = ".".join([*base, node.module] if node.module else base)
    return [f"{stem}.{alias.name}" for alias in node.names]


def _owner(name: str, modules: dict[str, Path]) -> str:
    """The module of the package that defines *name* (``""``: none does)."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name


def import_graph() -> dict[str, set[str]]:
    """Each module of the package, and the modules of the package it imports."""
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        nodes = ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        names = [
            name
            for node in nodes
            if isinstance(node, (ast.Import, ast.ImportFrom))
            for name in _imported(module, path, node)
        ]
        graph[module] = {_owner(name, modules) for name in names} - {"", module}
    return graph


def loops(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (each holds a loop)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in sorted(graph[node]):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            group = stack[stack.index(node) :]
            del stack[stack.index(node) :]
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_module_imports_itself_through_others() -> None:
    """No import loop in the package: not at the top, not in a function, not for types."""
    assert [] == loops(import_graph())


def test_the_loop_finder_finds_a_loop() -> None:
    """The check above can fail: a loop of three modules is found, and only it."""
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert [["a", "b", "c"]] == loops(graph)


def test_the_graph_sees_function_local_and_type_only_imports() -> None:
    """The engine's type-only import of Credentials, and a function-local one, are edges."""
    graph = import_graph()
    assert "resilient_runpod._credentials" in graph["resilient_runpod._engine"]
    assert "resilient_runpod.recovery" in graph["resilient_runpod._credentials"]


def test_the_rule_needs_nothing_that_does_io() -> None:
    """`_rule` is pure: it imports no module of the package (no I/O, no clock, no lock)."""
    assert set() == import_graph()["resilient_runpod._rule"]
