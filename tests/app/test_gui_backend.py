"""The window runs on the backend ``--backend auto`` picks (the rule of ``dcrn run``) and names it."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import pytest

pytest.importorskip("PyQt6.QtWidgets")

from dcrn.app.gui.main import build
from dcrn.engine.backends.choice import choose_backend

pytestmark = pytest.mark.gui


def test_window_runs_the_auto_backend_and_lists_it_among_the_events(qtbot, tmp_path, monkeypatch, model):
    monkeypatch.setenv("DCRN_GUI_SETTINGS", str(tmp_path / "never-used.ini"))
    monkeypatch.setenv("DCRN_CACHE_DIR", str(tmp_path / "cache"))
    gui = build(tmp_path / "settings.ini")  # no backend given: the window's default
    qtbot.addWidget(gui.window)
    gui.window.show()
    expected = choose_backend()
    try:
        gui.controller.start(source="synthetic:", model=model)
        qtbot.waitUntil(lambda: gui.controller.backend_shown is not None, timeout=30_000)
        rows = [row for row in gui.window.events.rows if row.event == "backend"]
        assert gui.controller.backend_shown == expected.name
        where = f"{expected.name} ({expected.precision}) on {expected.device}"
        assert len(rows) == 1 and rows[0].detail.startswith(f"{where}: auto:")
    finally:
        gui.window.close()
