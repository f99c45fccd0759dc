"""The ``tensorrt`` backend: the exported step graph built into a TensorRT engine, run on torch's CUDA stream.

``TensorRTBackend(model, device="cuda", dtype=..., max_batch=...)`` exports the step graph (cached by a
hash of config and weights), builds or reuses the engine (``dcrn.engine.backends.trt_build``: cached by ONNX hash,
TensorRT flavour and version, GPU and options) and runs it with TensorRT 10-style I/O:

* tensors are bound by name (``set_tensor_address``) to buffers allocated once for ``max_batch`` rows,
  and ``execute_async_v3`` runs on ``torch.cuda.current_stream()``, so it orders with the caller's work;
* the state lives in two buffer sets, A and B: a step reads one and writes the other, and the state it
  returns is a view of the one it wrote. Fed back unchanged, the next step reads it in place, so the
  state is never copied (a state from elsewhere, e.g. rows gathered from stream slots, is copied in once).
  The returned state stays valid until the next ``step``;
* one execution context per direction (A -> B, B -> A), each bound to its buffers once, so addresses never
  change under a captured graph;
* the enqueue is a CUDA graph where possible: with full TensorRT, torch captures the ``execute_async_v3``
  call (per direction, once a batch size repeats; recaptured when it changes) and replays it. TensorRT
  for RTX captures its own graphs (``CudaGraphStrategy.WHOLE_GRAPH_CAPTURE``), since it compiles
  shape-specialised kernels lazily and a graph captured by hand could freeze the fallback kernels; it
  also keeps those JIT kernels in a runtime cache file beside the engine.

Importing this module imports neither TensorRT nor CUDA; everything happens in the constructor.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

from dcrn.engine.backends.base import model_hash, precision_of
from dcrn.engine.backends.cache import cached_file
from dcrn.engine.backends.trt_build import (
    BuildOptions,
    Flavour,
    cached_engine,
    check_gpu_supported,
    load_tensorrt,
    make_logger,
)
from dcrn.engine.errors import BackendUnavailable
from dcrn.models.cells import State
from dcrn.models.dcrn import DCRN
from dcrn.models.errors import ConfigError
from dcrn.models.files import atomic_write, cache_root

log = logging.getLogger(__name__)

NO_GPU = (
    "the TensorRT backend runs its engine on an NVIDIA GPU, and torch sees none on this machine "
    "(torch.cuda.is_available() is False); use --backend torch or onnxruntime on the CPU. "
    "`dcrn export --format tensorrt` can still build an engine ahead of time with TensorRT for RTX"
)


class TensorRTBackend:
    name = "tensorrt"

    def __init__(
        self,
        model: DCRN,
        *,
        device: str | torch.device = "cuda",
        dtype: torch.dtype = torch.float32,
        max_batch: int = 16,
        cache_dir: str | os.PathLike | None = None,
        flavour: str | None = None,
        use_graph: bool = True,
    ) -> None:
        self.flavour: Flavour = load_tensorrt(flavour)  # first: "not installed" says how to install it
        device = torch.device(device)
        if device.type != "cuda" or not torch.cuda.is_available():
            raise BackendUnavailable(NO_GPU)
        if device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        if dtype not in (torch.float32, torch.float16):
            raise ConfigError(f"the TensorRT backend runs float32 or float16, got {dtype}")
        if max_batch < 1:
            raise ConfigError(f"max_batch must be >= 1, got {max_batch}")
        check_gpu_supported(self.flavour, torch.cuda.get_device_capability(device))
        self.device, self.dtype, self.max_batch = device, dtype, max_batch
        self.precision = precision_of(dtype)
        self.input_size = model.config.input_size
        self.input_shape = tuple(model.input_shape)
        self.num_classes = model.config.num_classes
        self.state_names = tuple(model.state_names)
        self.state_shapes = list(model.state_shapes)
        self._inputs = ["frame", *(f"{n}_in" for n in self.state_names)]
        self._outputs = ["logits", *(f"{n}_out" for n in self.state_names)]
        fp16 = dtype == torch.float16
        root = cache_root(cache_dir)
        graph_dtype = torch.float16 if fp16 and self.flavour.strongly_typed else torch.float32
        onnx_path = exported_graph(model, root / "onnx", graph_dtype)
        with torch.cuda.device(device):
            self.engine_file = cached_engine(
                onnx_path, root / "tensorrt", BuildOptions(fp16=fp16, max_batch=max_batch), flavour=self.flavour
            )
            self._open(use_graph)

    # ---- set-up -------------------------------------------------------------------------------------------

    def _open(self, use_graph: bool) -> None:
        trt = self.flavour.module
        torch.zeros(1, device=self.device)  # make torch's CUDA context current before TensorRT uses it
        self._logger = make_logger(trt)
        self._runtime = trt.Runtime(self._logger)
        self._engine = self._runtime.deserialize_cuda_engine(self.engine_file.path.read_bytes())
        if self._engine is None:
            raise BackendUnavailable(
                f"{self.flavour.label} could not load {self.engine_file.path} on "
                f"{torch.cuda.get_device_name(self.device)} (see the log); delete it to rebuild"
            )
        self._runtime_cache = self._runtime_cache_path = None
        config = None
        if self.flavour.is_rtx:
            config = self._engine.create_runtime_config()
            if use_graph:
                config.cuda_graph_strategy = trt.CudaGraphStrategy.WHOLE_GRAPH_CAPTURE
            self._attach_runtime_cache(config)
        # One execution context per direction (A -> B, B -> A): each keeps its tensor addresses for life,
        # so a graph captured by us or by TensorRT for RTX never sees an address change.
        self._contexts = []
        for _ in range(2):
            context = (
                self._engine.create_execution_context(config) if config else self._engine.create_execution_context()
            )
            if context is None:
                raise BackendUnavailable(f"{self.flavour.label} could not create an execution context (GPU memory?)")
            self._contexts.append(context)
        names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        if sorted(names) != sorted(self._inputs + self._outputs):
            raise BackendUnavailable(f"engine tensors {names} do not match {self._inputs} -> {self._outputs}")
        dtypes = {name: _torch_dtype(trt, self._engine.get_tensor_dtype(name)) for name in names}
        self.state_dtype = dtypes[self._inputs[1]]
        rows = self.max_batch
        self._frame = torch.zeros((rows, *self.input_shape), device=self.device, dtype=dtypes["frame"])  # (N, 3, S, S)
        self._logits = torch.zeros((rows, self.num_classes), device=self.device, dtype=dtypes["logits"])  # (N, C)
        self._states = [
            tuple(
                torch.zeros((rows, *shape), device=self.device, dtype=self.state_dtype) for shape in self.state_shapes
            )
            for _ in range(2)
        ]  # buffer sets A and B
        self._last = 1  # the set the previous step wrote
        for src, context in enumerate(self._contexts):  # bound once: context src reads set src, writes the other
            for name, buffer in zip(self._inputs, (self._frame, *self._states[src]), strict=True):
                context.set_tensor_address(name, buffer.data_ptr())
            for name, buffer in zip(self._outputs, (self._logits, *self._states[1 - src]), strict=True):
                context.set_tensor_address(name, buffer.data_ptr())
        self._shaped = [0, 0]  # the batch size each context's input shapes are set for
        # Full TensorRT: capture execute_async_v3 in a torch CUDA graph. TensorRT for RTX does its own.
        self._user_graphs = use_graph and not self.flavour.is_rtx
        # Per context: (batch, graph). A new batch size changes the context's shapes and invalidates its graph.
        self._graphs: dict[int, tuple[int, torch.cuda.CUDAGraph]] = {}
        log.info("TensorRT backend: %s, engine %s", self.flavour.label, self.engine_file.path.name)

    def _attach_runtime_cache(self, config) -> None:
        """TensorRT for RTX compiles kernels for this GPU at run time; keep them on disk for the next run."""
        self._runtime_cache_path = self.engine_file.path.with_suffix(".runtime-cache")
        try:
            cache = config.create_runtime_cache()
            if self._runtime_cache_path.is_file() and not cache.deserialize(self._runtime_cache_path.read_bytes()):
                log.info("the TensorRT for RTX runtime cache does not fit this GPU/driver; it will be rewritten")
            config.set_runtime_cache(cache)
            self._runtime_cache = cache
        except (AttributeError, RuntimeError, OSError) as exc:  # older TensorRT for RTX: no runtime cache
            log.debug("no TensorRT for RTX runtime cache: %s", exc)

    # ---- the backend interface ----------------------------------------------------------------------------

    def initial_state(self, batch: int) -> State:
        """Zero state for ``batch`` streams (fresh tensors, any batch size; copied in on first use)."""
        return tuple(
            torch.zeros((batch, *shape), device=self.device, dtype=self.state_dtype) for shape in self.state_shapes
        )

    def step(self, frames: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        """frames (B, 3, S, S) float on the GPU -> logits (B, C) float32 and the next state (views, see above)."""
        batch = frames.shape[0]
        if not 1 <= batch <= self.max_batch:
            raise ConfigError(f"batch of {batch} frames is outside this engine's profile 1..{self.max_batch}")
        if tuple(frames.shape[1:]) != self.input_shape:
            raise ConfigError(f"frames must be (B, {', '.join(map(str, self.input_shape))}), got {tuple(frames.shape)}")
        src = self._owner(state, batch)
        if src is None:  # not the state this backend handed out: copy it into the set not returned last
            src = 1 - self._last
            for buffer, value in zip(self._states[src], state, strict=True):
                buffer[:batch].copy_(value)
        dst = 1 - src
        self._frame[:batch].copy_(frames)  # casts to the engine's input type
        self._enqueue(batch, src, dst)
        self._last = dst
        logits = self._logits[:batch].float().clone()  # (B, C): the next step overwrites the buffer
        return logits, tuple(buffer[:batch] for buffer in self._states[dst])

    def close(self) -> None:
        self._save_runtime_cache()
        self._graphs.clear()
        self._contexts = []
        self._engine = self._runtime = None

    # ---- internals ----------------------------------------------------------------------------------------

    def _owner(self, state: State, batch: int) -> int | None:
        """Which buffer set ``state`` is the first ``batch`` rows of (0 or 1), or None."""
        for index, buffers in enumerate(self._states):
            if len(state) == len(buffers) and all(
                value.data_ptr() == buffer.data_ptr() and value.shape[0] == batch and value.is_contiguous()
                for value, buffer in zip(state, buffers, strict=True)
            ):
                return index
        return None

    def _bind(self, batch: int, src: int) -> None:
        """Set the input shapes of context ``src`` for ``batch`` rows (addresses never change)."""
        if self._shaped[src] == batch:
            return
        context = self._contexts[src]
        for name, buffer in zip(self._inputs, (self._frame, *self._states[src]), strict=True):
            context.set_input_shape(name, (batch, *buffer.shape[1:]))
        self._shaped[src] = batch

    def _execute(self, src: int, stream: torch.cuda.Stream) -> None:
        if not self._contexts[src].execute_async_v3(stream.cuda_stream):
            raise BackendUnavailable(f"{self.flavour.label}: execute_async_v3 failed (see the log)")

    def _enqueue(self, batch: int, src: int, dst: int) -> None:
        stream = torch.cuda.current_stream(self.device)
        captured = self._graphs.get(src)
        graph = captured[1] if captured is not None and captured[0] == batch else None
        if graph is None and self._user_graphs and self._shaped[src] == batch:
            # Capture only once a batch size repeats on this context: a batch that changes every step
            # (streams joining and leaving) runs without a graph instead of recapturing each time.
            graph = self._capture(batch, src, dst, stream)
        if graph is not None:
            graph.replay()  # on the current stream
            return
        self._bind(batch, src)
        self._execute(src, stream)

    def _capture(self, batch: int, src: int, dst: int, stream: torch.cuda.Stream) -> torch.cuda.CUDAGraph | None:
        """Capture execute_async_v3 for this batch and A/B direction; None (and no more tries) if it fails."""
        self._graphs.pop(src, None)  # its shapes are about to change
        self._bind(batch, src)
        self._execute(src, stream)  # warm-up: TensorRT finishes lazy set-up outside the capture
        side = torch.cuda.Stream(self.device)
        side.wait_stream(stream)
        capturable = getattr(self._contexts[src], "is_stream_capturable", None)
        if capturable is not None and not capturable(side.cuda_stream):
            log.info("this TensorRT engine cannot be captured in a CUDA graph; running it without one")
            self._user_graphs = False
            return None
        graph = torch.cuda.CUDAGraph()
        # thread_local: capture threads keep uploading frames on their own streams while this captures.
        try:
            with torch.cuda.graph(graph, stream=side, capture_error_mode="thread_local"):
                self._execute(src, side)
        except RuntimeError as exc:
            log.warning("CUDA graph capture of the TensorRT engine failed (%s); running it without one", exc)
            self._user_graphs = False
            return None
        stream.wait_stream(side)
        self._graphs[src] = (batch, graph)
        log.debug("captured the TensorRT step in a CUDA graph for batch %d (%s)", batch, "AB"[src] + "->" + "AB"[dst])
        return graph

    def _save_runtime_cache(self) -> None:
        if self._runtime_cache is None or self._runtime_cache_path is None:
            return
        try:
            atomic_write(self._runtime_cache_path, bytes(self._runtime_cache.serialize()))
        except (RuntimeError, OSError) as exc:
            log.warning("could not save the TensorRT for RTX runtime cache: %s", exc)
        self._runtime_cache = None


def _torch_dtype(trt, dtype) -> torch.dtype:
    table = {trt.DataType.FLOAT: torch.float32, trt.DataType.HALF: torch.float16}
    if dtype not in table:
        raise BackendUnavailable(f"engine tensor type {dtype} is not supported by this backend")
    return table[dtype]


def exported_graph(model: DCRN, folder: Path, dtype: torch.dtype) -> Path:
    """The model's step graph (``dtype`` weights and state) in ``folder``, exported now if missing."""
    from dcrn.models.export import DEFAULT_OPSET, export_onnx

    path = folder / f"{model_hash(model)}-{str(dtype).removeprefix('torch.')}-opset{DEFAULT_OPSET}.onnx"
    return cached_file(path, lambda tmp: export_onnx(model, tmp, dtype=dtype))


def create(
    model: DCRN,
    *,
    device: torch.device,
    dtype: torch.dtype = torch.float32,
    max_batch: int = 16,
    cache_dir: str | os.PathLike | None = None,
    **_: object,
) -> TensorRTBackend:
    """The registry's entry point (``create_backend("tensorrt", ...)`` in dcrn.engine.backends.choice)."""
    return TensorRTBackend(model, device=device, dtype=dtype, max_batch=max_batch, cache_dir=cache_dir)
