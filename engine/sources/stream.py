"""Network streams (``rtsp://``, ``rtsps://``, ``http(s)://``) decoded with PyAV, or OpenCV's FFmpeg.

Why PyAV first (``SourceOptions.backend="auto"`` picks it whenever ``av`` is installed):

- its options are per stream (``av.open(url, options=...)``); OpenCV takes FFmpeg options only from
  the process-wide ``OPENCV_FFMPEG_CAPTURE_OPTIONS`` variable, which every stream opened at the same
  time would share (we set it under a lock for the OpenCV path);
- its errors say what went wrong (connection refused, 401, 404, timeout), so a bad URL fails with the
  right error class and a useful message; OpenCV only says "not opened", and we have to probe the
  TCP port ourselves to tell an unreachable host from a refused stream;
- frames carry the stream's own timestamps, and it showed about 40 ms less delay than OpenCV on the
  same RTSP stream here; open and read timeouts are FFmpeg interrupt callbacks, so they hold for every
  protocol;
- with a small probe (``probesize``/``analyzeduration``, part of ``low_delay``) the first frame
  arrives about 0.3 s after connecting, instead of about 1.1 s: it makes reconnects quick.

OpenCV (a hard dependency, PyAV is optional) is the fallback and can be asked for by name. Neither
recovers once the server has gone: a failed read raises :class:`SourceError`, and the capture thread
reopens the source with backoff.

Timeouts: opening (connect to first decoded frame) is bounded by ``options.timeout_s``; after that, no
frame for ``options.stall_s`` raises :class:`SourceStalled` (a frozen camera keeps its TCP connection
open and sends nothing; one that sends only undecodable data is stalled too).

pts are seconds since the source was first opened, built from the stream's timestamps within one
connection and from the monotonic clock across reconnects, so they keep growing: a timestamp that
goes back, or leaps ahead of the wall clock, is re-anchored to the wall clock (``timestamp_jumps``
counts them).
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import threading
import time
from urllib.parse import urlsplit

import cv2
import numpy as np

from dcrn.engine.errors import (
    BadSourceURI,
    SourceError,
    SourceNotFound,
    SourceStalled,
    SourceUnreachable,
    SourceUnreadable,
)
from dcrn.engine.redact import redact
from dcrn.engine.sources.base import Read, Source, SourceOptions, bgr_to_rgb, safe_name

log = logging.getLogger(__name__)

DEFAULT_PORTS = {"rtsp": 554, "rtsps": 322, "http": 80, "https": 443}
MAX_BAD_PACKETS = 50  # consecutive undecodable packets before the stream counts as lost
MAX_PTS_LEAD_S = 1.0  # a timestamp step this much longer than the wall-clock step is a jump, not time
# FFmpeg's RTSP demuxer gives up on a silent connection only after its interrupt callback has fired
# twice in a row through PyAV, three times through OpenCV (measured against a SIGSTOPped
# gst-rtsp-server): each read's timeout is the stall time divided by that, so a stall ends within stall_s.
STALL_TIMEOUTS = {"pyav": 2, "opencv": 3}
_OPENCV_ENV = "OPENCV_FFMPEG_CAPTURE_OPTIONS"
_opencv_env_lock = threading.Lock()


def ffmpeg_options(scheme: str, low_delay: bool) -> dict[str, str]:
    """FFmpeg options for a stream: TCP for RTSP; for low delay, a small probe and no demuxer buffering.

    ``fflags=nobuffer`` is for RTSP only: it discards what was read while probing, which for a live
    camera is a few stale frames, but for an HTTP file or MJPEG stream is its first frame.
    """
    options: dict[str, str] = {}
    rtsp = scheme in ("rtsp", "rtsps")
    if rtsp:
        options["rtsp_transport"] = "tcp"  # no lost UDP packets, passes NAT and firewalls
    if low_delay:
        if rtsp:
            options["fflags"] = "nobuffer"
        options.update(flags="low_delay", probesize="65536", analyzeduration="200000")
    return options


def parse_stream_url(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) of a stream URL; :class:`BadSourceURI` when it is malformed."""
    shown = redact(url)
    if any(c.isspace() for c in url):
        raise BadSourceURI(f"bad source URI {shown!r}: contains white space")
    try:
        parts = urlsplit(url)
    except ValueError as exc:  # e.g. an unclosed IPv6 bracket
        raise BadSourceURI(f"bad source URI {shown!r}: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise BadSourceURI(f"bad source URI {shown!r}: unsupported scheme {scheme!r}")
    if not url[len(scheme) + 1 :].startswith("//") or not parts.hostname:
        raise BadSourceURI(f"bad source URI {shown!r}: no host (expected {scheme}://HOST[:PORT]/PATH){_hint(url)}")
    try:
        port = parts.port
    except ValueError:
        raise BadSourceURI(f"bad source URI {shown!r}: the port is not a number from 1 to 65535{_hint(url)}") from None
    if port == 0:
        raise BadSourceURI(f"bad source URI {shown!r}: the port is not a number from 1 to 65535")
    return scheme, parts.hostname, port or DEFAULT_PORTS[scheme]


def _hint(url: str) -> str:
    """Why a URL with user info may have failed to parse: an unencoded '/', '?' or '#' in the password."""
    userinfo = url.partition("://")[2].rpartition("@")[0]  # up to the last "@", as redact() reads it
    if not any(c in userinfo for c in "/?#"):
        return ""
    return "; a '/', '?' or '#' in a password must be written %2F, %3F or %23, or kept in a credentials file"


def default_stream_name(url: str) -> str:
    """``host`` or ``host-lastpathsegment``: readable, no credentials, stable across runs.

    Read from the redacted URL, so that a password with an unencoded '/' (``rtsp://u:a/b@cam/x``, which a
    strict parser splits at the '/') can never end up in a stream name.
    """
    parts = urlsplit(redact(url))
    last = parts.path.rstrip("/").rsplit("/", 1)[-1]
    last = last.rsplit(".", 1)[0] if "." in last else last
    name = safe_name(f"{parts.hostname}-{last}" if last else str(parts.hostname))
    return name or "stream"


class StreamSource(Source):
    """A live network stream. ``options.backend`` picks PyAV or OpenCV (see the module docstring)."""

    def __init__(self, url: str, *, name: str | None = None, options: SourceOptions) -> None:
        self.scheme, self.host, self.port = parse_stream_url(url)
        super().__init__(url, name or default_stream_name(url), options)
        self._url = url  # the real URL, credentials included: never logged or shown
        self.backend = _pick_backend(options.backend)
        self._t0: float | None = None  # monotonic time of the first open: pts origin
        self._base: float | None = None  # pts offset of the current connection
        self._container = None
        self._packets = None
        self._video = None
        self._cap: cv2.VideoCapture | None = None
        self._queue: list[Read] = []  # frames decoded but not yet returned
        self._deadline = 0.0  # monotonic time by which the next frame must be decoded
        self._last: tuple[float, float] | None = None  # (pts, monotonic) of the last frame returned
        self.timestamp_jumps = 0  # stream timestamps that went back or leapt ahead (re-anchored)
        self._start()

    # -- open ----------------------------------------------------------------------------------

    def _open(self) -> None:
        if self._t0 is None:
            self._t0 = time.monotonic()
        self._base = None
        self._queue = []
        self._deadline = time.monotonic() + self.options.timeout_s  # the first frame: within the open timeout
        if self.backend == "pyav":
            self._open_pyav()
        else:
            self._open_opencv()
        try:
            self._queue.insert(0, self._next())  # validate: one decoded frame (any others stay queued after it)
        except SourceStalled:  # connected, but no frame within the open timeout
            self._close()
            raise SourceUnreachable(
                f"cannot open {self.uri}: connected, but no frame within {self.options.timeout_s:g} s"
            ) from None
        except SourceError as exc:
            self._close()
            raise type(exc)(f"cannot open {self.uri}: {_reason(exc, self.uri)}") from None

    def _open_pyav(self) -> None:
        import av

        timeout = self.options.timeout_s
        started = time.monotonic()
        try:
            container = av.open(
                self._url,
                options=ffmpeg_options(self.scheme, self.options.low_delay),
                timeout=(timeout, self._read_timeout()),
            )
        except Exception as exc:
            if time.monotonic() - started >= 0.9 * timeout:  # the interrupt callback cut it short
                raise SourceUnreachable(f"cannot open {self.uri}: no answer within {timeout:g} s") from None
            raise _pyav_error(exc, f"cannot open {self.uri}", timeout) from None
        if not container.streams.video:
            container.close()
            raise SourceUnreadable(f"cannot open {self.uri}: the stream has no video")
        video = container.streams.video[0]
        video.thread_type = "SLICE"  # frame threading would hold back one frame per thread
        # One thread per stream: streams decode in parallel with each other. FFmpeg's own choice (a thread
        # per core) took twice the CPU per 640x480 frame here (1.9 ms against 0.9 ms), spinning idle slices.
        video.thread_count = self.options.decode_threads
        self._container, self._video = container, video
        self._packets = container.demux(video)
        fps = video.average_rate or video.guessed_rate
        self.fps = float(fps) if fps else None

    def _open_opencv(self) -> None:
        ms = int(self.options.timeout_s * 1000)
        params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, int(self._read_timeout() * 1000)]
        env = "|".join(f"{k};{v}" for k, v in ffmpeg_options(self.scheme, self.options.low_delay).items())
        with _opencv_env_lock:  # the variable is process-wide: set it only around this open
            saved = os.environ.get(_OPENCV_ENV)
            os.environ[_OPENCV_ENV] = env
            started = time.monotonic()
            try:
                cap = cv2.VideoCapture(self._url, cv2.CAP_FFMPEG, params)
            finally:
                if saved is None:
                    os.environ.pop(_OPENCV_ENV, None)
                else:
                    os.environ[_OPENCV_ENV] = saved
        if not cap.isOpened():
            cap.release()
            if time.monotonic() - started >= 0.9 * self.options.timeout_s:
                raise SourceUnreachable(f"cannot open {self.uri}: no answer within {self.options.timeout_s:g} s")
            self._raise_for_failed_open()
        fps = cap.get(cv2.CAP_PROP_FPS)
        self.fps = float(fps) if fps and 0 < fps < 1000 else None
        self._cap = cap

    def _raise_for_failed_open(self) -> None:
        """OpenCV does not say why: probe the port to tell 'unreachable' from 'refused the stream'."""
        try:
            with socket.create_connection((self.host, self.port), timeout=self.options.timeout_s):
                pass
        except OSError as exc:  # refused, timed out, name not resolved, ...
            raise _socket_error(exc, f"cannot open {self.uri}", self.options.timeout_s) from None
        raise SourceError(
            f"cannot open {self.uri}: the server answered but the stream could not be opened "
            "(wrong path or credentials, or not video)"
        )

    # -- read ----------------------------------------------------------------------------------

    def _read_timeout(self) -> float:
        return self.options.stall_s / STALL_TIMEOUTS[self.backend]

    def _read(self) -> Read:
        item = self._queue.pop(0) if self._queue else self._next()
        self._deadline = time.monotonic() + self.options.stall_s
        return item

    def _next(self) -> Read:
        """Decode until one frame comes out; SourceError (or a subclass) when the stream is lost."""
        if self.backend == "opencv":
            ok, bgr = self._cap.read()
            if not ok or bgr is None:
                raise SourceStalled(
                    f"{self.uri}: no frame (connection lost, or no data for {self.options.stall_s:g} s)"
                )
            msec = self._cap.get(cv2.CAP_PROP_POS_MSEC)
            return bgr_to_rgb(bgr), self._pts(msec / 1000.0 if msec > 0 else None), None
        bad = 0
        while True:
            try:
                packet = next(self._packets)
            except StopIteration:
                raise SourceError(f"{self.uri}: the stream ended (server closed the connection)") from None
            except Exception as exc:
                raise _pyav_error(exc, str(self.uri), self.options.stall_s, stalled=True) from None
            if packet.size == 0 and packet.dts is None:
                raise SourceError(f"{self.uri}: the stream ended (server closed the connection)")
            try:
                frames = self._video.codec_context.decode(packet)
            except Exception as exc:  # one corrupt packet is not a lost stream; many in a row are
                bad += 1
                if bad >= MAX_BAD_PACKETS:
                    raise _pyav_error(exc, str(self.uri), self.options.stall_s) from None
                frames = []
            else:
                bad = 0
            for frame in frames:
                # threads: swscale's automatic choice started and ended threads for every frame here
                # (0.75 ms of CPU per 640x480 frame, against 0.14 ms on the capture thread alone).
                image = np.ascontiguousarray(frame.to_ndarray(format="rgb24", threads=self.options.decode_threads))
                self._queue.append((image, self._pts(frame.time), None))
            if self._queue:
                return self._queue.pop(0)
            if time.monotonic() > self._deadline:  # data flows, but nothing decodes
                raise SourceStalled(f"{self.uri}: no frame decoded for {self.options.stall_s:g} s (data is not video)")

    def _pts(self, stream_time: float | None) -> float:
        now = time.monotonic() - self._t0
        if stream_time is None:
            pts = now
        elif self._base is None:
            self._base = now - stream_time  # this connection's first frame is stamped "now"
            pts = now
        else:
            pts = self._base + stream_time
            last_pts, last_now = self._last
            step, wall_step = pts - last_pts, now - last_now
            if step < 0 or step > wall_step + MAX_PTS_LEAD_S:  # went back, or leapt ahead of the clock
                self.timestamp_jumps += 1
                level = logging.INFO if self.timestamp_jumps == 1 else logging.DEBUG  # RTSP: often at RTCP sync
                log.log(
                    level,
                    "%s: timestamps jumped by %+.3f s (%d so far): re-anchored",
                    self.name,
                    step,
                    self.timestamp_jumps,
                )
                pts = last_pts + max(wall_step, 0.001)
                self._base = pts - stream_time
        self._last = (pts, now)
        return pts

    def _close(self) -> None:
        if self._container is not None:
            try:
                self._container.close()
            finally:
                self._container, self._packets, self._video = None, None, None
        if self._cap is not None:
            self._cap.release()
            self._cap = None
        self._queue = []


