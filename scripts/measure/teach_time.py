"""How long ``dcrn teach`` takes on 5 labels x 10 clips of 3 s, 640 px wide, cold (nothing cached) and warm.

``python -m scripts.measure.teach_time [--out FOLDER]`` cuts up to 50 clips of 90 frames (3 s at 30 fps)
from the GMDCSA24 clips (``../shared/data``; 44 is all they give; 640x480, or 1280x720 scaled to 640x360;
windows 30 frames apart; labels assigned in turn: they mean nothing, only the time is measured), then runs
``teach`` with the picture's flow only, then with hands and bodies tried: once with an empty cache (every
clip's flow and keypoints read) and once warm (what *Train* costs in the window, whose Teach tab reads each
clip's keypoints as it is recorded). Writes ``FOLDER/teach_time.json``.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path

import cv2
import torch

from dcrn.engine.keypoints import clip_reader
from dcrn.models.teach import TeachOptions, teach
from dcrn.models.video_io import read_video, write_video
from scripts.measure import harness

log = logging.getLogger(__name__)
SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"
LABELS, PER_LABEL, FRAMES, STRIDE = 5, 10, 90, 30


def make_clips(data: Path, out: Path) -> int:
    count = 0
    for src in sorted((data / "gmdcsa24").glob("Subject */*/*.mp4")):
        frames, _ = read_video(src, None)
        if frames.shape[2] != 640:  # 1280x720 clips: scaled to 640x360, as a webcam at 640 px wide
            frames = [cv2.resize(f, (640, round(f.shape[0] * 640 / f.shape[1])), interpolation=cv2.INTER_AREA)
                      for f in frames]  # fmt: skip
        for start in range(0, len(frames) - FRAMES + 1, STRIDE):
            if count == LABELS * PER_LABEL:
                return count
            write_video(out / f"label{count % LABELS}" / f"clip{count:02d}.mp4", frames[start : start + FRAMES], fps=30)
            count += 1
    return count


def timed(data: Path, out: Path, *, keypoints: bool) -> dict:
    started = time.monotonic()
    report = teach(TeachOptions(data=data, out=out, keypoints=clip_reader() if keypoints else None))
    return {"seconds": round(time.monotonic() - started, 1), "kept": report.kept, "tried": list(report.candidates)}


def main() -> int:
    parser = harness.parser(__doc__, "teach_time")
    parser.add_argument("--data", type=Path, default=SHARED)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    clips = args.out / "clips"
    shutil.rmtree(clips, ignore_errors=True)
    made = make_clips(args.data, clips)
    report = {"machine": harness.machine_info(("torch", "openvino")), "clips": made, "cpus": os.cpu_count()}
    report["load_start"] = harness.load_average()
    report["flow_only_cold"] = timed(clips, args.out / "flow.pt", keypoints=False)
    shutil.rmtree(clips / ".cache", ignore_errors=True)
    report["cold"] = timed(clips, args.out / "taught.pt", keypoints=True)
    report["warm"] = timed(clips, args.out / "taught.pt", keypoints=True)
    report["load_end"] = harness.load_average()
    log.info("%s", report)
    harness.write_json(args.out / "teach_time.json", report)
    return 0


if __name__ == "__main__":
    harness.run(main)
