"""The ``onnxruntime`` backend: the exported step graph ``(frame, h_in[, c_in]) -> (logits, h_out[, c_out])``.

The graph is exported once per model (keyed by a hash of config and weights) into the cache folder and
reused by later runs. State travels as CPU torch tensors that share memory with the numpy arrays ORT sees.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import onnxruntime as ort
import torch

from dcrn.engine.backends import cache_root, model_hash
from dcrn.engine.errors import BackendUnavailable
from dcrn.models.cells import State
from dcrn.models.dcrn import DCRN
from dcrn.models.errors import ConfigError

if TYPE_CHECKING:
    from dcrn.engine.quantize import Calibration

log = logging.getLogger(__name__)
# The TorchScript exporter (opset 17) exports in 0.4-1.8 s; the torch.export one (opset 18) took 3-20 s
# here for about the same ONNX Runtime step time on CPU (seed CNN 112 px: 1.6 vs 1.4 ms; MobileNetV3: 1.6
# vs 1.9 ms), so the CPU backend uses 17: a first run on a new model starts quickly.
OPSET = 17


class OnnxRuntimeBackend:
    name = "onnxruntime"

    def __init__(
        self, model: DCRN, onnx_path: Path, *, max_batch: int = 8, threads: int = 0, int8: bool = False
    ) -> None:
        self.device = torch.device("cpu")
        self.int8 = int8  # the encoder runs in INT8 (a quantised graph from engine.quantize)
        self.dtype = torch.float32
        self.max_batch = max_batch
        self.input_size = model.config.input_size
        self.state_names = tuple(model.state_names)
        self.state_shapes = list(model.state_shapes)
        self.path = onnx_path
        options = ort.SessionOptions()
        options.log_severity_level = 3  # errors only
        options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
        self._inputs = ["frame", *(f"{n}_in" for n in self.state_names)]
        self._outputs = ["logits", *(f"{n}_out" for n in self.state_names)]
        have_in = [i.name for i in self.session.get_inputs()]
        have_out = [o.name for o in self.session.get_outputs()]
        if sorted(have_in) != sorted(self._inputs) or not set(self._outputs) <= set(have_out):
            raise BackendUnavailable(
                f"{onnx_path}: step graph has inputs {have_in} and outputs {have_out}, "
                f"expected {self._inputs} -> {self._outputs}"
            )

    def initial_state(self, batch: int) -> State:
        return tuple(torch.zeros((batch, *shape), dtype=torch.float32) for shape in self.state_shapes)

    def step(self, frames: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        """frames (B, 3, S, S) float32 CPU -> logits (B, C) float32, next state."""
        tensors = [frames, *state]
        feed = {name: t.detach().float().contiguous().numpy() for name, t in zip(self._inputs, tensors, strict=True)}
        logits, *next_state = self.session.run(self._outputs, feed)
        return torch.from_numpy(logits), tuple(torch.from_numpy(s) for s in next_state)  # (B, C), state

    def close(self) -> None:
        self.session = None


def exported_graph(model: DCRN, cache_dir: str | os.PathLike | None = None) -> Path:
    """The model's step graph in the cache, exported now if it is not there yet (atomically)."""
    try:
        from dcrn.models.export import export_onnx
    except ImportError as exc:
        raise BackendUnavailable(f"ONNX export is not available ({exc})") from None
    folder = cache_root(cache_dir) / "onnx"
    path = folder / f"{model_hash(model)}-opset{OPSET}.onnx"
    if path.is_file():
        return path
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BackendUnavailable(f"cannot create the cache folder {folder}: {exc.strerror or exc}") from None
    log.info("exporting the step graph to %s", path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".onnx", dir=folder)
    os.close(fd)
    try:
        cpu_model = model if next(model.parameters()).device.type == "cpu" else _cpu_copy(model)
        export_onnx(cpu_model.eval(), tmp, opset=OPSET)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return path


def _cpu_copy(model: DCRN) -> DCRN:
    import copy

    return copy.deepcopy(model).to("cpu", torch.float32)


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
    if device.type != "cpu":
        raise BackendUnavailable(
            f"the onnxruntime backend runs on the CPU; for --device {device.type} use --backend torch or tensorrt"
        )
    if dtype != torch.float32:
        raise ConfigError(f"the onnxruntime backend runs float32, got {dtype}")
    if int8 is not None:
        from dcrn.engine.quantize import int8_graph

        path = int8_graph(model, int8, cache_dir)
    else:
        path = exported_graph(model, cache_dir)
    return OnnxRuntimeBackend(model, path, max_batch=max_batch, threads=threads, int8=int8 is not None)
