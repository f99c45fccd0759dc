"""What a keypoint encoder carries from frame to frame: the tracked regions, as explicit state.

Like the recurrent cell's ``h_t``, the state is a value passed in and returned by every step, never kept
inside the encoder: a stream owns its state, a fresh :class:`TrackState` (or one from a frame of another
size) makes the next step search the whole frame with the detector, and two streams can share one encoder.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from dcrn.engine.keypoints.roi import Roi, associate


@dataclass(frozen=True)
class Track:
    """One tracked hand or person: the region its landmarks predict for the next frame."""

    id: int  # unique within a stream while tracked; a hand or person found again gets a new id
    roi: Roi
    held: Roi | None = None  # body: the region the landmarks were last read in, tried when ``roi`` loses them


@dataclass(frozen=True)
class TrackState:
    """An encoder's state: the tracks to follow on the next frame."""

    tracks: tuple[Track, ...] = ()
    next_id: int = 0  # the id the next new track gets
    frames_since_search: int = 0  # frames since the detector last ran
    frame_size: tuple[int, int] | None = None  # (width, height) the regions refer to; None: fresh

    def advanced(self, tracks: tuple[Track, ...], next_id: int, searched: bool, size: tuple[int, int]) -> TrackState:
        return replace(
            self,
            tracks=tracks,
            next_id=next_id,
            frames_since_search=0 if searched else self.frames_since_search + 1,
            frame_size=size,
        )


def check_search(wanted: int, interval: int, idle_interval: int, what: str) -> None:
    """An encoder's search settings: at least one ``what`` wanted, intervals of at least one frame."""
    if wanted < 1:
        raise ValueError(f"{what} must be at least 1, got {wanted}")
    if min(interval, idle_interval) < 1:
        raise ValueError(f"search_interval and idle_interval must be at least 1, got {interval} and {idle_interval}")


def should_search(state: TrackState, tracked: int, wanted: int, interval: int, idle_interval: int = 1) -> bool:
    """Whether the detector runs on this frame: when nothing is tracked, every ``idle_interval`` frames (1:
    every frame, MediaPipe's rule; a fresh state always searches); when fewer than ``wanted`` are, every
    ``interval`` frames; never when all are tracked."""
    if tracked == 0:
        return state.frame_size is None or state.frames_since_search + 1 >= idle_interval
    return tracked < wanted and state.frames_since_search + 1 >= interval


def tracks_with_search(
    state: TrackState,
    width: int,
    height: int,
    wanted: int,
    interval: int,
    find: Callable[[], list[Roi]],
    idle_interval: int = 1,
) -> tuple[list[Track], int, bool]:
    """The tracks this frame starts from: those carried in ``state``, plus new ones for what the detector
    (``find``, run only when :func:`should_search` says so) found outside them, up to ``wanted``.
    Returns (tracks, the next free track id, whether the detector ran). A state for frames of another
    size starts over, searching at once."""
    if state.frame_size not in (None, (width, height)):
        state = TrackState(next_id=state.next_id)
    tracks = list(state.tracks)
    next_id = state.next_id
    searched = should_search(state, len(tracks), wanted, interval, idle_interval)
    if searched:
        found = find()
        for i in associate(found, [t.roi for t in tracks])[: wanted - len(tracks)]:
            tracks.append(Track(next_id, found[i]))
            next_id += 1
    return tracks, next_id, searched


def check_frame(frame: np.ndarray) -> tuple[int, int]:
    """(width, height) of an (H, W, 3) uint8 RGB frame; a ValueError names what was given instead."""
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        raise ValueError(f"frame must be HxWx3 uint8 RGB, got {frame.shape} {frame.dtype}")
    return frame.shape[1], frame.shape[0]
