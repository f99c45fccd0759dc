"""The sliding-window baseline: the same DCRN recomputed over the last T frames for every update.

This is what clip-based recognizers do: every new frame, the whole T-frame clip goes through the encoder
again (``forward_sequence`` on (1, T, 3, S, S)) and the last frame's logits are the prediction. Each
backend gets the baseline on its own runtime, so the ratio compares like with like:

* ``torch`` on CPU: eager ``forward_sequence``; on CUDA: the recompute captured in a CUDA graph (as the
  step is), so the GPU ratio is not just kernel-launch overhead;
* ``onnxruntime``: the T-frame clip graph exported to ONNX and run by ONNX Runtime with the same threads;
* ``openvino``: the same clip graph compiled by OpenVINO as the step is (same threads, same precision);
* ``tensorrt``: the torch CUDA-graph recompute (the clip graph is not built into an engine here).
"""

from __future__ import annotations

import copy
import logging
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dcrn.engine.backends.step_graph import OPSET
from dcrn.models.dcrn import DCRN

log = logging.getLogger(__name__)

WindowFn = Callable[[torch.Tensor], Any]


class _LastLogits(nn.Module):
    """clip (B, T, 3, S, S) -> logits of the last frame (B, C), as a clip recognizer reports them."""

    def __init__(self, model: DCRN) -> None:
        super().__init__()
        self.model = model

    def forward(self, clip: torch.Tensor) -> torch.Tensor:
        return self.model.forward_sequence(clip)[:, -1]  # (B, C)


def window_runner(
    backend: str, model: DCRN, *, device: torch.device, dtype: torch.dtype, window: int, threads: int = 0
) -> tuple[WindowFn, str]:
    """A function that recomputes one T-frame clip on ``backend``'s runtime, and a short description."""
    shape = tuple(model.input_shape)  # (3, S, S) frames or (F,) vectors
    if backend == "onnxruntime":
        return _onnxruntime_window(_clip_graph(model, window, shape), threads), "onnxruntime clip graph"
    if backend == "openvino":
        run, precision = _openvino_window(_clip_graph(model, window, shape), threads)
        return run, f"openvino clip graph ({precision})"
    net = _LastLogits(copy.deepcopy(model)).eval()  # a copy: moving or casting it leaves the caller's model alone
    if device.type == "cuda":
        net = net.to(device=device, dtype=dtype)
        return _cuda_graph_window(net, window, shape, device, dtype), "torch clip in a CUDA graph"

    def eager(clip: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return net(clip)

    return eager, "torch eager forward_sequence"


def _clip_graph(model: DCRN, window: int, shape: tuple[int, ...]) -> Path:
    """The T-frame clip graph ``clip (1, T, 3, S, S) -> logits of the last frame`` as ONNX, in a temporary folder."""
    net = _LastLogits(copy.deepcopy(model)).to("cpu", torch.float32).eval()
    clip = torch.zeros(1, window, *shape)  # (1, T, 3, S, S)
    folder = tempfile.mkdtemp(prefix="dcrn-bench-")
    path = Path(folder) / f"window{window}.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:  # the TorchScript exporter is quick for a fixed-shape graph; the dynamo one is the fallback
            torch.onnx.export(net, (clip,), str(path), dynamo=False, opset_version=OPSET, input_names=["clip"])
        except Exception as exc:  # any exporter failure: try the other exporter
            log.debug("TorchScript export failed (%s); using the dynamo exporter", exc)
            torch.onnx.export(net, (clip,), str(path), dynamo=True, opset_version=OPSET, input_names=["clip"])
    return path


def _onnxruntime_window(path: Path, threads: int) -> WindowFn:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name

    def run(clip: torch.Tensor) -> Any:
        return session.run(None, {name: clip.detach().contiguous().numpy()})[0]

    return run


def _openvino_window(path: Path, threads: int) -> tuple[WindowFn, str]:
    from dcrn.engine.backends.openvino_backend import compile_cpu

    compiled, precision = compile_cpu(path, threads=threads)
    request = compiled.create_infer_request()

    def run(clip: torch.Tensor) -> Any:
        return request.infer([clip.detach().contiguous().numpy()], share_inputs=True)[0]

    return run, precision


def _cuda_graph_window(
    net: nn.Module, window: int, shape: tuple[int, ...], device: torch.device, dtype: torch.dtype
) -> WindowFn:
    static = torch.zeros((1, window, *shape), device=device, dtype=dtype)  # (1, T, 3, S, S)
    with torch.cuda.device(device), torch.no_grad():
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            for _ in range(3):
                net(static)
        torch.cuda.current_stream(device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = net(static)

    def run(clip: torch.Tensor) -> torch.Tensor:
        static.copy_(clip, non_blocking=True)
        graph.replay()
        return out

    return run
