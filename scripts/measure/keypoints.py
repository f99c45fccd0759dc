"""Measure the keypoint encoders on real footage: how often they find people and hands, what a frame costs.

``python -m scripts.measure.keypoints [--json PATH]`` runs, on ``../shared/data`` (GMDCSA24: one person
in a room; fight-cctv: several small people), with one inference thread:

- **body** (single person, the default): frames with a person found; per-frame step time, p50 / p99,
  split into frames where the detector ran and frames that only followed the tracked region; wall-clock
  and process CPU time (the CPU time does not grow when other jobs share the cores);
- **detector alone** on every frame: frames with a detection, detections per frame (how many people
  the pose detector sees at all);
- **several people** (``max_people`` 1 and 4) on fight-cctv: people per frame, new tracks per 100 frames
  (how well tracks hold);
- **hands** on GMDCSA24: frames with a hand, step times;
- **bf16 against fp32**: the mean pixel distance between landmarks read by the two precisions in the same
  regions (bf16 emulated in fp32 arithmetic where the CPU has no native bf16: see ``runtime.emulate_bf16``).

Frames are scaled to 640 pixels wide (640x480 for 4:3 clips, 640x360 for 16:9) before the encoders see
them. Everything runs on one thread (OpenVINO and OpenCV). Wall-clock numbers include whatever else the
machine runs (the JSON records the load average); process CPU time does not.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from dcrn.engine.backends.openvino_backend import native_bf16
from dcrn.engine.keypoints.anchors import weighted_nms
from dcrn.engine.keypoints.body import BodyConfig, BodyEncoder
from dcrn.engine.keypoints.hands import HandsConfig, HandsEncoder
from dcrn.engine.keypoints.runtime import RuntimeOptions
from dcrn.engine.keypoints.tracking import TrackState

log = logging.getLogger(__name__)

WIDTH = 640
SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"


def clip_frames(path: Path, max_frames: int | None = None) -> Iterator[np.ndarray]:
    """The clip's frames as (H, 640, 3) uint8 RGB."""
    cap = cv2.VideoCapture(str(path))
    try:
        count = 0
        while max_frames is None or count < max_frames:
            ok, bgr = cap.read()
            if not ok:
                break
            height = round(bgr.shape[0] * WIDTH / bgr.shape[1])
            if bgr.shape[1] != WIDTH:
                bgr = cv2.resize(bgr, (WIDTH, height), interpolation=cv2.INTER_AREA)
            count += 1
            yield cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    finally:
        cap.release()


def gmdcsa24_clips(root: Path) -> list[Path]:
    return sorted((root / "gmdcsa24").glob("Subject */*/*.mp4"))


