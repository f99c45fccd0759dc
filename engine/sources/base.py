"""Sources: where frames come from. One factory, :func:`open_source`, turns a URI into an open source.

    source = open_source("rtsp://admin:pw@10.0.0.5/stream1", options=SourceOptions(timeout_s=5))
    image, pts, label = source.read()          # (H, W, 3) uint8 RGB, seconds, ground truth or None

URIs (DESIGN.md): an integer camera index ("0"), ``rtsp://`` / ``rtsps://`` / ``http(s)://`` URLs,
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
import os
import re
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import cv2
import numpy as np

from dcrn.engine.errors import BadSourceURI, SourceError, SourceNotFound, SourceUnreadable
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
        self._pacer = _Pacer()

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


class _Pacer:
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


def _bgr_to_rgb(image: np.ndarray) -> np.ndarray:
    if image.ndim == 2:
        return np.ascontiguousarray(cv2.cvtColor(image, cv2.COLOR_GRAY2RGB))
    return np.ascontiguousarray(cv2.cvtColor(image, cv2.COLOR_BGR2RGB))


class FileSource(Source):
    """A video file, decoded with OpenCV's FFmpeg backend; paced at its own frame rate unless told not to."""

    is_live = False
    paced = True

    def __init__(self, path: str | os.PathLike, *, name: str | None = None, options: SourceOptions) -> None:
        self.path = Path(path)
        super().__init__(str(path), name or _safe_name(self.path.stem) or "file", options)
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
        return _bgr_to_rgb(bgr), self._offset + pts, None

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
        self._pending = (_bgr_to_rgb(bgr), time.monotonic() - self._t0, None)

    def _read(self) -> Read:
        item, self._pending = self._pending, None
        if item is not None:
            return item
        ok, bgr = self._cap.read()
        if not ok or bgr is None:
            raise SourceError(f"camera {self.index}: read failed")
        return _bgr_to_rgb(bgr), time.monotonic() - self._t0, None

    def _close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None
        self._pending = None


SYNTHETIC_DEFAULTS = {"seed": 0, "fps": 30.0, "width": 320, "height": 240}


class SyntheticSource(Source):
    """The built-in procedural action stream (``dcrn.models.synth``), with ground-truth labels.

    Live (it never ends); paced at ``fps`` unless ``options.pace`` is off; pts = frame index / fps.
    """

    paced = True

    def __init__(
        self,
        *,
        seed: int = 0,
        fps: float = 30.0,
        width: int = 320,
        height: int = 240,
        name: str | None = None,
        options: SourceOptions,
        uri: str | None = None,
    ) -> None:
        self.seed, self.width, self.height = seed, width, height
        self.fps = float(fps)
        super().__init__(
            uri or f"synthetic:?seed={seed}&fps={fps:g}&width={width}&height={height}", name or "synthetic", options
        )
        self._stream = None
        self._index = 0
        self._start()

    def _open(self) -> None:
        if self._stream is not None:
            return  # a reopen continues the same stream: nothing was lost
        from dcrn.models.synth import SyntheticActionStream

        self._stream = SyntheticActionStream(seed=self.seed, fps=self.fps, size=(self.height, self.width))
        self.labels = tuple(self._stream.labels)

    def _read(self) -> Read:
        image, label = self._stream.read()
        pts = self._index / self.fps
        self._index += 1
        return np.ascontiguousarray(image, dtype=np.uint8), pts, None if label is None else int(label)

    def _close(self) -> None:
        pass  # the procedural stream holds nothing to release; reopen continues it


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.\-]+", "-", text).strip("-.")


def _parse_synthetic(uri: str, name: str | None, options: SourceOptions) -> SyntheticSource:
    query = uri[len("synthetic:") :]
    query = query[1:] if query.startswith("?") else query
    values: dict[str, float | int] = dict(SYNTHETIC_DEFAULTS)
    for key, raw in parse_qsl(query, keep_blank_values=True):
        if key not in SYNTHETIC_DEFAULTS:
            known = ", ".join(SYNTHETIC_DEFAULTS)
            raise BadSourceURI(f"bad source URI {redact(uri)!r}: unknown option {key!r} (known: {known})")
        try:
            value = float(raw) if key == "fps" else int(raw)
        except ValueError:
            raise BadSourceURI(f"bad source URI {redact(uri)!r}: {key} must be a number, got {raw!r}") from None
        if value <= 0 and key != "seed":
            raise BadSourceURI(f"bad source URI {redact(uri)!r}: {key} must be positive, got {raw!r}")
        values[key] = value
    return SyntheticSource(name=name, options=options, **values)


