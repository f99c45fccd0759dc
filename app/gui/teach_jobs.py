"""The Teach panel's work off the GUI thread: recording taps, finishing and cutting clips, training.

It reaches the engine through :mod:`.worker` (the GUI's one bridge to it) and calls the training code.
Everything it learns reaches the GUI thread through Qt signals (queued across threads):

- :class:`ClipTap` runs on the engine thread: it hands each frame the engine steps to a
  :class:`~dcrn.engine.recorder.ClipRecorder` (whose own writer thread encodes), until the clip is long
  enough, then says ``full``.
- :class:`Job` runs one function on a plain thread (finish a clip, cut a clip from a file, train) with
  ``progress(stage, done, total)``, ``done(result)`` and ``failed(message)``.
- :class:`ClipChecks` looks for hands and bodies in every new clip (a ``Job`` each) and says
  ``warned(path, text)`` of a clip with neither in most frames; what it reads fills teaching's keypoint
  cache, so the next training does not read the clip again.

and a few path helpers the teach controller shows or decides with (``display_path``, ``is_file_source``,
``model_path_for``, ``clip_note``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path

from PyQt6.QtCore import QObject, Qt, pyqtSignal

from dcrn.models.errors import DcrnError
from dcrn.models.teach_data import ClipInfo, TeachDataset

from .source_panel import DEMO_SOURCE
from .worker import MIN_KEEP_S, ClipRecorder, Frame, keypoint_reader, record_clips, redact

__all__ = [
    "MIN_KEEP_S",
    "ClipChecks",
    "ClipRecorder",
    "ClipTap",
    "Job",
    "clip_note",
    "cut_clip",
    "display_path",
    "finish_clip",
    "is_file_source",
    "keypoint_warning",
    "model_path_for",
    "train_model",
]

log = logging.getLogger(__name__)

PROGRESS_EVERY = 3  # frames between two progress signals of a tap
FOUND_IN_MOST = 0.5  # a clip with a hand, or a body, in fewer than this share of its frames gets a warning
KEYPOINT_CACHE = Path(".cache") / "features" / "keypoints"  # in the data set: where `dcrn teach` looks first


class ClipTap(QObject):
    """``tap(frame)`` on the engine thread writes the frame, until ``frames`` were written; then ``full``.

    ``close()`` (GUI thread) returns once no write is under way; no frame is written after it.
    """

    progress = pyqtSignal(int)  # frames written so far
    full = pyqtSignal()

    def __init__(self, recorder: ClipRecorder, frames: int, parent: QObject | None = None) -> None:
        super().__init__(parent)
        if frames < 1:
            raise ValueError(f"a clip needs at least 1 frame, got {frames}")
        self.recorder = recorder
        self.frames = frames
        self.written = 0
        self._lock = threading.Lock()
        self._closed = False

    def __call__(self, frame: Frame) -> None:
        with self._lock:
            if self._closed:
                return
            self.recorder.write(frame.image)
            self.written += 1
            written, full = self.written, self.written >= self.frames
            if full:
                self._closed = True
        if full:
            self.full.emit()
        elif written % PROGRESS_EVERY == 0:
            self.progress.emit(written)

    def close(self) -> int:
        """Stop writing; returns the number of frames written."""
        with self._lock:
            self._closed = True
            return self.written


class Job(QObject):
    """``fn(job)`` on its own thread; its return value arrives as ``done``, its error as ``failed``.

    ``fn`` may call ``job.report(stage, done, total)`` and should look at ``job.cancel_event`` now and then.
    """

    progress = pyqtSignal(str, int, int)
    done = pyqtSignal(object)
    failed = pyqtSignal(str)

    def __init__(self, name: str, fn: Callable[[Job], object], parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.name = name
        self.fn = fn
        self.cancel_event = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"dcrn-gui-{name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def cancel(self) -> None:
        self.cancel_event.set()

    def join(self, timeout: float) -> bool:
        if self._thread.is_alive():
            self._thread.join(timeout)
        return not self._thread.is_alive()

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def report(self, stage: str, done: int, total: int) -> None:
        self.progress.emit(stage, int(done), int(total))

    def _run(self) -> None:
        try:
            result = self.fn(self)
        except DcrnError as exc:
            log.warning("%s failed: %s", self.name, exc)
            self.failed.emit(redact(str(exc)))
        except Exception as exc:  # a bug must not kill the window; report it there and in the log
            log.exception("%s crashed", self.name)
            self.failed.emit(redact(f"{type(exc).__name__}: {exc}"))
        else:
            self.done.emit(result)


class ClipChecks(QObject):
    """Looks for hands and bodies in new clips, one clip at a time off the GUI thread.

    ``check(root, path)`` (GUI thread) hands a :class:`Job` to ``run``; when the clip has neither a hand nor
    a body in most frames, ``warned(path, text)`` follows on the GUI thread. ``results`` maps each checked
    clip's path to its warning ("" when hands or a body were found). Where the keypoint graphs cannot run
    (OpenVINO missing), clips are not checked: a log line says so.
    """

    warned = pyqtSignal(str, str)  # clip path (relative to its data set), warning

    def __init__(self, run: Callable[[Job], None], parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.run = run  # starts a job (the teach controller's, so that shutting down waits for it)
        self.results: dict[str, str] = {}
        self._lock = threading.Lock()  # one clip at a time: the reader's graphs are not shared between threads
        self._reader = None  # made on the first check, on its job's thread (compiling the graphs takes seconds)
        self._tried = False

    def check(self, root: Path, path: str) -> None:
        # no Qt parent: the job's thread keeps it alive, so a check still under way when the window closes
        # ends quietly (its queued result finds no receiver) instead of emitting from a deleted object
        job = Job("check-keypoints", lambda job: self._read(job, Path(root), path))
        job.done.connect(self._checked, Qt.ConnectionType.QueuedConnection)
        self.run(job)

    def _read(self, job: Job, root: Path, path: str) -> tuple[str, str] | None:
        from dcrn.models.teach_features import KeypointCache

        with self._lock:
            if job.cancel_event.is_set():
                return None
            if not self._tried:
                self._reader, self._tried = keypoint_reader(), True
            if job.cancel_event.is_set():
                return None
            if self._reader is None:
                log.info("%s: hands and bodies not looked for (the keypoint graphs cannot run here)", path)
                return None
            found = KeypointCache(root / KEYPOINT_CACHE).clip(self._reader, root / path).found()
        log.info(
            "%s: a hand in %.0f%% of its frames, a body in %.0f%%", path, 100 * found["hands"], 100 * found["body"]
        )
        return path, keypoint_warning(found)

    def _checked(self, result: tuple[str, str] | None) -> None:
        if result is None:
            return
        path, warning = result
        self.results[path] = warning
        if warning:
            self.warned.emit(path, warning)


def keypoint_warning(found: dict[str, float]) -> str:
    """What to tell of a clip with neither a hand nor a body in most frames ("" otherwise); ``found``:
    :meth:`~dcrn.models.frame_vector.ClipKeypoints.found`."""
    hands, body = found["hands"], found["body"]
    if max(hands, body) >= FOUND_IN_MOST:
        return ""
    return (
        f"no hand or body found in most frames of this clip (hand {hands:.0%}, body {body:.0%}): "
        "keep hands and body in view"
    )


def finish_clip(recorder: ClipRecorder, *, keep: bool = True) -> Callable[[Job], ClipInfo | None]:
    """A job function: close the clip's file and register it in the data set (None: no frames, or not kept)."""

    def run(job: Job) -> ClipInfo | None:
        if keep:
            return recorder.finish()
        recorder.abort()
        return None

    return run


