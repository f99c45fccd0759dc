"""The composition root: builds the application, window and controller, wires the shortcuts, runs.

``dcrn gui`` and ``dcrn demo --gui`` both call :func:`run_gui`. Ctrl+C in the terminal and SIGTERM close
the window the normal way (every engine thread stopped, settings saved) and the exit code is 0.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from PyQt6.QtCore import QTimer
from PyQt6.QtGui import QKeySequence
from PyQt6.QtWidgets import QApplication

from .controller import Controller
from .settings import SettingsStore
from .window import MainWindow

log = logging.getLogger(__name__)

# Every keyboard shortcut of the window, in one place: action name -> keys.
SHORTCUTS: dict[str, tuple[str, ...]] = {
    "start_stop": ("Space", "F5"),
    "snapshot": ("Ctrl+S",),
    "save_events": ("Ctrl+E",),
    "open_url": ("Ctrl+L",),
    "open_file": ("Ctrl+O",),
    "open_model": ("Ctrl+M",),
    "demo": ("Ctrl+D",),
    "teach": ("Ctrl+T",),
    "record": ("R",),  # plain letters: typing into a text field still types them
    "mark_in": ("I",),
    "mark_out": ("O",),
    "quit": ("Ctrl+Q",),
}
SIGNAL_POLL_MS = 100  # lets the Python interpreter run signal handlers while Qt's loop waits


@dataclass
class Gui:
    app: QApplication
    window: MainWindow
    controller: Controller


def wire_shortcuts(window: MainWindow) -> None:
    for name, keys in SHORTCUTS.items():
        action = window.actions[name]
        action.setShortcuts([QKeySequence(k) for k in keys])
        window.addAction(action)  # active while the window has focus, menu open or not


def build(
    settings_path: str | os.PathLike | None = None,
    *,
    backend: str = "auto",
    device: str = "auto",
    evidence: str | None = None,
    people: int = 1,
) -> Gui:
    """The application, window and controller, wired; nothing started yet.

    ``evidence``: the folder for clips and snapshots of actions (kept in the settings; "" turns it off,
    None keeps the remembered one). ``people``: how many people a model taught on the body follows.
    """
    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setApplicationName("DCRN Live")
    window = MainWindow()
    controller = Controller(window, SettingsStore(settings_path), backend=backend, device=device, people=people)
    if evidence is not None:
        controller.settings.evidence_dir = str(Path(evidence).expanduser().resolve()) if evidence else ""
    wire_shortcuts(window)
    return Gui(app, window, controller)  # type: ignore[arg-type]


@contextmanager
def close_on_signals(window: MainWindow) -> Iterator[None]:
    """SIGINT and SIGTERM close the window (as its close button does) while the event loop runs.

    Python runs signal handlers only between bytecodes, so a short timer keeps returning control to
    the interpreter while Qt's event loop waits.
    """
    previous = {}

    def handler(signum: int, frame) -> None:
        log.info("%s received: closing the window (again to quit at once)", signal.Signals(signum).name)
        for other in previous:  # a second Ctrl+C or SIGTERM ends the process, should closing hang
            signal.signal(other, signal.SIG_DFL)
        QTimer.singleShot(0, window.close)

    for signum in (signal.SIGINT, signal.SIGTERM):
        previous[signum] = signal.signal(signum, handler)
    poll = QTimer()
    poll.timeout.connect(lambda: None)
    poll.start(SIGNAL_POLL_MS)
    try:
        yield
    finally:
        poll.stop()
        for signum, old in previous.items():
            signal.signal(signum, old)


def run_gui(
    source: str | None = None,
    model: str | None = None,
    *,
    backend: str = "auto",
    device: str = "auto",
    settings_path: str | os.PathLike | None = None,
    evidence: str | None = None,
    people: int = 1,
) -> int:
    """Open the window and start on ``source`` / ``model`` (default: the last ones used); returns 0."""
    gui = build(settings_path, backend=backend, device=device, evidence=evidence, people=people)
    gui.app.setQuitOnLastWindowClosed(True)
    gui.window.show()
    gui.controller.start(source=source, model=model)
    with close_on_signals(gui.window):
        gui.app.exec()
    gui.controller.shutdown()  # no-op when the window's close already stopped everything
    return 0
