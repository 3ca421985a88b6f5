"""The boundaries docs/architecture.md states, checked on the source (no database needed)."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
APPS = ("clinic_eval", "alignment_jobs")
# The composition root wires every feature together; it may import anything.
ROOT_MODULES = {"clinic_eval.urls", "clinic_eval.settings", "clinic_eval.management"}
MAX_LINES = 600


def _modules() -> dict[str, Path]:
    found = {}
    for app in APPS:
        for path in (ROOT / app).rglob("*.py"):
            if "migrations" in path.parts:
                continue
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            found[name.removesuffix(".__init__")] = path
    return found


MODULES = _modules()


def _feature(module: str) -> str:
    """``clinic_eval.rating.services`` -> ``clinic_eval.rating``; a top-level module is its own."""
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 2 else module


def _imports(path: Path) -> list[tuple[str, str]]:
    """(imported module, imported name) for every ``from x import y`` and ``import x``."""
    pairs = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            pairs += [(node.module, alias.name) for alias in node.names]
        elif isinstance(node, ast.Import):
            pairs += [(alias.name, "") for alias in node.names]
    return pairs


def _target(module: str, name: str) -> str | None:
    full = f"{module}.{name}"
    if full in MODULES:
        return full
    return module if module in MODULES else None


def _feature_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = defaultdict(set)
    for module, path in MODULES.items():
        if _feature(module) in ROOT_MODULES:
            continue
        for imported, name in _imports(path):
            target = _target(imported, name)
            if target and _feature(target) != _feature(module):
                graph[_feature(module)].add(_feature(target))
    return graph


def test_clinic_eval_never_imports_alignment_jobs() -> None:
    offenders = [
        f"{module} imports {imported}"
        for module, path in MODULES.items()
        if module.startswith("clinic_eval") and _feature(module) not in ROOT_MODULES
        for imported, _ in _imports(path)
        if imported.split(".")[0] == "alignment_jobs"
    ]
    assert offenders == []


def test_no_import_cycles_between_feature_packages() -> None:
    graph = _feature_graph()
    state: dict[str, str] = {}
    cycles: list[list[str]] = []

    def visit(node: str, trail: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                cycles.append(trail[trail.index(nxt) :] + [nxt])
            elif nxt not in state:
                visit(nxt, [*trail, nxt])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert cycles == []


def test_no_module_imports_another_modules_private_names() -> None:
    offenders = []
    for module, path in MODULES.items():
        for imported, name in _imports(path):
            if name.startswith("_") and not name.startswith("__") and imported in MODULES:
                offenders.append(f"{module}: from {imported} import {name}")
    assert offenders == []


def test_the_dependency_graph_has_the_edges_this_test_relies_on() -> None:
    graph = _feature_graph()
    assert "clinic_eval.models" in graph["clinic_eval.rating"]
    assert "clinic_eval.access" in graph["alignment_jobs.generation"]


@pytest.mark.parametrize("folder", [*APPS, "tests", "benchmarks"])
def test_no_module_is_over_600_lines(folder: str) -> None:
    long = {
        str(path.relative_to(ROOT)): lines
        for path in (ROOT / folder).rglob("*.py")
        if "migrations" not in path.parts
        and (lines := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert long == {}
