"""End-to-end bench: a paced synthetic source through capture, ring, preprocess, step and a sink.

The real :class:`~dcrn.engine.pipeline.Pipeline` runs a 30 fps ``synthetic:`` source into a JSON Lines
sink in a temporary folder. Added latency is the pipeline's own ``latency_ms`` of each prediction record
(frame captured -> record written); drops are the final stats record's ``dropped`` (frames the ring
discarded because the model fell behind the source). The first second is warm-up: its frames count for
drops but not for the latency percentiles.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

log = logging.getLogger(__name__)


@dataclass
class E2EResult:
    threads: int  # CPU threads the step ran on
    fps: float  # the source's pace
    seconds: float  # how long the source ran
    frames: int  # prediction records written
    measured: int  # of which after the warm-up, in the percentiles
    dropped: int  # frames the ring discarded (model behind the source)
    ms_p50: float  # added latency, frame captured -> record written
    ms_p99: float
    ms_max: float
    stages: dict[str, Any] = field(default_factory=dict)  # per-stage p50/p99 of the final stats record


def run_e2e(
    model: str,
    backend: str,
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    threads: int = 1,
    seconds: float = 20.0,
    fps: float = 30.0,
    warmup_s: float = 1.0,
    frame_size: tuple[int, int] = (320, 240),
    calibration: str | None = None,
) -> E2EResult:
    """Stream a paced synthetic source through the pipeline for ``seconds`` and collect its records.

    ``calibration``: run the encoder in INT8, calibrated on the clips in this folder (onnxruntime)."""
    from dcrn.engine.pipeline import Pipeline, PipelineConfig
    from dcrn.engine.sinks.files import JsonlSink

    latencies: list[float] = []
    final_stats: dict[str, Any] = {}
    skip = round(warmup_s * fps)

    def on_record(record: dict) -> None:
        if record.get("type") == "prediction" and record.get("latency_ms") is not None:
            latencies.append(float(record["latency_ms"]))
        elif record.get("type") == "stats":
            final_stats.clear()
            final_stats.update(record)

    width, height = frame_size
    config = PipelineConfig(
        sources=[f"synthetic:?fps={fps:g}&width={width}&height={height}"],
        model=model,
        backend=backend,
        device=str(device),
        dtype="float16" if dtype == torch.float16 else "float32",
        int8=calibration is not None,
        calibration=calibration,
        duration_s=seconds,
        stats_interval_s=0,
        threads=threads,
    )
    previous = torch.get_num_threads()  # the pipeline sets torch's process-wide threads
    try:
        with tempfile.TemporaryDirectory(prefix="dcrn-bench-") as folder:
            Pipeline(config, [JsonlSink(Path(folder) / "records.jsonl")], on_record=on_record).run()
    finally:
        torch.set_num_threads(previous)
    measured = np.asarray(latencies[skip:] if len(latencies) > skip else latencies, dtype=float)
    if not len(measured):
        raise RuntimeError(f"the {backend} pipeline wrote no prediction in {seconds:g} s")
    return E2EResult(
        threads=threads,
        fps=fps,
        seconds=seconds,
        frames=len(latencies),
        measured=len(measured),
        dropped=int(final_stats.get("dropped", 0)),
        ms_p50=float(np.percentile(measured, 50)),
        ms_p99=float(np.percentile(measured, 99)),
        ms_max=float(measured.max()),
        stages=dict(final_stats.get("stages", {})),
    )
