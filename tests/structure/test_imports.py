"""The package structure holds (DESIGN.md, layout): imports run one way and in no circle.

The imports are read from the source with :mod:`ast` (nothing is imported), including imports
inside functions, which run too, just later; only ``if TYPE_CHECKING:`` blocks are left out.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("agent", "pipeline", "storage")
SERVING_ENTRY_POINTS = ("agent.service", "agent.cli.serve")
"""What ``liver-agent serve`` runs; nothing it reaches may import training code..."""
TRAINING_DOOR = "pipeline.demo_bundles"
"""...but this one narrow door, which imports the DEMO training code inside a function, only
when a DEMO bundle must be built (first use of a code version)."""


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def all_modules() -> dict[str, Path]:
    modules: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            modules[module_name(path)] = path
    return modules


MODULES = all_modules()


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_nodes(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and _is_type_checking(node):
            yield from (n for child in node.orelse for n in _import_nodes_of(child))
            continue
        yield from _import_nodes_of(node)


def _import_nodes_of(node: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    if isinstance(node, ast.Import | ast.ImportFrom):
        yield node
    else:
        yield from _import_nodes(node)


def _resolve(module: str, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    is_package = MODULES[module].name == "__init__.py"
    base = module.split(".")
    base = base[: len(base) - node.level + (1 if is_package else 0)]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(module: str) -> set[str]:
    """Project modules ``module`` imports; ``from a import b`` counts ``a.b`` if it is a module."""
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in _import_nodes(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            target = _resolve(module, node)
            names = [f"{target}.{alias.name}" for alias in node.names]
            names = [n if n in MODULES else target for n in names]
        found.update(n for n in names if n.split(".")[0] in PACKAGES)
    found.discard(module)
    return found


GRAPH = {module: imports_of(module) for module in MODULES}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in graph:
                continue
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
    return sorted(found)


def reachable(start: str) -> dict[str, str]:
    """Every module ``start`` reaches, each mapped to the module that imports it on the way."""
    seen = {start: ""}
    todo = [start]
    while todo:
        current = todo.pop()
        for target in sorted(GRAPH.get(current, ())):
            if target not in seen:
                seen[target] = current
                todo.append(target)
    return seen


def chain(via: dict[str, str], end: str) -> str:
    path = [end]
    while via[path[-1]]:
        path.append(via[path[-1]])
    return " -> ".join(reversed(path))


def test_the_walker_sees_the_imports_it_should() -> None:
    assert "agent.service" in MODULES
    assert "storage.queries" in MODULES
    assert "storage.models" in GRAPH["storage.queries"]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


@pytest.mark.parametrize("package", PACKAGES)
def test_no_import_circle(package: str) -> None:
    inside = {
        m: {t for t in targets if t.split(".")[0] == package}
        for m, targets in GRAPH.items()
        if m.split(".")[0] == package
    }
    found = cycles(inside)
    assert not found, "import circles: " + "; ".join(" <-> ".join(c) for c in found)


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [("pipeline", ("agent", "storage")), ("storage", ("agent", "pipeline"))],
)
def test_arrows_run_one_way(package: str, forbidden: tuple[str, ...]) -> None:
    wrong = sorted(
        f"{m} imports {t}"
        for m, targets in GRAPH.items()
        if m.split(".")[0] == package
        for t in targets
        if t.split(".")[0] in forbidden
    )
    assert not wrong, "; ".join(wrong)


@pytest.mark.parametrize("entry", SERVING_ENTRY_POINTS)
def test_the_serving_process_does_not_import_training_code(entry: str) -> None:
    via = reachable(entry)
    training = sorted(
        chain(via, m)
        for m in via
        if m.startswith("pipeline.training")
        and not via[m].startswith("pipeline.training")
        and via[m] != TRAINING_DOOR
    )
    assert not training, "the serving process reaches training code: " + "; ".join(training)


def test_the_training_door_imports_training_code_only_when_called() -> None:
    tree = ast.parse(MODULES[TRAINING_DOOR].read_text(encoding="utf-8"))
    top_level = [node for node in tree.body if isinstance(node, ast.Import | ast.ImportFrom)]
    assert not any(
        (node.module or "").startswith("pipeline.training")
        for node in top_level
        if isinstance(node, ast.ImportFrom)
    )
    assert any(t.startswith("pipeline.training") for t in GRAPH[TRAINING_DOOR])


@pytest.mark.parametrize(
    ("edge", "allowed"), [("agent.http", {"agent.service"}), ("agent.cli", set[str]())]
)
def test_edges_are_adapters_nothing_else_imports(edge: str, allowed: set[str]) -> None:
    """http/ and cli/ call the services; no service imports them back (the service only
    starts the HTTP server)."""
    inward = sorted(
        f"{m} imports {t}"
        for m, targets in GRAPH.items()
        if not (m == edge or m.startswith(edge + ".")) and m not in allowed
        for t in targets
        if t == edge or t.startswith(edge + ".")
    )
    assert not inward, "; ".join(inward)
