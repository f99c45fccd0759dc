"""Capture: one thread per source that reads frames, stamps them and puts them into a FrameRing.

The thread never waits for the model (``FrameRing.put`` never blocks). It numbers frames (``seq``,
0-based, never reused), stamps wall and monotonic capture times, and marks the first frame, and the
first frame after every reopen or loop, as a discontinuity so the model resets that stream's state.

A live source that fails to read is lost: the thread emits ``stream_lost`` once, then reopens it with
exponential backoff (``backoff_s[0]`` doubling up to ``backoff_s[1]``), and emits ``stream_restored``
with the first frame that flows again. A read fails when the connection breaks, and also when no frame
came for the source's stall time (a frozen camera keeps its connection open). Retries go on for as long
as the capture runs, one at a time, each bounded by the source's open timeout. A file that ends emits
``stream_ended`` and closes the ring.

With ``resize_to`` the thread also resizes each frame to the model's input size (``Frame.small``, the
area resize that training used): that work then runs beside the model, on as many threads as there are
streams, instead of on the model's thread (OpenCV releases the GIL while it resizes).

A frame whose resolution or frame rate differs from the previous one (a camera that came back with
other settings) is a discontinuity, and ``stream_changed`` says what changed; it is emitted before that
frame is put (so before ``stream_restored`` after a reconnect).
When the thread exits, for whatever reason, it closes the source and the ring, so a consumer waiting
in ``ring.get()`` wakes up, drains what is left and sees None.

``stop()`` makes the thread exit promptly: at once during backoff, otherwise after the current read
(bounded by the source's read timeout) or reopen attempt (bounded by its open timeout). One ring
belongs to one capture: the capture closes it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import cv2
import numpy as np

from dcrn.engine.errors import SourceError
from dcrn.engine.frames import STREAM_CHANGED, STREAM_ENDED, STREAM_LOST, STREAM_RESTORED, Frame, Roi, StreamEvent
from dcrn.engine.redact import redact
from dcrn.engine.ring.frame_ring import FrameRing
from dcrn.engine.sources.base import Source

log = logging.getLogger(__name__)


class Capture:
    """Reads ``source`` (already open) on its own thread into ``ring``; reports events via ``on_event``."""

    def __init__(
        self,
        source: Source,
        ring: FrameRing,
        *,
        on_event: Callable[[StreamEvent], None],
        backoff_s: tuple[float, float] = (0.5, 8.0),
        resize_to: int | None = None,
        roi: Roi | None = None,
    ) -> None:
        first, cap = backoff_s
        if not 0 < first <= cap:
            raise ValueError(f"backoff_s must be (first, cap) with 0 < first <= cap, got {backoff_s}")
        self.source = source
        self.ring = ring
        self.on_event = on_event
        self.backoff_s = (float(first), float(cap))
        self.resize_to = resize_to  # also put the frame resized to resize_to x resize_to (Frame.small)
        self.roi = roi  # Frame.small is made from this region of the frame (the model sees only it)
        self.ended = False  # a non-looping file reached its end (stream_ended was emitted)
        self.frames = 0  # frames put into the ring
        self.reconnects = 0  # successful reopens after a loss
        self.changes = 0  # resolution or frame-rate changes (stream_changed events)
        self.error: BaseException | None = None  # what ended the thread, if it was not a clean stop or end
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"capture-{source.name}", daemon=True)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    @property
    def name(self) -> str:
        return self.source.name

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Ask the thread to exit; returns at once (use :meth:`join` to wait).

        A lossless ring (``overwrite=False``) is closed here too, so a put that waits for the consumer
        is released.
        """
        self._stop.set()
        if not self.ring.overwrite:
            self.ring.close()

    def join(self, timeout: float | None = None) -> None:
        if self._thread.ident is not None:
            self._thread.join(timeout)

    def __enter__(self) -> Capture:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
        self.join()

    # -- the thread ----------------------------------------------------------------------------

    def _emit(self, event: str, frame: int, pts: float, detail: str = "") -> None:
        record = StreamEvent(event=event, stream=self.source.name, frame=frame, pts=pts, detail=redact(detail))
        log.info("%s: %s%s", self.source.name, event, f" ({record.detail})" if record.detail else "")
        try:
            self.on_event(record)
        except Exception:  # a failing listener must not kill capture
            log.exception("%s: on_event failed for %s", self.source.name, event)

    def _run(self) -> None:
        source, seq, last_pts = self.source, 0, 0.0
        epoch: int | None = None  # source epoch of the last frame put; None: the next frame is the first
        shape: tuple[int, int, float | None] | None = None  # (height, width, fps) of the last frame put
        lost = False
        try:
            while not self._stop.is_set():
                try:
                    item = source.read()
                except Exception as exc:
                    if not source.is_live:
                        # A file that cannot be decoded further ends like a file that ends.
                        log.warning("%s: read failed, treating as the end: %s", source.name, redact(str(exc)))
                        item = None
                    else:
                        if not lost:
                            lost = True
                            self._emit(STREAM_LOST, max(seq - 1, 0), last_pts, _detail(exc))
                        if not self._reopen_with_backoff():
                            break
                        self.reconnects += 1
                        continue
                if item is None:
                    self.ended = True
                    self._emit(STREAM_ENDED, max(seq - 1, 0), last_pts, "end of file")
                    break
                image, pts, label = item
                discontinuity = epoch != source.epoch
                epoch = source.epoch
                now_shape = (image.shape[0], image.shape[1], round(source.fps, 3) if source.fps else None)
                changed = shape is not None and _differs(now_shape, shape)
                discontinuity = discontinuity or changed
                if changed:  # before the frame is put: the pipeline writes it before the frame's prediction
                    self.changes += 1
                    self._emit(STREAM_CHANGED, seq, pts, f"{_describe(now_shape)}, was {_describe(shape)}")
                shape = now_shape
                self.ring.put(
                    Frame(
                        stream=source.name,
                        seq=seq,
                        pts=pts,
                        image=image,
                        wall=time.time(),
                        captured=time.monotonic(),
                        discontinuity=discontinuity,
                        label=label,
                        small=self._small(image),
                    )
                )
                if lost:
                    lost = False
                    self._emit(STREAM_RESTORED, seq, pts)
                seq += 1
                self.frames = seq
                last_pts = pts
        except BaseException as exc:  # a bug, not a stream problem: record it, let the consumer see the end
            self.error = exc
            log.exception("%s: capture thread failed", source.name)
        finally:
            source.close()
            self.ring.close()

    def _small(self, image: np.ndarray) -> np.ndarray | None:
        size = self.resize_to
        if size is None:
            return None
        if self.roi is not None:
            image = self.roi.crop(image)
        elif image.shape[:2] == (size, size):
            return None
        return cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)  # as models.video_io.resize_frames

    def _reopen_with_backoff(self) -> bool:
        """Reopen until it works (True) or stop() is called (False); waits double up to the cap."""
        delay, cap = self.backoff_s
        while True:
            if self._stop.wait(delay):
                return False
            try:
                self.source.reopen()
                log.info("%s: reopened", self.source.name)
                return True
            except SourceError as exc:
                log.debug("%s: reopen failed (next try in %.1f s): %s", self.source.name, min(delay * 2, cap), exc)
            except Exception as exc:  # unexpected, but a live source should keep trying
                log.warning("%s: reopen failed unexpectedly: %s", self.source.name, redact(str(exc)))
            delay = min(delay * 2, cap)


def _differs(shape: tuple[int, int, float | None], before: tuple[int, int, float | None]) -> bool:
    """Another size, or another frame rate when both are known (OpenCV does not always know it)."""
    if shape[:2] != before[:2]:
        return True
    return shape[2] is not None and before[2] is not None and shape[2] != before[2]


def _describe(shape: tuple[int, int, float | None]) -> str:
    height, width, fps = shape
    return f"{width}x{height}" + (f" at {fps:g} fps" if fps else "")


def _detail(exc: BaseException) -> str:
    """A short reason for an event: the message without its leading URI."""
    text = redact(str(exc)).splitlines()[0] if str(exc) else type(exc).__name__
    head, sep, tail = text.partition(": ")
    return tail if sep and "://" in head else text
