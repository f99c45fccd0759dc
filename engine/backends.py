"""Backends: one small interface over the ways a DCRN step can run, selected by name.

``create_backend(name, model, device=..., dtype=..., max_batch=...)`` returns an object with

* ``initial_state(batch) -> State``: zero state, a tuple of (B, ...) tensors on the backend's device;
* ``step(frames, state) -> (logits, state)``: frames (B, 3, S, S) float on the device -> logits (B, C)
  float32 and the next state (same shapes as the input state);
* ``close()``.

``torch`` (eager on CPU, a CUDA graph on a GPU) and ``onnxruntime`` (the exported step graph on CPU) live
in their own modules; ``tensorrt`` is imported lazily from ``dcrn.engine.backend_tensorrt``.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
from pathlib import Path
from typing import Protocol

import torch

from dcrn.engine.errors import BackendUnavailable
from dcrn.models.cells import State
from dcrn.models.dcrn import DCRN
from dcrn.models.errors import ConfigError

BACKENDS = ("torch", "onnxruntime", "tensorrt")
DEVICES = ("cpu", "cuda")
_MODULES = {
    "torch": "dcrn.engine.backend_torch",
    "onnxruntime": "dcrn.engine.backend_onnxruntime",
    "tensorrt": "dcrn.engine.backend_tensorrt",
}
_INSTALL_ADVICE = {
    "onnxruntime": "install the onnx extra: pip install 'dcrn-live[onnx]'",
    "tensorrt": "install TensorRT: pip install tensorrt (data-centre GPUs) or pip install tensorrt-rtx (GeForce RTX)",
}


class Backend(Protocol):
    name: str
    device: torch.device
    dtype: torch.dtype
    max_batch: int
    state_names: tuple[str, ...]
    state_shapes: list[tuple[int, ...]]

    def initial_state(self, batch: int) -> State: ...

    def step(self, frames: torch.Tensor, state: State) -> tuple[torch.Tensor, State]: ...

    def close(self) -> None: ...


def resolve_device(device: str | torch.device) -> torch.device:
    """``cpu``, ``cuda`` or ``cuda:N`` -> a torch.device this machine has; one-line errors otherwise."""
    text = str(device)
    try:
        resolved = torch.device(text)
    except RuntimeError:
        raise ConfigError(f"unknown device {text!r} (choose from {', '.join(DEVICES)})") from None
    if resolved.type not in DEVICES:
        raise ConfigError(f"unknown device {text!r} (choose from {', '.join(DEVICES)})")
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise BackendUnavailable(f"--device {text}: no CUDA GPU is available on this machine (use --device cpu)")
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise BackendUnavailable(f"--device {text}: this machine has {torch.cuda.device_count()} CUDA device(s)")
        if resolved.index is None:
            resolved = torch.device("cuda", torch.cuda.current_device())
    return resolved


def create_backend(
    name: str,
    model: DCRN,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    max_batch: int = 8,
    cache_dir: str | os.PathLike | None = None,
    threads: int = 0,
) -> Backend:
    """The backend ``name`` running ``model`` on ``device`` for batches of up to ``max_batch`` streams.

    ``threads``: CPU threads of backends that keep their own pool (onnxruntime); 0 = the library default.
    torch's CPU threads are process-wide (``torch.set_num_threads``), set by the application.
    """
    if name not in BACKENDS:
        raise ConfigError(f"unknown backend {name!r} (choose from {', '.join(BACKENDS)})")
    if max_batch < 1:
        raise ConfigError(f"max_batch must be >= 1, got {max_batch}")
    resolved = resolve_device(device)
    try:
        module = importlib.import_module(_MODULES[name])
    except ImportError as exc:
        advice = _INSTALL_ADVICE.get(name, "")
        raise BackendUnavailable(
            f"backend {name!r} is not available ({exc}){'; ' + advice if advice else ''}"
        ) from None
    return module.create(model, device=resolved, dtype=dtype, max_batch=max_batch, cache_dir=cache_dir, threads=threads)


def model_hash(model: DCRN) -> str:
    """A short content hash of a model's config and weights (keys caches of exported graphs)."""
    digest = hashlib.sha256()
    digest.update(json.dumps(model.config.to_dict(), sort_keys=True).encode())
    for key, value in model.state_dict().items():
        digest.update(key.encode())
        tensor = value.detach().cpu().contiguous()
        digest.update(str(tuple(tensor.shape)).encode() + str(tensor.dtype).encode())
        digest.update(tensor.view(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()[:24]


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """Where exported graphs and engines are cached: ``cache_dir``, ``$DCRN_CACHE_DIR`` or ~/.cache/dcrn."""
    if cache_dir is not None:
        return Path(cache_dir)
    if os.environ.get("DCRN_CACHE_DIR"):
        return Path(os.environ["DCRN_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "dcrn"
