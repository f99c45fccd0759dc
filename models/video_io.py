"""Reading and writing the media that data sets are made of: video files, frame folders, label files.

* Videos (``.mp4 .avi .mkv .webm .mov``) are decoded with OpenCV; frames come back as (T, H, W, 3) uint8 RGB.
* A frame folder is a directory of images (``.jpg .jpeg .png .bmp``) read in name order.
* A continuous stream is a video ``NAME.mp4`` with a per-frame label file ``NAME.labels.csv`` beside it:
  a header line ``frame,label`` and then one line per frame, ``0,still`` ``1,still`` ... (labels by class
  name). Frames missing from the file have no label and are left out of the metrics.
* Writing uses PyAV's H.264 (``libx264``, CRF 17, yuv420p) for ``.mp4`` when PyAV is installed, and
  OpenCV's ``mp4v`` otherwise.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import logging
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import cv2
import numpy as np

from .errors import DataError

log = logging.getLogger(__name__)

VIDEO_EXTS = (".mp4", ".avi", ".mkv", ".webm", ".mov")
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp")
LABELS_SUFFIX = ".labels.csv"


def is_video(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in VIDEO_EXTS


def is_frame_folder(path: Path) -> bool:
    return path.is_dir() and any(p.suffix.lower() in IMAGE_EXTS for p in path.iterdir())


def media_digest(path: Path) -> str:
    """SHA-1 of a video's bytes (of a frame folder: of its images' names and bytes): what caches of
    per-video results are keyed on. Unlike a file's size and time it holds when the data is copied
    (``cp`` without ``-p``, a restored backup, a container image), and it still changes with the content."""
    path = Path(path).resolve()
    if path.is_dir():
        digest = hashlib.sha1()
        for image in sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_EXTS):
            digest.update(f"{image.name}|{media_digest(image)}\n".encode())
        return digest.hexdigest()
    stat = path.stat()
    return _file_digest(str(path), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=8192)
def _file_digest(path: str, size: int, mtime_ns: int) -> str:
    """Read once per process while the file keeps its size and time (every fold of a run asks again)."""
    digest = hashlib.sha1()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def labels_file(video: Path) -> Path:
    """Where the per-frame labels of a stream video live: ``NAME.labels.csv`` beside ``NAME.mp4``."""
    return video.with_name(video.stem + LABELS_SUFFIX)


def resize_frames(frames: np.ndarray, size: int | None) -> np.ndarray:
    """(T, H, W, 3) uint8 -> (T, size, size, 3), area interpolation (antialiased); None keeps the size."""
    if size is None or (frames.shape[1] == size and frames.shape[2] == size):
        return frames
    out = np.empty((len(frames), size, size, 3), dtype=np.uint8)
    for t, frame in enumerate(frames):
        out[t] = cv2.resize(frame, (size, size), interpolation=cv2.INTER_AREA)
    return out


def read_video(path: Path, size: int | None = None, max_frames: int | None = None) -> tuple[np.ndarray, float]:
    """Decode a video (or frame folder) -> frames (T, H, W, 3) uint8 RGB (resized when ``size``), fps."""
    frames, fps = iter_video(path, size, max_frames)
    return np.stack(list(frames)), fps


def iter_video(
    path: Path, size: int | None = None, max_frames: int | None = None
) -> tuple[Iterator[np.ndarray], float]:
    """:func:`read_video` one frame at a time: (frames, fps), the frames (H, W, 3) uint8 RGB decoded as they are
    taken, so a long clip is never held whole. The file is opened (and a video that cannot be, refused) before
    this returns; a video that yields no frame raises :class:`DataError` when its frames are first taken."""
    path = Path(path)
    if path.is_dir():
        return iter(_read_frame_folder(path, size, max_frames)), 0.0
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise DataError(f"{path}: cannot open the video (missing, unreadable or not a video)")
    return _decoded(path, capture, size, max_frames), float(capture.get(cv2.CAP_PROP_FPS) or 0.0)


def _decoded(path: Path, capture: cv2.VideoCapture, size: int | None, max_frames: int | None) -> Iterator[np.ndarray]:
    count = 0
    try:
        while max_frames is None or count < max_frames:
            ok, frame = capture.read()
            if not ok:
                break
            frame = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
            if size is not None:
                frame = cv2.resize(frame, (size, size), interpolation=cv2.INTER_AREA)
            count += 1
            yield frame
    finally:
        capture.release()
    if not count:
        raise DataError(f"{path}: no frames could be decoded (empty or damaged video)")


def _read_frame_folder(path: Path, size: int | None, max_frames: int | None) -> np.ndarray:
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_EXTS)[:max_frames]
    if not files:
        raise DataError(f"{path}: frame folder holds no images ({', '.join(IMAGE_EXTS)})")
    frames = []
    for file in files:
        image = cv2.imread(str(file), cv2.IMREAD_COLOR)
        if image is None:
            raise DataError(f"{file}: cannot decode the image")
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        if size is not None:
            image = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)
        elif frames and image.shape != frames[0].shape:
            raise DataError(f"{file}: image size {image.shape[:2]} differs from the folder's {frames[0].shape[:2]}")
        frames.append(image)
    return np.stack(frames)


def count_frames(path: Path) -> int:
    """Frame count from the container (cheap; may be approximate for some formats)."""
    if path.is_dir():
        return sum(1 for p in path.iterdir() if p.suffix.lower() in IMAGE_EXTS)
    capture = cv2.VideoCapture(str(path))
    try:
        if not capture.isOpened():
            raise DataError(f"{path}: cannot open the video (missing, unreadable or not a video)")
        return int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
    finally:
        capture.release()


def read_frame_labels(path: Path, classes: Sequence[str]) -> np.ndarray:
    """A ``frame,label`` file -> (N,) int64 class indices; -1 where a frame has no label."""
    index = {name: i for i, name in enumerate(classes)}
    rows: dict[int, int] = {}
    try:
        with open(path, newline="") as handle:
            reader = csv.reader(handle)
            header = next(reader, None)
            if header is None or [h.strip() for h in header[:2]] != ["frame", "label"]:
                raise DataError(f"{path}: a per-frame label file starts with the header 'frame,label'")
            for line, row in enumerate(reader, start=2):
                if not row:
                    continue
                if len(row) < 2 or not row[0].strip().isdigit():
                    raise DataError(f"{path}:{line}: expected 'frame,label', got {','.join(row)!r}")
                name = row[1].strip()
                if name not in index:
                    raise DataError(f"{path}:{line}: unknown class {name!r}; known: {', '.join(classes)}")
                rows[int(row[0])] = index[name]
    except OSError as exc:
        raise DataError(f"{path}: cannot read the label file ({exc.strerror})") from None
    if not rows:
        raise DataError(f"{path}: the label file lists no frames")
    labels = np.full(max(rows) + 1, -1, dtype=np.int64)
    for frame, label in rows.items():
        labels[frame] = label
    return labels


def write_frame_labels(path: Path, labels: Iterable[int], classes: Sequence[str]) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["frame", "label"])
        for frame, label in enumerate(labels):
            writer.writerow([frame, classes[int(label)]])


class VideoWriter:
    """Write RGB frames to a video file: ``with VideoWriter(path, fps) as w: w.write(frame)``."""

    def __init__(self, path: Path, fps: float, crf: int = 17) -> None:
        self.path = Path(path)
        self.fps = fps
        self.crf = crf
        self._av = None
        self._stream = None
        self._cv = None

    def open(self, width: int, height: int) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.suffix.lower() == ".mp4":
            try:
                import av

                self._av = av.open(str(self.path), mode="w")
                from fractions import Fraction

                self._stream = self._av.add_stream("libx264", rate=Fraction(self.fps).limit_denominator(1001))
                self._stream.width, self._stream.height = width, height
                self._stream.pix_fmt = "yuv420p"
                self._stream.options = {"crf": str(self.crf), "preset": "veryfast"}
                return
            except ImportError:
                log.debug("PyAV is not installed; writing %s with OpenCV's mp4v", self.path)
        fourcc = cv2.VideoWriter_fourcc(*("mp4v" if self.path.suffix.lower() == ".mp4" else "MJPG"))
        self._cv = cv2.VideoWriter(str(self.path), fourcc, self.fps, (width, height))
        if not self._cv.isOpened():
            raise DataError(f"{self.path}: cannot open a video writer for this file type")

    def write(self, frame: np.ndarray) -> None:
        if self._av is None and self._cv is None:
            self.open(frame.shape[1], frame.shape[0])
        if self._av is not None:
            import av

            packet_frame = av.VideoFrame.from_ndarray(frame, format="rgb24")
            for packet in self._stream.encode(packet_frame):
                self._av.mux(packet)
        else:
            self._cv.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))

    def close(self) -> None:
        if self._av is not None:
            for packet in self._stream.encode():
                self._av.mux(packet)
            self._av.close()
            self._av = None
        if self._cv is not None:
            self._cv.release()
            self._cv = None

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def write_video(path: Path, frames: Iterable[np.ndarray], fps: float) -> Path:
    with VideoWriter(path, fps) as writer:
        for frame in frames:
            writer.write(frame)
    return Path(path)
