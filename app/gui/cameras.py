"""Which camera indices exist, found quickly and without OpenCV's console noise."""

from __future__ import annotations

import logging
import sys
import threading
from pathlib import Path

from PyQt6.QtCore import QObject, pyqtSignal

log = logging.getLogger(__name__)

MAX_INDEX = 4  # indices 0..MAX_INDEX-1 are tried


def probe_cameras(max_index: int = MAX_INDEX, *, in_use: frozenset[int] = frozenset()) -> list[int]:
    """Camera indices that can be opened. On Linux a missing /dev/videoN is ruled out without opening.

    Cameras in ``in_use`` are listed without being opened (a second open may fail or disturb the stream).
    """
    if sys.platform.startswith("linux"):
        candidates = [i for i in range(max_index) if Path(f"/dev/video{i}").exists()]
    else:
        candidates = list(range(max_index))
    found = sorted(i for i in in_use if i in candidates)
    candidates = [i for i in candidates if i not in in_use]
    if not candidates:
        return found
    import cv2

    quiet = cv2.utils.logging
    previous = quiet.getLogLevel()
    quiet.setLogLevel(quiet.LOG_LEVEL_SILENT)  # no warning per index that is not a camera
    try:
        for index in candidates:
            capture = cv2.VideoCapture(index)
            try:
                if capture.isOpened():
                    found.append(index)
            finally:
                capture.release()
    finally:
        quiet.setLogLevel(previous)
    log.debug("cameras found: %s", found)
    return sorted(found)


class CameraProbe(QObject):
    """Runs :func:`probe_cameras` in a short-lived thread; the answer arrives as ``found(list)``."""

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
