"""The exported step graph ``(frame, h_in[, c_in]) -> (logits, h_out[, c_out])`` that the CPU runtimes run.

Exported once per model (keyed by a hash of config and weights) into the cache folder and reused by later
runs; the onnxruntime and openvino backends (and the INT8 quantiser) read the same file. Needs only torch
and the ``onnx`` package, not a runtime. The helpers below are what both CPU backends check and feed.
"""

from __future__ import annotations

import copy
import logging
import os
from pathlib import Path

import numpy as np
import torch

from dcrn.engine.backends.base import model_hash
from dcrn.engine.backends.cache import cached_file
from dcrn.engine.errors import BackendUnavailable
from dcrn.models.dcrn import DCRN
from dcrn.models.errors import ConfigError
from dcrn.models.files import cache_root

log = logging.getLogger(__name__)
# The TorchScript exporter (opset 17) exports in 0.4-1.8 s; the torch.export one (opset 18) took 3-20 s
# here for about the same ONNX Runtime step time on CPU (seed CNN 112 px: 1.6 vs 1.4 ms; MobileNetV3: 1.6
# vs 1.9 ms), so the CPU backends use 17: a first run on a new model starts quickly.
OPSET = 17


def exported_graph(model: DCRN, cache_dir: str | os.PathLike | None = None) -> Path:
    """The model's step graph in the cache, exported now if it is not there yet (atomically)."""
    try:
        from dcrn.models.export import export_onnx
    except ImportError as exc:
        raise BackendUnavailable(f"ONNX export is not available ({exc})") from None
    path = cache_root(cache_dir) / "onnx" / f"{model_hash(model)}-opset{OPSET}.onnx"

    def export(tmp: Path) -> None:
        log.info("exporting the step graph to %s", path)
        on_cpu = next(model.parameters()).device.type == "cpu"
        cpu_model = model if on_cpu else copy.deepcopy(model).to("cpu", torch.float32)
        export_onnx(cpu_model.eval(), tmp, opset=OPSET)

    return cached_file(path, export)


def check_cpu_float32(backend: str, device: torch.device, dtype: torch.dtype) -> None:
    """The CPU runtimes take float32 frames and state on the CPU; one-line errors otherwise."""
    if device.type != "cpu":
        raise BackendUnavailable(
            f"the {backend} backend runs on the CPU; for --device {device.type} use --backend torch or tensorrt"
        )
    if dtype != torch.float32:
        raise ConfigError(f"the {backend} backend runs float32 frames and state, got {dtype}")


def io_names(model: DCRN) -> tuple[list[str], list[str]]:
    """The step graph's input names (frame, then the state) and output names (logits, then the next state)."""
    state = model.state_names
    return ["frame", *(f"{n}_in" for n in state)], ["logits", *(f"{n}_out" for n in state)]


def check_io(path: Path, have_in: list[str], have_out: list[str], inputs: list[str], outputs: list[str]) -> None:
    """A graph whose inputs are not ``inputs`` or whose outputs lack one of ``outputs`` is not this model's."""
    if sorted(have_in) != sorted(inputs) or not set(outputs) <= set(have_out):
        raise BackendUnavailable(
            f"{path}: step graph has inputs {have_in} and outputs {have_out}, expected {inputs} -> {outputs}"
        )


def host_arrays(tensors: list[torch.Tensor]) -> list[np.ndarray]:
    """CPU float32 tensors as contiguous numpy arrays that share their memory (a copy only where needed)."""
    return [t.detach().float().contiguous().numpy() for t in tensors]
