"""Which camera indices exist, found quickly and without OpenCV's console noise."""

from __future__ import annotations

import logging
import os
import sys
import threading
from pathlib import Path

from PyQt6.QtCore import QObject, pyqtSignal

log = logging.getLogger(__name__)

MAX_INDEX = 4  # indices 0..MAX_INDEX-1 are tried


def probe_cameras(max_index: int = MAX_INDEX) -> list[int]:
    """Camera indices that can be opened. On Linux a missing /dev/videoN is ruled out without opening."""
    if sys.platform.startswith("linux"):
        candidates = [i for i in range(max_index) if Path(f"/dev/video{i}").exists()]
    else:
        candidates = list(range(max_index))
    if not candidates:
        return []
    os.environ.setdefault("OPENCV_LOG_LEVEL", "OFF")  # before cv2 is imported: no warnings per missing index
    os.environ.setdefault("OPENCV_VIDEOIO_DEBUG", "0")
    import cv2

    found = []
    for index in candidates:
        capture = cv2.VideoCapture(index)
        try:
            if capture.isOpened():
                found.append(index)
        finally:
            capture.release()
    log.debug("cameras found: %s", found)
    return found


class CameraProbe(QObject):
    """Runs :func:`probe_cameras` in a short-lived thread; the answer arrives as ``found(list)``."""

    found = pyqtSignal(list)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="dcrn-gui-cameras", daemon=True)
        self._thread.start()

    def join(self, timeout: float) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        try:
            self.found.emit(probe_cameras())
        except Exception:  # a broken camera driver must not take the window down
            log.warning("camera probe failed", exc_info=True)
            self.found.emit([])
