"""The plugin's code in the forms QGIS 4 (Qt 6) needs and QGIS 3.22 (Qt 5) accepts: Qt
through `qgis.PyQt` only, `exec()`, and Qt enums by their full scope (`Qt.ItemDataRole.
UserRole`, not `Qt.UserRole`), the rules QGIS's `pyqt5_to_pyqt6` script applies."""

from __future__ import annotations

import ast
import configparser
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SOURCES = sorted((REPO / "gfm_plugin").rglob("*.py"))
# classes whose enums Qt 6 scopes (the ones the plugin uses)
SCOPED = {"Qt", "QDialogButtonBox", "QLineEdit", "QMessageBox", "QSizePolicy", "QFrame",
          "QAbstractItemView", "QHeaderView", "QDialog", "QEvent", "QFont", "QPalette"}


def _nodes(path: Path) -> tuple[ast.AST, dict[ast.AST, ast.AST]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    return tree, parents


def test_qt_comes_through_qgis_pyqt_only():
    for path in SOURCES:
        tree, _ = _nodes(path)
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                assert not node.module.startswith(("PyQt5", "PyQt6", "sip")), f"{path}: {node.module}"
            if isinstance(node, ast.Import):
                assert not any(a.name.startswith(("PyQt5", "PyQt6")) for a in node.names), path


def test_no_exec_underscore_and_enums_fully_scoped():
    problems = []
    for path in SOURCES:
        tree, parents = _nodes(path)
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr == "exec_":
                problems.append(f"{path.name}:{node.lineno} exec_()")
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                    and node.value.id in SCOPED and node.attr[:1].isupper()
                    and not isinstance(parents.get(node), ast.Attribute)):
                problems.append(f"{path.name}:{node.lineno} {node.value.id}.{node.attr}")
    assert not problems, "unscoped or Qt 5-only forms: " + ", ".join(problems)


def test_qvariant_types_only_behind_the_version_check():
    for path in SOURCES:
        text = path.read_text(encoding="utf-8")
        for n, line in enumerate(text.splitlines(), 1):
            if "QVariant." in line:
                assert path.name == "layers.py" and "TEXT_TYPE = QVariant.String" in line, \
                    f"{path.name}:{n}: QVariant types are gone in Qt 6; use QMetaType.Type"


def test_metadata_declares_qgis_4():
    general = configparser.ConfigParser()
    general.read(REPO / "metadata.txt")
    assert general["general"]["qgisMaximumVersion"] == "4.99"
    assert general["general"]["supportsQt6"] == "True"
