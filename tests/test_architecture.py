"""The house rules a newcomer relies on, checked on the sources (no imports needed).

- The engine's layers import downwards only: system < model < io < predict < cluster < learn <
  session < protocols < demo < cli (``errors`` and ``progress`` sit under all of them). ``io`` never
  imports ``learn``; nothing in the engine imports ``experiments``, ``benchmarks`` or ``qgis``.
- No import circle between the engine's modules (lazy imports inside functions included).
- No module over 400 lines, no function over 80 lines (tests aside), no class name defined
  twice in the engine.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

from tests.helpers import REPO

ENGINE = REPO / "backend"
LAYERS = ("system", "model", "io", "predict", "cluster", "learn", "session", "protocols", "demo", "cli")
"""Lowest first; a module may import its own layer and the ones before it."""
CHECKED = ("backend", "sial_qgis_plugin", "benchmarks", "experiments", "tools")
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 80


def engine_modules() -> dict[str, Path]:
    """Dotted name (``backend.io.raster``) → path, for every module of the engine."""
    modules = {}
    for path in sorted(ENGINE.rglob("*.py")):
        parts = path.relative_to(REPO).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        modules[name] = path
    return modules


def imported(path: Path, name: str) -> set[str]:
    """Every module ``path`` (module ``name``) imports, anywhere in it, as dotted names."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.add(target)
            found.update(f"{target}.{alias.name}" for alias in node.names)  # from . import cache
    return found


def layer_of(module: str) -> int:
    parts = module.split(".")
    if module == "backend.__main__":  # ``python -m backend``: above everything
        return len(LAYERS)
    if len(parts) < 2 or parts[1] not in LAYERS:
        return -1  # backend, backend.errors, backend.progress: under every layer
    return LAYERS.index(parts[1])


def engine_graph() -> dict[str, set[str]]:
    modules = engine_modules()
    return {
        name: {m for m in imported(path, name) if m in modules and m != name}
        for name, path in modules.items()
    }


def test_the_engine_imports_downwards_only():
    wrong = [
        f"{name} ({LAYERS[layer_of(name)] if layer_of(name) >= 0 else 'base'}) imports {target}"
        for name, targets in engine_graph().items()
        for target in targets
        if layer_of(target) > layer_of(name)
    ]
    assert wrong == []


def test_the_engine_imports_neither_qgis_nor_the_research_and_tooling_folders():
    banned = ("qgis", "experiments", "benchmarks", "sial_qgis_plugin", "tests", "tools")
    wrong = [
        f"{name} imports {module}"
        for name, path in engine_modules().items()
        for module in imported(path, name)
        if module.split(".")[0] in banned
    ]
    assert wrong == []


def test_the_engine_has_no_import_circle():
    graph = engine_graph()
    state: dict[str, int] = defaultdict(int)  # 0 unseen, 1 on the current path, 2 done
    circles = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for target in sorted(graph[node]):
            if state[target] == 1:
                circles.append(" → ".join([*path[path.index(target) :], target]))
            elif state[target] == 0:
                visit(target, [*path, target])
        state[node] = 2

    for node in sorted(graph):
        if state[node] == 0:
            visit(node, [node])
    assert circles == []


def checked_files() -> list[Path]:
    return [p for folder in CHECKED for p in sorted((REPO / folder).rglob("*.py"))]


@pytest.mark.parametrize("path", checked_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_a_module_and_its_functions_fit_on_a_few_screens(path):
    text = path.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= MAX_MODULE_LINES
    long = [
        f"{node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for node in ast.walk(ast.parse(text))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
    ]
    assert long == []


def test_no_class_name_is_defined_twice_in_the_engine():
    where = defaultdict(list)
    for name, path in engine_modules().items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef):
                where[node.name].append(name)
    assert {k: v for k, v in where.items() if len(v) > 1} == {}


def test_the_rules_would_catch_io_importing_learn(tmp_path):
    """The layer check itself can fail: ``io`` importing ``learn`` is seen as wrong."""
    probe = tmp_path / "probe.py"
    probe.write_text("from ..learn.disca import Disca\n")
    targets = imported(probe, "backend.io.probe")
    assert "backend.learn.disca" in targets
    assert layer_of("backend.learn.disca") > layer_of("backend.io.probe")
