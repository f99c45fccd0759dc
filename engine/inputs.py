"""What the step reads for one batch: preprocessed frames, or a ``features`` model's per-frame vectors.

An ordinary model reads its frames resized and normalised (:class:`~dcrn.engine.preprocess.Preprocessor`;
the capture thread has usually resized them already, ``Frame.small``). A model taught on hands, bodies or
the picture's flow reads vectors its front end makes from the full frame
(:class:`~dcrn.engine.keypoints.front.FrontEnd`): the keypoint graphs run on the pipeline's thread, each
stream with its own tracking state, which starts afresh exactly when the recurrent state does (a gap, a
reconnect, another model). The last :class:`~dcrn.engine.keypoints.front.FrontResult` of every stream is
kept for the window (landmarks, and which joints drive the decision: :func:`explain`).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np
import torch

from dcrn.engine.frames import Roi
from dcrn.engine.people import slot_name
from dcrn.engine.preprocess import Preprocessor
from dcrn.engine.ring.frame_ring import RingFrame
from dcrn.engine.slots import StateSlots
from dcrn.models.dcrn import DCRN


class ModelInputs:
    """Turns one frame per stream into the step's input batch on the backend's device."""

    def __init__(
        self, model: DCRN, *, device: torch.device, dtype: torch.dtype, threads: int = 1, people: int = 1
    ) -> None:
        self.model = model
        self.device, self.dtype = device, dtype
        self.preprocess = Preprocessor.from_config(model.config, device=device, dtype=dtype)
        self.front = None
        self._states: dict[str, object] = {}
        self._last: dict[str, object] = {}
        self._lock = threading.Lock()  # the window reads `last` from its own thread
        self.rows: list[tuple[int, int | None]] = []  # the last batch's rows: (item index, person id or None)
        if model.takes_vectors:
            from dcrn.engine.keypoints.front import FrontEnd  # OpenVINO and the keypoint graphs: only when needed

            self.front = FrontEnd.for_model(model.config, threads=threads, people=people)

    @property
    def resize_to(self) -> int | None:
        """The size capture threads may resize frames to for this model (None: it needs the full frame)."""
        return None if self.front is not None else self.model.config.input_size

    def __call__(self, items: Sequence[tuple[str, RingFrame, Roi | None, bool]]) -> torch.Tensor:
        """(stream name, frame, region of interest, whether the stream starts afresh) per stream -> the batch:
        (B, 3, S, S) frames or (B, F) vectors; one row per stream, or per person where several are followed
        (``rows`` says whose each row is)."""
        if self.front is None:
            self.rows = [(index, None) for index in range(len(items))]
            return self.preprocess([self._frame_input(item, roi) for _, item, roi, _ in items])
        from dcrn.engine.keypoints.front import FrontState

        vectors, self.rows = [], []
        for index, (name, item, roi, fresh) in enumerate(items):
            image = item.frame.image if roi is None else roi.crop(item.frame.image)
            state = FrontState() if fresh else self._states.get(name, FrontState())
            result, self._states[name] = self.front.step(np.ascontiguousarray(image), state)
            with self._lock:
                self._last[name] = result
            for person, vector in result.rows:
                self.rows.append((index, person))
                vectors.append(vector)
        batch = torch.from_numpy(np.stack(vectors))  # (R, F)
        return batch.to(device=self.device, dtype=self.dtype)

    def _frame_input(self, item: RingFrame, roi: Roi | None) -> torch.Tensor:
        """The frame resized (and cropped) on its capture thread when that matches the model, else the ring's
        tensor, cropped to the stream's region of interest."""
        small = item.frame.small
        if small is not None and small.shape[0] == self.preprocess.input_size:
            return torch.from_numpy(small)
        return item.tensor if roi is None else roi.crop(item.tensor)

    def forget(self, name: str) -> None:
        """The stream is gone: drop its front-end state."""
        self._states.pop(name, None)
        with self._lock:
            self._last.pop(name, None)

    def explained(self, name: str, slots: StateSlots):
        """(the stream's newest FrontResult, :func:`dcrn.models.explain.shares` of its current memory), or None
        for an ordinary model or a stream without a frame yet. With several people followed, the memory is
        the first person's (whose prediction the window shows). On the thread that steps ``slots``."""
        result = self.last(name)
        if result is None or name not in slots.streams:
            return None
        from dcrn.models.explain import shares

        first = slot_name(name, result.rows[0][0]) if result.rows else name
        (memory,) = slots.gather([first if first in slots.streams else name])
        return result, shares(self.model, memory[0].float().cpu().numpy())

    def last(self, name: str):
        """The stream's newest FrontResult (None for an ordinary model, or before its first frame)."""
        with self._lock:
            return self._last.get(name)
