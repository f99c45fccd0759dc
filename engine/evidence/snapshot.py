"""The snapshot of an action: its peak frame as a JPEG, with the label, score, stream and time drawn on it.

The frame is the I420 copy the recorder keeps of the frame with the highest score of the action's class
(so no RGB frame is copied per frame); it is converted back to BGR, a dark band at the top carries two
lines of text (``fight 0.93`` and ``cam0  2026-05-01 14:34:56.789 +0200``, local time with its offset), and
the JPEG is written under a temporary name and renamed, like the clips.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from dcrn.engine.evidence.config import EvidenceError
from dcrn.engine.evidence.names import temp_path

log = logging.getLogger(__name__)

FONT = cv2.FONT_HERSHEY_SIMPLEX


@dataclass
class SnapshotJob:
    """What a snapshot shows and where it goes."""

    path: Path  # final path
    image: np.ndarray  # (H*3/2, W) uint8 I420 of the peak frame
    label: str
    score: float | None
    stream: str
    wall: float  # wall-clock time of the peak frame
    quality: int = 90


def local_time(wall: float) -> str:
    """``2026-05-01 14:34:56.789 +0200``: local time with its UTC offset, unambiguous for a reader."""
    whole = int(wall // 1)
    millis = min(round((wall - whole) * 1000), 999)
    moment = time.localtime(whole)
    return time.strftime("%Y-%m-%d %H:%M:%S", moment) + f".{millis:03d} " + time.strftime("%z", moment)


def render(job: SnapshotJob) -> np.ndarray:
    """The annotated BGR image (H, W, 3) uint8."""
    image = cv2.cvtColor(job.image, cv2.COLOR_YUV2BGR_I420)
    height, width = image.shape[:2]
    scale = max(0.35, min(1.2, width / 800))
    thickness = max(1, round(scale * 2))
    score = "" if job.score is None else f" {job.score:.2f}"
    lines = [f"{job.label}{score}", f"{job.stream}  {local_time(job.wall)}"]
    line_h = int(30 * scale) + 4
    band = min(height, line_h * len(lines) + 8)
    top = image[:band]
    top[:] = (top.astype(np.uint16) * 2 // 5).astype(np.uint8)  # darken the band, keep the picture visible
    for index, text in enumerate(lines):
        origin = (6, 4 + line_h * (index + 1) - 6)
        color = (255, 255, 255) if index else (80, 220, 255)
        cv2.putText(image, text, origin, FONT, scale * (1.0 if index == 0 else 0.8), color, thickness, cv2.LINE_AA)
    return image


def write_snapshot(job: SnapshotJob) -> Path:
    """Render and write the JPEG atomically (temporary name, then rename)."""
    ok, data = cv2.imencode(".jpg", render(job), [cv2.IMWRITE_JPEG_QUALITY, job.quality])
    if not ok:
        raise EvidenceError(f"evidence: cannot encode the snapshot {job.path.name}")
    temp = temp_path(job.path)
    try:
        with open(temp, "wb") as handle:
            handle.write(data.tobytes())
        os.replace(temp, job.path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            temp.unlink(missing_ok=True)
        raise EvidenceError(f"evidence: cannot write {job.path}: {exc.strerror or exc}") from exc
    return job.path
