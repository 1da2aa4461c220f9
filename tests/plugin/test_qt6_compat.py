"""The plugin's source uses only Qt/QGIS names that exist on QGIS 3 (PyQt5) and QGIS 4 (PyQt6).

PyQt6 has no unscoped enum members (``Qt.Horizontal``: only ``Qt.Orientation.Horizontal``),
no ``exec_()``, no ``QRegExp`` and no ``QDesktopWidget``. No Qt6 runtime is installed here, so
the source is scanned instead: each ``Class.member`` read from a class imported from
``qgis.PyQt``, ``qgis.core`` or ``qgis.gui`` is looked up in the installed QGIS, and an enum
member read without its enum's name fails. The scoped spelling works on both. A name the
installed QGIS (the oldest the plugin supports, 3.22, in CI) lacks fails too: an enum of a
later QGIS would pass the scan and fail when the plugin runs.
"""
from __future__ import annotations

import ast
import enum
from importlib import import_module
from pathlib import Path

import pytest
from qgis.core import Qgis

from .conftest import REPO

SCANNED = [path for folder in ("plugin", "tests/plugin") for path in sorted((REPO / folder).rglob("*.py"))]
QGIS_MODULES = ("qgis.PyQt.", "qgis.core", "qgis.gui")
# QVariant.Int, .Double...: QGIS 4 patches them back in (as QMetaType.Type values) while
# QgsField takes a QMetaType.Type only from QGIS 3.38 on, so they stay as they are
UNSCOPED_ALLOWED = {"QVariant"}
REMOVED_IN_QT6 = {"exec_": "exec()", "QRegExp": "QRegularExpression",
                  "QDesktopWidget": "QGuiApplication.screens()", "qApp": "QApplication.instance()"}


def _is_enum_member(value) -> bool:
    # PyQt5's enums are sip.enumtype classes; PyQt6's (and QGIS's scoped ones) are enum.Enum
    return isinstance(value, enum.Enum) or type(type(value)).__name__ == "enumtype"


def _imported_classes(tree: ast.AST) -> dict[str, object]:
    classes = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(QGIS_MODULES):
            module = import_module(node.module)
            for alias in node.names:
                classes[alias.asname or alias.name] = getattr(module, alias.name, None)
    return classes


def qt6_problems(source: str, name: str = "<source>") -> list[str]:
    """What in ``source`` would fail on PyQt6, one line each."""
    tree = ast.parse(source, name)
    classes = _imported_classes(tree)
    problems = []
    for node in ast.walk(tree):
        where = f"{name}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            modules = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            problems += [f"{where}: import {m} through qgis.PyQt" for m in modules if m.startswith("PyQt")]
            problems += [f"{where}: {a.name} is gone in Qt6; use {REMOVED_IN_QT6[a.name]}"
                         for a in node.names if a.name in REMOVED_IN_QT6]
        elif isinstance(node, ast.Name) and node.id in REMOVED_IN_QT6:
            problems.append(f"{where}: {node.id} is gone in Qt6; use {REMOVED_IN_QT6[node.id]}")
        elif isinstance(node, ast.Attribute):
            if node.attr in REMOVED_IN_QT6:
                problems.append(f"{where}: .{node.attr} is gone in Qt6; use {REMOVED_IN_QT6[node.attr]}")
            owner = node.value.id if isinstance(node.value, ast.Name) else None
            if owner == "QVariant" and node.attr == "Type":
                problems.append(f"{where}: QVariant.Type does not exist in PyQt6")
            if owner not in classes or owner in UNSCOPED_ALLOWED:
                continue
            cls = classes[owner]
            if cls is None or not hasattr(cls, node.attr):
                problems.append(f"{where}: {owner}.{node.attr} is not in this QGIS "
                                f"({Qgis.QGIS_VERSION})")
                continue
            value = getattr(cls, node.attr)
            if _is_enum_member(value) and not (isinstance(cls, type) and isinstance(value, cls)):
                problems.append(f"{where}: {owner}.{node.attr} is unscoped; write "
                                f"{type(value).__qualname__}.{node.attr}")
    return problems


def test_the_scan_finds_what_pyqt6_refuses():
    bad = ("from qgis.PyQt.QtCore import Qt, QRegExp\nfrom qgis.PyQt.QtWidgets import QMessageBox\n"
           "from qgis.core import QgsProcessing\nfrom PyQt5.QtGui import QColor\n"
           "a = Qt.Horizontal\nb = QMessageBox.Yes\nc = QgsProcessing.TypeVectorPolygon\n"
           "dialog.exec_()\n")
    found = qt6_problems(bad)
    assert len(found) == 6, found   # QRegExp, PyQt5, three unscoped enums, exec_
    assert any("Qt.Orientation.Horizontal" in line for line in found)
    # names of a later QGIS, or none at all, that QGIS 3.22 would not find when the plugin runs
    later = ("from qgis.core import Qgis, QgsFooBar\nfrom qgis.PyQt.QtCore import Qt\n"
             "a = Qgis.NoSuchEnum.Member\nb = QgsFooBar.Horizontal\nc = Qt.NoSuchThing\n")
    assert sorted(line.split(": ", 1)[1].split(" is ")[0] for line in qt6_problems(later)) == \
        ["Qgis.NoSuchEnum", "QgsFooBar.Horizontal", "Qt.NoSuchThing"]
    good = ("from qgis.PyQt.QtCore import Qt, QVariant\nfrom qgis.PyQt.QtWidgets import QMessageBox\n"
            "from qgis.core import QgsProcessing\n"
            "a = Qt.Orientation.Horizontal\nb = QMessageBox.StandardButton.Yes\n"
            "c = QgsProcessing.SourceType.TypeVectorPolygon\nd = QVariant.Int\ndialog.exec()\n")
    assert qt6_problems(good) == []


@pytest.mark.parametrize("path", SCANNED, ids=lambda p: str(p.relative_to(REPO)))
def test_source_is_ready_for_pyqt6(path: Path):
    assert qt6_problems(path.read_text(encoding="utf-8"), str(path.relative_to(REPO))) == []
