"""Backends: one small interface over the ways a DCRN step can run, selected by name.

``create_backend(name, model, device=..., dtype=..., max_batch=...)`` returns a
:class:`~dcrn.engine.backends.base.Backend`.

``torch`` (eager on CPU, a CUDA graph on a GPU), ``onnxruntime`` and ``openvino`` (the exported step graph
on the CPU) and ``tensorrt`` each live in their own module, imported when the backend is created.

``auto`` (the command line's and the window's default) is one rule, :func:`choose_backend`: TensorRT on an
NVIDIA GPU where it is installed and runs on that GPU, torch with CUDA graphs on other GPUs; on the CPU
OpenVINO in bf16 where it is installed and the CPU has native bf16, else ONNX Runtime (fp32) where it is
installed, else torch eager. :func:`open_backend` applies the rule and, when the chosen backend cannot be
opened after all (an engine that fails to build, a graph that fails to export), falls back to the next one
(openvino -> onnxruntime -> torch), saying why. The choice, its reason and the precision the backend runs
in (fp32, fp16, bf16, int8) go into the first log line and every ``stats`` record.
"""

from __future__ import annotations

import importlib
import logging
import os
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import torch

from dcrn.engine.backends.base import Backend, precision_of
from dcrn.engine.backends.names import AUTO, BACKEND_CHOICES, BACKENDS, CPU_ONLY
from dcrn.engine.errors import BackendUnavailable
from dcrn.models.dcrn import DCRN
from dcrn.models.errors import ConfigError, DcrnError

if TYPE_CHECKING:
    from dcrn.engine.backends.quantize import Calibration

log = logging.getLogger(__name__)

DEVICES = ("cpu", "cuda")
_MODULES = {
    "torch": "dcrn.engine.backends.torch_backend",
    "onnxruntime": "dcrn.engine.backends.onnxruntime_backend",
    "openvino": "dcrn.engine.backends.openvino_backend",
    "tensorrt": "dcrn.engine.backends.tensorrt_backend",
}
_INSTALL_ADVICE = {
    "onnxruntime": "install the onnx extra: pip install 'dcrn-live[onnx]'",
    "openvino": "install the openvino extra: pip install 'dcrn-live[openvino]'",
    "tensorrt": "install TensorRT: pip install tensorrt (data-centre GPUs) or pip install tensorrt-rtx (GeForce RTX)",
}


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


@dataclass(frozen=True)
class BackendChoice:
    """Which backend runs the model, on which device, and why (logged and put into ``stats`` records)."""

    name: str  # torch, onnxruntime, openvino or tensorrt
    device: str  # cpu or cuda:N
    reason: str  # one line: the rule that chose it, or "requested"
    fallbacks: tuple[tuple[str, str, str], ...] = ()  # (name, device, reason) to try next when this one fails
    int8: Calibration | None = None  # onnxruntime with its encoder in INT8, calibrated so (engine.quantize)
    precision: str = "fp32"  # fp32, fp16, bf16 (openvino on a CPU with native bf16) or int8; open_backend confirms

    def describe(self) -> str:
        precision = "INT8 encoder" if self.int8 else self.precision
        return f"backend {self.name} ({precision}) on {self.device}: {self.reason}"

    def record_fields(self) -> dict:
        """What ``stats`` records carry about the backend."""
        return {
            "backend": self.name,
            "device": self.device,
            "backend_reason": self.reason,
            "precision": self.precision,
            "int8": bool(self.int8),
        }


