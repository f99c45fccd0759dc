"""Recording labelled clips into a teach data set (:mod:`dcrn.models.teach_data`).

:class:`ClipRecorder` writes one clip: frames go through a bounded queue to its own writer thread, so a
GUI or a capture loop never waits for the encoder. The file is written as ``<name>.partial.mp4`` and
renamed to ``<name>.mp4`` by :meth:`ClipRecorder.finish`, which then registers the clip in
``dataset.json``; a crash never leaves a half-written clip that looks complete (``dcrn.models.data``
never reads ``*.partial.mp4``).

    recorder = ClipRecorder(dataset, "wave", fps=30.0, source=redact(uri), session=new_session_id())
    for frame in frames:
        recorder.write(frame)          # (H, W, 3) uint8 RGB; copied, returns at once
    info = recorder.finish()           # ClipInfo, now in dataset.json (None when no frame came)

:func:`record_clips` is the whole recording session of ``dcrn record``: it opens a source with the
engine's :func:`~dcrn.engine.sources.factory.open_source` (cameras, RTSP/HTTP, files, ``synthetic:``), counts
down before each clip of a live source, records ``count`` clips of ``seconds`` each, or cuts the given
``(in_s, out_s)`` spans from a video file.

A clip cut short (the source was lost or ended, or the recording was interrupted) is kept when it holds
at least :data:`MIN_KEEP_S` of frames and removed otherwise. Clips finished before stay in the data set
whatever happens next; a lost live source ends the session with one :class:`SourceError` line that says
how many clips were saved.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np

from dcrn.engine.errors import SourceError
from dcrn.engine.redact import redact
from dcrn.engine.sources.base import Source, SourceOptions
from dcrn.engine.sources.factory import open_source
from dcrn.models.errors import ConfigError, DataError
from dcrn.models.teach_data import (
    PARTIAL_EXT,
    ClipInfo,
    TeachDataset,
    new_session_id,
    utc_now_iso,
    validate_label,
)
from dcrn.models.video_io import VideoWriter

log = logging.getLogger(__name__)

MIN_KEEP_S = 1.0  # a clip cut short is kept when it holds at least this much video, else removed
QUEUE_FRAMES = 64  # frames waiting for the encoder; when full, write() drops (or waits, if asked)
DEFAULT_FPS = 30.0  # written into clips of sources that do not know their frame rate
_END = object()  # the writer thread's sentinel

Status = Callable[[str], None]


class ClipRecorder:
    """Writes RGB uint8 frames of one clip to an mp4 on its own writer thread (see the module notes).

    Always end a recorder with :meth:`finish` or :meth:`abort`: they stop its thread.
    """

    def __init__(
        self,
        dataset: TeachDataset,
        label: str,
        *,
        fps: float,
        source: str,
        session: str,
        cut: tuple[float, float] | None = None,
        queue_frames: int = QUEUE_FRAMES,
    ) -> None:
        if label not in dataset.labels:
            raise DataError(f"{dataset.root}: no label {label!r} to record into; add it first")
        if not (isinstance(fps, (int, float)) and 0 < fps < 1000):
            raise ConfigError(f"fps must be a number in (0, 1000), got {fps!r}")
        self.dataset = dataset
        self.label = label
        self.fps = float(fps)
        self.source = redact(source)
        self.session = session
        self.cut = cut
        self.path, self.partial = self._reserve(dataset, label)
        self.recorded = utc_now_iso()
        self.received = 0  # frames accepted by write()
        self.dropped = 0  # frames write() dropped because the encoder fell behind
        self.frames = 0  # frames encoded (final once the thread has stopped)
        self.size: tuple[int, int] | None = None  # (width, height) written, set by the first frame
        self._error: BaseException | None = None
        self._abort = threading.Event()
        self._done = False
        self._info: ClipInfo | None = None
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, queue_frames))
        self._thread = threading.Thread(target=self._run, name=f"recorder-{label}", daemon=True)
        self._thread.start()

    @property
    def seconds(self) -> float:
        """Length of the clip so far (frames accepted), in seconds."""
        return self.received / self.fps

    def write(self, frame_rgb: np.ndarray, *, wait: bool = False) -> bool:
        """Queue a copy of ``frame_rgb`` (H, W, 3) uint8; False when it was dropped (queue full, not ``wait``).

        A writer that failed raises here (:class:`DataError`), so a loop stops at once.
        """
        if self._done:
            raise DataError(f"{self.path}: the clip is already finished")
        if self._error is not None:
            raise self._write_error()
        if not (isinstance(frame_rgb, np.ndarray) and frame_rgb.ndim == 3 and frame_rgb.shape[2] == 3):
            shape = getattr(frame_rgb, "shape", None)
            raise DataError(f"a frame must be an (H, W, 3) uint8 RGB array, got {shape} {type(frame_rgb).__name__}")
        if frame_rgb.dtype != np.uint8:
            raise DataError(f"a frame must be uint8 RGB, got {frame_rgb.dtype}")
        try:
            self._queue.put(frame_rgb.copy(), block=wait)
        except queue.Full:
            self.dropped += 1
            return False
        self.received += 1
        return True

    def finish(self) -> ClipInfo | None:
        """Close the file, rename it into place and register it in ``dataset.json``; None if no frame came.

        Calling it again returns the same result. A failed encoder raises :class:`DataError` (the
        partial file is removed).
        """
        if self._done:
            return self._info
        self._stop_thread()
        if self._error is not None:
            self._remove(self.partial)
            raise self._write_error()
        if self.frames == 0:
            self._remove(self.partial)
            return None
        if self.dropped:
            log.warning("%s: %d frame(s) dropped, the encoder fell behind", self.path.name, self.dropped)
        try:
            os.replace(self.partial, self.path)
        except OSError as exc:
            self._remove(self.partial)
            raise DataError(f"{self.partial}: cannot rename the finished clip ({exc.strerror or exc})") from None
        width, height = self.size
        info = ClipInfo(
            path=self.path.relative_to(self.dataset.root).as_posix(),
            label=self.label,
            session=self.session,
            frames=self.frames,
            fps=self.fps,
            width=width,
            height=height,
            source=self.source,
            recorded=self.recorded,
            cut=self.cut,
        )
        try:
            self.dataset.add_clip(info)
        except DataError:
            self._remove(self.path)  # e.g. its label was deleted while recording
            raise
        self._info = info
        return info

    def abort(self) -> None:
        """Stop writing and remove the partial file; nothing is registered."""
        if self._done:
            return
        self._abort.set()
        self._stop_thread()
        self._remove(self.partial)

    # -- the writer thread ---------------------------------------------------------------------

    def _run(self) -> None:
        writer = VideoWriter(self.partial, self.fps)
        try:
            while True:
                frame = self._queue.get()
                if frame is _END:
                    break
                if self._abort.is_set() or self._error is not None:
                    continue  # drain the queue so that finish() never waits on a full one
                try:
                    writer.write(self._fit(frame))
                    self.frames += 1
                except Exception as exc:  # an encoder or disk failure: reported by write()/finish()
                    self._error = exc
        finally:
            try:
                writer.close()
            except Exception as exc:
                if self._error is None:
                    self._error = exc

    def _fit(self, frame: np.ndarray) -> np.ndarray:
        """H.264 in yuv420p needs even sizes; every frame takes the first frame's size."""
        if self.size is None:
            height, width = frame.shape[:2]
            if width < 2 or height < 2:
                raise DataError(f"a frame of {width}x{height} is too small to record")
            self.size = (width - width % 2, height - height % 2)
        width, height = self.size
        if frame.shape[1] != width or frame.shape[0] != height:
            if frame.shape[1] == width + 1 or frame.shape[0] == height + 1:
                frame = frame[:height, :width]
            if frame.shape[1] != width or frame.shape[0] != height:
                frame = cv2.resize(frame, (width, height), interpolation=cv2.INTER_AREA)
        return np.ascontiguousarray(frame)

    # -- helpers -------------------------------------------------------------------------------

    def _stop_thread(self) -> None:
        self._done = True
        self._queue.put(_END)  # blocks only until the thread takes a frame: it always drains
        self._thread.join()

    def _write_error(self) -> DataError:
        text = " ".join(str(self._error).split()) or type(self._error).__name__
        return DataError(f"{self.partial}: cannot write the clip ({text})")

    @staticmethod
    def _reserve(dataset: TeachDataset, label: str) -> tuple[Path, Path]:
        """A fresh (final, partial) pair, the partial file created at once so no other recorder takes it."""
        for _ in range(100):
            path = dataset.new_clip_path(label)
            partial = path.with_name(path.name[: -len(path.suffix)] + PARTIAL_EXT)
            try:
                with open(partial, "xb"):
                    return path, partial
            except FileExistsError:
                continue
            except OSError as exc:
                raise DataError(f"{partial}: cannot create the clip file ({exc.strerror or exc})") from None
        raise DataError(f"{dataset.root / label}: cannot find a free clip file name")

    @staticmethod
    def _remove(path: Path) -> None:
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            log.warning("%s: cannot remove: %s", path, exc)


