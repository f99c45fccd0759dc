"""Build TensorRT engines from the exported step graph, with an on-disk cache.

Two flavours of TensorRT are supported, imported lazily (importing this module loads neither and
creates no CUDA context):

* ``tensorrt``: NVIDIA's TensorRT for data-centre and Jetson GPUs (``pip install tensorrt``);
* ``tensorrt_rtx``: TensorRT for RTX, for GeForce/RTX cards of compute capability 7.5, 8.x and 12.x
  (``pip install tensorrt-rtx``). Its builder works without a GPU (ahead-of-time build).

Where they differ, and what this module does about it:

* Precision. TensorRT for RTX (and TensorRT 11) build **strongly typed** networks only and have no
  ``BuilderFlag.FP16``: precision comes from the tensor types in the ONNX graph. So FP16 is done the same
  way for every flavour that has ``NetworkDefinitionCreationFlag.STRONGLY_TYPED``: the step graph is
  exported with float16 weights and state (frame in and logits out stay float32) and the network is
  created strongly typed. Only a TensorRT without strong typing (8.x) gets a float32 graph and
  ``BuilderFlag.FP16``.
* TF32. Float32 engines clear ``BuilderFlag.TF32`` where it exists, so float32 means float32.
* Target GPU. TensorRT for RTX builds for a list of compute capabilities (by default a portable engine
  for 8.0, 8.6, 8.9 and 12.x); with a GPU present it targets that GPU (``ComputeCapability.CURRENT``).
  Full TensorRT always builds for the GPU it runs on and needs one.
* ``EXPLICIT_BATCH`` is passed only to TensorRT versions that still have it (8.x).

The cache key covers the ONNX bytes, the flavour and version, the GPU (name and compute capability, or
"ahead-of-time" without one) and the build options, so a change to any of them builds a new engine.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from dcrn.engine.errors import BackendUnavailable
from dcrn.models.errors import DcrnError
from dcrn.models.files import atomic_write

log = logging.getLogger(__name__)

FLAVOURS = ("tensorrt", "tensorrt_rtx")
FLAVOUR_ENV = "DCRN_TENSORRT"  # pick one flavour when both are installed
INSTALL_ADVICE = (
    "install TensorRT: `pip install tensorrt` (NVIDIA's package, for data-centre and Jetson GPUs such as "
    "A100/H100/L4) or `pip install tensorrt-rtx` (TensorRT for RTX, for GeForce/RTX cards of compute "
    "capability 7.5, 8.x or 12.x; also `pip install 'dcrn-live[tensorrt]'`)"
)
AOT_GPU = "ahead-of-time (no GPU)"
RTX_UNSUPPORTED_CC = ((9, 0),)  # Hopper data-centre parts: TensorRT for RTX refuses to run there


class EngineBuildError(DcrnError, RuntimeError):
    """TensorRT could not parse the step graph or build an engine from it."""


@dataclass(frozen=True)
class Flavour:
    """An imported TensorRT module and what it supports."""

    name: str  # "tensorrt" or "tensorrt_rtx"
    version: str
    module: Any

    @property
    def strongly_typed(self) -> bool:
        return hasattr(self.module.NetworkDefinitionCreationFlag, "STRONGLY_TYPED")

    @property
    def is_rtx(self) -> bool:
        return self.name == "tensorrt_rtx"

    @property
    def label(self) -> str:
        return f"{self.name} {self.version}"


@dataclass(frozen=True)
class BuildOptions:
    fp16: bool = False  # build a float16 engine (see the module notes for how per flavour)
    max_batch: int = 16  # optimisation profile: batch 1..max_batch
    opt_batch: int | None = None  # the batch size kernels are tuned for; None -> max_batch
    workspace_mb: int = 1024  # builder workspace limit

    def profile(self) -> tuple[int, int, int]:
        opt = self.max_batch if self.opt_batch is None else self.opt_batch
        if not 1 <= opt <= self.max_batch:
            raise EngineBuildError(f"opt_batch must be in 1..{self.max_batch}, got {opt}")
        return 1, opt, self.max_batch


@dataclass(frozen=True)
class EngineFile:
    """A built (or cached) engine on disk."""

    path: Path
    key: str
    built: bool  # True: built now; False: found in the cache
    seconds: float  # build time (0 when cached)
    size: int  # bytes


def load_tensorrt(flavour: str | None = None) -> Flavour:
    """Import TensorRT: ``flavour`` or $DCRN_TENSORRT if given, else ``tensorrt``, then ``tensorrt_rtx``."""
    wanted = flavour or os.environ.get(FLAVOUR_ENV) or None
    if wanted is not None and wanted not in FLAVOURS:
        raise BackendUnavailable(f"unknown TensorRT flavour {wanted!r} (choose from {', '.join(FLAVOURS)})")
    reasons = []
    for name in [wanted] if wanted else FLAVOURS:
        try:
            module = importlib.import_module(name)
        except ImportError as exc:  # also raised for a module blocked with sys.modules[name] = None
            reasons.append(f"{name}: {exc}")
            continue
        return Flavour(name=name, version=str(getattr(module, "__version__", "unknown")), module=module)
    log.debug("TensorRT imports failed: %s", "; ".join(reasons))
    tried = " or ".join([wanted] if wanted else FLAVOURS)
    raise BackendUnavailable(f"TensorRT is not installed ({tried} cannot be imported); {INSTALL_ADVICE}")


def gpu_identity() -> str:
    """The GPU the engine is built for, as it enters the cache key: name and compute capability."""
    import torch

    if not torch.cuda.is_available():
        return AOT_GPU
    index = torch.cuda.current_device()
    major, minor = torch.cuda.get_device_capability(index)
    return f"{torch.cuda.get_device_name(index)} (sm_{major}{minor})"


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def engine_cache_key(onnx_sha256: str, flavour: str, version: str, gpu: str, options: BuildOptions) -> str:
    """A short hash of everything an engine depends on; any change gives a new key (and a rebuild)."""
    parts = {"onnx": onnx_sha256, "flavour": flavour, "version": version, "gpu": gpu, **asdict(options)}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:32]


def check_gpu_supported(flavour: Flavour, capability: tuple[int, int]) -> None:
    """TensorRT for RTX runs on compute capability 7.5, 8.x and 12.x only; say so before it fails."""
    if flavour.is_rtx and (capability in RTX_UNSUPPORTED_CC or capability < (7, 5)):
        raise BackendUnavailable(
            f"TensorRT for RTX does not run on this GPU (compute capability {capability[0]}.{capability[1]}); "
            "data-centre GPUs need NVIDIA's `tensorrt` package (pip install tensorrt), or use --backend torch"
        )


def build_engine(onnx_path: str | os.PathLike, flavour: Flavour, options: BuildOptions) -> bytes:
    """Parse the ONNX step graph and build a serialized engine with a batch 1..max_batch profile."""
    import torch

    trt = flavour.module
    logger = make_logger(trt)
    builder = trt.Builder(logger)
    flags = 0
    if flavour.strongly_typed:
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    elif hasattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH"):
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i).desc()) for i in range(parser.num_errors))
        raise EngineBuildError(f"{flavour.label} could not parse {onnx_path}: {errors or 'unknown error'}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, options.workspace_mb << 20)
    if options.fp16 and not flavour.strongly_typed:
        config.set_flag(trt.BuilderFlag.FP16)
    if not options.fp16 and hasattr(trt.BuilderFlag, "TF32"):
        config.clear_flag(trt.BuilderFlag.TF32)
    if flavour.is_rtx and torch.cuda.is_available():
        config.num_compute_capabilities = 1
        config.set_compute_capability(trt.ComputeCapability.CURRENT, 0)
    low, opt, high = options.profile()
    profile = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        rest = list(tensor.shape)[1:]  # (batch, ...) with batch dynamic (-1)
        profile.set_shape(tensor.name, [low, *rest], [opt, *rest], [high, *rest])
    config.add_optimization_profile(profile)
    if hasattr(config, "progress_monitor"):
        config.progress_monitor = make_progress_monitor(trt)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EngineBuildError(f"{flavour.label} failed to build an engine from {onnx_path} (see the log above)")
    return bytes(serialized)


def cached_engine(
    onnx_path: str | os.PathLike,
    cache_dir: str | os.PathLike,
    options: BuildOptions,
    *,
    flavour: Flavour | None = None,
    gpu: str | None = None,
) -> EngineFile:
    """The engine for this graph, flavour, GPU and options: from ``cache_dir``, or built and stored there."""
    flavour = flavour or load_tensorrt()
    gpu = gpu_identity() if gpu is None else gpu
    onnx_sha = file_sha256(onnx_path)
    key = engine_cache_key(onnx_sha, flavour.name, flavour.version, gpu, options)
    folder = Path(cache_dir)
    path = folder / f"{key}.engine"
    if path.is_file() and path.stat().st_size > 0:
        log.debug("TensorRT engine from the cache: %s", path)
        return EngineFile(path=path, key=key, built=False, seconds=0.0, size=path.stat().st_size)
    log.info(
        "building a TensorRT engine (%s, %s, batch 1..%d, %s) from %s; this can take a minute, "
        "and it is cached for later runs in %s",
        flavour.label,
        "fp16" if options.fp16 else "fp32",
        options.max_batch,
        gpu,
        Path(onnx_path).name,
        folder,
    )
    started = time.perf_counter()
    data = build_engine(onnx_path, flavour, options)
    seconds = time.perf_counter() - started
    info = {"onnx_sha256": onnx_sha, "flavour": flavour.name, "version": flavour.version, "gpu": gpu}
    info.update(asdict(options), build_seconds=round(seconds, 3), size=len(data))
    write_engine(path, data, info)
    log.info("built the TensorRT engine in %.1f s (%.1f MB): %s", seconds, len(data) / 1e6, path)
    return EngineFile(path=path, key=key, built=True, seconds=seconds, size=len(data))


def write_engine(path: Path, data: bytes, info: dict) -> None:
    """Write the engine and a JSON note beside it, atomically (temporary file + rename)."""
    try:
        atomic_write(path, data)
        atomic_write(path.with_suffix(".json"), json.dumps(info, indent=2))
    except OSError as exc:
        raise EngineBuildError(f"cannot write the engine to {path}: {exc.strerror or exc}") from None


_LEVELS = {"INTERNAL_ERROR": logging.ERROR, "ERROR": logging.ERROR, "WARNING": logging.WARNING}


def make_logger(trt: Any) -> Any:
    """A TensorRT logger that forwards to Python logging (errors and warnings; the rest at DEBUG)."""

    class _Logger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)

        def log(self, severity, msg) -> None:  # called by TensorRT
            log.log(_LEVELS.get(getattr(severity, "name", ""), logging.DEBUG), "TensorRT: %s", msg)

    return _Logger()


def make_progress_monitor(trt: Any) -> Any:
    """Logs the builder's top-level phases, so a long build shows that it is moving."""

    class _Progress(trt.IProgressMonitor):
        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)

        def phase_start(self, phase_name, parent_phase, num_steps) -> None:
            level = logging.INFO if parent_phase is None else logging.DEBUG
            log.log(level, "TensorRT build: %s (%d steps)", phase_name, num_steps)

        def step_complete(self, phase_name, step) -> bool:
            return True  # keep building

        def phase_finish(self, phase_name) -> None:
            log.debug("TensorRT build: %s done", phase_name)

    return _Progress()
