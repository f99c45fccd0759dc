"""The ``torch`` backend: eager on CPU; on CUDA the step is captured once per batch size in a CUDA graph.

A CUDA graph replays the recorded kernels on fixed ("static") buffers, so each step is: copy the frames
and the state rows into the static inputs, replay, copy the static outputs out. That removes the per-op
launch cost that dominates a small per-frame network (measured: 5.7 ms eager -> 0.43 ms graph on an H100).
"""

from __future__ import annotations

import copy
import logging
import os

import torch

from dcrn.engine.backends.base import precision_of
from dcrn.models.cells import State
from dcrn.models.dcrn import DCRN

log = logging.getLogger(__name__)


class TorchBackend:
    """DCRN.step in PyTorch. ``use_graph`` defaults to True on CUDA and is ignored on CPU."""

    name = "torch"

    def __init__(
        self,
        model: DCRN,
        *,
        device: torch.device,
        dtype: torch.dtype = torch.float32,
        max_batch: int = 8,
        use_graph: bool | None = None,
    ) -> None:
        self.device = device
        self.dtype = dtype
        self.precision = precision_of(dtype)
        self.max_batch = max_batch
        ref = next(model.parameters())
        foldable = model.has_foldable_batch_norm()
        if foldable or ref.device != device or ref.dtype != dtype:  # never change the caller's model in place
            model = copy.deepcopy(model).eval()
            if foldable:  # BatchNorm into the convolutions before them: one op less per block and step
                model.fold_batch_norm()
            model = model.to(device=device, dtype=dtype)
        self.model = model.eval()
        self.input_size = model.config.input_size
        self.state_names = tuple(model.state_names)
        self.state_shapes = list(model.state_shapes)
        self.use_graph = device.type == "cuda" and (True if use_graph is None else use_graph)
        self._graphs: dict[int, _GraphStep] = {}
        if self.use_graph:
            for batch in sorted({1, max_batch}):  # the common sizes up front; others on first use
                self._graph(batch)

    def initial_state(self, batch: int) -> State:
        return self.model.initial_state(batch, device=self.device, dtype=self.dtype)

    def step(self, frames: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        """frames (B, 3, S, S) on the device -> logits (B, C) float32, next state."""
        batch = frames.shape[0]
        if batch > self.max_batch:
            raise ValueError(f"batch of {batch} frames exceeds max_batch {self.max_batch}")
        if self.use_graph:
            return self._graph(batch).replay(frames, state)
        with torch.no_grad():
            logits, state = self.model.step(frames.to(self.dtype), state)  # (B, C)
        return logits.float(), state

    def close(self) -> None:
        self._graphs.clear()

    def _graph(self, batch: int) -> _GraphStep:
        graph = self._graphs.get(batch)
        if graph is None:
            graph = self._graphs[batch] = _GraphStep(self.model, batch, self.device, self.dtype)
            log.debug("captured the step in a CUDA graph for batch %d", batch)
        return graph


class _GraphStep:
    """One captured step for a fixed batch size: static inputs -> graph -> static outputs."""

    def __init__(self, model: DCRN, batch: int, device: torch.device, dtype: torch.dtype) -> None:
        self.frames = model.example_input(batch, device=device, dtype=dtype)  # (B, 3, S, S) static
        self.state_in = model.initial_state(batch, device=device, dtype=dtype)  # static state inputs
        with torch.cuda.device(device), torch.no_grad():
            # Warm up on a side stream (cuDNN/cuBLAS pick algorithms, allocate workspaces) before capture.
            side = torch.cuda.Stream(device)
            side.wait_stream(torch.cuda.current_stream(device))
            with torch.cuda.stream(side):
                for _ in range(3):
                    model.step(self.frames, self.state_in)
            torch.cuda.current_stream(device).wait_stream(side)
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph):
                logits, state_out = model.step(self.frames, self.state_in)
        self.logits = logits  # (B, C) static output
        self.state_out = tuple(state_out)  # static outputs, same shapes as state_in

    def replay(self, frames: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        self.frames.copy_(frames, non_blocking=True)
        for static, value in zip(self.state_in, state, strict=True):
            static.copy_(value, non_blocking=True)
        self.graph.replay()
        # Copies out: the next replay overwrites the static outputs.
        return self.logits.float().clone(), tuple(s.clone() for s in self.state_out)


def create(
    model: DCRN,
    *,
    device: torch.device,
    dtype: torch.dtype = torch.float32,
    max_batch: int = 8,
    cache_dir: str | os.PathLike | None = None,
    threads: int = 0,
) -> TorchBackend:
    return TorchBackend(model, device=device, dtype=dtype, max_batch=max_batch)
