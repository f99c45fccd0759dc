"""Local cameras by index (V4L2 on Linux)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import cv2

from dcrn.engine.errors import SourceError, SourceNotFound
from dcrn.engine.sources.base import Read, Source, SourceOptions, bgr_to_rgb


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