def cut_clip(
    path: str, dataset: TeachDataset, label: str, in_s: float, out_s: float, *, session: str
) -> Callable[[Job], ClipInfo | None]:
    """A job function: the frames of video file ``path`` from ``in_s`` to ``out_s`` as a clip of ``label``."""
    if out_s <= in_s:
        raise DcrnError(f"the out point ({out_s:.2f} s) must come after the in point ({in_s:.2f} s)")

    def run(job: Job) -> ClipInfo | None:
        clips = record_clips(
            path, dataset, label, cuts=[(in_s, out_s)], session=session, cancel=job.cancel_event, on_status=log.info
        )
        return clips[0] if clips else None

    return run


def train_model(dataset: Path, out: Path) -> Callable[[Job], object]:
    """A job function: ``teach()`` on the data set, writing the checkpoint ``out``; returns its report."""

    def run(job: Job) -> object:
        from dcrn.app.gui.worker import keypoint_reader
        from dcrn.models.teach import TeachOptions, teach

        options = TeachOptions(data=dataset, out=out, progress=job.report, cancel=job.cancel_event)
        options.keypoints = keypoint_reader()
        return teach(options)

    return run


def clip_note(clip: ClipInfo) -> str:
    """Where a clip came from, for its tooltip: "cut 12.00-15.00 s from talk.mp4", "recorded ... UTC from ..."."""
    if clip.cut is not None:
        return f"cut {clip.cut[0]:.2f}-{clip.cut[1]:.2f} s from {clip.source}"
    return f"recorded {clip.recorded[:19].replace('T', ' ')} UTC from {clip.source}"


def display_path(path: str | Path) -> str:
    """``~/dcrn-teach/my-actions`` for a path in the home folder; other paths as they are."""
    path, home = Path(path), Path.home()
    try:
        return str(Path("~") / path.relative_to(home))
    except ValueError:
        return str(path)


def is_file_source(uri: str) -> bool:
    """A video file on disk (not the demo stream, a camera or a URL): clips can be cut from it."""
    return bool(uri) and not uri.startswith(DEMO_SOURCE) and "://" not in uri and Path(uri).is_file()


def model_path_for(dataset: Path) -> Path:
    """Where a data set's taught model goes: next to the folder (inside, it would read as a class)."""
    return dataset.parent / f"{dataset.name}.pt"
