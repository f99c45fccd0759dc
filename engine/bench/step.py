"""Micro-benchmarks of one backend: step latency, throughput, the sliding-window baseline, constant latency.

Every number is measured on the backend's own ``step(frames, state) -> (logits, state)``, on frames that
are already preprocessed (float, on the backend's device), so what is timed is the model path alone:

* **step latency**: batch-1 steps timed one by one -> p50 / p99 in ms;
* **throughput**: frames per second at each batch size, timed over a loop (one sync at the end);
* **sliding window**: what clip-based recognizers do, the same network recomputed over the last T frames
  for every update, timed interleaved with incremental steps so both see the same machine load;
* **constant latency**: one continuous stream with the state carried from frame 0 to frame N, every step
  timed, and the process's resident memory alongside. "Step time at frame N against frame 100" is taken
  side by side at the end: the final state on the long-running backend, and the state saved at frame 100
  on a freshly created backend, stepped alternately. Both see the same machine load, so the ratio shows
  what the stream's length does (state values, anything accumulating in the backend) and not what other
  processes do. The two spans measured at their own times (median wall-clock and CPU time of steps
  100..599 and of the last 500) and a curve of 1,000-frame medians come with it: on a quiet machine they
  agree; on a shared one they move with the load.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import psutil
import torch

log = logging.getLogger(__name__)

MB = 1024 * 1024


@dataclass(frozen=True)
class BenchSettings:
    """How long and how hard each measurement runs."""

    batches: tuple[int, ...] = (1, 4, 16, 64)  # batch sizes of the throughput measurement
    warmup_steps: int = 300  # untimed steps before the first measurement (allocators, caches, graphs)
    latency_steps: int = 3000  # batch-1 steps timed one by one for p50 / p99
    throughput_seconds: float = 2.0  # minimum timed time per batch size
    throughput_min_steps: int = 5  # ... and at least this many steps per batch size
    window: int = 16  # T of the sliding-window baseline
    window_updates: int = 200  # window recomputes timed (each beside one incremental step)
    stream_frames: int = 100_000  # length of the constant-latency stream
    drift_at: int = 100  # the early point of the constant-latency stream
    drift_span: int = 500  # steps whose median is "the step time at" a point
    rss_every: int = 1000  # a point of the step-time and memory curve every this many frames
    frame_pool: int = 64  # distinct input frames, cycled through

    @classmethod
    def quick(cls) -> BenchSettings:
        """The short run: drift over 10,000 frames, the whole bench in about two minutes on 2 CPU cores."""
        return cls(
            warmup_steps=100,
            latency_steps=1000,
            throughput_seconds=0.7,
            throughput_min_steps=3,
            window_updates=60,
            stream_frames=10_000,
        )


@dataclass
class StepResult:
    step_ms_p50: float
    step_ms_p99: float
    step_ms_mean: float
    throughput_fps: dict[int, float]


@dataclass
class WindowResult:
    window: int  # T
    window_ms_p50: float  # one recompute over the last T frames
    step_ms_p50: float  # one incremental step, interleaved with the recomputes
    window_ratio: float  # window_ms_p50 / step_ms_p50


@dataclass
class DriftResult:
    frames: int  # length of the continuous stream
    early_frame: int  # first frame of the early span
    late_frame: int  # first frame of the late span
    early_ms: float  # median step time over the early span, measured at its own time
    late_ms: float  # median step time over the late span, measured at its own time
    drift: float  # side by side at the end: late state (long-running backend) / early state (fresh backend)
    drift_same_backend: float  # side by side, both states on the long-running backend
    drift_wall: float  # late_ms / early_ms: the spans at their own times (moves with other processes' load)
    drift_cpu: float  # the same spans in process CPU time (less sensitive to load, not immune: shared caches)
    side_late_ms: float  # side by side: median step from the late state (paired with the fresh backend)
    side_early_ms: float  # side by side: median step from the early state on the fresh backend
    rss_start_mb: float
    rss_end_mb: float
    rss_max_mb: float
    rss_growth_mb: float  # end - start
    seconds: float
    curve: list[tuple[int, float, float]] = field(default_factory=list)  # (first frame, median step ms, RSS MB)
    gpu_mem_growth_mb: float | None = None  # CUDA: torch's allocated memory, end - start


@dataclass
class Inputs:
    """A pool of preprocessed frames on the backend's device, cycled through by every measurement."""

    pool: torch.Tensor  # (P, 3, S, S), or (P, F) vectors
    device: torch.device

    def batch(self, index: int, size: int) -> torch.Tensor:
        """The ``index``-th batch of ``size`` frames (a view into the pool while the pool is big enough)."""
        count = len(self.pool)
        if size > count:
            return self.pool.repeat(-(-size // count), *([1] * (self.pool.dim() - 1)))[:size].contiguous()
        start = (index * size) % (count - size + 1)
        return self.pool[start : start + size]


def make_inputs(
    size: int | tuple[int, ...], count: int, device: torch.device, dtype: torch.dtype = torch.float32, seed: int = 0
) -> Inputs:
    """``count`` normalised frames of ``size`` x ``size``: smooth moving blobs plus noise, like video. A
    ``size`` of one element, ``(F,)``, is a ``features`` model's input: standard normal vectors (what the
    step costs does not depend on their values)."""
    gen = torch.Generator().manual_seed(seed)
    if isinstance(size, tuple) and len(size) == 1:
        pool = torch.randn(count, size[0], generator=gen).to(device=device, dtype=dtype).contiguous()  # (P, F)
        return Inputs(pool=pool, device=device)
    if isinstance(size, tuple):
        size = size[-1]
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    frames = []
    for i in range(count):
        phase = 2 * np.pi * i / count
        cx, cy = 0.6 * np.cos(phase), 0.6 * np.sin(phase)
        blob = torch.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / 0.1)  # (S, S)
        colour = torch.tensor([1.5, -0.5, 0.8]).view(3, 1, 1)
        frames.append(colour * blob + 0.3 * torch.randn(3, size, size, generator=gen))
    pool = torch.stack(frames).to(device=device, dtype=dtype).contiguous()  # (P, 3, S, S)
    return Inputs(pool=pool, device=device)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def rss_mb() -> float:
    return psutil.Process().memory_info().rss / MB


def measure_steps(backend: Any, inputs: Inputs, settings: BenchSettings) -> StepResult:
    """Batch-1 latency percentiles, then frames/s at each batch size."""
    device = inputs.device
    state = backend.initial_state(1)
    for i in range(settings.warmup_steps):
        _, state = backend.step(inputs.batch(i, 1), state)
    sync(device)
    times = np.empty(settings.latency_steps)
    for i in range(settings.latency_steps):
        frame = inputs.batch(i, 1)
        start = time.perf_counter()
        _, state = backend.step(frame, state)
        sync(device)
        times[i] = time.perf_counter() - start
    times *= 1e3
    throughput = {batch: measure_throughput(backend, inputs, batch, settings) for batch in settings.batches}
    return StepResult(
        step_ms_p50=float(np.percentile(times, 50)),
        step_ms_p99=float(np.percentile(times, 99)),
        step_ms_mean=float(times.mean()),
        throughput_fps=throughput,
    )


def measure_throughput(backend: Any, inputs: Inputs, batch: int, settings: BenchSettings) -> float:
    """Frames per second at ``batch`` streams: steps back to back for a minimum time, one sync at the end."""
    device = inputs.device
    state = backend.initial_state(batch)
    frames = [inputs.batch(i, batch) for i in range(4)]
    for i in range(3):
        _, state = backend.step(frames[i % 4], state)
    sync(device)
    steps = 0
    start = time.perf_counter()
    elapsed = 0.0
    while steps < settings.throughput_min_steps or elapsed < settings.throughput_seconds:
        for _ in range(8 if batch < 16 else 1):
            _, state = backend.step(frames[steps % 4], state)
            steps += 1
        sync(device)
        elapsed = time.perf_counter() - start
    fps = steps * batch / elapsed
    log.debug("batch %d: %d steps in %.2f s -> %.0f frames/s", batch, steps, elapsed, fps)
    return fps


def measure_window(
    backend: Any, window_fn: Callable[[torch.Tensor], Any], inputs: Inputs, settings: BenchSettings
) -> WindowResult:
    """The T-frame window recompute against the incremental step, alternating, so both see the same load."""
    device = inputs.device
    clip = inputs.batch(0, settings.window).unsqueeze(0).contiguous()  # (1, T, 3, S, S)
    state = backend.initial_state(1)
    for i in range(3):
        window_fn(clip)
        _, state = backend.step(inputs.batch(i, 1), state)
    sync(device)
    window_times = np.empty(settings.window_updates)
    step_times = np.empty(settings.window_updates * 4)
    for i in range(settings.window_updates):
        for k in range(4):  # a few steps per recompute: steps are short, so their median needs more samples
            frame = inputs.batch(4 * i + k, 1)
            start = time.perf_counter()
            _, state = backend.step(frame, state)
            sync(device)
            step_times[4 * i + k] = time.perf_counter() - start
        start = time.perf_counter()
        window_fn(clip)
        sync(device)
        window_times[i] = time.perf_counter() - start
    window_ms = float(np.median(window_times)) * 1e3
    step_ms = float(np.median(step_times)) * 1e3
    return WindowResult(settings.window, window_ms, step_ms, window_ms / step_ms)


def measure_drift(
    backend: Any, inputs: Inputs, settings: BenchSettings, fresh_backend: Callable[[], Any] | None = None
) -> DriftResult:
    """One continuous stream of ``stream_frames`` batch-1 steps, state carried throughout, every step timed."""
    device = inputs.device
    span, frames, block = settings.drift_span, settings.stream_frames, settings.rss_every
    early_frame, late_frame = settings.drift_at, frames - span
    if late_frame < early_frame + span:
        raise ValueError(f"stream_frames must be >= drift_at + 2 * drift_span, got {frames}")
    warm = backend.initial_state(1)
    for i in range(settings.warmup_steps):  # warm-up on a stream of its own
        _, warm = backend.step(inputs.batch(i, 1), warm)
    sync(device)
    del warm
    cuda = device.type == "cuda"
    gpu_start = torch.cuda.memory_allocated(device) if cuda else 0
    pool = [inputs.batch(i, 1) for i in range(len(inputs.pool))]
    wall = np.empty(frames)  # seconds per step, allocated before the start RSS is taken
    cpu = np.empty(frames)  # process CPU seconds per step: what other processes' load cannot inflate
    rss = np.empty(-(-frames // block) + 1)  # MB, every ``block`` frames and at the end
    rss_start = rss_mb()
    early_state = None
    state = backend.initial_state(1)
    began = time.perf_counter()
    for i in range(frames):
        if i == early_frame:
            early_state = clone_state(state)
        frame = pool[i % len(pool)]
        cpu_start, start = time.process_time(), time.perf_counter()
        _, state = backend.step(frame, state)
        sync(device)
        wall[i] = time.perf_counter() - start
        cpu[i] = time.process_time() - cpu_start
        if i % block == 0:
            rss[i // block] = rss_mb()
    seconds = time.perf_counter() - began
    rss_end = rss[-1] = rss_mb()
    gpu_growth = (torch.cuda.memory_allocated(device) - gpu_start) / MB if cuda else None
    early, late = slice(early_frame, early_frame + span), slice(late_frame, frames)
    early_ms, late_ms = float(np.median(wall[early])) * 1e3, float(np.median(wall[late])) * 1e3
    fresh = fresh_backend() if fresh_backend is not None else backend
    try:
        side = side_by_side(backend, fresh, pool, state, early_state, span, device)
    finally:
        if fresh is not backend:
            fresh.close()
    curve = [
        (start, float(np.median(wall[start : start + block])) * 1e3, float(rss[start // block]))
        for start in range(0, frames, block)
    ]
    return DriftResult(
        frames=frames,
        early_frame=early_frame,
        late_frame=late_frame,
        early_ms=early_ms,
        late_ms=late_ms,
        drift=side["late_vs_early_fresh"] / side["early_fresh"],
        drift_same_backend=side["late_vs_early"] / side["early"],
        drift_wall=late_ms / early_ms,
        drift_cpu=float(np.median(cpu[late]) / np.median(cpu[early])),
        side_late_ms=side["late_vs_early_fresh"],
        side_early_ms=side["early_fresh"],
        rss_start_mb=rss_start,
        rss_end_mb=rss_end,
        rss_max_mb=float(rss.max()),
        rss_growth_mb=rss_end - rss_start,
        seconds=seconds,
        curve=curve,
        gpu_mem_growth_mb=gpu_growth,
    )


def side_by_side(
    backend: Any, fresh: Any, pool: list, late: Any, early: Any, span: int, device: torch.device
) -> dict[str, float]:
    """Median ms of the late state against the early state, stepped in pairs at the same time (same load).

    Two rounds of ``span`` pairs: the late state against a copy of the early state on ``fresh`` (another
    instance of the backend: what a new stream would get), then against the early state on the same
    backend. Within a pair the order is random, because a step runs faster right after a step of the same
    backend (its weights are still in cache) than after another backend's.
    """
    order = np.random.default_rng(0)
    out: dict[str, float] = {}
    for key, other in (("early_fresh", fresh), ("early", backend)):
        states = {"late": (backend, late), key: (other, clone_state(early))}
        times = {name: np.empty(span) for name in states}
        for i in range(span):
            frame = pool[i % len(pool)]
            for name in order.permutation(list(states)):
                runner, state = states[name]
                start = time.perf_counter()
                _, state = runner.step(frame, state)
                sync(device)
                times[name][i] = time.perf_counter() - start
                # Backends may hand back views of their own buffers (valid until the next step): keep copies.
                states[name] = (runner, clone_state(state))
        late = states["late"][1]
        out[f"late_vs_{key}"] = float(np.median(times["late"])) * 1e3
        out[key] = float(np.median(times[key])) * 1e3
    return out


def clone_state(state: Any) -> Any:
    """A copy of a backend state (tuple of tensors or arrays) that later steps cannot overwrite."""
    if isinstance(state, torch.Tensor):
        return state.clone()
    if isinstance(state, np.ndarray):
        return state.copy()
    if isinstance(state, (tuple, list)):
        return type(state)(clone_state(s) for s in state)
    raise TypeError(f"cannot copy a backend state of type {type(state).__name__}")


@dataclass
class BackendBench:
    """Everything measured on one backend."""

    steps: StepResult
    window: WindowResult
    drift: DriftResult


def bench_backend(
    backend: Any,
    window_fn: Callable[[torch.Tensor], Any],
    inputs: Inputs,
    settings: BenchSettings,
    fresh_backend: Callable[[], Any] | None = None,
) -> BackendBench:
    """Step latency and throughput, the window baseline and the constant-latency stream, in that order.

    ``fresh_backend()`` makes another instance of the same backend for the side-by-side drift check
    (without it, the early state runs on the long-running backend too).
    """
    log.info("step latency and throughput")
    steps = measure_steps(backend, inputs, settings)
    log.info("sliding window of %d frames", settings.window)
    window = measure_window(backend, window_fn, inputs, settings)
    log.info("constant latency over %d frames", settings.stream_frames)
    drift = measure_drift(backend, inputs, settings, fresh_backend)
    return BackendBench(steps=steps, window=window, drift=drift)
