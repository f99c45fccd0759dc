"""Video files, decoded with OpenCV's FFmpeg backend."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import cv2

from dcrn.engine.errors import SourceError, SourceNotFound, SourceUnreadable
from dcrn.engine.sources.base import Read, Source, SourceOptions, bgr_to_rgb, safe_name

log = logging.getLogger(__name__)


class FileSource(Source):
    """A video file, decoded with OpenCV's FFmpeg backend; paced at its own frame rate unless told not to."""

    is_live = False
    paced = True

    def __init__(self, path: str | os.PathLike, *, name: str | None = None, options: SourceOptions) -> None:
        self.path = Path(path)
        super().__init__(str(path), name or safe_name(self.path.stem) or "file", options)
        self._cap: cv2.VideoCapture | None = None
        self._pending: Read | None = None  # the frame decoded by _open to validate the file
        self._offset = 0.0  # pts added after each loop, so pts keep growing
        self._last_pts = 0.0
        self._index = 0
        self._start()

    def _open(self) -> None:
        if not self.path.exists():
            raise SourceNotFound(f"video file not found: {self.uri}")
        if self.path.is_dir():
            raise SourceUnreadable(f"not a video file: {self.uri} is a directory")
        if not os.access(self.path, os.R_OK):
            raise SourceUnreadable(f"cannot read video file {self.uri}: permission denied")
        cap = cv2.VideoCapture(str(self.path), cv2.CAP_FFMPEG)
        if not cap.isOpened():
            cap.release()
            raise SourceUnreadable(f"not a readable video file: {self.uri} (no decodable video stream)")
        fps = cap.get(cv2.CAP_PROP_FPS)
        self.fps = float(fps) if fps and 0 < fps < 1000 else None
        self._cap, self._index = cap, 0
        first = self._decode()
        if first is None:
            self._close()
            raise SourceUnreadable(f"not a readable video file: {self.uri} (no frame could be decoded)")
        self._pending = first

    def _decode(self) -> Read | None:
        ok, bgr = self._cap.read()
        if not ok or bgr is None:
            return None
        msec = self._cap.get(cv2.CAP_PROP_POS_MSEC)
        # OpenCV reports the first frame's position as 0 even when it is not; count frames there.
        fallback = self._index / self.fps if self.fps else 0.0
        pts = msec / 1000.0 if self._index > 0 and msec > 0 else fallback
        self._index += 1
        return bgr_to_rgb(bgr), self._offset + pts, None

    def _read(self) -> Read | None:
        item, self._pending = self._pending, None
        if item is None:
            item = self._decode()
        if item is None and self.options.loop:
            period = 1.0 / self.fps if self.fps else 0.04
            self._offset = self._last_pts + period
            schedule = self._pacer.anchor  # pts continue across the loop, so pacing does too
            try:
                self.reopen()
                self._pacer.anchor = schedule
            except SourceError as exc:
                log.warning("%s: cannot start the file again: %s", self.uri, exc)
                return None
            item, self._pending = self._pending, None
        if item is None:
            return None
        self._last_pts = item[1]
        return item

    def _close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None
        self._pending = None
