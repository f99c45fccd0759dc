"""State slots: one recurrent state per stream, batched steps across streams.

The state of every stream lives as one row of a preallocated (N, ...) tensor per state name. A step for
the streams that have a frame now gathers their rows, runs one batched ``backend.step`` and scatters the
new state back, so one stream's frames only ever touch that stream's row.

A stream's row is zeroed when its frame says ``discontinuity`` (open, reconnect, loop, seek), when the
presentation time jumps forward by more than ``max_gap_s``, or when it goes backwards.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from dcrn.engine.backends.base import Backend
from dcrn.engine.frames import Frame
from dcrn.models.cells import State

log = logging.getLogger(__name__)


@dataclass
class _Slot:
    row: int
    last_pts: float | None = None
    resets: int = 0


class StateSlots:
    """Per-stream recurrent state for ``backend``, up to ``capacity`` streams."""

    def __init__(self, backend: Backend, capacity: int, *, max_gap_s: float | None = 2.0) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.backend = backend
        self.capacity = capacity
        self.max_gap_s = max_gap_s
        self._state = backend.initial_state(capacity)  # tuple of (N, ...) tensors on the backend's device
        self._slots: dict[str, _Slot] = {}
        self.batch_sizes: Counter[int] = Counter()  # batch size -> steps taken with it

    @property
    def streams(self) -> tuple[str, ...]:
        return tuple(self._slots)

    def add(self, stream: str) -> None:
        if stream in self._slots:
            return
        used = {slot.row for slot in self._slots.values()}
        free = [row for row in range(self.capacity) if row not in used]
        if not free:
            raise ValueError(f"all {self.capacity} state slots are in use; cannot add stream {stream!r}")
        self._slots[stream] = _Slot(free[0])
        for tensor in self._state:
            tensor[free[0]].zero_()

    def remove(self, stream: str) -> None:
        self._slots.pop(stream, None)

    def reset(self, stream: str) -> None:
        """Zero this stream's state: its next frame starts a new sequence."""
        slot = self._slots[stream]
        for tensor in self._state:
            tensor[slot.row].zero_()
        slot.last_pts = None
        slot.resets += 1

    def resets(self, stream: str) -> int:
        """How many times this stream's state was reset since it was added."""
        return self._slots[stream].resets

    def observe(self, frame: Frame) -> bool:
        """Note a frame about to be stepped; resets the stream's state when it starts a new sequence."""
        slot = self._slots[frame.stream]
        reason = ""
        if frame.discontinuity:
            reason = "discontinuity"
        elif slot.last_pts is not None:
            gap = frame.pts - slot.last_pts
            if gap < 0:
                reason = f"time went back {-gap:.3f} s"
            elif self.max_gap_s is not None and gap > self.max_gap_s:
                reason = f"gap of {gap:.3f} s"
        reset = bool(reason)
        if reset:
            log.debug("%s: state reset at frame %d (%s)", frame.stream, frame.seq, reason)
            self.reset(frame.stream)
        slot.last_pts = frame.pts
        return reset

    def gather(self, streams: Sequence[str]) -> State:
        rows = self._rows(streams)
        return tuple(tensor.index_select(0, rows) for tensor in self._state)  # (B, ...) each

    def scatter(self, streams: Sequence[str], state: State) -> None:
        rows = self._rows(streams)
        for tensor, value in zip(self._state, state, strict=True):
            tensor.index_copy_(0, rows, value.to(device=tensor.device, dtype=tensor.dtype))

    def step(self, streams: Sequence[str], frames: torch.Tensor) -> torch.Tensor:
        """One batched step: frames (B, 3, S, S), one per stream in ``streams`` (distinct) -> logits (B, C)."""
        if len(set(streams)) != len(streams):
            raise ValueError(f"a batch holds at most one frame per stream, got {list(streams)}")
        if frames.shape[0] != len(streams):
            raise ValueError(f"got {frames.shape[0]} frames for {len(streams)} streams")
        logits, state = self.backend.step(frames, self.gather(streams))
        self.scatter(streams, state)
        self.batch_sizes[len(streams)] += 1
        return logits

    def _rows(self, streams: Sequence[str]) -> torch.Tensor:
        device = self._state[0].device
        return torch.tensor([self._slots[s].row for s in streams], dtype=torch.long, device=device)
