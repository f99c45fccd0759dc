"""What keeping evidence costs per 640x480 frame: the encoded pre-roll of ``dcrn.engine.evidence``.

Two measurements, both with frames made before the clock starts:

1. one stream fed as fast as it encodes: the caller's CPU time per frame (RGB -> I420 and the queue), the
   encoder thread's CPU time per frame, and the process CPU time per frame in all;
2. ``--streams`` streams (8) paced at ``--fps`` (24) for ``--seconds``, as live cameras are: the cores
   that evidence keeps busy, the frames it had to leave out, and a clip written on every stream.

Content: the synthetic stream, and a real CCTV clip from ``../shared/data/fight-cctv`` scaled to
640x480 when that folder is there.

    .venv/bin/python -m scripts.measure.evidence_cost [--streams 8 --fps 24 --seconds 10] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from pathlib import Path

import cv2
import numpy as np

from dcrn.engine.evidence import EvidenceConfig, EvidenceRecorder
from dcrn.models.synth import SyntheticActionStream
from dcrn.models.video_io import read_video

REAL_CLIP = Path(__file__).resolve().parents[2].parent / "shared/data/fight-cctv/fight/fi005.mp4"
SIZE = (640, 480)


def synthetic_frames(count: int) -> np.ndarray:
    stream = SyntheticActionStream(seed=1, fps=30.0, size=(SIZE[1], SIZE[0]))
    return np.stack([stream.read()[0] for _ in range(count)])


def real_frames(count: int) -> np.ndarray | None:
    if not REAL_CLIP.exists():
        return None
    frames, _ = read_video(REAL_CLIP, max_frames=count)
    return np.stack([cv2.resize(f, SIZE, interpolation=cv2.INTER_AREA) for f in frames])


def one_stream(frames: np.ndarray, config: EvidenceConfig, repeat: int) -> dict:
    """Unpaced: every frame encoded (a large queue), one action in the middle."""
    with tempfile.TemporaryDirectory() as folder:
        recorder = EvidenceRecorder(folder, config)
        total = len(frames) * repeat
        caller = 0.0
        cpu0 = time.process_time()
        for index in range(total):
            pts = index / 30.0
            if index == total // 2:
                recorder.event({"type": "event", "event": "action_started", "stream": "s", "frame": index,
                                "pts": pts, "wall": time.time(), "label": "act", "score": 0.9})  # fmt: skip
            started = time.thread_time()
            recorder.frame("s", frames[index % len(frames)], pts)
            caller += time.thread_time() - started
        recorder.close()
        cpu = time.process_time() - cpu0
        stats = recorder.stats()["s"]
        clip_mb = sum(p.stat().st_size for p in Path(folder).rglob("*.mp4")) / 1e6
    return {
        "frames": total,
        "caller_cpu_ms_per_frame": round(caller * 1000 / total, 3),
        "encoder_cpu_ms_per_frame": stats.encode_ms,
        "process_cpu_ms_per_frame": round(cpu * 1000 / total, 3),
        "preroll_mb": stats.preroll_mb,
        "clip_mb": round(clip_mb, 2),
        "clip_s": round(total / 2 / 30.0 + config.pre_s, 1),
        "dropped": stats.dropped,
    }


def many_streams(frames: np.ndarray, config: EvidenceConfig, streams: int, fps: float, seconds: float) -> dict:
    """Paced like live cameras: each turn hands every stream one frame, as the pipeline's loop does."""
    with tempfile.TemporaryDirectory() as folder:
        recorder = EvidenceRecorder(folder, config)
        names = [f"cam{k}" for k in range(streams)]
        turns = int(seconds * fps)
        late = 0
        cpu0, wall0 = time.process_time(), time.monotonic()
        for turn in range(turns):
            due = wall0 + turn / fps
            pause = due - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            else:
                late += 1
            for k, name in enumerate(names):
                if turn == turns // 3:
                    recorder.event({"type": "event", "event": "action_started", "stream": name, "frame": turn,
                                    "pts": turn / fps, "wall": time.time(), "label": "act", "score": 0.9})  # fmt: skip
                if turn == turns // 2:
                    recorder.event({"type": "event", "event": "action_ended", "stream": name, "frame": turn,
                                    "pts": turn / fps, "wall": time.time(), "label": "act", "score": 0.1})  # fmt: skip
                recorder.frame(name, frames[(turn + 7 * k) % len(frames)], turn / fps)
        wall = time.monotonic() - wall0
        cpu = time.process_time() - cpu0
        stats = recorder.stats()
        threads = threading.active_count()
        recorder.close()
        clips = len(list(Path(folder).rglob("*.mp4")))
    frames_total = streams * turns
    return {
        "streams": streams,
        "fps": fps,
        "seconds": round(wall, 2),
        "cores_busy": round(cpu / wall, 3),
        "process_cpu_ms_per_frame": round(cpu * 1000 / frames_total, 3),
        "encoder_cpu_ms_per_frame": round(float(np.mean([s.encode_ms for s in stats.values()])), 3),
        "dropped": sum(s.dropped for s in stats.values()),
        "dropped_pct": round(100 * sum(s.dropped for s in stats.values()) / frames_total, 2),
        "late_turns": late,
        "clips": clips,
        "threads": threads,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=8)
    parser.add_argument("--fps", type=float, default=24.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--preset", default="ultrafast")
    parser.add_argument("--codec", default="auto")
    parser.add_argument("--crf", type=int, default=23)
    parser.add_argument("--max-fps", type=float, default=None, help="encode at most this many frames a second")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()
    config = EvidenceConfig(
        codec=args.codec, preset=args.preset, crf=args.crf, max_fps=args.max_fps, max_mb=None, max_age_days=None
    )
    unpaced = EvidenceConfig(**{**config.__dict__, "queue_frames": 100_000})
    results: dict[str, dict] = {}
    contents = {"synthetic": synthetic_frames(120), "real": real_frames(58)}
    to_i420_ms = []
    for name, frames in contents.items():
        if frames is None:
            continue
        started = time.perf_counter()
        for frame in frames:
            cv2.cvtColor(frame, cv2.COLOR_RGB2YUV_I420)
        to_i420_ms.append((time.perf_counter() - started) * 1000 / len(frames))
        results[f"one_stream_{name}"] = one_stream(frames, unpaced, repeat=max(1, 600 // len(frames)))
        print(name, "one stream:", json.dumps(results[f"one_stream_{name}"]))
        results[f"many_streams_{name}"] = many_streams(frames, config, args.streams, args.fps, args.seconds)
        print(name, f"{args.streams} streams:", json.dumps(results[f"many_streams_{name}"]))
    results["rgb_to_i420_ms"] = {"mean": round(float(np.mean(to_i420_ms)), 3)}
    results["settings"] = {"codec": args.codec, "preset": args.preset, "crf": args.crf, "max_fps": args.max_fps}
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
