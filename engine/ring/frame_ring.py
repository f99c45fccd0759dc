"""FrameRing: a fixed set of frame slots between one capture thread and the model, newest wins.

The producer (a capture thread) never blocks: :meth:`FrameRing.put` takes a free slot, or, when every
slot holds a frame nobody has read yet, overwrites the OLDEST unread frame and counts it in
``dropped``. The consumer takes the oldest unread frame with :meth:`FrameRing.get`, uses it, and gives
the slot back with :meth:`RingFrame.release` (or a ``with`` block). A slot is only ever in one of four
states, changed under one lock, so a slot that is being written is never handed out and a slot that is
being read is never overwritten::

    FREE --put--> WRITING --> READY --get--> READING --release--> FREE
                                 \\--put (ring full, oldest unread)--> WRITING   (dropped += 1)

On CPU a slot holds the frame's own host array (decoders hand out a fresh array per frame, so nothing
is copied and nothing is overwritten behind the consumer's back). On CUDA each slot is preallocated
device memory plus a pinned host staging buffer: :meth:`put` copies the uint8 image into pinned memory,
starts the upload on a side stream and records a per-slot event; :meth:`get` makes the consumer's
current stream wait on that event, so kernels the consumer queues read the slot only after the upload
finished, and the host never waits. :meth:`RingFrame.release` records an event on the consumer's stream
that the next upload into that slot waits on, so an upload never overwrites memory a queued kernel still
reads. Only uint8 crosses the bus. The CUDA half lives in :mod:`dcrn.engine.ring.cuda`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from enum import Enum

import numpy as np
import torch

from dcrn.engine.frames import Frame

log = logging.getLogger(__name__)


class SlotState(Enum):
    FREE = "free"
    WRITING = "writing"
    READY = "ready"
    READING = "reading"


@dataclass(eq=False)
class _Slot:
    index: int
    state: SlotState = SlotState.FREE
    frame: Frame | None = None
    tensor: torch.Tensor | None = None  # (H, W, 3) uint8 on the ring's device
    device_slot: object | None = None  # ring_cuda.DeviceSlot on CUDA


@dataclass(eq=False)
class RingFrame:
    """One frame handed to the consumer. Valid until :meth:`release`; use it as a context manager."""

    frame: Frame  # metadata; frame.image is the host array (H, W, 3) uint8 RGB
    tensor: torch.Tensor  # (H, W, 3) uint8 on the ring's device; do not keep it after release()
    _ring: FrameRing = field(repr=False)
    _slot: _Slot = field(repr=False)
    _released: bool = field(default=False, repr=False)

    def release(self) -> None:
        """The consumer is done with the slot; it may be reused. Calling it again does nothing."""
        if not self._released:
            self._released = True
            self._ring._release(self._slot)

    def __enter__(self) -> RingFrame:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class FrameRing:
    """``capacity`` preallocated frame slots between one producer thread and one consumer.

    ``put`` never blocks; ``get`` hands out the oldest unread frame. ``dropped`` counts frames that were
    overwritten (or refused because the consumer held every slot) before anyone read them; ``written``
    counts every ``put``. ``notify`` (optional) is set after every put and on close, so one consumer can
    wait on several rings with a single ``threading.Event``.

    ``overwrite=False`` makes a lossless ring for sources that should not lose frames (a file read as
    fast as possible): ``put`` then waits for a free slot instead of overwriting, and ``close()``
    releases a waiting ``put`` (its frame is ignored). Nothing is ever dropped.
    """

    def __init__(
        self,
        capacity: int = 4,
        device: str | torch.device = "cpu",
        *,
        notify: threading.Event | None = None,
        overwrite: bool = True,
    ) -> None:
        if capacity < 1:
            raise ValueError(f"FrameRing capacity must be at least 1, got {capacity}")
        self.capacity = capacity
        self.device = torch.device(device)
        self.notify = notify
        self.overwrite = overwrite
        self.dropped = 0
        self.written = 0
        self._slots = [_Slot(i) for i in range(capacity)]
        self._unread: deque[_Slot] = deque()  # READY slots, oldest first
        self._lock = threading.Lock()
        self._readable = threading.Condition(self._lock)
        self._space = threading.Condition(self._lock)  # a slot became free, or the ring closed
        self._put_lock = threading.Lock()  # one writer at a time, even if put() is called from two threads
        self._closed = False
        self._uploader = None
        if self.device.type == "cuda":
            from dcrn.engine.ring.cuda import CudaUploader

            self._uploader = CudaUploader(self.device)
        elif self.device.type != "cpu":
            raise ValueError(f"FrameRing device must be cpu or cuda, got {self.device}")

    @property
    def stream(self) -> torch.cuda.Stream | None:
        """The side CUDA stream that uploads run on (None on CPU)."""
        return self._uploader.stream if self._uploader is not None else None

    @property
    def pending(self) -> int:
        """Frames written and not yet taken by ``get``."""
        with self._lock:
            return len(self._unread)

    @property
    def closed(self) -> bool:
        return self._closed

    def put(self, frame: Frame) -> None:
        """Store ``frame``, overwriting the oldest unread frame when every slot holds one. Never blocks.

        With ``overwrite=False`` it waits for a free slot instead (or until the ring is closed).
        """
        image = frame.image
        if not (isinstance(image, np.ndarray) and image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8):
            got = f"{getattr(image, 'shape', None)} {getattr(image, 'dtype', type(image).__name__)}"
            raise ValueError(f"frame image must be HxWx3 uint8, got {got}")
        with self._put_lock:
            with self._lock:
                if not self.overwrite:
                    while not self._closed and not any(s.state is SlotState.FREE for s in self._slots):
                        self._space.wait()
                if self._closed:
                    log.debug("frame %s/%d put after close, ignored", frame.stream, frame.seq)
                    return
                self.written += 1
                slot = self._take_slot_for_writing()
                if slot is None:  # the consumer holds every slot: the new frame is the one dropped
                    self.dropped += 1
                    return
            try:
                self._fill(slot, frame)
            except BaseException:
                with self._lock:
                    slot.state, slot.frame, slot.tensor = SlotState.FREE, None, None
                    self._space.notify()
                raise
            with self._lock:
                slot.frame = frame
                slot.state = SlotState.READY
                self._unread.append(slot)
                self._readable.notify()
        if self.notify is not None:
            self.notify.set()

    def get(self, timeout: float | None = None) -> RingFrame | None:
        """The oldest unread frame; None after ``timeout`` seconds, or once closed and drained."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while not self._unread:
                if self._closed:
                    return None
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return None
                self._readable.wait(remaining)
            slot = self._unread.popleft()
            slot.state = SlotState.READING
            frame, tensor = slot.frame, slot.tensor
        if self._uploader is not None:
            self._uploader.wait_ready(slot.device_slot)
        return RingFrame(frame=frame, tensor=tensor, _ring=self, _slot=slot)

    def close(self) -> None:
        """No more frames: waiting and later ``get`` calls drain what is unread, then return None."""
        with self._lock:
            self._closed = True
            self._readable.notify_all()
            self._space.notify_all()
        if self.notify is not None:
            self.notify.set()

    def __len__(self) -> int:
        return self.pending

    def __repr__(self) -> str:
        return (
            f"FrameRing(capacity={self.capacity}, device={self.device}, pending={self.pending}, "
            f"written={self.written}, dropped={self.dropped}, closed={self._closed})"
        )

    # -- internals ---------------------------------------------------------------------------------

    def _take_slot_for_writing(self) -> _Slot | None:
        """Under the lock: a FREE slot, else the oldest READY one (counted as dropped), else None."""
        for slot in self._slots:
            if slot.state is SlotState.FREE:
                slot.state = SlotState.WRITING
                return slot
        if self._unread:
            slot = self._unread.popleft()
            self.dropped += 1
            slot.state = SlotState.WRITING
            slot.frame = None
            return slot
        return None

    def _fill(self, slot: _Slot, frame: Frame) -> None:
        """Outside the lock: make ``slot.tensor`` hold ``frame.image`` (slot state is WRITING)."""
        image = frame.image
        if self._uploader is None:
            slot.tensor = torch.from_numpy(np.ascontiguousarray(image))
        else:
            slot.device_slot = self._uploader.upload(slot.device_slot, image)
            slot.tensor = slot.device_slot.tensor

    def _release(self, slot: _Slot) -> None:
        if self._uploader is not None:
            self._uploader.mark_consumed(slot.device_slot)
        with self._lock:
            if slot.state is SlotState.READING:
                slot.state = SlotState.FREE
                slot.frame = None
                if self._uploader is None:
                    slot.tensor = None  # the host array belongs to the frame; drop the reference
                self._space.notify()
