"""The plugin is ready for QGIS 4 (Qt 6), checked on its sources.

PyQt6 knows enums only by their full names (``Qt.AlignmentFlag.AlignLeft``; ``Qt.AlignLeft`` is
an AttributeError there), has no ``exec_``, and QGIS 4 plugins import Qt through ``qgis.PyQt``
only. The sources are read with ``ast``; a candidate ``Class.Name`` is told apart from a nested
class or an enum's type by looking it up in this QGIS (an enum value is not a type). What moved
between QGIS versions goes through ``sial_qgis_plugin.compat``.
"""

from __future__ import annotations

import ast
import configparser
import importlib
from pathlib import Path

import pytest

from tests.helpers import REPO

SCANNED = [*sorted((REPO / "sial_qgis_plugin").rglob("*.py")), REPO / "tests" / "e2e" / "probe.py"]
MOVED_IN_QT6 = {"QAction", "QActionGroup", "QShortcut"}  # QtWidgets (Qt 5) → QtGui (Qt 6): via compat
QT_BINDINGS = {"PyQt5", "PyQt6", "PySide2", "PySide6", "sip", "shiboken2", "shiboken6"}
QGIS_MODULES = ("qgis.core", "qgis.gui", "qgis.PyQt.")


def _imported_classes(tree: ast.Module) -> dict[str, str]:
    """Name → module of every class imported from QGIS or Qt (``from qgis.core import QgsTask``)."""
    names = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(QGIS_MODULES):
            names.update({alias.asname or alias.name: node.module for alias in node.names})
    return names


def _parents(tree: ast.Module) -> dict[ast.AST, ast.AST]:
    return {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}


def unscoped_enums(path: Path) -> list[str]:
    """``file:line Class.Value`` for every enum value read without its enum's name."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    classes, parents, found = _imported_classes(tree), _parents(tree), []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)):
            continue
        owner, name = node.value.id, node.attr
        if owner not in classes or not name[:1].isupper() or name.isupper():
            continue  # not a Qt/QGIS class, a method, or a CONSTANT
        parent = parents.get(node)
        if isinstance(parent, ast.Attribute) or (isinstance(parent, ast.Call) and parent.func is node):
            continue  # Class.Enum.Value, or a nested class called: Renderer.Class(…)
        value = getattr(getattr(importlib.import_module(classes[owner]), owner), name, None)
        if value is not None and not isinstance(value, type):
            found.append(f"{path.relative_to(REPO)}:{node.lineno} {owner}.{name}")
    return found


def other_problems(path: Path) -> list[str]:
    """Qt imported around ``qgis.PyQt``, ``exec_``, and compat spellings that are not scoped."""
    tree, found = ast.parse(path.read_text(encoding="utf-8")), []
    where = str(path.relative_to(REPO))
    for node in ast.walk(tree):
        modules = []
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules = [node.module]
        found += [f"{where}:{node.lineno} imports {m}" for m in modules if m.split(".")[0] in QT_BINDINGS]
        if (
            isinstance(node, ast.ImportFrom)
            and node.module == "qgis.PyQt.QtWidgets"
            and path.name != "compat.py"
        ):
            moved = sorted(MOVED_IN_QT6 & {alias.name for alias in node.names})
            found += [
                f"{where}:{node.lineno} imports {name} from QtWidgets (compat has it)" for name in moved
            ]
        if isinstance(node, ast.Attribute) and node.attr in ("exec_", "print_"):
            found.append(f"{where}:{node.lineno} .{node.attr} (Qt 6: exec() or open())")
        if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "qgis_enum":
            for argument in node.args:
                if not (isinstance(argument, ast.Constant) and argument.value.count(".") >= 2):
                    found.append(f"{where}:{node.lineno} qgis_enum wants Class.Enum.Value spellings")
    return found


@pytest.mark.parametrize("path", SCANNED, ids=lambda p: str(p.relative_to(REPO)))
def test_enums_are_scoped_and_qt_comes_through_qgis_pyqt(path):
    pytest.importorskip("qgis.core")
    assert unscoped_enums(path) + other_problems(path) == []


def test_the_scan_catches_what_qt6_refuses(tmp_path):
    pytest.importorskip("qgis.core")
    probe = REPO / "sial_qgis_plugin" / "_qt6_probe.py"  # inside the repository, as the scan wants
    probe.write_text(
        "from qgis.core import QgsTask, QgsPalettedRasterRenderer\nfrom qgis.PyQt.QtCore import Qt\n"
        "from PyQt5.QtWidgets import QDialog\n"
        "a = Qt.AlignLeft\nb = Qt.AlignmentFlag.AlignLeft\nc = QgsTask.CanCancel\n"
        "d = QgsPalettedRasterRenderer.Class(0, None, 'x')\ne = Qt.AlignmentFlag\nQDialog().exec_()\n"
    )
    try:
        assert [line.split(" ", 1)[1] for line in unscoped_enums(probe)] == [
            "Qt.AlignLeft",
            "QgsTask.CanCancel",
        ]
        assert [line.split(" ", 1)[1] for line in other_problems(probe)] == [
            "imports PyQt5.QtWidgets",
            ".exec_ (Qt 6: exec() or open())",
        ]
    finally:
        probe.unlink()


def test_every_compat_spelling_resolves_in_this_qgis():
    pytest.importorskip("qgis.core")
    from sial_qgis_plugin import compat

    spellings = []
    for path in SCANNED:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "qgis_enum":
                spellings.append([a.value for a in node.args])
    assert spellings, "the plugin uses qgis_enum"
    for names in spellings:
        compat.qgis_enum(*names)  # raises AttributeError when none resolves


def test_metadata_declares_qt6_and_qgis_4():
    metadata = configparser.ConfigParser()
    metadata.read(REPO / "metadata.txt", encoding="utf-8")
    general = metadata["general"]
    assert general["supportsQt6"] == "True"
    assert float(general["qgisMaximumVersion"]) >= 4


def test_metadata_names_the_oldest_qgis_the_tests_run_on():
    """dev.sh installs QGIS ``QGIS_OLDEST`` or newer for the tests; metadata.txt says that one."""
    import re

    metadata = configparser.ConfigParser()
    metadata.read(REPO / "metadata.txt", encoding="utf-8")
    oldest = re.search(r"^QGIS_OLDEST=([0-9.]+)", (REPO / "dev.sh").read_text(), re.MULTILINE).group(1)
    assert metadata["general"]["qgisMinimumVersion"] == oldest == "3.40"
    core = pytest.importorskip("qgis.core")
    running = tuple(int(part) for part in core.Qgis.version().split("-")[0].split(".")[:2])
    assert running >= tuple(int(part) for part in oldest.split("."))  # these tests run on it, or newer
