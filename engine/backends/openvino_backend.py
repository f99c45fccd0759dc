"""The ``openvino`` backend: the exported step graph compiled by OpenVINO's CPU plugin, bf16 where it is native.

It compiles the same cached ONNX step graph as the onnxruntime backend (engine.step_graph) with one
inference stream, the latency hint and ``threads`` threads, once per batch size with that size fixed (1
and ``max_batch`` up front, others on first use, as the torch backend captures CUDA graphs): with a fixed
batch of 1 the fight-cctv step is ~8% faster than with the graph's dynamic batch axis.

Precision is stated, not left to OpenVINO's default: **bf16** where the CPU runs bf16 natively
(AVX512_BF16 or AMX: OpenVINO lists ``BF16`` among the CPU's ``OPTIMIZATION_CAPABILITIES``), float32
elsewhere. Inputs and outputs stay float32: OpenVINO converts at the graph's edges, so the state the
pipeline keeps is float32 as with the other backends.

Why bf16: the fight-cctv model (MobileNetV2 224 px + motion_avg cell) steps in 4.6 ms on one Zen 4 thread
against 7.3 ms in ONNX Runtime fp32 (OpenVINO fp32: 7.7 ms), and its cross-validation fold models give
the same prediction on every held-out clip in bf16 as in fp32.

Compiling takes ~0.15 s; OpenVINO's model cache (``CACHE_DIR``) cut that to ~0.04 s here, too little
beside torch's own start to be worth another cache folder, so it is not used.
"""

from __future__ import annotations

import functools
import logging
import os
from pathlib import Path

import openvino as ov
import torch

from dcrn.engine.backends.cache import open_cached
from dcrn.engine.backends.step_graph import check_cpu_float32, check_io, exported_graph, host_arrays, io_names
from dcrn.engine.errors import BackendUnavailable
from dcrn.models.cells import State
from dcrn.models.dcrn import DCRN
from dcrn.models.errors import ConfigError

log = logging.getLogger(__name__)

PRECISIONS = ("auto", "bf16", "fp32")  # auto: bf16 where the CPU has it natively, else fp32
_HINTS = {"bf16": "bf16", "fp32": "f32"}  # our names -> INFERENCE_PRECISION_HINT values


@functools.cache
def core() -> ov.Core:
    """One OpenVINO runtime core per process."""
    return ov.Core()


def native_bf16() -> bool:
    """Whether OpenVINO's CPU plugin has native bf16 here (AVX512_BF16 or AMX)."""
    return "BF16" in core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def compile_cpu(graph: Path | ov.Model, *, threads: int = 0, precision: str = "auto") -> tuple[ov.CompiledModel, str]:
    """``graph`` (an ONNX file or a read model) compiled for one low-latency stream on the CPU, and the
    precision it runs in (bf16 or fp32).

    ``threads``: 0 = OpenVINO's default (the physical cores). ``precision``: one of :data:`PRECISIONS`."""
    if precision not in PRECISIONS:
        raise ConfigError(f"openvino precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "auto":
        precision = "bf16" if native_bf16() else "fp32"
    config = {
        "INFERENCE_NUM_THREADS": threads,
        "NUM_STREAMS": 1,
        "PERFORMANCE_HINT": "LATENCY",
        "INFERENCE_PRECISION_HINT": _HINTS[precision],
        "ENABLE_CPU_PINNING": False,
    }
    try:
        compiled = core().compile_model(graph if isinstance(graph, ov.Model) else str(graph), "CPU", config)
    except RuntimeError as exc:
        raise _unavailable("compile", graph, exc) from None
    used = compiled.get_property("INFERENCE_PRECISION_HINT")  # what the plugin runs, whatever was asked
    return compiled, "bf16" if used == ov.Type.bf16 else "fp32"


def _unavailable(action: str, graph: Path | ov.Model, exc: RuntimeError) -> BackendUnavailable:
    """OpenVINO's error (often dozens of lines) as one line naming the graph."""
    name = graph.get_friendly_name() if isinstance(graph, ov.Model) else str(graph)
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    first = next((line for line in lines if not line.startswith("Exception from ")), type(exc).__name__)
    return BackendUnavailable(f"OpenVINO could not {action} {name}: {first}")


def _read_graph(path: Path) -> ov.Model:
    try:
        return core().read_model(str(path))
    except RuntimeError as exc:
        raise _unavailable("read", path, exc) from None


class OpenVinoBackend:
    name = "openvino"

    def __init__(
        self, model: DCRN, onnx_path: Path, *, max_batch: int = 8, threads: int = 0, precision: str = "auto"
    ) -> None:
        self.device = torch.device("cpu")
        self.dtype = torch.float32  # of frames, logits and state; inside, the graph runs in self.precision
        self.max_batch = max_batch
        self.input_size = model.config.input_size
        self.state_names = tuple(model.state_names)
        self.state_shapes = list(model.state_shapes)
        self.path = onnx_path
        self.threads = threads
        self._graph = _read_graph(onnx_path)  # batch axis dynamic; each compiled copy fixes it
        self._inputs, self._outputs = io_names(model)
        # A port carries several names ({'logits', '/head/head.1/Gemm_output_0'}): look each up by its own.
        inputs, outputs = self._graph.inputs, self._graph.outputs
        have_in = [next((n for n in p.get_names() if n in self._inputs), p.get_any_name()) for p in inputs]
        have_out = [name for port in outputs for name in sorted(port.get_names())]
        check_io(onnx_path, have_in, have_out, self._inputs, self._outputs)
        self._out_index = [next(i for i, p in enumerate(outputs) if name in p.get_names()) for name in self._outputs]
        self.precision = precision
        self._requests: dict[int, ov.InferRequest] = {}  # batch size -> the request of its compiled graph
        for batch in sorted({1, max_batch}):
            self._request(batch)  # the first also settles self.precision (auto -> bf16 or fp32)

    def _request(self, batch: int) -> ov.InferRequest:
        request = self._requests.get(batch)
        if request is None:
            graph = self._graph.clone()
            graph.reshape({port: ov.PartialShape([batch, *port.get_partial_shape()[1:]]) for port in graph.inputs})
            compiled, self.precision = compile_cpu(graph, threads=self.threads, precision=self.precision)
            request = self._requests[batch] = compiled.create_infer_request()  # reused by every step of this size
        return request

    def initial_state(self, batch: int) -> State:
        return tuple(torch.zeros((batch, *shape), dtype=torch.float32) for shape in self.state_shapes)

    def step(self, frames: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        """frames (B, 3, S, S) float32 CPU -> logits (B, C) float32, next state."""
        feed = dict(zip(self._inputs, host_arrays([frames, *state]), strict=True))
        # Inputs are read in place; outputs are copied out of the request, which the next step overwrites.
        results = self._request(frames.shape[0]).infer(feed, share_inputs=True, share_outputs=False)
        logits, *next_state = (torch.from_numpy(results[i]) for i in self._out_index)
        return logits, tuple(next_state)  # (B, C), state

    def close(self) -> None:
        self._requests.clear()


def create(
    model: DCRN,
    *,
    device: torch.device,
    dtype: torch.dtype = torch.float32,
    max_batch: int = 8,
    cache_dir: str | os.PathLike | None = None,
    threads: int = 0,
    precision: str = "auto",
) -> OpenVinoBackend:
    """``precision``: auto (bf16 where the CPU has it natively, else fp32), bf16 or fp32."""
    check_cpu_float32("openvino", device, dtype)
    return open_cached(
        lambda: exported_graph(model, cache_dir),
        lambda path: OpenVinoBackend(model, path, max_batch=max_batch, threads=threads, precision=precision),
    )
