"""The layers of issue 13, checked on the source: no import circles among our packages, and
imports only point down (`protocol/` at the bottom, `core/` under the services).

Imports are read with `ast`, so every import counts: inside functions and under
`TYPE_CHECKING` too (a deferred import still ties the two modules together). Run this file as
a script to print the graph's circles.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("protocol", "core", "indexer", "appview", "media", "publish", "plyr")
# publish/ is a client (a musician's machine), at the services' level: core/ and protocol/ only.
SERVICES = ("indexer", "appview", "media", "publish")

Graph = dict[str, set[str]]


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _own_modules() -> dict[str, Path]:
    return {
        _module_name(path): path
        for package in PACKAGES
        for path in sorted((ROOT / package).rglob("*.py"))
    }


def _imported(node: ast.AST, importer: str, is_package: bool) -> Iterator[str]:
    """Dotted names an import statement asks for (`from a import b` may name module a.b)."""
    if isinstance(node, ast.Import):
        for alias in node.names:
            yield alias.name
    elif isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:  # relative: resolve against the importer's package
            package = importer.split(".")
            package = package if is_package else package[:-1]
            package = package[: len(package) - (node.level - 1)]
            base = ".".join([*package, base] if base else package)
        yield base
        for alias in node.names:
            yield f"{base}.{alias.name}"


def _owner(name: str, modules: dict[str, Path]) -> str | None:
    """The module of ours that `name` lives in (its longest prefix that is one), if any."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in modules:
            return candidate
    return None


def import_graph() -> Graph:
    """Module -> the modules of ours it imports anywhere in its source."""
    modules = _own_modules()
    graph: Graph = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        is_package = path.name == "__init__.py"
        targets: set[str] = set()
        for node in ast.walk(tree):
            for imported in _imported(node, name, is_package):
                owner = _owner(imported, modules)
                if owner is not None and owner != name:
                    targets.add(owner)
        graph[name] = targets
    return graph


def circles(graph: Graph) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan's algorithm; the
    graph is a few hundred modules deep at most, so recursion is fine)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for child in sorted(graph.get(node, ())):
            if child not in index:
                visit(child)
                low[node] = min(low[node], low[child])
            elif child in on_stack:
                low[node] = min(low[node], index[child])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def _package(module: str) -> str:
    return module.split(".", 1)[0]


def upward_imports(graph: Graph, lower: str, upper: tuple[str, ...]) -> list[str]:
    """`importer -> imported` for each import from package `lower` into any of `upper`."""
    return sorted(
        f"{importer} -> {imported}"
        for importer, targets in graph.items()
        if _package(importer) == lower
        for imported in targets
        if _package(imported) in upper
    )


@pytest.fixture(scope="module")
def graph() -> Graph:
    return import_graph()


def test_the_graph_sees_our_modules(graph: Graph) -> None:
    # Guards the checks below against passing on an empty or unresolved graph.
    assert {"indexer.consumer", "media.worker", "protocol.cid"} <= graph.keys()
    assert "media.jobs" in graph["media.worker"]


def test_no_import_circles(graph: Graph) -> None:
    assert circles(graph) == []


def test_circles_are_found() -> None:
    toy: Graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"e"}}
    assert circles(toy) == [["a", "b", "c"]]


def test_protocol_imports_nothing_of_ours(graph: Graph) -> None:
    assert upward_imports(graph, "protocol", ("core", *SERVICES, "plyr")) == []


def test_core_imports_no_service(graph: Graph) -> None:
    assert upward_imports(graph, "core", (*SERVICES, "plyr")) == []


def test_services_do_not_import_the_composition(graph: Graph) -> None:
    """`plyr/` assembles the services; none of them may reach back up into it."""
    for service in SERVICES:
        assert upward_imports(graph, service, ("plyr",)) == []


def test_publish_is_a_client_of_the_services(graph: Graph) -> None:
    """`plyr publish` runs on a musician's machine: it talks to the AppView and media over HTTP
    and imports none of the services."""
    assert "publish.cli" in graph
    assert upward_imports(graph, "publish", ("indexer", "appview", "media", "plyr")) == []


if __name__ == "__main__":
    found = circles(import_graph())
    for component in found:
        print(" <-> ".join(component))
    print(f"{len(found)} circle(s)")
    sys.exit(1 if found else 0)