def open_source(uri: str | int, *, name: str | None = None, options: SourceOptions | None = None) -> Source:
    """Open ``uri`` and return the matching source, validated (its first frame decoded)."""
    options = options or SourceOptions()
    if isinstance(uri, bool) or not isinstance(uri, (str, int, os.PathLike)):
        raise BadSourceURI(f"bad source URI {uri!r}: expected a string, camera index or path")
    if isinstance(uri, int):
        if uri < 0:
            raise BadSourceURI(f"bad source URI {uri}: a camera index cannot be negative")
        return CameraSource(uri, name=name, options=options)
    if isinstance(uri, os.PathLike):
        return FileSource(uri, name=name, options=options)
    text = uri.strip()
    if not text:
        raise BadSourceURI("bad source URI '': empty")
    if text.isdigit():
        return CameraSource(int(text), name=name, options=options)
    match = re.fullmatch(r"/dev/video(\d+)", text)
    if match:
        return CameraSource(int(match[1]), name=name, options=options)
    if text.startswith("synthetic:"):
        return _parse_synthetic(text, name, options)
    try:
        scheme = urlsplit(text).scheme.lower() if re.match(r"^[A-Za-z][A-Za-z0-9+.\-]*:", text) else ""
    except ValueError as exc:  # e.g. an unclosed IPv6 bracket, "rtsp://[::1"
        raise BadSourceURI(f"bad source URI {redact(text)!r}: {exc}") from None
    if len(scheme) == 1:  # a Windows drive letter, "C:\\videos\\a.mp4"
        scheme = ""
    if scheme in STREAM_SCHEMES:
        from dcrn.engine.sources.stream import StreamSource

        return StreamSource(text, name=name, options=options)
    if scheme == "file":
        parts = urlsplit(text)
        if parts.netloc not in ("", "localhost"):
            raise BadSourceURI(f"bad source URI {redact(text)!r}: file URLs must be local")
        from urllib.parse import unquote

        return FileSource(unquote(parts.path), name=name, options=options)
    if scheme and not Path(text).exists():  # "a:b.mp4" that exists is a file name with a colon
        supported = ", ".join(f"{s}://" for s in STREAM_SCHEMES)
        raise BadSourceURI(
            f"bad source URI {redact(text)!r}: unsupported scheme {scheme!r} "
            f"(use a camera index, a file path, {supported} or synthetic:)"
        )
    return FileSource(text, name=name, options=options)


def unique_name(name: str, taken: set[str]) -> str:
    """``name``, or ``name-2``, ``name-3``, ... when it is taken: two sources with the same default name."""
    return name if name not in taken else next(f"{name}-{k}" for k in range(2, 10_000) if f"{name}-{k}" not in taken)


def quiet_native_logs() -> None:
    """OpenCV and FFmpeg print warnings straight to stderr; errors reach the user as one line anyway."""
    os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET


def source_name(uri: str | int) -> str:
    """The stream name :func:`open_source` gives ``uri`` by default, found without opening it."""
    text = str(uri).strip()
    match = re.fullmatch(r"(?:/dev/video)?(\d+)", text)
    if match:
        return f"cam{int(match[1])}"
    if text.startswith("synthetic:"):
        return "synthetic"
    try:
        scheme = urlsplit(text).scheme.lower() if re.match(r"^[A-Za-z][A-Za-z0-9+.\-]*:", text) else ""
    except ValueError:
        scheme = ""
    if scheme in STREAM_SCHEMES:
        from dcrn.engine.sources.stream import default_stream_name

        return default_stream_name(text)
    if scheme == "file":
        from urllib.parse import unquote

        text = unquote(urlsplit(text).path)
    return _safe_name(Path(text).stem) or "file"


def open_sources(
    uris: Sequence[str | int], *, names: Sequence[str | None] | None = None, options: SourceOptions | None = None
) -> list[Source]:
    """Open several sources at once, each on its own thread; returns them in the order of ``uris``.

    N cameras cost one open time, not N: one that does not answer delays start-up by one open timeout,
    and a live stream opened first does not pile up seconds of frames in its socket while the others
    open. When any fails, the others are closed and the first failure (in order) is raised.
    """
    names = list(names) if names is not None else [None] * len(uris)
    if len(names) != len(uris):
        raise ValueError(f"names must give one name per source, got {len(names)} for {len(uris)}")
    if len(uris) == 1:
        return [open_source(uris[0], name=names[0], options=options)]
    with ThreadPoolExecutor(max_workers=min(len(uris), 16), thread_name_prefix="open-source") as pool:
        futures = [
            pool.submit(open_source, uri, name=name, options=options) for uri, name in zip(uris, names, strict=True)
        ]
    opened: list[Source] = []
    failure: BaseException | None = None
    for future in futures:
        try:
            opened.append(future.result())
        except BaseException as exc:
            failure = failure or exc
    if failure is not None:
        for source in opened:
            source.close()
        raise failure
    return opened
