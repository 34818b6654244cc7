"""No two modules of Synapse import each other at run time, directly or round a circle.

A circle makes the import order matter (a name missing half-way through an import) and the
modules impossible to read or test one at a time. Imports under ``if TYPE_CHECKING:`` are only
for annotations and do not count; imports inside functions (done lazily, at call time) do.
In the packages of ``NO_ANNOTATION_CIRCLES`` annotation imports count too (the server's link and
proxy modules named each other that way).
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("synapse_core", "chaos", "pytest_synapse")


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


def _runtime_imports(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement except those under ``if TYPE_CHECKING:``."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            yield from (n for branch in node.orelse for n in _runtime_imports_of(branch))
            continue
        yield from _runtime_imports_of(node)


def _runtime_imports_of(node: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    if isinstance(node, ast.Import | ast.ImportFrom):
        yield node
    else:
        yield from _runtime_imports(node)


def _every_import(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement, those for annotations only included."""
    return (n for n in ast.walk(tree) if isinstance(n, ast.Import | ast.ImportFrom))


def _graph(
    imports: Callable[[ast.AST], Iterator[ast.Import | ast.ImportFrom]] | None = None,
) -> dict[str, set[str]]:
    imports = imports or _runtime_imports
    modules = _modules()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        for node in imports(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                base = node.module or ""
                if node.level:
                    package = name.split(".") if is_package else name.split(".")[:-1]
                    package = package[: len(package) - node.level + 1]
                    base = ".".join([*package, base] if base else package)
                targets = [
                    f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                    for alias in node.names
                ]
            graph[name].update(t for t in targets if t in modules and t != name)
    return graph


def _circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in sorted(graph[node]):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return circles


def test_no_module_imports_itself_round_a_circle() -> None:
    graph = _graph()
    circles = _circles(graph)
    described = [
        "; ".join(f"{a} -> {b}" for a in circle for b in sorted(graph[a] & set(circle)))
        for circle in circles
    ]
    assert described == []


# Packages whose modules do not even name each other in a circle for annotations: where a
# module needs only a little of another that imports it, a Protocol says what (as
# chaos.server.link's ConnectionOwner does for the proxy that owns a connection).
NO_ANNOTATION_CIRCLES = (
    "chaos.server",
    "chaos.scenarios",
    "synapse_core.transport",
    "pytest_synapse",
)


@pytest.mark.parametrize("package", NO_ANNOTATION_CIRCLES)
def test_no_circle_even_through_annotations_in(package: str) -> None:
    graph = _graph(_every_import)
    inside = {
        name: {t for t in targets if t.startswith(f"{package}.")}
        for name, targets in graph.items()
        if name.startswith(f"{package}.")
    }
    assert inside, f"no module found in {package}"
    assert _circles(inside) == []


TYPE_ONLY = "from typing import TYPE_CHECKING\n\nif TYPE_CHECKING:\n"


@pytest.mark.parametrize(
    ("source", "counts"),
    [
        ("import b\n", True),
        ("def later():\n    import b\n", True),
        (f"{TYPE_ONLY}    import b\n", False),
        (f"{TYPE_ONLY}    pass\nelse:\n    import b\n", True),
    ],
)
def test_lazy_imports_count_and_type_only_ones_do_not(source: str, counts: bool) -> None:
    imported = {
        alias.name
        for node in _runtime_imports(ast.parse(source))
        if isinstance(node, ast.Import)
        for alias in node.names
    }
    assert ("b" in imported) is counts
    assert bool(_circles({"a": imported, "b": {"a"}})) is counts
