"""Keypoint graphs run through OpenVINO, the project's CPU runtime, which reads ``.tflite`` files directly.

Each graph is compiled once for one low-latency stream (``compile_cpu`` of the openvino backend: the
same thread and precision settings as the action model's step), with one reusable request. Precision is
stated: ``fp32`` by default. ``bf16`` (where the CPU has it natively) would halve a call's time; with bf16
emulated in fp32 arithmetic (``bf16-emulated``, for measuring on CPUs without it) hand landmarks move by
0.2 px on average at 640x480 and body landmarks by 2.3 px, now and then by tens (docs/KEYPOINTS.md), so
bf16 is offered, not assumed.

A graph is compiled with only the outputs its reader uses (``outputs``): the rest, and every op that
feeds nothing else, are cut before compiling. ``pose_landmark_full`` computes a 256x256 segmentation mask
no encoder reads; without it a call costs 11.5 ms instead of 16.9 here, with the same numbers out
(docs/KEYPOINTS.md).

ONNX Runtime cannot read ``.tflite``; a GPU runtime would need the graphs converted to ONNX first (not
done yet: see docs/KEYPOINTS.md). Every graph counts its calls, which is how tests see that the detector
runs only when tracking is lost.
"""

from __future__ import annotations

import logging
import re
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import openvino as ov
import openvino.opset13 as ops

from dcrn.engine.backends.openvino_backend import compile_cpu, core
from dcrn.engine.keypoints.model_files import graph_path

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "bf16", "auto", "bf16-emulated")
_ROUND_SKIP = {"Parameter", "Result", "Constant", "ShapeOf", "Reshape", "Squeeze", "Unsqueeze", "Concat", "Transpose"}


@dataclass(frozen=True)
class RuntimeOptions:
    threads: int = 1  # inference threads per graph: the speed budget is one core per stream
    precision: str = "fp32"  # fp32, bf16 (where native; else fp32), auto (bf16 where native), bf16-emulated
    cache_dir: str | Path | None = None  # where fetched graphs are looked for (cache_root() when None)


def _output_order(name: str) -> int:
    """TFLite graphs name outputs Identity, Identity_1, ...: their order in the original graph."""
    match = re.search(r"_(\d+)$", name)
    return int(match.group(1)) if match else 0


class Graph:
    """One keypoint graph compiled for the CPU: ``graph(tensor) -> outputs`` in the graph's output order,
    or only the outputs at the indices ``outputs`` (in that order), with what computes nothing else cut."""

    def __init__(
        self, name: str, options: RuntimeOptions = RuntimeOptions(), outputs: tuple[int, ...] | None = None
    ) -> None:
        self.name = name
        self.path = graph_path(name, cache_dir=options.cache_dir)
        if options.precision not in PRECISIONS:
            raise ValueError(f"keypoint precision must be one of {', '.join(PRECISIONS)}, got {options.precision!r}")
        model = core().read_model(str(self.path))
        if outputs is not None:
            model = keep_outputs(model, outputs)
        precision = options.precision
        if precision == "bf16-emulated":
            model, precision = emulate_bf16(model), "fp32"
        (port,) = model.inputs
        self.input_shape = tuple(int(d) for d in port.get_shape())  # (1, H, W, 3) NHWC float32
        self.input_size = self.input_shape[1]
        compiled, self.precision = compile_cpu(model, threads=options.threads, precision=precision)
        if options.precision == "bf16-emulated":
            self.precision = options.precision
        outputs = list(compiled.outputs)
        order = sorted(range(len(outputs)), key=lambda i: _output_order(outputs[i].get_any_name()))
        self._outputs = [outputs[i] for i in order]
        self._compiled = compiled
        self._local = threading.local()  # one infer request per thread: a graph may serve several threads
        self._lock = threading.Lock()
        self.calls = 0  # inferences run so far
        log.debug("compiled %s (%s, %d thread(s))", name, self.precision, options.threads)

    def __call__(self, tensor: np.ndarray) -> list[np.ndarray]:
        """``tensor`` (1, H, W, 3) float32 -> the graph's outputs (copies, each with the batch axis)."""
        if tensor.shape != self.input_shape or tensor.dtype != np.float32:
            raise ValueError(f"{self.name} takes {self.input_shape} float32, got {tensor.shape} {tensor.dtype}")
        with self._lock:
            self.calls += 1
        request = getattr(self._local, "request", None)
        if request is None:
            request = self._local.request = self._compiled.create_infer_request()
        results = request.infer({0: tensor}, share_inputs=True, share_outputs=False)  # outputs copied
        return [results[port] for port in self._outputs]


def keep_outputs(model: ov.Model, keep: tuple[int, ...]) -> ov.Model:
    """``model`` with only its outputs at the indices ``keep`` (in the graph's output order), in that order;
    ops that fed only the others are gone from the new model."""
    results = sorted(model.get_results(), key=lambda r: _output_order(r.output(0).get_any_name()))
    if not keep or any(not 0 <= i < len(results) for i in keep) or len(set(keep)) != len(keep):
        raise ValueError(f"outputs to keep must be distinct indices below {len(results)}, got {keep}")
    return ov.Model([results[i] for i in keep], model.get_parameters(), model.get_friendly_name())


def emulate_bf16(model: ov.Model) -> ov.Model:
    """``model`` with every op's float32 output rounded to bf16 (8 significant bits, nearest even), weights
    included through their conversion op: what bf16 inference does to the numbers, computed in fp32 on a CPU
    without bf16 (several times slower). For measuring only; OpenVINO's own bf16 keeps some fused
    intermediates in fp32, so this errs on the pessimistic side."""
    for op in list(model.get_ordered_ops()):
        if op.get_type_name() in _ROUND_SKIP:
            continue
        for output in op.outputs():
            targets = list(output.get_target_inputs())
            if output.get_element_type() != ov.Type.f32 or not targets:
                continue
            rounded = _round_bf16(output)
            for target in targets:
                target.replace_source_output(rounded.output(0))
    model.validate_nodes_and_infer_types()
    return model


def _round_bf16(value: ov.Output) -> ov.Node:
    """x rounded to 8 significant bits: round(x * 2^(7 - e)) / 2^(7 - e), e = floor(log2 |x|)."""
    magnitude = ops.maximum(ops.abs(value), ops.constant(np.float32(1e-30)))
    exponent = ops.floor(ops.divide(ops.log(magnitude), ops.constant(np.float32(np.log(2.0)))))
    step = ops.power(ops.constant(np.float32(2.0)), ops.subtract(ops.constant(np.float32(7.0)), exponent))
    return ops.divide(ops.round(ops.multiply(value, step), "half_to_even"), step)


def to_tensor(image: np.ndarray, low: float, high: float) -> np.ndarray:
    """(S, S, 3) uint8 -> (1, S, S, 3) float32 scaled to [low, high]."""
    scale = (high - low) / 255.0
    return (image.astype(np.float32) * scale + low)[None]
