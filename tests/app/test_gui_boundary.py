"""The GUI's boundaries: one module bridges the engine, and the Teach panel's controller talks to the main
controller only through ``TeachHost``."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

GUI = Path(__file__).resolve().parents[2] / "app" / "gui"
GUI_PACKAGE = "dcrn.app.gui"
BRIDGE = "worker.py"


def imported_modules(path: Path) -> set[str]:
    """Every module ``path`` imports, at any depth of the file, relative imports resolved."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = GUI_PACKAGE.rsplit(".", node.level - 1)[0] if node.level > 1 else GUI_PACKAGE
                base = f"{package}.{base}" if base else package
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)  # `from dcrn import engine`
    return found


def imports_engine(path: Path) -> bool:
    return any(name == "dcrn.engine" or name.startswith("dcrn.engine.") for name in imported_modules(path))


def test_only_the_bridge_module_imports_the_engine():
    modules = sorted(GUI.glob("*.py"))
    assert BRIDGE in [p.name for p in modules]
    assert [p.name for p in modules if imports_engine(p)] == [BRIDGE]


def test_the_bridge_says_it_is_the_only_module_importing_the_engine():
    docstring = ast.get_docstring(ast.parse((GUI / BRIDGE).read_text(encoding="utf-8"))) or ""
    assert "the only GUI module that imports ``dcrn.engine``" in docstring


def test_teach_controller_uses_only_the_teach_host_of_the_main_controller():
    pytest.importorskip("PyQt6.QtCore")
    from dcrn.app.gui.teach import TeachHost

    allowed = {name for name in vars(TeachHost) if not name.startswith("_")}
    tree = ast.parse((GUI / "teach.py").read_text(encoding="utf-8"))
    used = {
        node.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Attribute)
        and node.value.attr == "host"
        and isinstance(node.value.value, ast.Name)
        and node.value.value.id == "self"
    }
    assert used and used <= allowed, f"not in TeachHost: {sorted(used - allowed)}"
    assert not any(name.endswith(".controller") for name in imported_modules(GUI / "teach.py"))


def test_main_controller_implements_every_teach_host_method():
    pytest.importorskip("PyQt6.QtCore")
    from dcrn.app.gui.controller import Controller
    from dcrn.app.gui.teach import TeachHost

    methods = {name: fn for name, fn in vars(TeachHost).items() if not name.startswith("_") and callable(fn)}
    assert methods
    for name, fn in methods.items():
        implemented = getattr(Controller, name, None)
        assert callable(implemented), f"Controller lacks {name}"
        assert list(inspect.signature(implemented).parameters) == list(inspect.signature(fn).parameters), name
