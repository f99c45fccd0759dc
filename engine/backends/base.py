"""What every backend is: the interface the pipeline steps through, and what names a model's graphs.

A backend (one module per runtime: ``torch_backend``, ``onnxruntime_backend``, ``openvino_backend``,
``tensorrt_backend``) has a ``create(model, *, device, dtype, max_batch, cache_dir, threads, ...)``
function returning an object with

* ``initial_state(batch) -> State``: zero state, a tuple of (B, ...) tensors on the backend's device;
* ``step(frames, state) -> (logits, state)``: frames (B, 3, S, S) float on the device -> logits (B, C)
  float32 and the next state (same shapes as the input state);
* ``close()``.

:mod:`dcrn.engine.backends.choice` picks and opens one by name.
"""

from __future__ import annotations

import hashlib
import json
from typing import Protocol

import torch

from dcrn.models.cells import State
from dcrn.models.dcrn import DCRN


class Backend(Protocol):
    name: str
    device: torch.device
    dtype: torch.dtype
    precision: str  # what the step computes in: fp32, fp16, bf16 or int8 (see BackendChoice)
    max_batch: int
    state_names: tuple[str, ...]
    state_shapes: list[tuple[int, ...]]

    def initial_state(self, batch: int) -> State: ...

    def step(self, frames: torch.Tensor, state: State) -> tuple[torch.Tensor, State]: ...

    def close(self) -> None: ...


def precision_of(dtype: torch.dtype) -> str:
    """fp32, fp16 or bf16: the name of a backend's precision that runs in ``dtype`` throughout."""
    return {torch.float16: "fp16", torch.bfloat16: "bf16"}.get(dtype, "fp32")


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
