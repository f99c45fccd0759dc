"""Which camera indices exist, asked off the GUI thread (the probe itself lives with the camera source)."""

from __future__ import annotations

import logging
import threading

from PyQt6.QtCore import QObject, pyqtSignal

from .worker import probe_cameras

log = logging.getLogger(__name__)


class CameraProbe(QObject):
    """Runs the engine's ``probe_cameras`` in a short-lived thread; the answer arrives as ``found(list)``."""

    found = pyqtSignal(list)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._thread: threading.Thread | None = None
        self._in_use: frozenset[int] = frozenset()

    def start(self, in_use: frozenset[int] = frozenset()) -> None:
        """Probe once (later calls do nothing)."""
        if self._thread is None:
            self._in_use = in_use
            self._thread = threading.Thread(target=self._run, name="dcrn-gui-cameras", daemon=True)
            self._thread.start()

    def join(self, timeout: float) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        try:
            self.found.emit(probe_cameras(in_use=self._in_use))
        except Exception:  # a broken camera driver must not take the window down
            log.warning("camera probe failed", exc_info=True)
            self.found.emit([])
