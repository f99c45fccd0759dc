"""The ``onnxruntime`` backend: the exported step graph ``(frame, h_in[, c_in]) -> (logits, h_out[, c_out])``.

The graph is exported once per model into the cache folder and reused by later runs (engine.step_graph).
State travels as CPU torch tensors that share memory with the numpy arrays ORT sees.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

import onnxruntime as ort
import torch

from dcrn.engine.backends.cache import open_cached
from dcrn.engine.backends.step_graph import check_cpu_float32, check_io, exported_graph, host_arrays, io_names
from dcrn.models.cells import State
from dcrn.models.dcrn import DCRN

if TYPE_CHECKING:
    from dcrn.engine.backends.quantize import Calibration

log = logging.getLogger(__name__)


class OnnxRuntimeBackend:
    name = "onnxruntime"

    def __init__(
        self, model: DCRN, onnx_path: Path, *, max_batch: int = 8, threads: int = 0, int8: bool = False
    ) -> None:
        self.device = torch.device("cpu")
        self.int8 = int8  # the encoder runs in INT8 (a quantised graph from engine.quantize)
        self.dtype = torch.float32
        self.precision = "int8" if int8 else "fp32"
        self.max_batch = max_batch
        self.input_size = model.config.input_size
        self.state_names = tuple(model.state_names)
        self.state_shapes = list(model.state_shapes)
        self.path = onnx_path
        options = ort.SessionOptions()
        options.log_severity_level = 3  # errors only
        options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
        self._inputs, self._outputs = io_names(model)
        have_in = [i.name for i in self.session.get_inputs()]
        have_out = [o.name for o in self.session.get_outputs()]
        check_io(onnx_path, have_in, have_out, self._inputs, self._outputs)

    def initial_state(self, batch: int) -> State:
        return tuple(torch.zeros((batch, *shape), dtype=torch.float32) for shape in self.state_shapes)

    def step(self, frames: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        """frames (B, 3, S, S) float32 CPU -> logits (B, C) float32, next state."""
        feed = dict(zip(self._inputs, host_arrays([frames, *state]), strict=True))
        logits, *next_state = self.session.run(self._outputs, feed)
        return torch.from_numpy(logits), tuple(torch.from_numpy(s) for s in next_state)  # (B, C), state

    def close(self) -> None:
        self.session = None


def create(
    model: DCRN,
    *,
    device: torch.device,
    dtype: torch.dtype = torch.float32,
    max_batch: int = 8,
    cache_dir: str | os.PathLike | None = None,
    threads: int = 0,
    int8: Calibration | None = None,
) -> OnnxRuntimeBackend:
    """``int8``: the step graph with its encoder quantised to INT8 on this calibration (engine.quantize)."""
    check_cpu_float32("onnxruntime", device, dtype)

    def graph() -> Path:
        if int8 is None:
            return exported_graph(model, cache_dir)
        from dcrn.engine.backends.quantize import int8_graph

        return int8_graph(model, int8, cache_dir)

    return open_cached(
        graph, lambda path: OnnxRuntimeBackend(model, path, max_batch=max_batch, threads=threads, int8=int8 is not None)
    )
