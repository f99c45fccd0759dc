"""The CUDA half of the FrameRing: device slots filled from pinned host memory on a side stream.

Imported only when a ring is built for a CUDA device, so importing the engine never creates a CUDA
context. Per slot:

- ``tensor``: (H, W, 3) uint8 device memory, allocated once (again only if the frame size changes);
- ``pinned``: a page-locked host buffer of the same shape, the staging area of the upload;
- ``ready``: an event recorded on the side stream after the upload; the consumer's stream waits on it;
- ``consumed``: an event recorded on the consumer's stream when it releases the slot; the next upload
  into this slot waits on it, so it never overwrites memory that a queued kernel still reads.

The host blocks only in two rare cases: before refilling a pinned buffer whose previous upload has not
finished yet (the ring went all the way round within one upload), and before replacing a slot whose
frame size changed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(eq=False)
class DeviceSlot:
    tensor: torch.Tensor  # (H, W, 3) uint8 on the device
    pinned: torch.Tensor  # (H, W, 3) uint8, page-locked host memory
    ready: torch.cuda.Event  # recorded on the upload stream after the copy
    consumed: torch.cuda.Event  # recorded on the consumer's stream at release
    uploaded: bool = False  # `ready` has been recorded at least once
    released: bool = False  # `consumed` has been recorded at least once


class CudaUploader:
    """Uploads uint8 frames into device slots on one side stream, asynchronously to the host."""

    def __init__(self, device: torch.device) -> None:
        if not torch.cuda.is_available():
            from dcrn.engine.errors import BackendUnavailable

            raise BackendUnavailable(f"FrameRing on {device} needs CUDA, and torch sees no CUDA device")
        index = device.index if device.index is not None else torch.cuda.current_device()
        self.device = torch.device("cuda", index)
        self.stream = torch.cuda.Stream(device=self.device)

    def _new_slot(self, shape: tuple[int, ...]) -> DeviceSlot:
        with torch.cuda.device(self.device):
            return DeviceSlot(
                tensor=torch.empty(shape, dtype=torch.uint8, device=self.device),
                pinned=torch.empty(shape, dtype=torch.uint8, pin_memory=True),
                ready=torch.cuda.Event(),
                consumed=torch.cuda.Event(),
            )

    def upload(self, slot: DeviceSlot | None, image: np.ndarray) -> DeviceSlot:
        """Start copying ``image`` into ``slot`` (made or remade to fit); returns at once."""
        if slot is not None and tuple(slot.tensor.shape) != image.shape:
            # The old device memory may still be read by queued kernels: wait before freeing it.
            if slot.released:
                slot.consumed.synchronize()
            if slot.uploaded:
                slot.ready.synchronize()
            slot = None
        if slot is None:
            slot = self._new_slot(image.shape)
        elif slot.uploaded:
            slot.ready.synchronize()  # the pinned buffer is about to be refilled: its last copy must be done
        np.copyto(slot.pinned.numpy(), image)
        with torch.cuda.device(self.device), torch.cuda.stream(self.stream):
            if slot.released:
                self.stream.wait_event(slot.consumed)
            slot.tensor.copy_(slot.pinned, non_blocking=True)
            slot.ready.record(self.stream)
        slot.uploaded = True
        return slot

    def wait_ready(self, slot: DeviceSlot) -> None:
        """Make the calling thread's current stream wait (on the GPU, not the host) for the upload."""
        torch.cuda.current_stream(self.device).wait_event(slot.ready)

    def mark_consumed(self, slot: DeviceSlot) -> None:
        """The consumer released the slot: later uploads wait for the work it has queued so far."""
        slot.consumed.record(torch.cuda.current_stream(self.device))
        slot.released = True