def record_clips(
    source_uri: str | int | Source,
    dataset: TeachDataset,
    label: str,
    *,
    seconds: float = 3.0,
    count: int = 1,
    countdown: float = 3.0,
    on_status: Status | None = None,
    cuts: Sequence[tuple[float, float]] | None = None,
    session: str | None = None,
    options: SourceOptions | None = None,
    cancel: threading.Event | None = None,
) -> list[ClipInfo]:
    """Record ``count`` clips of ``seconds`` of ``label`` from a source (or cut ``cuts`` from a file).

    ``source_uri`` is a URI for :func:`open_source` (opened and closed here) or an already open
    :class:`Source` (left open; a file source is switched to unpaced reading). The label is added to the
    data set when it is new. Live sources count down ``countdown`` seconds before each clip (frames keep
    being read, so nothing stale is recorded); files are read as fast as they decode, clip after clip,
    without a countdown. ``on_status`` gets one-line progress messages; ``cancel`` stops at the next
    frame (the clip in progress follows the cut-short rule of the module notes). Returns the clips
    saved, in order.
    """
    check_session(seconds, count, countdown)
    spans = _check_cuts(cuts) if cuts else None
    label = validate_label(label)
    status = on_status or (lambda text: log.info("%s", text))
    owned = not isinstance(source_uri, Source)
    source = open_source(source_uri, options=options) if owned else source_uri
    try:
        if spans is not None and source.is_live:
            raise ConfigError(f"cutting clips needs a video file source, got the live source {source.uri!r}")
        if not source.is_live and source.options.pace:  # nobody performs for a file: read it at full speed
            source.options = dataclasses.replace(source.options, pace=False)
        same = [name for name in dataset.labels if name.lower() == label.lower()]
        if same:
            label = same[0]  # "wave" records more clips of an existing "Wave"
        else:
            dataset.add_label(label)
        run = _Session(
            source=source,
            dataset=dataset,
            label=label,
            session=session or new_session_id(),
            fps=source.fps or DEFAULT_FPS,
            status=status,
            cancel=cancel or threading.Event(),
        )
        if spans is not None:
            return run.cut(spans)
        return run.record(seconds, count, countdown)
    finally:
        if owned:
            source.close()


