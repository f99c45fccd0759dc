"""What flows between the streaming stages: frames from capture, and stream events."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np


@dataclass
class Frame:
    """One decoded frame as it leaves a source."""

    stream: str  # stream name, unique within a run ("cam0", "synthetic", ...)
    seq: int  # per-stream sequence number of decoded frames, 0-based, never reused within a run
    pts: float  # source presentation time in seconds (for live sources: since the stream was opened)
    image: np.ndarray  # (H, W, 3) uint8 RGB, C-contiguous
    wall: float = field(default_factory=time.time)  # wall-clock time of capture (records' "wall")
    captured: float = field(default_factory=time.monotonic)  # monotonic time of capture (latency accounting)
    discontinuity: bool = False  # first frame after open, reconnect, loop or seek: reset this stream's state
    label: int | None = None  # ground-truth class index, when the source knows it (synthetic streams)
    small: np.ndarray | None = None  # (S, S, 3) uint8: the image resized for the model on the capture thread


# Event names of the record schema (docs/pipeline.md) that the engine emits about streams.
STREAM_LOST = "stream_lost"
STREAM_RESTORED = "stream_restored"
STREAM_ENDED = "stream_ended"
STREAM_CHANGED = "stream_changed"  # same stream, another resolution or frame rate: the state starts afresh
ACTION_STARTED = "action_started"
ACTION_ENDED = "action_ended"


@dataclass
class StreamEvent:
    """Something that happened to a stream (not a prediction): lost, restored, ended, changed."""

    event: str  # one of STREAM_LOST, STREAM_RESTORED, STREAM_ENDED, STREAM_CHANGED
    stream: str
    frame: int  # seq of the last frame before (lost/ended) or the first after (restored) the event
    pts: float
    wall: float = field(default_factory=time.time)
    detail: str = ""  # a short human reason ("read timeout", "connection refused"), credentials redacted


@dataclass(frozen=True)
class Roi:
    """A region of interest: the part of a stream's picture the model sees (evidence keeps the whole frame).

    ``x, y, w, h`` are fractions of the frame (0..1) when ``fractions``, else pixels; a pixel region that
    reaches past the frame is clipped to it (at least one pixel stays).
    """

    x: float
    y: float
    w: float
    h: float
    fractions: bool = True

    def box(self, height: int, width: int) -> tuple[int, int, int, int]:
        """(top, bottom, left, right) of the region in a ``height`` x ``width`` frame."""
        sx, sy = (width, height) if self.fractions else (1, 1)
        left = min(max(round(self.x * sx), 0), width - 1)
        top = min(max(round(self.y * sy), 0), height - 1)
        right = min(max(round((self.x + self.w) * sx), left + 1), width)
        bottom = min(max(round((self.y + self.h) * sy), top + 1), height)
        return top, bottom, left, right

    def crop(self, image):
        """The region of an (H, W, ...) array or tensor (a view, no copy)."""
        top, bottom, left, right = self.box(int(image.shape[0]), int(image.shape[1]))
        return image[top:bottom, left:right]
