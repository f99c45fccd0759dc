"""What a model taught on keypoints costs per frame, and whether it keeps up with a 30 fps camera.

``python -m scripts.measure.keypoint_live [--out FOLDER]`` (writes ``FOLDER/keypoint_live.json``) on
GMDCSA24 (``../shared/data``: one person in a room, its 640x480 clips), one thread for everything (OpenVINO,
ONNX Runtime, OpenCV, torch):

- **per frame, offline**: the keypoint front end (the hand / body graphs, tracking, the feature vector) plus
  the taught model's step (ONNX Runtime), every frame of every 640x480 clip from a fresh state; p50 / p99 /
  max of wall time and of process CPU time, split into frames where a detector ran and frames that only
  followed the tracked regions. The worst frame is a detector frame.
- **live**: ``dcrn run``'s pipeline on a 30 fps clip read at its own pace (as a camera delivers it, frames
  dropped when the model falls behind), one thread: frames per second, frames dropped, step-stage p50 / p99.

Models: ``body``, ``hands`` and ``hands+body``, each a taught model's shape with a fixed head (the cost does
not depend on the head's weights).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from dcrn.engine.backends.choice import choose_backend, open_backend
from dcrn.engine.keypoints.front import FrontEnd, FrontState
from dcrn.engine.pipeline import Pipeline, PipelineConfig
from dcrn.models.checkpoint import save_checkpoint
from dcrn.models.dcrn import DCRN
from dcrn.models.teach import features_config
from dcrn.models.video_io import read_video
from scripts.measure import harness

log = logging.getLogger(__name__)
SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"
KINDS = (("body",), ("hands",), ("hands", "body"))


def clips(data: Path) -> list[Path]:
    """GMDCSA24's 640x480 clips (the issue's camera size)."""
    out = []
    for path in sorted((data / "gmdcsa24").glob("Subject */*/*.mp4")):
        cap = cv2.VideoCapture(str(path))
        size = (cap.get(cv2.CAP_PROP_FRAME_WIDTH), cap.get(cv2.CAP_PROP_FRAME_HEIGHT), cap.get(cv2.CAP_PROP_FPS))
        cap.release()
        if size[:2] == (640, 480):
            out.append((path, size[2]))
    return out


def percentiles(values: list[float]) -> dict:
    if not values:
        return {}
    a = np.asarray(values)
    return {"n": len(a), "p50": round(float(np.median(a)), 2), "p99": round(float(np.percentile(a, 99)), 2),
            "max": round(float(a.max()), 2)}  # fmt: skip


def offline(kinds: tuple[str, ...], paths: list[Path], max_frames: int | None) -> dict:
    model = DCRN(features_config(("a", "b"), kinds)).eval()
    front = FrontEnd(kinds)
    choice = choose_backend("onnxruntime", "cpu", dtype=torch.float32)
    backend, _ = open_backend(model, choice, dtype=torch.float32, max_batch=1, threads=1)
    wall = {"detector": [], "tracked": []}
    cpu = {"detector": [], "tracked": []}
    step_ms = []
    for path in paths:
        frames, _ = read_video(path, None, max_frames)
        state, recurrent = FrontState(), backend.initial_state(1)
        for frame in frames:
            t0, c0 = time.perf_counter(), time.process_time()
            result, state = front.step(frame, state)
            t1 = time.perf_counter()
            _, recurrent = backend.step(torch.from_numpy(result.vector)[None], recurrent)
            t2, c2 = time.perf_counter(), time.process_time()
            ran = any(r is not None and r.detector_ran for r in (result.hands, result.body))
            kind = "detector" if ran else "tracked"
            wall[kind].append((t2 - t0) * 1000)
            cpu[kind].append((c2 - c0) * 1000)
            step_ms.append((t2 - t1) * 1000)
    backend.close()
    everything = wall["detector"] + wall["tracked"]
    return {
        "frames": len(everything),
        "wall_ms": percentiles(everything),
        "wall_ms_detector_frames": percentiles(wall["detector"]),
        "wall_ms_tracked_frames": percentiles(wall["tracked"]),
        "cpu_ms_detector_frames": percentiles(cpu["detector"]),
        "cpu_ms_tracked_frames": percentiles(cpu["tracked"]),
        "model_step_ms": percentiles(step_ms),
    }


def live(kinds: tuple[str, ...], path: Path, folder: Path) -> dict:
    model_path = folder / f"{'+'.join(kinds)}.pt"
    save_checkpoint(model_path, DCRN(features_config(("a", "b"), kinds)).eval(), meta={})
    records: list[dict] = []
    config = PipelineConfig(
        sources=[str(path)], model=str(model_path), backend="onnxruntime", threads=1, stats_interval_s=0
    )
    Pipeline(config, on_record=records.append).run()
    stats = [r for r in records if r["type"] == "stats"][-1]
    keep = ("fps", "frames", "dropped", "latency_ms_p50", "latency_ms_p99", "stages")
    return {"clip": str(path.relative_to(path.parents[3])), **{k: stats.get(k) for k in keep}}


def main() -> int:
    parser = harness.parser(__doc__, "keypoint_live")
    parser.add_argument("--data", type=Path, default=SHARED)
    parser.add_argument("--max-frames", type=int, default=None, help="frames per clip at most (offline)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    found = clips(args.data)
    paths = [p for p, _ in found]
    live_clip = next(p for p, fps in found if round(fps) == 30)
    report = {"machine": harness.machine_info(("torch", "onnxruntime", "openvino")), "clips": len(paths)}
    report["load_start"] = harness.load_average()
    work = args.out / "models"
    work.mkdir(parents=True, exist_ok=True)
    for kinds in KINDS:
        name = "+".join(kinds)
        log.info("%s: offline over %d clips", name, len(paths))
        report[name] = {"offline": offline(kinds, paths, args.max_frames), "live": live(kinds, live_clip, work)}
        log.info("%s", json.dumps(report[name]))
    report["load_end"] = harness.load_average()
    harness.write_json(args.out / "keypoint_live.json", report)
    return 0


if __name__ == "__main__":
    harness.run(main)
