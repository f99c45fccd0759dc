"""Live statistics: frame rate, drops and per-stage latency percentiles, per stream.

Stages of one frame (milliseconds):

* ``capture``: from capture (``Frame.captured``) until the pipeline takes the frame out of the ring;
* ``preprocess``: resize + normalise of the batch the frame was in;
* ``step``: the backend step of that batch;
* ``sink``: postprocess and writing the frame's records;
* ``total``: capture -> record written (the prediction record's ``latency_ms``).
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

STAGES = ("capture", "preprocess", "step", "sink", "total")


class FpsMeter:
    """Frames per second over the last ``window`` seconds; one verb: ``tick()``."""

    def __init__(self, window: float = 5.0) -> None:
        self.window = window
        self._ticks: deque[float] = deque()

    def tick(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        self._ticks.append(now)
        while self._ticks and now - self._ticks[0] > self.window:
            self._ticks.popleft()

    @property
    def fps(self) -> float:
        if len(self._ticks) < 2:
            return 0.0
        span = self._ticks[-1] - self._ticks[0]
        return (len(self._ticks) - 1) / span if span > 0 else 0.0


class LatencyWindow:
    """The last ``size`` samples of one stage, with percentiles; one verb: ``add(ms)``."""

    def __init__(self, size: int = 1000) -> None:
        self._samples: deque[float] = deque(maxlen=size)

    def add(self, ms: float) -> None:
        self._samples.append(ms)

    def percentile(self, q: float) -> float | None:
        if not self._samples:
            return None
        ordered = sorted(self._samples)
        index = min(len(ordered) - 1, max(0, round(q / 100.0 * (len(ordered) - 1))))
        return ordered[index]

    def __len__(self) -> int:
        return len(self._samples)


@dataclass
class StreamStats:
    """Counters and latency windows of one stream."""

    stream: str
    frames: int = 0  # frames stepped and written
    dropped: int = 0  # frames decoded but never stepped (ring overwrites, queued at stop)
    fps: FpsMeter = field(default_factory=FpsMeter)
    stages: dict[str, LatencyWindow] = field(default_factory=lambda: {s: LatencyWindow() for s in STAGES})

    def add(self, **stage_ms: float) -> None:
        """One frame done: its milliseconds per stage (``capture=..., step=..., total=...``)."""
        self.frames += 1
        self.fps.tick()
        for name, ms in stage_ms.items():
            self.stages[name].add(ms)

    def record(self) -> dict:
        """A ``stats`` record of the record schema (docs/pipeline.md), with per-stage p50/p99 under ``stages``."""
        total = self.stages["total"]
        return {
            "type": "stats",
            "stream": self.stream,
            "wall": round(time.time(), 4),
            "frames": self.frames,
            "fps": round(self.fps.fps, 2),
            "dropped": self.dropped,
            "latency_ms_p50": _round(total.percentile(50)),
            "latency_ms_p99": _round(total.percentile(99)),
            "stages": {
                name: {"p50": _round(w.percentile(50)), "p99": _round(w.percentile(99))}
                for name, w in self.stages.items()
                if name != "total"
            },
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def log_line(record: dict) -> str:
    """The stats record as one log line."""
    stages = ", ".join(f"{name} {_fmt(v['p50'])}/{_fmt(v['p99'])}" for name, v in record.get("stages", {}).items())
    return (
        f"{record['stream']}: {record['fps']:.1f} fps, {record['frames']} frames, {record['dropped']} dropped, "
        f"latency p50/p99 {_fmt(record['latency_ms_p50'])}/{_fmt(record['latency_ms_p99'])} ms ({stages})"
    )


def total_line(records: list[dict]) -> str:
    """All streams' stats records of one moment as one log line: total fps, frames and drops, the worst p99."""
    frames = sum(r["frames"] for r in records)
    dropped = sum(r["dropped"] for r in records)
    share = 100.0 * dropped / (frames + dropped) if frames + dropped else 0.0
    worst = max((r["latency_ms_p99"] for r in records if r["latency_ms_p99"] is not None), default=None)
    slowest = min((r["fps"] for r in records), default=0.0)
    return (
        f"all {len(records)} streams: {sum(r['fps'] for r in records):.1f} fps (slowest {slowest:.1f}), "
        f"{frames} frames, {dropped} dropped ({share:.2f}%), worst latency p99 {_fmt(worst)} ms"
    )


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"
