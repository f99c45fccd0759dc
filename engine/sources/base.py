"""Sources: where frames come from. The ``Source`` interface and what every kind shares.

One factory, :func:`dcrn.engine.sources.factory.open_source`, turns a URI into an open source.

    source = open_source("rtsp://admin:pw@10.0.0.5/stream1", options=SourceOptions(timeout_s=5))
    image, pts, label = source.read()          # (H, W, 3) uint8 RGB, seconds, ground truth or None

URIs (docs/sources.md): an integer camera index ("0"), ``rtsp://`` / ``rtsps://`` / ``http(s)://`` URLs,
a video file path (or ``file://`` URL), and ``synthetic:`` with query options
(``synthetic:?seed=3&fps=30&width=320&height=240``).

Opening is synchronous and validates at once (the first frame is decoded before ``open_source``
returns), raising the engine's error tree with a one-line message that names the redacted URI:
malformed URI or unsupported scheme -> :class:`BadSourceURI`; missing file or camera -> :class:`SourceNotFound`;
a file that is not video -> :class:`SourceUnreadable`; a host that does not answer within
``timeout_s`` -> :class:`SourceUnreachable`.

A source is used by one thread at a time (its capture thread). Files and ``synthetic:`` pace
themselves inside :meth:`Source.read` when ``options.pace`` is set. ``Source.epoch`` grows whenever the
frames that follow do not continue the previous ones (reopen, loop), so the capture thread can mark
the next frame as a discontinuity.

Network streams live in :mod:`dcrn.engine.sources.stream`.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass

import cv2
import numpy as np

from dcrn.engine.errors import SourceError
from dcrn.engine.redact import redact

log = logging.getLogger(__name__)

STREAM_SCHEMES = ("rtsp", "rtsps", "http", "https")
MAX_PACING_WAIT_S = 1.0  # a gap in timestamps longer than this is not waited out: the schedule restarts


@dataclass
class SourceOptions:
    """How sources are opened and read."""

    timeout_s: float = 10.0  # network streams: open timeout (connect to first frame), seconds
    stall_s: float = 3.0  # network streams: no frame for this long and the stream counts as lost, seconds
    pace: bool = True  # files and synthetic: deliver at their own frame rate (False: as fast as possible, --no-pace)
    loop: bool = False  # files: start again at the end (each loop is a discontinuity)
    low_delay: bool = True  # RTSP: rtsp_transport;tcp|fflags;nobuffer|flags;low_delay, small probe
    backend: str = "auto"  # network streams: "pyav", "opencv", or "auto" (PyAV when installed)
    decode_threads: int = 1  # PyAV decode + RGB conversion threads per stream; 1 scales best, 0: FFmpeg's choice

    def __post_init__(self) -> None:
        if not self.timeout_s > 0:
            raise ValueError(f"timeout_s must be positive, got {self.timeout_s}")
        if not self.stall_s > 0:
            raise ValueError(f"stall_s must be positive, got {self.stall_s}")
        if self.decode_threads < 0:
            raise ValueError(f"decode_threads must be 0 (FFmpeg's choice) or more, got {self.decode_threads}")
        if self.backend not in ("auto", "pyav", "opencv"):
            raise ValueError(f"backend must be auto, pyav or opencv, got {self.backend!r}")


Read = tuple[np.ndarray, float, "int | None"]


@dataclass(frozen=True)
class SourceInfo:
    """What others may read about an open source (the source itself belongs to its capture thread)."""

    fps: float | None  # nominal frame rate, when the source knows it
    labels: tuple[str, ...] = ()  # class names of the ground-truth labels (synthetic); () when none


class Source:
    """An open source of RGB frames. Subclasses implement ``_open``, ``_read`` and ``_close``."""

    name: str  # stream name: "cam0", host-based for URLs, file stem, "synthetic"
    uri: str  # redacted: safe to log and show
    fps: float | None = None  # nominal frame rate, when the source knows it
    is_live: bool = True  # cameras, network streams, synthetic: True; files: False
    labels: tuple[str, ...] | None = None  # class names of the ground-truth labels (synthetic)
    paced = False  # read() sleeps to keep the source's own frame rate when options.pace (files, synthetic)

    def __init__(self, uri: str, name: str, options: SourceOptions) -> None:
        self.uri = redact(uri)
        self.name = name
        self.options = options
        self.epoch = 0  # grows at every reopen and loop: the next frame does not continue the last one
        self._closed = True
        self._pacer = Pacer()

    def read(self) -> Read | None:
        """The next frame: (image (H, W, 3) uint8 RGB C-contiguous, pts seconds, label or None).

        None when a file has ended (and does not loop). A live source that cannot read raises
        :class:`SourceError`; call :meth:`reopen` to recover.
        """
        if self._closed:
            raise SourceError(f"{self.uri}: read from a closed source")
        item = self._read()
        if item is not None and self.paced and self.options.pace:
            self._pacer.wait(item[1])
        return item

    def reopen(self) -> None:
        """Close and open again; raises :class:`SourceError` if it cannot (yet)."""
        self.close()
        self._open()
        self._closed = False
        self.epoch += 1
        self._pacer.reset()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            try:
                self._close()
            except Exception:  # closing must never fail the caller; a leak is logged
                log.exception("%s: error while closing", self.uri)

    def _start(self) -> None:
        """First open, from the subclass constructor."""
        self._open()
        self._closed = False

    def _open(self) -> None:
        raise NotImplementedError

    def _read(self) -> Read | None:
        raise NotImplementedError

    def _close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Source:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, uri={self.uri!r}, fps={self.fps}, live={self.is_live})"


class Pacer:
    """Sleeps so that frames leave at their timestamps' pace (files, synthetic)."""

    def __init__(self) -> None:
        self.anchor: tuple[float, float] | None = None  # (monotonic, pts) of the schedule's origin

    def reset(self) -> None:
        self.anchor = None

    def wait(self, pts: float) -> None:
        now = time.monotonic()
        if self.anchor is None:
            self.anchor = (now, pts)
            return
        due = self.anchor[0] + (pts - self.anchor[1])
        delay = due - now
        if delay > MAX_PACING_WAIT_S or delay < -MAX_PACING_WAIT_S:
            # A jump in timestamps, or we fell far behind (slow decode): restart the schedule here
            # rather than sleep through the gap or burst to catch up.
            self.anchor = (now, pts)
        elif delay > 0:
            time.sleep(delay)


def bgr_to_rgb(image: np.ndarray) -> np.ndarray:
    if image.ndim == 2:
        return np.ascontiguousarray(cv2.cvtColor(image, cv2.COLOR_GRAY2RGB))
    return np.ascontiguousarray(cv2.cvtColor(image, cv2.COLOR_BGR2RGB))


def safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.\-]+", "-", text).strip("-.")
