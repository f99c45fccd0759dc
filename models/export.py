"""Export the per-frame step graph to ONNX: ``(frame, h_in[, c_in]) -> (logits, h_out[, c_out])``.

The graph is one call of ``DCRN.step``: the recurrent cell is unrolled to a single step (the state is an
explicit input and output), so it holds no Loop or Scan node, which is what ONNX -> TensorRT conversion
needs. Every input and output has a dynamic batch axis (one row per stream). The model's config (labels,
input size, normalisation, architecture) is stored as JSON in the ONNX ``metadata_props`` under
``dcrn_config``, so the file alone says how to feed it.

Exporter: opset >= 18 uses torch's ``torch.export``-based exporter (the default since torch 2.9). It
constant-folds the batch norms into the convolutions and emits static ``Split`` nodes for the gates,
with no ``Shape``/``Gather``/``Slice`` chains and no ``Identity`` nodes, which keeps the graph small and
friendly to TensorRT's parser. Opset <= 17 (for older TensorRT 8.x parsers) uses the TorchScript
exporter, because the new exporter cannot convert its opset-18 ``Split`` down to 17.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import logging
import os
import threading
import warnings
from collections import Counter
from pathlib import Path

import torch
from torch import nn

from .config import DCRNConfig
from .dcrn import DCRN
from .errors import BadCheckpoint, ConfigError, DcrnError

log = logging.getLogger(__name__)

DEFAULT_OPSET = 18  # the torch.export-based exporter's native opset
CONFIG_KEY = "dcrn_config"  # metadata_props key: the DCRNConfig as JSON
FORMAT_KEY = "dcrn_format"  # metadata_props key: marks a DCRN step graph
FORMAT = "dcrn-live-step-graph/1"
STATE_NAMES_KEY = "dcrn_state_names"  # metadata_props key: JSON list, e.g. ["h", "c"]
DTYPE_KEY = "dcrn_dtype"  # metadata_props key: "float32" or "float16" (weights and state)
META_KEY = "dcrn_meta"  # metadata_props key: the checkpoint's meta (JSON), when given
FORBIDDEN_OPS = ("Loop", "Scan", "If")  # control flow that TensorRT converts poorly or not at all
EXAMPLE_BATCH = 2  # trace with batch 2, so the exporter cannot specialise the batch axis to 1
# torch's ONNX exporters keep process-wide state (GLOBALS.in_onnx_export, the tracer) and _quiet() swaps
# sys.stdout: two exports on threads of one process (streams opening together on a cluster host) break
# each other. One export at a time.
EXPORT_LOCK = threading.Lock()


class ExportError(DcrnError, RuntimeError):
    """The step graph could not be exported, or the exported graph failed its checks."""


class StepGraph(nn.Module):
    """``DCRN.step`` with the state spread into positional tensors, as the exported graph sees it."""

    def __init__(self, model: DCRN, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        self.model = model.to(dtype=dtype)
        self.dtype = dtype

    def forward(self, frame: torch.Tensor, *state: torch.Tensor) -> tuple[torch.Tensor, ...]:
        logits, next_state = self.model.step(frame.to(self.dtype), tuple(state))  # (B, C), state
        return (logits.float(), *next_state)


def input_names(model: DCRN) -> list[str]:
    return ["frame", *(f"{name}_in" for name in model.state_names)]


def output_names(model: DCRN) -> list[str]:
    return ["logits", *(f"{name}_out" for name in model.state_names)]


def export_onnx(
    model: DCRN,
    path: str | os.PathLike,
    *,
    opset: int = DEFAULT_OPSET,
    dtype: torch.dtype = torch.float32,
    meta: dict | None = None,
) -> Path:
    """Write the step graph of ``model`` to ``path`` (dynamic batch) and check it; returns the path.

    The caller's model is not changed: a CPU copy in eval mode is exported. ``dtype=torch.float16`` gives
    float16 weights and state (``h_in``/``h_out``...) while ``frame`` and ``logits`` stay float32, which is
    how a strongly typed TensorRT network (TensorRT for RTX, TensorRT 11) learns to run in FP16.
    ``meta`` (e.g. the checkpoint's meta) is stored as JSON beside the config.
    """
    import onnx

    path = Path(path)
    if opset < 13:
        raise ConfigError(f"opset must be >= 13 (TensorRT 8+ and ONNX Runtime), got {opset}")
    if dtype not in (torch.float32, torch.float16):
        raise ConfigError(f"the step graph exports as float32 or float16, got {dtype}")
    step = StepGraph(copy.deepcopy(model).to("cpu").eval(), dtype)
    frame = model.example_input(EXAMPLE_BATCH)  # (B, 3, S, S) frames or (B, F) vectors
    state = step.model.initial_state(EXAMPLE_BATCH, device="cpu", dtype=dtype)
    names_in, names_out = input_names(model), output_names(model)
    try:
        with EXPORT_LOCK:
            if opset >= 18:
                proto = _export_dynamo(step, (frame, *state), names_in, names_out, opset)
            else:
                proto = _export_torchscript(step, (frame, *state), names_in, names_out, opset)
    except DcrnError:
        raise
    except Exception as exc:  # torch.export and the ONNX translators raise many types
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ExportError(
            f"exporting the {model.config.encoder}/{model.config.cell} step graph failed: {reason}"
        ) from exc
    _set_metadata(proto, model, meta, dtype)
    check_step_graph(proto, names_in, names_out)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(proto, str(path))
    log.info(
        "exported the %s/%s step graph to %s (opset %d, %s)",
        model.config.encoder,
        model.config.cell,
        path,
        opset,
        dtype,
    )
    return path


def _export_dynamo(step: StepGraph, args: tuple, names_in: list[str], names_out: list[str], opset: int):
    from torch.export import Dim

    batch = Dim("batch", min=1, max=65536)
    dynamic_shapes = ({0: batch}, tuple({0: batch} for _ in args[1:]))  # frame, *state
    with _quiet():
        program = torch.onnx.export(
            step,
            args,
            None,
            input_names=names_in,
            output_names=names_out,
            dynamic_shapes=dynamic_shapes,
            opset_version=opset,
            dynamo=True,
            optimize=True,
            verbose=False,
        )
    return program.model_proto


def _export_torchscript(step: StepGraph, args: tuple, names_in: list[str], names_out: list[str], opset: int):
    import onnx

    buffer = io.BytesIO()
    with _quiet():
        torch.onnx.export(
            step,
            args,
            buffer,
            input_names=names_in,
            output_names=names_out,
            dynamic_axes={name: {0: "batch"} for name in names_in + names_out},
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
        )
    return onnx.load_from_string(buffer.getvalue())


@contextlib.contextmanager
def _quiet():
    """The exporters print progress and deprecation notes; keep them out of the user's terminal."""
    sink = io.StringIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(sink):
        warnings.simplefilter("ignore")
        noisy = [
            logging.getLogger(name) for name in ("torch.onnx", "torch.export", "onnxscript", "torch._dynamo", "onnx_ir")
        ]
        levels = [logger.level for logger in noisy]
        for logger in noisy:
            logger.setLevel(logging.ERROR)
        try:
            yield
        finally:
            for logger, level in zip(noisy, levels, strict=True):
                logger.setLevel(level)
    if sink.getvalue().strip():
        log.debug("exporter output:\n%s", sink.getvalue().strip())


def _set_metadata(proto, model: DCRN, meta: dict | None, dtype: torch.dtype) -> None:
    entries = {
        FORMAT_KEY: FORMAT,
        DTYPE_KEY: str(dtype).removeprefix("torch."),
        CONFIG_KEY: json.dumps(model.config.to_dict(), sort_keys=True),
        STATE_NAMES_KEY: json.dumps(list(model.state_names)),
    }
    if meta:
        entries[META_KEY] = json.dumps(meta, sort_keys=True, default=str)
    del proto.metadata_props[:]
    for key, value in entries.items():
        prop = proto.metadata_props.add()
        prop.key, prop.value = key, value
    proto.producer_name = "dcrn-live"
    proto.doc_string = f"DCRN step graph: {model.config.encoder} encoder, {model.config.cell} cell"


def check_step_graph(proto, names_in: list[str], names_out: list[str]) -> None:
    """ONNX's checker, the expected I/O names, a dynamic batch axis everywhere, no control-flow nodes."""
    import onnx

    try:
        onnx.checker.check_model(proto, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"the exported step graph is not valid ONNX: {str(exc).splitlines()[0]}") from None
    have_in = [value.name for value in proto.graph.input]
    have_out = [value.name for value in proto.graph.output]
    if have_in != names_in or have_out != names_out:
        raise ExportError(f"step graph has {have_in} -> {have_out}, expected {names_in} -> {names_out}")
    for value in [*proto.graph.input, *proto.graph.output]:
        first = value.type.tensor_type.shape.dim[0]
        if not first.dim_param:
            raise ExportError(f"step graph tensor {value.name!r} has a fixed batch axis ({first.dim_value})")
    ops = op_counts(proto)
    bad = sorted(op for op in ops if op in FORBIDDEN_OPS)
    if bad:
        raise ExportError(f"step graph contains control flow {bad}; the cell must be unrolled to one step")


def op_counts(proto) -> Counter:
    """Node types of the main graph -> how many times each appears."""
    return Counter(node.op_type for node in proto.graph.node)


def read_onnx_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The ``metadata_props`` of an ONNX file (weights are not loaded)."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise BadCheckpoint(f"{path}: no such ONNX file")
    try:
        proto = onnx.load_model(str(path), load_external_data=False)
    except Exception as exc:  # protobuf DecodeError and friends
        raise BadCheckpoint(f"{path}: not a readable ONNX file ({type(exc).__name__})") from None
    return {prop.key: prop.value for prop in proto.metadata_props}


def read_onnx_config(path: str | os.PathLike) -> DCRNConfig:
    """The DCRNConfig stored in an exported step graph (labels, input size, normalisation, ...)."""
    props = read_onnx_metadata(path)
    if CONFIG_KEY not in props:
        raise BadCheckpoint(f"{path}: not a DCRN step graph (no {CONFIG_KEY!r} in its ONNX metadata)")
    try:
        return DCRNConfig.from_dict(json.loads(props[CONFIG_KEY]))
    except (ValueError, TypeError) as exc:
        raise BadCheckpoint(f"{path}: invalid {CONFIG_KEY!r} metadata: {exc}") from None
