"""What a run streams and how: :class:`PipelineConfig`, shared by the one-box :class:`~dcrn.engine.pipeline.Pipeline`
and the cluster driver (which hands each node a copy with one source)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from dcrn.engine.evidence.config import EvidenceConfig
from dcrn.engine.frames import Roi
from dcrn.engine.postprocess import PostprocessConfig
from dcrn.models.errors import ConfigError

DTYPES = {"float32": torch.float32, "float16": torch.float16}
MAX_PEOPLE = 16  # people followed per stream (each costs a landmark call per frame)


@dataclass
class PipelineConfig:
    sources: list[str]  # source URIs (camera index, rtsp://, http(s)://, file, synthetic:)
    model: str = "default"  # checkpoint path or shipped model name
    backend: str = "torch"  # torch, onnxruntime, openvino, tensorrt or auto (engine.backends.choose_backend)
    device: str = "cpu"  # cpu, cuda[:N] or auto (the GPU when there is one and the backend runs there)
    int8: bool = False  # the encoder in INT8 on the CPU (onnxruntime; engine.quantize), calibrated on training clips
    calibration: str | None = None  # data folder of those clips (None: the one the checkpoint was trained on)
    dtype: str = "float32"  # float32, or float16 (GPU backends)
    max_frames: int | None = None  # stop each stream after this many frames (None: no limit)
    duration_s: float | None = None  # stop after this many seconds of streaming (None: no limit)
    pace: bool = True  # files and synthetic at their own frame rate; False: files as fast as the model, no drops
    loop: bool = False  # files: start again at the end (a discontinuity: the state resets)
    timeout_s: float = 10.0  # open timeout of network sources (connect to first frame)
    stall_s: float = 3.0  # network sources: no frame for this long and the stream is lost (then reopened)
    stats_interval_s: float = 5.0  # stats records and log line every this many seconds (0: only at the end)
    ring_capacity: int = 4  # frame slots per source; the newest frames win when the model falls behind
    max_gap_s: float | None = 2.0  # a jump in a stream's pts larger than this resets its state
    postprocess: PostprocessConfig = field(default_factory=PostprocessConfig)  # smoothing, thresholds, events
    include_logits: bool = False  # put raw logits into prediction records for every sink
    cache_dir: str | None = None  # exported graphs / engines (default ~/.cache/dcrn or $DCRN_CACHE_DIR)
    backoff_s: tuple[float, float] = (0.5, 8.0)  # reconnect delay of lost live sources: first, cap
    names: list[str] | None = None  # stream names, one per source (default: each source's own name)
    threads: int = 0  # CPU threads for torch (process-wide), onnxruntime and openvino; 0 = the libraries' default
    evidence_dir: str | None = None  # clips and snapshots of actions go here (None: no evidence)
    evidence: EvidenceConfig = field(default_factory=EvidenceConfig)  # pre-roll, post-roll, retention
    rois: list[Roi | None] | None = None  # per source: the region the model sees (None: the whole picture)
    people: int = 1  # body models: follow up to this many people per stream, each with own state and events

    def __post_init__(self) -> None:
        self.sources = [str(s) for s in self.sources]
        if not self.sources:
            raise ConfigError("at least one source is needed")
        if self.names is not None and len(self.names) != len(self.sources):
            raise ConfigError(f"names must give one name per source, got {len(self.names)} for {len(self.sources)}")
        if self.rois is not None and len(self.rois) != len(self.sources):
            raise ConfigError(f"rois must give one region (or None) per source, got {len(self.rois)}")
        if isinstance(self.people, bool) or not isinstance(self.people, int) or not 1 <= self.people <= MAX_PEOPLE:
            raise ConfigError(f"people must be a whole number from 1 to {MAX_PEOPLE}, got {self.people!r}")
        if self.dtype not in DTYPES:
            raise ConfigError(f"dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if self.max_frames is not None and self.max_frames < 1:
            raise ConfigError(f"max_frames must be >= 1, got {self.max_frames}")
        if self.duration_s is not None and self.duration_s <= 0:
            raise ConfigError(f"duration must be positive, got {self.duration_s}")
        if self.stall_s <= 0:
            raise ConfigError(f"stall_s must be positive, got {self.stall_s}")
        if self.timeout_s <= 0 or self.stats_interval_s < 0 or self.ring_capacity < 1 or self.threads < 0:
            raise ConfigError("timeout_s must be > 0, stats_interval_s >= 0, ring_capacity >= 1 and threads >= 0")
