"""Write synthetic data sets to disk: a folder-per-class clip set and continuous labelled streams.

Layout written under ``out``::

    out/<class>/<class>_<seed>_<k>.mp4     clips, one action each (fresh scene, render_clip)
    out/stream_<seed>.mp4                  a continuous stream (SyntheticActionStream) ...
    out/stream_<seed>.labels.csv           ... and its per-frame labels ("frame,label", one line a frame)
    out/synth.json                         what was written and with which settings

Clip seeds are ``seed * 1_000_000 + class * 10_000 + k``, so sets written with different ``--seed``
values never share a clip; the stream's seed is ``seed`` itself (a separate random domain).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from .errors import ConfigError
from .synth import CLASSES, SyntheticActionStream, render_clip
from .video_io import labels_file, write_frame_labels, write_video

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SynthOptions:
    out: Path
    seed: int = 0  # base seed; sets with different seeds share no clip and no stream
    clips_per_class: int = 30  # clips of each class (0: none)
    clip_frames: int = 48  # frames per clip (1.6 s at 30 fps)
    stream_s: float = 0.0  # seconds of continuous stream (0: none)
    streams: int = 1  # how many streams of stream_s seconds each (seeds seed, seed + 1, ...)
    segment_s: tuple[float, float] = (2.0, 5.0)  # stream segment length range in seconds
    scene_change: float = 0.15  # chance per stream segment that the scene is replaced (a cut)
    size: tuple[int, int] = (240, 320)  # frame height, width
    fps: float = 30.0

    def __post_init__(self) -> None:
        if self.clips_per_class < 0 or self.stream_s < 0 or self.streams < 1:
            raise ConfigError("clips per class and stream seconds must be >= 0, and streams >= 1")
        if self.clips_per_class == 0 and self.stream_s == 0:
            raise ConfigError("nothing to write: ask for clips (--clips-per-class) or a stream (--stream)")
        if self.clip_frames < 1:
            raise ConfigError(f"clip frames must be >= 1, got {self.clip_frames}")


def clip_seed(seed: int, cls: int, k: int) -> int:
    return seed * 1_000_000 + cls * 10_000 + k


def write_synthetic(options: SynthOptions) -> dict:
    """Render and encode everything ``options`` asks for; returns the summary also saved as synth.json."""
    out = Path(options.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    clips = 0
    for cls, name in enumerate(CLASSES):
        for k in range(options.clips_per_class):
            frames = render_clip(cls, clip_seed(options.seed, cls, k), options.clip_frames, options.size, options.fps)
            write_video(out / name / f"{name}_{options.seed}_{k:04d}.mp4", frames, options.fps)
            clips += 1
        if options.clips_per_class:
            log.info("wrote %d clips of %s", options.clips_per_class, name)
    streams = []
    if options.stream_s:
        for i in range(options.streams):
            streams.append(_write_stream(out, options, options.seed + i))
    summary = {
        "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(options).items()},
        "classes": list(CLASSES),
        "clips": clips,
        "streams": streams,
        "seconds": round(time.monotonic() - started, 1),
    }
    (out / "synth.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _write_stream(out: Path, options: SynthOptions, seed: int) -> str:
    stream = SyntheticActionStream(
        seed=seed, fps=options.fps, size=options.size, segment_s=options.segment_s, scene_change=options.scene_change
    )
    count = round(options.stream_s * options.fps)
    labels = []

    def frames():
        for _ in range(count):
            frame, label = stream.read()
            labels.append(label)
            yield frame

    path = write_video(out / f"stream_{seed}.mp4", frames(), options.fps)
    write_frame_labels(labels_file(path), labels, CLASSES)
    log.info("wrote a %.0f s stream to %s", options.stream_s, path)
    return path.name
