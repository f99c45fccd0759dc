"""Local cameras by index (V4L2 on Linux): the source, and which indices exist."""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

import cv2

from dcrn.engine.errors import SourceError, SourceNotFound
from dcrn.engine.sources.base import Read, Source, SourceOptions, bgr_to_rgb

log = logging.getLogger(__name__)

MAX_INDEX = 4  # probe_cameras tries indices 0..MAX_INDEX-1


class CameraSource(Source):
    """A local camera by index (V4L2 on Linux). pts are seconds since the source was first opened."""

    def __init__(self, index: int, *, name: str | None = None, options: SourceOptions) -> None:
        self.index = index
        super().__init__(str(index), name or f"cam{index}", options)
        self._cap: cv2.VideoCapture | None = None
        self._t0: float | None = None
        self._pending: Read | None = None
        self._start()

    def _open(self) -> None:
        device = Path(f"/dev/video{self.index}")
        if sys.platform.startswith("linux") and not device.exists():
            raise SourceNotFound(f"camera {self.index} not found: {device} does not exist")
        api = cv2.CAP_V4L2 if sys.platform.startswith("linux") else cv2.CAP_ANY
        cap = cv2.VideoCapture(self.index, api)
        if not cap.isOpened():
            cap.release()
            raise SourceNotFound(f"camera {self.index} not found or busy: it cannot be opened")
        fps = cap.get(cv2.CAP_PROP_FPS)
        self.fps = float(fps) if fps and 0 < fps < 1000 else None
        self._cap = cap
        if self._t0 is None:
            self._t0 = time.monotonic()
        ok, bgr = cap.read()
        if not ok or bgr is None:
            self._close()
            raise SourceError(f"camera {self.index} opened but delivers no frames")
        self._pending = (bgr_to_rgb(bgr), time.monotonic() - self._t0, None)

    def _read(self) -> Read:
        item, self._pending = self._pending, None
        if item is not None:
            return item
        ok, bgr = self._cap.read()
        if not ok or bgr is None:
            raise SourceError(f"camera {self.index}: read failed")
        return bgr_to_rgb(bgr), time.monotonic() - self._t0, None

    def _close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None
        self._pending = None


def probe_cameras(max_index: int = MAX_INDEX, *, in_use: frozenset[int] = frozenset()) -> list[int]:
    """Camera indices that can be opened, found quickly and without OpenCV's console noise.

    On Linux a missing /dev/videoN is ruled out without opening. Cameras in ``in_use`` are listed without
    being opened (a second open may fail or disturb the stream).
    """
    if sys.platform.startswith("linux"):
        candidates = [i for i in range(max_index) if Path(f"/dev/video{i}").exists()]
    else:
        candidates = list(range(max_index))
    found = sorted(i for i in in_use if i in candidates)
    candidates = [i for i in candidates if i not in in_use]
    if not candidates:
        return found
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