def _pick_backend(choice: str) -> str:
    if choice == "opencv":
        return "opencv"
    try:
        import av  # noqa: F401
    except ImportError:
        if choice == "pyav":
            raise SourceError("the PyAV backend was asked for, but the 'av' package is not installed") from None
        return "opencv"
    return "pyav"


def _reason(exc: BaseException, uri: str) -> str:
    """The problem named in one of our messages, without its leading ``uri: ``."""
    text = str(exc)
    return text[len(uri) + 2 :] if text.startswith(f"{uri}: ") else text


def _socket_error(exc: BaseException, prefix: str, timeout: float) -> SourceError:
    if isinstance(exc, ConnectionRefusedError):
        return SourceUnreachable(f"{prefix}: connection refused (nothing listens on that port)")
    if isinstance(exc, TimeoutError):
        return SourceUnreachable(f"{prefix}: no answer within {timeout:g} s")
    if isinstance(exc, socket.gaierror):
        return SourceUnreachable(f"{prefix}: the host name cannot be resolved")
    if isinstance(exc, OSError) and exc.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH, errno.ECONNRESET):
        return SourceUnreachable(f"{prefix}: {os.strerror(exc.errno).lower()}")
    return SourceUnreachable(f"{prefix}: {redact(str(exc))}")


def _pyav_error(exc: BaseException, prefix: str, timeout: float, *, stalled: bool = False) -> SourceError:
    """Map a PyAV/FFmpeg error to the engine's error tree, with a one-line, redacted message.

    ``stalled``: the error ends a read on an open stream, so a timeout means no data for ``timeout``.
    """
    import av

    if isinstance(exc, SourceError):
        return exc
    name = type(exc).__name__
    message = getattr(exc, "strerror", None) or str(exc)
    if isinstance(exc, (av.error.ExitError, TimeoutError)) or "timed out" in message.lower():
        if stalled:
            return SourceStalled(f"{prefix}: no data for {timeout:g} s (the camera froze or the network stalled)")
        return SourceUnreachable(f"{prefix}: no answer within {timeout:g} s")
    if isinstance(exc, ConnectionRefusedError):
        return SourceUnreachable(f"{prefix}: connection refused (nothing listens on that port)")
    if name == "HTTPNotFoundError":
        return SourceNotFound(f"{prefix}: the server has no stream at this path (404 Not Found)")
    if name in ("HTTPUnauthorizedError", "HTTPForbiddenError"):
        return SourceError(f"{prefix}: the server refused the credentials ({message.strip()})")
    if isinstance(exc, OSError) and exc.errno == errno.EPERM:  # FFmpeg's RTSP PLAY answered with an error status
        return SourceError(f"{prefix}: the server refused to start the stream")
    if isinstance(exc, av.error.InvalidDataError):
        return SourceUnreadable(f"{prefix}: not a video stream ({message.strip()})")
    if isinstance(exc, OSError) and exc.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH, errno.ECONNRESET, errno.EIO):
        return SourceUnreachable(f"{prefix}: {redact(message.strip())}")
    return SourceError(f"{prefix}: {redact(message.strip())}")