def choose_backend(
    backend: str = AUTO,
    device: str | torch.device = AUTO,
    *,
    dtype: torch.dtype = torch.float32,
    int8: Calibration | None = None,
) -> BackendChoice:
    """The backend and device to run on. ``backend`` is a name or ``auto``; ``device`` cpu, cuda[:N] or ``auto``.

    ``auto`` backend: on a GPU (``device`` auto or cuda) TensorRT where it is installed and supports the GPU,
    else torch with CUDA graphs. On the CPU (``device`` cpu, or no GPU), for a float32 model: OpenVINO where it
    is installed and the CPU has native bf16 (it then steps in bf16: the fastest CPU path, with the same
    predictions as fp32 on the fight-cctv cross-validation), else ONNX Runtime (fp32) where it is installed,
    else torch eager; other dtypes: torch eager. ``auto`` device with a named backend: the GPU when there is
    one and the backend runs there (torch, tensorrt), else the CPU.

    ``int8`` (a calibration): the encoder in INT8, which only the onnxruntime backend on the CPU runs; ``auto``
    then means onnxruntime, and anything else is an error.
    """
    if backend != AUTO and backend not in BACKENDS:
        raise ConfigError(f"unknown backend {backend!r} (choose from {', '.join(BACKEND_CHOICES)})")
    if int8 is not None:
        return _choose_int8(backend, device, dtype, int8)
    gpu = _gpu() if str(device) == AUTO else None
    if str(device) == AUTO:
        wants_gpu = gpu is not None and backend not in CPU_ONLY
        resolved = str(resolve_device("cuda")) if wants_gpu else "cpu"
    else:
        resolved = str(resolve_device(device))
        if resolved.startswith("cuda"):
            gpu = _gpu()
    if backend != AUTO:
        precision = precision_of(dtype)
        if backend == "openvino" and resolved == "cpu" and _openvino()[0] is not None:
            precision = "bf16" if _native_bf16() else "fp32"
        return BackendChoice(backend, resolved, "requested", precision=precision)
    if resolved.startswith("cuda"):
        trt, why_not = _tensorrt_for(gpu)
        precision = precision_of(dtype)
        if trt is None:
            why = f"auto: {gpu.text}, {why_not}: torch with CUDA graphs"
            return BackendChoice("torch", resolved, why, precision=precision)
        graph = ("torch", resolved, f"auto: {gpu.text}; TensorRT failed to open: torch with CUDA graphs")
        why = f"auto: {gpu.text} with {trt} installed"
        return BackendChoice("tensorrt", resolved, why, fallbacks=(graph,), precision=precision)
    where = "the CPU was asked for" if str(device) != AUTO else "no CUDA GPU"
    return _choose_cpu(where, dtype)


def _choose_cpu(where: str, dtype: torch.dtype) -> BackendChoice:
    """The CPU half of the auto rule: openvino (bf16) -> onnxruntime (fp32) -> torch eager, each where usable."""
    eager = "torch eager on the CPU"
    if dtype != torch.float32:
        return BackendChoice(
            "torch", "cpu", f"auto: {where}; the ONNX backends run float32 only: {eager}", precision=precision_of(dtype)
        )
    ov_version, ov_why_not = _openvino()
    if ov_version is not None and not _native_bf16():
        ov_version, ov_why_not = None, "this CPU has no native bf16, and in fp32 it is no faster than ONNX Runtime"
    ort_version, ort_why_not = _onnxruntime()
    candidates = []  # (name, why, precision), best first
    if ov_version is not None:
        why = f"OpenVINO {ov_version} is installed and this CPU has native bf16: bf16, the fastest CPU path"
        candidates.append(("openvino", why, "bf16"))
    if ort_version is not None:
        candidates.append(("onnxruntime", f"ONNX Runtime {ort_version} is installed (fp32)", "fp32"))
    if not candidates:
        why = f"neither OpenVINO ({ov_why_not}) nor ONNX Runtime ({ort_why_not}) is usable: {eager}"
        return BackendChoice("torch", "cpu", f"auto: {where}; {why}")
    (name, why, precision), rest = candidates[0], candidates[1:]
    if name != "openvino":
        why += f"; not OpenVINO: {ov_why_not}"
    fallbacks, failed = [], name
    for other, other_why, _ in rest:
        fallbacks.append((other, "cpu", f"auto: {where}; the {failed} backend failed to open; {other_why}"))
        failed = other
    fallbacks.append(("torch", "cpu", f"auto: {where}; the {failed} backend failed to open: {eager}"))
    return BackendChoice(name, "cpu", f"auto: {where}; {why}", fallbacks=tuple(fallbacks), precision=precision)


def _choose_int8(backend: str, device: str | torch.device, dtype: torch.dtype, int8: Calibration) -> BackendChoice:
    if backend not in (AUTO, "onnxruntime"):
        raise ConfigError(f"INT8 runs on the onnxruntime backend, not {backend}")
    if str(device) not in (AUTO, "cpu") or dtype != torch.float32:
        raise ConfigError(f"INT8 runs on the CPU from a float32 model, not on {device} in {dtype}")
    version, missing = _onnxruntime()
    if version is None:
        raise BackendUnavailable(f"INT8 needs ONNX Runtime ({missing}); {_INSTALL_ADVICE['onnxruntime']}")
    why = "requested" if backend != AUTO else f"auto: INT8 asked for, which ONNX Runtime {version} runs on the CPU"
    return BackendChoice("onnxruntime", "cpu", f"{why}; encoder calibrated on {int8.data}", int8=int8, precision="int8")