def fight_cctv_clips(root: Path, count: int) -> list[Path]:
    """``count`` clips, alternating fight / no fight, spread over the listing (so over source groups)."""
    fight = sorted((root / "fight-cctv" / "fight").glob("*.mp4"))
    calm = sorted((root / "fight-cctv" / "noFight").glob("*.mp4"))
    pick = []
    for group in (fight, calm):
        step = max(1, len(group) // max(1, count // 2))
        pick += group[::step][: count // 2]
    return sorted(pick)


def _ms(values: list[float]) -> dict:
    if not values:
        return {"frames": 0}
    array = np.asarray(values) * 1000
    return {
        "frames": len(values),
        "p50_ms": round(float(np.percentile(array, 50)), 2),
        "p99_ms": round(float(np.percentile(array, 99)), 2),
        "max_ms": round(float(array.max()), 2),
    }


@dataclass
class Tally:
    """Per-frame outcomes of one encoder over many clips."""

    frames: int = 0
    with_any: int = 0  # frames with at least one person / hand
    found: int = 0  # people / hands summed over frames
    detector_times: list[float] = field(default_factory=list)  # wall-clock seconds per frame
    tracked_times: list[float] = field(default_factory=list)
    detector_cpu: list[float] = field(default_factory=list)  # process CPU seconds per frame
    tracked_cpu: list[float] = field(default_factory=list)
    new_tracks: int = 0

    def add(self, seconds: float, cpu: float, count: int, detector_ran: bool) -> None:
        self.frames += 1
        self.with_any += count > 0
        self.found += count
        (self.detector_times if detector_ran else self.tracked_times).append(seconds)
        (self.detector_cpu if detector_ran else self.tracked_cpu).append(cpu)

    def report(self) -> dict:
        frames = max(1, self.frames)
        return {
            "frames": self.frames,
            "rate": round(self.with_any / frames, 3),
            "per_frame": round(self.found / frames, 3),
            "detector_frames": len(self.detector_times),
            "new_tracks_per_100_frames": round(100 * self.new_tracks / frames, 2),
            "all": _ms(self.detector_times + self.tracked_times),
            "detector": _ms(self.detector_times),
            "tracked": _ms(self.tracked_times),
            "cpu_all": _ms(self.detector_cpu + self.tracked_cpu),
            "cpu_detector": _ms(self.detector_cpu),
            "cpu_tracked": _ms(self.tracked_cpu),
        }


def run_encoder(step: Callable, clips: list[Path], key: str, max_frames: int | None) -> Tally:
    """Step an encoder (``step(frame, state) -> (result, state)``) through each clip from a fresh state."""
    tally = Tally()
    for path in clips:
        state = TrackState()
        for frame in clip_frames(path, max_frames):
            start, cpu = time.perf_counter(), time.process_time()
            result, state_next = step(frame, state)
            seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
            tally.new_tracks += state_next.next_id - state.next_id
            state = state_next
            tally.add(seconds, cpu, len(getattr(result, key)), result.detector_ran)
    return tally


def detector_alone(body: BodyEncoder, clips: list[Path], max_frames: int | None) -> dict:
    """The pose detector on every frame: frames with a detection, detections per frame after NMS."""
    frames = with_any = total = 0
    for path in clips:
        for frame in clip_frames(path, max_frames):
            count = len(weighted_nms(body.detector(frame, body.config.detection_threshold)))
            frames += 1
            with_any += count > 0
            total += count
    return {
        "frames": frames,
        "rate": round(with_any / max(1, frames), 3),
        "per_frame": round(total / max(1, frames), 3),
    }


def precision_agreement(
    make: Callable[[RuntimeOptions], BodyEncoder | HandsEncoder], precision: str, clips: list[Path], limit: int
) -> dict:
    """Landmarks read by fp32 and by ``precision`` in the same tracked regions: mean / p95 pixel distance,
    and how often the presence decision differs. The fp32 encoder drives the tracking."""
    reference, other = make(RuntimeOptions(precision="fp32")), make(RuntimeOptions(precision=precision))
    distances: list[float] = []
    regions = disagree = 0
    for path in clips:
        state = TrackState()
        for frame in clip_frames(path, limit):
            for track in state.tracks:
                a, b = reference.landmarks(frame, track), other.landmarks(frame, track)
                regions += 1
                if (a is None) != (b is None):
                    disagree += 1
                if a is not None and b is not None:
                    first = a[0] if isinstance(a, tuple) else a
                    second = b[0] if isinstance(b, tuple) else b
                    gap = np.linalg.norm(first.landmarks[:, :2] - second.landmarks[:, :2], axis=1)
                    distances.append(float(gap.mean()))
            _, state = reference.step(frame, state)
    values = np.asarray(distances) if distances else np.zeros(1)
    return {
        "precision": other.landmark_graph.precision,
        "regions": regions,
        "mean_px": round(float(values.mean()), 3),
        "p95_px": round(float(np.percentile(values, 95)), 3),
        "max_px": round(float(values.max()), 3),
        "presence_disagreements": disagree,
    }


def measure(root: Path, *, fight_clips: int, max_frames: int | None, agreement_frames: int) -> dict:
    gm = gmdcsa24_clips(root)
    fights = fight_cctv_clips(root, fight_clips)
    if not gm or not fights:
        raise FileNotFoundError(f"no GMDCSA24 or fight-cctv clips under {root}")
    report: dict = {"load_before": os.getloadavg(), "threads": 1, "opencv_threads": cv2.getNumThreads(), "width": WIDTH}
    body = BodyEncoder(BodyConfig())
    log.info("body on %d GMDCSA24 clips", len(gm))
    report["body_gmdcsa24"] = run_encoder(body.step, gm, "people", max_frames).report()
    report["detector_alone_gmdcsa24"] = detector_alone(body, gm, max_frames)
    log.info("body on %d fight-cctv clips", len(fights))
    report["body_fight_cctv"] = run_encoder(body.step, fights, "people", max_frames).report()
    report["detector_alone_fight_cctv"] = detector_alone(body, fights, max_frames)
    several = BodyEncoder(BodyConfig(max_people=4))
    report["body4_fight_cctv"] = run_encoder(several.step, fights, "people", max_frames).report()
    report["body4_gmdcsa24"] = run_encoder(several.step, gm, "people", max_frames).report()
    hands = HandsEncoder(HandsConfig())
    log.info("hands on %d GMDCSA24 clips", len(gm))
    report["hands_gmdcsa24"] = run_encoder(hands.step, gm, "hands", max_frames).report()
    precision = "bf16" if native_bf16() else "bf16-emulated"
    log.info("fp32 against %s", precision)
    report["bf16_body_gmdcsa24"] = precision_agreement(
        lambda o: BodyEncoder(BodyConfig(runtime=o)), precision, gm[::3], agreement_frames
    )
    report["bf16_hands_gmdcsa24"] = precision_agreement(
        lambda o: HandsEncoder(HandsConfig(runtime=o)), precision, gm, agreement_frames
    )
    report["load_after"] = os.getloadavg()
    report["fight_cctv_clips"] = [str(p.relative_to(root)) for p in fights]
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.measure.keypoints", description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=SHARED, help="folder holding gmdcsa24/ and fight-cctv/")
    parser.add_argument("--fight-clips", type=int, default=30, help="fight-cctv clips (half fight, half not)")
    parser.add_argument("--max-frames", type=int, default=None, help="frames per clip at most")
    parser.add_argument("--agreement-frames", type=int, default=60, help="frames per clip for bf16 vs fp32")
    parser.add_argument("--json", type=Path, help="write the report here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    cv2.setNumThreads(1)  # one thread in all: OpenCV would otherwise split each crop's warp over the cores
    report = measure(
        args.data, fight_clips=args.fight_clips, max_frames=args.max_frames, agreement_frames=args.agreement_frames
    )
    text = json.dumps(report, indent=2)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    log.info("%s", text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