def check_session(seconds: float, count: int, countdown: float) -> None:
    """:class:`ConfigError` unless ``seconds`` > 0, ``count`` >= 1 and ``countdown`` >= 0."""
    if not seconds > 0:
        raise ConfigError(f"seconds must be positive, got {seconds}")
    if count < 1:
        raise ConfigError(f"count must be at least 1, got {count}")
    if not countdown >= 0:
        raise ConfigError(f"countdown cannot be negative, got {countdown}")


def parse_cut(text: str) -> tuple[float, float]:
    """``"IN:OUT"`` in seconds -> (in_s, out_s); :class:`ConfigError` when malformed or empty."""
    head, sep, tail = str(text).partition(":")
    try:
        if not sep:
            raise ValueError
        span = (float(head), float(tail))
    except ValueError:
        raise ConfigError(f"a cut is IN:OUT in seconds, e.g. 2.5:5, got {text!r}") from None
    return _check_cuts([span])[0]


def _check_cuts(cuts: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    spans = []
    for in_s, out_s in cuts:
        in_s, out_s = float(in_s), float(out_s)
        if not (0 <= in_s < out_s) or not np.isfinite(out_s):
            raise ConfigError(f"a cut needs 0 <= IN < OUT (seconds), got {in_s:g}:{out_s:g}")
        spans.append((in_s, out_s))
    return spans


@dataclasses.dataclass
class _Session:
    """One recording session over an open source: the loops of :func:`record_clips`."""

    source: Source
    dataset: TeachDataset
    label: str
    session: str
    fps: float
    status: Status
    cancel: threading.Event
    pending: tuple[np.ndarray, float] | None = None  # a frame read but not used yet (starts the next clip)

    def record(self, seconds: float, count: int, countdown: float) -> list[ClipInfo]:
        clips: list[ClipInfo] = []
        period = 1.0 / self.fps
        for number in range(1, count + 1):
            what = f"clip {number}/{count} of {self.label!r}"
            if self.source.is_live and countdown > 0 and not self._count_down(clips, what, countdown):
                break
            recorder = self._recorder()
            self.status(f"REC {what} ({seconds:g} s)")
            start = end = None  # pts of the first frame, and where the last one ends
            try:
                while True:
                    item = self._read(clips, what, recorder)
                    if item is None:
                        break
                    image, pts = item
                    start = pts if start is None else start
                    if pts - start >= seconds - 1e-6:
                        self.pending = item  # the first frame of the next clip (files)
                        break
                    recorder.write(image, wait=True)
                    end = pts + period
            except BaseException:
                self._end_short(recorder, clips, what)
                raise
            if self.pending is not None or (end is not None and end - start >= seconds - 1e-3):
                self._keep(recorder.finish(), clips, what)  # complete (a file may end right after it)
                if self.pending is not None:
                    continue
            else:
                self._end_short(recorder, clips, what)
            if number < count and not self.cancel.is_set():
                self.status(f"{self.source.uri}: the video ended after {len(clips)} of {count} clip(s)")
            break
        return clips

    def cut(self, spans: list[tuple[float, float]]) -> list[ClipInfo]:
        clips: list[ClipInfo] = []
        order = sorted(range(len(spans)), key=lambda i: spans[i])
        waiting = list(order)  # cuts not started yet, by start time
        active: dict[int, ClipRecorder] = {}
        last_pts = 0.0
        try:
            while waiting or active:
                item = self._read(clips, "a cut", None)
                if item is None:
                    break
                image, pts = item
                last_pts = pts
                while waiting and spans[waiting[0]][0] <= pts + 1e-6:
                    index = waiting.pop(0)
                    if pts < spans[index][1]:
                        active[index] = self._recorder(cut=spans[index])
                for index in list(active):
                    if pts < spans[index][1] - 1e-6:
                        active[index].write(image, wait=True)
                    else:
                        self._keep(active.pop(index).finish(), clips, self._cut_name(index, spans))
        except BaseException:
            for index, recorder in active.items():
                self._end_short(recorder, clips, self._cut_name(index, spans))
            raise
        for index, recorder in active.items():  # the video ended inside these cuts (or right at their end)
            if last_pts + 1.0 / self.fps >= spans[index][1] - 1e-3:
                self._keep(recorder.finish(), clips, self._cut_name(index, spans))
            else:
                self._end_short(recorder, clips, self._cut_name(index, spans))
        if waiting and not self.cancel.is_set():
            late = ", ".join(f"{spans[i][0]:g}:{spans[i][1]:g}" for i in waiting)
            raise DataError(
                f"{self.source.uri}: cut(s) {late} start after the end of the video ({last_pts:.2f} s); "
                f"{len(clips)} clip(s) saved in {self.dataset.root}"
            )
        return clips

    # -- steps ---------------------------------------------------------------------------------

    def _recorder(self, cut: tuple[float, float] | None = None) -> ClipRecorder:
        return ClipRecorder(
            self.dataset, self.label, fps=self.fps, source=self.source.uri, session=self.session, cut=cut
        )

    def _count_down(self, clips: list[ClipInfo], what: str, countdown: float) -> bool:
        """Read (and drop) frames for ``countdown`` seconds, announcing each second; False if it ended."""
        self.pending = None
        end = time.monotonic() + countdown
        announced = None
        while True:
            left = end - time.monotonic()
            if left <= 0:
                return True
            if announced != int(np.ceil(left)):
                announced = int(np.ceil(left))
                self.status(f"{what} in {announced}...")
            if self.cancel.is_set() or self._read(clips, what, None) is None:
                return False

    def _read(self, clips: list[ClipInfo], what: str, recorder: ClipRecorder | None) -> tuple[np.ndarray, float] | None:
        """The next (image, pts); None at the end of a file or when cancelled; a lost live source raises."""
        if self.pending is not None:
            item, self.pending = self.pending, None
            return item
        if self.cancel.is_set():
            return None
        try:
            item = self.source.read()
        except SourceError as exc:
            if not self.source.is_live:  # a file that cannot be decoded further ends, as in capture
                log.warning("%s: read failed, treating as the end: %s", self.source.uri, redact(str(exc)))
                return None
            reason = " ".join(redact(str(exc)).split())
            kept = len(clips) + int(recorder is not None and recorder.seconds >= MIN_KEEP_S)
            raise SourceError(
                f"source lost while recording {what}: {reason}; {kept} clip(s) saved in {self.dataset.root}"
            ) from None
        if item is None:
            return None
        return item[0], float(item[1])

    def _end_short(self, recorder: ClipRecorder, clips: list[ClipInfo], what: str) -> None:
        """A clip cut short: kept with at least MIN_KEEP_S of frames, else removed. Never raises."""
        try:
            if recorder.seconds >= MIN_KEEP_S:
                self._keep(recorder.finish(), clips, f"{what} (cut short)")
            else:
                recorder.abort()
                if recorder.received:
                    self.status(f"{what}: dropped, only {recorder.seconds:.2f} s (< {MIN_KEEP_S:g} s) recorded")
        except Exception as exc:  # the error that cut the clip short is the one to report
            log.warning("%s: could not save the clip cut short: %s", what, exc)
            recorder.abort()

    def _keep(self, info: ClipInfo | None, clips: list[ClipInfo], what: str) -> None:
        if info is None:
            return
        clips.append(info)
        self.status(f"saved {what}: {info.path} ({info.frames} frames, {info.frames / info.fps:.2f} s)")

    @staticmethod
    def _cut_name(index: int, spans: list[tuple[float, float]]) -> str:
        return f"cut {spans[index][0]:g}:{spans[index][1]:g}"
