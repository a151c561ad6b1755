"""The program's module graph: acyclic, and layered as the README's design section says.

Every import counts, including those under TYPE_CHECKING and inside functions: a cycle hidden
behind either still couples the two modules.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("config", "components", "postgres", "monitoring")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def program_modules() -> dict[str, Path]:
    found = {module_name(p): p for pkg in PACKAGES for p in (REPO / pkg).rglob("*.py")}
    found["__main__"] = REPO / "__main__.py"
    return found


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The program modules `name` imports (`from pkg import sub` counts as importing pkg.sub)."""
    is_package = path.name == "__init__.py"
    package = name if is_package else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)] if package else []
                base_name = ".".join([*base, *([node.module] if node.module else [])])
            else:
                base_name = node.module or ""
            targets = [f"{base_name}.{alias.name}" if f"{base_name}.{alias.name}" in known else base_name
                       for alias in node.names]  # fmt: skip
        else:
            continue
        for target in targets:
            # `import a.b.c` of a module we do not know (a function, a class): its closest module.
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    modules = program_modules()
    return {name: imports_of(name, path, set(modules)) for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_graph_sees_the_imports(graph):
    # Guards the parser itself: known edges of each kind must be found.
    assert "config" in graph["components.stack"]
    assert "components.preflight" in graph["components.stack"]  # from . import preflight
    assert "postgres.layout" in graph["postgres.conf"]  # from .layout import layout
    assert "components.hetzner.stack" in graph["components.stack"]  # imported inside a function


def test_find_cycle_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle(graph):
    assert find_cycle(graph) is None, f"import cycle: {' -> '.join(find_cycle(graph) or [])}"


def edges_from(graph: dict[str, set[str]], source: str) -> list[tuple[str, str]]:
    return [(m, t) for m, ts in graph.items() if m == source or m.startswith(source + ".") for t in ts]


@pytest.mark.parametrize(
    ("source", "forbidden"),
    [
        ("config", "components"),
        ("postgres", "components"),
        ("postgres", "config"),
        ("monitoring", "components"),
        ("monitoring", "config"),
        ("components.shared", "components.hetzner"),
        ("components.shared", "components.aws"),
        ("components.preflight", "components.hetzner"),
        ("components.preflight", "components.aws"),
        ("components.hetzner", "components.aws"),
        ("components.aws", "components.hetzner"),
    ],
)
def test_layering(graph, source, forbidden):
    bad = [(m, t) for m, t in edges_from(graph, source) if t == forbidden or t.startswith(forbidden + ".")]
    assert not bad, f"{source} must not import {forbidden}: {bad}"


@pytest.mark.parametrize("domain", ["postgres", "monitoring"])
def test_a_pure_domain_imports_neither_pulumi_nor_config(domain):
    paths = list((REPO / domain).rglob("*.py"))
    assert paths, f"{domain}/ has no modules"
    for path in paths:
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom) and not node.level
                else []
            )
            for n in names:
                assert not n.startswith(("pulumi", "config", "components")), f"{domain}/{path.name} imports {n}"