def open_backend(model: DCRN, choice: BackendChoice, **options: object) -> tuple[Backend, BackendChoice]:
    """``choice`` opened with ``create_backend(..., **options)``; an auto choice that cannot be opened falls back
    to the next candidate of its rule. Returns the backend and the choice that holds (log its ``describe()``),
    whose ``precision`` is the one the opened backend runs in."""
    while True:
        try:
            backend = create_backend(choice.name, model, device=choice.device, int8=choice.int8, **options)
        except DcrnError as exc:  # unavailable, or an export / engine build that failed
            if not choice.fallbacks:
                raise
            name, device, reason = choice.fallbacks[0]
            log.warning("%s could not be opened (%s); falling back to %s", choice.name, exc, name)
            choice = BackendChoice(name, device, f"{reason} ({exc})", choice.fallbacks[1:])
            continue
        return backend, replace(choice, precision=backend.precision)


@dataclass(frozen=True)
class _Gpu:
    text: str  # "NVIDIA H200 (compute capability 9.0)"
    capability: tuple[int, int]
    nvidia: bool  # False for ROCm / HIP builds of torch


def _gpu() -> _Gpu | None:
    """The current CUDA device as torch sees it, or None without one."""
    if not torch.cuda.is_available():
        return None
    index = torch.cuda.current_device()
    capability = tuple(torch.cuda.get_device_capability(index))
    name = torch.cuda.get_device_name(index)
    nvidia = getattr(torch.version, "hip", None) is None
    kind = f"compute capability {capability[0]}.{capability[1]}" if nvidia else "ROCm"
    return _Gpu(f"GPU {name} ({kind})", capability, nvidia)  # type: ignore[arg-type]


def _tensorrt_for(gpu: _Gpu | None) -> tuple[str | None, str]:
    """(TensorRT's label when it is installed and runs on ``gpu``, else None; why not)."""
    if gpu is None or not gpu.nvidia:
        return None, "not an NVIDIA GPU"
    from dcrn.engine.backends.trt_build import check_gpu_supported, load_tensorrt

    try:
        flavour = load_tensorrt()
        check_gpu_supported(flavour, gpu.capability)
    except BackendUnavailable as exc:
        return None, f"TensorRT is not usable ({str(exc).split(';')[0]})"
    return flavour.label, ""


def _openvino() -> tuple[str | None, str]:
    """(OpenVINO's version when it and the ONNX exporter's ``onnx`` import, else None; why not)."""
    try:
        import onnx  # noqa: F401  (the step graph is exported with it)
        import openvino
    except ImportError as exc:
        return None, str(exc)
    return str(openvino.__version__).split("-")[0], ""


def _native_bf16() -> bool:
    """Whether the CPU runs bf16 natively, as OpenVINO's CPU plugin sees it (only call with OpenVINO usable)."""
    try:
        from dcrn.engine.backends import openvino_backend

        return openvino_backend.native_bf16()
    except (ImportError, RuntimeError) as exc:  # OpenVINO imports but its CPU plugin does not load
        log.debug("OpenVINO's CPU capabilities are unknown: %s", exc)
        return False


def _onnxruntime() -> tuple[str | None, str]:
    """(ONNX Runtime's version when it and the ONNX exporter's ``onnx`` import, else None; why not)."""
    try:
        import onnx  # noqa: F401  (the step graph is exported with it)
        import onnxruntime
    except ImportError as exc:
        return None, str(exc)
    return str(onnxruntime.__version__), ""


def create_backend(
    name: str,
    model: DCRN,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    max_batch: int = 8,
    cache_dir: str | os.PathLike | None = None,
    threads: int = 0,
    int8: Calibration | None = None,
) -> Backend:
    """The backend ``name`` running ``model`` on ``device`` for batches of up to ``max_batch`` streams.

    ``name`` / ``device`` ``auto``: as :func:`choose_backend` and :func:`open_backend` decide (use those to
    learn what was chosen and why).

    ``threads``: CPU threads of backends that keep their own pool (onnxruntime, openvino); 0 = the library
    default.
    torch's CPU threads are process-wide (``torch.set_num_threads``), set by the application.
    ``int8``: run the encoder in INT8 with this calibration (onnxruntime only; see engine.quantize).
    """
    if name == AUTO or str(device) == AUTO:
        choice = choose_backend(name, device, dtype=dtype, int8=int8)
        options = dict(dtype=dtype, max_batch=max_batch, cache_dir=cache_dir, threads=threads)
        return open_backend(model, choice, **options)[0]
    if name not in BACKENDS:
        raise ConfigError(f"unknown backend {name!r} (choose from {', '.join(BACKEND_CHOICES)})")
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
    extra: dict = {}
    if int8 is not None:
        if name != "onnxruntime":
            raise ConfigError(f"INT8 runs on the onnxruntime backend, not {name}")
        extra["int8"] = int8
    return module.create(
        model, device=resolved, dtype=dtype, max_batch=max_batch, cache_dir=cache_dir, threads=threads, **extra
    )
