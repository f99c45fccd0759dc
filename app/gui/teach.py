"""The teach controller: the Teach panel's intents -> a data set of clips, recordings and training.

It runs on the GUI thread only, next to the main :class:`~.controller.Controller` (which owns it) and
talks to it only through :class:`TeachHost`. Clips are recorded from the frames the engine steps for the
window (a :class:`~.teach_jobs.ClipTap` on the engine thread, a writer thread in the recorder); finishing,
cutting and training run as :class:`~.teach_jobs.Job` threads. When training ends, the running stream
switches to the new model between two frames (:meth:`TeachHost.use_model`) and the model joins the model
chooser; a model not clearly better than chance waits for the user's "Use it anyway".
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from PyQt6.QtCore import QObject, Qt, QTimer

from dcrn.models.errors import DcrnError
from dcrn.models.teach_data import ClipInfo, TeachDataset, new_session_id

from .teach_jobs import (
    MIN_KEEP_S,
    ClipChecks,
    ClipRecorder,
    ClipTap,
    Job,
    clip_note,
    cut_clip,
    display_path,
    finish_clip,
    is_file_source,
    model_path_for,
    train_model,
)
from .teach_panel import ClipRow, TeachPanel, TrainResult
from .video_view import Recording, VideoView
from .worker import Frame, SessionSpec, redact

log = logging.getLogger(__name__)

TICK_MS = 1000  # countdown step
OVERDUE_S = 5.0  # a clip that has not filled this long after its length (stalled stream) ends anyway
FALLBACK_FPS = 30.0  # recording rate when neither the source nor the display knows one
QUEUED = Qt.ConnectionType.QueuedConnection  # signals of other threads reach the GUI thread's loop


class TeachHost(Protocol):
    """What the teach controller may ask of the main controller (which implements it), and nothing more."""

    def teach_folder(self) -> str:
        """The remembered folder of the teach data set."""
        ...

    def remember_teach_folder(self, folder: str) -> None:
        """Remember ``folder`` as the teach data set's (saved at once)."""
        ...

    def source(self) -> str:
        """The URI of the running (else the last) session's source; may hold credentials."""
        ...

    def stream_status(self) -> str | None:
        """None when no stream runs, else its status: connecting, live, stalled, reconnecting, ended."""
        ...

    def frame_rate(self) -> float | None:
        """The running stream's frames per second: the source's nominal rate, else the rate shown."""
        ...

    def set_frame_tap(self, tap: Callable[[Frame], None] | None) -> None:
        """Call ``tap(frame)`` on the engine thread for every frame the running stream steps (None: stop)."""
        ...

    def play(self, source: str) -> None:
        """Start a session on ``source`` with the current model."""
        ...

    def use_model(self, model: str) -> None:
        """Make ``model`` the current model; a running stream switches to it between two frames."""
        ...

    def show_teach(self) -> None:
        """Bring the Teach panel to the front."""
        ...

    def add_event(self, name: str, detail: str) -> None:
        """Add a row to the event list."""
        ...


@dataclass
class _Plan:
    """A burst of clips of one label, recorded one after the other."""

    label: str
    seconds: float
    countdown: int
    remaining: int  # clips still to record, the current one included


class TeachController(QObject):
    def __init__(self, host: TeachHost, panel: TeachPanel, view: VideoView, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.host = host
        self.panel = panel
        self.view = view
        self.dataset: TeachDataset | None = None
        self.plan: _Plan | None = None
        self.tap: ClipTap | None = None
        self.recorder = None  # the ClipRecorder of the clip being recorded
        self.session_id: str | None = None  # one per recording sitting (source session and data set)
        self.last_pts: float | None = None  # pts of the newest frame shown
        self.jobs: list[Job] = []
        self.checks = ClipChecks(self._run, self)  # hands and bodies in each new clip: a warning when none
        self.checks.warned.connect(panel.warn_clip)
        self.train_job: Job | None = None
        self.last_report = None  # the newest TeachReport
        self.pending_model: str | None = None  # taught, not above chance: used only on the user's yes
        self._counting = 0  # countdown seconds left
        self._clip_started = 0.0
        self.timer = QTimer(self)
        self.timer.setInterval(TICK_MS)
        self.timer.timeout.connect(self._tick)
        self.overdue = QTimer(self)
        self.overdue.setSingleShot(True)
        self.overdue.timeout.connect(self._end_clip)

        p = self.panel
        p.dataset_chosen.connect(self.open_dataset)
        p.label_added.connect(self.add_label)
        p.label_renamed.connect(self.rename_label)
        p.label_deleted.connect(self.delete_label)
        p.record_requested.connect(self.toggle_recording)
        p.clip_play_requested.connect(self.play_clip)
        p.clip_delete_requested.connect(self.delete_clip)
        p.mark_in_requested.connect(self.mark_in)
        p.mark_out_requested.connect(self.mark_out)
        p.cut_requested.connect(self.cut)
        p.train_requested.connect(self.train)
        p.cancel_requested.connect(self.cancel_training)
        p.use_anyway_requested.connect(self.use_anyway)

    # -- data set and labels -------------------------------------------------------------------------
    def ensure_dataset(self) -> TeachDataset | None:
        """The open data set; the remembered folder is opened (or created) the first time it is needed."""
        if self.dataset is None:
            self.open_dataset(self.host.teach_folder())
        return self.dataset

    def open_dataset(self, folder: str) -> None:
        folder = str(Path(folder).expanduser())
        try:
            dataset = TeachDataset.open_or_create(Path(folder))
        except DcrnError as exc:
            self.panel.show_message(str(exc), error=True)
            return
        self._stop_plan()
        self.dataset = dataset
        self.session_id = None
        self.host.remember_teach_folder(folder)
        self.panel.show_message(f"Data set: {folder}")
        self.refresh()

    def refresh(self) -> None:
        d = self.dataset
        if d is None:
            return
        rows = [
            ClipRow(c.path, c.label, c.frames / c.fps if c.fps else 0.0, clip_note(c))
            for c in sorted(d.clips, key=lambda c: (d.labels.index(c.label), c.path))
        ]
        self.panel.set_dataset(display_path(d.root), list(d.labels), d.counts(), rows)

    def add_label(self, name: str) -> None:
        if self._editable() is None:
            return
        try:
            self.dataset.add_label(name)
        except DcrnError as exc:
            self.panel.show_message(str(exc), error=True)
            return
        self.panel.label_name.clear()
        self.refresh()
        self.panel.select_label(self.dataset.labels[-1])
        self.panel.show_message(f"Added the label {self.dataset.labels[-1]!r}: select it and record a few clips")

    def rename_label(self, old: str, new: str) -> None:
        if self._editable() is None:
            return
        try:
            self.dataset.rename_label(old, new)
        except DcrnError as exc:
            self.panel.show_message(str(exc), error=True)
            return
        self.refresh()
        self.panel.select_label(new.strip())
        self.panel.show_message(f"Renamed {old!r} to {new.strip()!r}")

    def delete_label(self, name: str) -> None:
        if self._editable() is None:
            return
        try:
            self.dataset.delete_label(name)
        except DcrnError as exc:
            self.panel.show_message(str(exc), error=True)
            return
        self.refresh()
        self.panel.show_message(f"Deleted the label {name!r} and its clips")

    def delete_clip(self, path: str) -> None:
        if self._editable() is None:
            return
        try:
            self.dataset.delete_clip(path)
        except DcrnError as exc:
            self.panel.show_message(str(exc), error=True)
            return
        self.refresh()
        self.panel.show_message(f"Deleted {path}")

    def play_clip(self, path: str) -> None:
        """Open the clip as the source (it plays once with the current model)."""
        if self.dataset is not None:
            self.host.play(str(self.dataset.root / path))

    # -- recording -----------------------------------------------------------------------------------
    @property
    def recording(self) -> bool:
        return self.plan is not None

    def toggle_recording(self) -> None:
        if self.plan is not None:
            self._stop_plan()
            self.panel.show_message("Recording stopped")
            return
        self.host.show_teach()
        dataset = self.ensure_dataset()
        label = self.panel.current_label()
        if dataset is None:
            return
        if label is None:
            self.panel.show_message("Add a label (or select one) first", error=True)
            return
        if self.host.stream_status() not in ("live", "stalled"):
            self.panel.show_message("Start a stream first: clips are recorded from the video shown", error=True)
            return
        if self.session_id is None:
            self.session_id = new_session_id()
        p = self.panel
        self.plan = _Plan(label, p.seconds.value(), p.countdown.value(), p.count.value())
        p.set_recording(True)
        self._start_countdown()

    def _start_countdown(self) -> None:
        self._counting = self.plan.countdown
        if self._counting <= 0:
            self._begin_clip()
            return
        self.view.set_recording(Recording(self.plan.label, countdown=self._counting))
        self.timer.start()

    def _tick(self) -> None:
        self._counting -= 1
        if self.plan is None:
            self.timer.stop()
        elif self._counting > 0:
            self.view.set_recording(Recording(self.plan.label, countdown=self._counting))
        else:
            self.timer.stop()
            self._begin_clip()

    def _begin_clip(self) -> None:
        plan = self.plan
        if self.host.stream_status() is None or self.dataset is None:
            self._stop_plan()
            self.panel.show_message("The stream stopped before recording could start", error=True)
            return
        fps = self.host.frame_rate() or FALLBACK_FPS
        try:
            recorder = ClipRecorder(
                self.dataset, plan.label, fps=fps, source=redact(self.host.source()), session=self.session_id
            )
        except DcrnError as exc:
            self._stop_plan()
            self.panel.show_message(str(exc), error=True)
            return
        self.recorder = recorder
        self.tap = ClipTap(recorder, max(1, round(plan.seconds * fps)), self)
        self.tap.progress.connect(lambda n, fps=fps: self._show_elapsed(n / fps), QUEUED)
        self.tap.full.connect(self._end_clip, QUEUED)
        self._clip_started = time.monotonic()
        self.view.set_recording(Recording(plan.label, length_s=plan.seconds))
        self.overdue.start(int((plan.seconds + OVERDUE_S) * 1000))
        self.host.set_frame_tap(self.tap)
        log.info("recording %.1f s of %s at %.1f fps", plan.seconds, plan.label, fps)

    def _show_elapsed(self, seconds: float) -> None:
        if self.plan is not None and self.tap is not None:
            self.view.set_recording(Recording(self.plan.label, elapsed_s=seconds, length_s=self.plan.seconds))

    def _end_clip(self) -> None:
        """The clip is full (or overdue, or stopped): finish it off the GUI thread; then the next, if any."""
        self.overdue.stop()
        tap, recorder = self.tap, self.recorder
        if tap is None:
            return
        self.tap, self.recorder = None, None
        self.host.set_frame_tap(None)
        written = tap.close()
        tap.deleteLater()
        keep = written >= tap.frames or recorder.seconds >= MIN_KEEP_S  # a clip cut short: kept when long enough
        if not keep:
            self.panel.show_message(f"Clip dropped: only {recorder.seconds:.1f} s (< {MIN_KEEP_S:g} s) recorded")
        job = Job("finish-clip", finish_clip(recorder, keep=keep), self)
        job.done.connect(self._clip_saved, QUEUED)
        job.failed.connect(lambda message: self.panel.show_message(message, error=True), QUEUED)
        self._run(job)
        if self.plan is None:
            return
        self.plan.remaining -= 1
        if self.plan.remaining > 0 and self.host.stream_status() is not None:
            self._start_countdown()
        else:
            self._stop_plan()

    def _stop_plan(self) -> None:
        """End a recording burst now: the clip under way is kept (what it has), the rest not recorded."""
        self.timer.stop()
        plan, self.plan = self.plan, None
        if self.tap is not None:
            self._end_clip()
        self.view.set_recording(None)
        if plan is not None:
            self.panel.set_recording(False)

    def _clip_saved(self, info: ClipInfo | None) -> None:
        if info is None:
            return
        self.refresh()
        seconds = info.frames / info.fps if info.fps else 0.0
        self.panel.show_message(f"Saved {info.path} ({seconds:.1f} s)")
        self.host.add_event("clip_recorded", f"{info.label}: {info.path}")
        self.checks.check(self.dataset.root, info.path)

    # -- cutting from a file -------------------------------------------------------------------------
    def mark_in(self) -> None:
        self._mark(0)

    def mark_out(self) -> None:
        self._mark(1)

    def _mark(self, which: int) -> None:
        if not is_file_source(self.host.source()) or self.last_pts is None:
            self.panel.show_message("In and out points are marked on a video file playing as the source", error=True)
            return
        self.host.show_teach()
        marks = list(self.panel.marks())
        marks[which] = self.last_pts
        if which == 0 and marks[1] <= marks[0]:
            marks[1] = marks[0]
        self.panel.set_marks(*marks)

    def cut(self) -> None:
        dataset = self._editable()
        source = self.host.source()
        label = self.panel.current_label()
        if dataset is None:
            return
        if not is_file_source(source):
            self.panel.show_message("Open a video file as the source to cut clips from it", error=True)
            return
        if label is None:
            self.panel.show_message("Select the label of the clip to cut", error=True)
            return
        in_s, out_s = self.panel.marks()
        try:
            fn = cut_clip(source, dataset, label, in_s, out_s, session=f"cut-{Path(source).stem}")
        except DcrnError as exc:
            self.panel.show_message(str(exc), error=True)
            return
        job = Job("cut-clip", fn, self)
        job.done.connect(self._clip_saved, QUEUED)
        job.failed.connect(lambda message: self.panel.show_message(message, error=True), QUEUED)
        self.panel.show_message(f"Cutting {in_s:.2f}-{out_s:.2f} s as {label!r}…")
        self._run(job)

    # -- training ------------------------------------------------------------------------------------
    def train(self) -> None:
        dataset = self._editable()
        if dataset is None:
            return
        if self.train_job is not None:
            self.panel.show_message("Training is already running")
            return
        try:
            dataset.check_trainable()
        except DcrnError as exc:
            self.panel.show_message(str(exc), error=True)
            return
        out = model_path_for(dataset.root)
        job = Job("train", train_model(dataset.root, out), self)
        job.progress.connect(self.panel.set_progress, QUEUED)
        job.done.connect(self._trained, QUEUED)
        job.failed.connect(self._train_failed, QUEUED)
        self.train_job, self.pending_model = job, None
        self.panel.set_training(True)
        self.panel.show_message(f"Training on {sum(dataset.counts().values())} clips…")
        self._run(job)

    def cancel_training(self) -> None:
        if self.train_job is not None:
            self.train_job.cancel()
            self.panel.show_message("Cancelling…")

    def _trained(self, report) -> None:
        self.train_job = None
        self.last_report = report
        self.panel.set_training(False)
        self.panel.set_result(
            TrainResult(
                labels=tuple(report.labels),
                accuracy=report.cv_accuracy,
                worst_fold=report.cv_worst_fold,
                split=report.cv_split,
                confusion=[list(row) for row in report.confusion],
                model=display_path(report.out),
                seconds=report.seconds,
                details=report.summary(),
                warning=report.warning(),
            )
        )
        accuracy = "" if report.cv_accuracy is None else f", cross-validated accuracy {report.cv_accuracy:.0%}"
        saved = f"Model saved: {display_path(report.out)}{accuracy}"
        if report.warning():  # not clearly better than chance: the stream keeps its model until the user says so
            self.pending_model = str(report.out)
            self.panel.show_message(f"{saved}, not clearly better than chance: not used", error=True)
            self.host.add_event("model_not_used", f"{report.out.name}: not clearly better than chance")
            return
        self.panel.show_message(saved)
        self.host.use_model(str(report.out))

    def use_anyway(self) -> None:
        """The user's yes to a taught model that is not clearly better than chance: switch to it now."""
        model, self.pending_model = self.pending_model, None
        if model is not None:
            self.panel.use_anyway.setVisible(False)
            self.panel.show_message(f"Using {display_path(model)} although it is not clearly better than chance")
            self.host.use_model(model)

    def _train_failed(self, message: str) -> None:
        cancelled = self.train_job is not None and self.train_job.cancel_event.is_set()
        self.train_job = None
        self.panel.set_training(False)
        self.panel.set_report("Cancelled" if cancelled else message, ok=False)
        self.panel.show_message("Training cancelled" if cancelled else message, error=not cancelled)

    # -- the main controller's session -----------------------------------------------------------------
    def session_started(self, spec: SessionSpec) -> None:
        self._stop_plan()
        self.session_id = None
        self.last_pts = None
        self.panel.set_file_source(is_file_source(spec.source))

    def frame_shown(self, prediction: dict) -> None:
        pts = prediction.get("pts")
        self.last_pts = float(pts) if pts is not None else self.last_pts

    def session_ended(self) -> None:
        """The stream stopped, ended or failed: a clip under way keeps what it has."""
        if self.plan is not None:
            self._stop_plan()
            self.panel.show_message("The stream stopped: recording ended", error=True)

    def shutdown(self, timeout: float) -> bool:
        self._stop_plan()
        for job in self.jobs:
            job.cancel()
        deadline = time.monotonic() + timeout
        for job in list(self.jobs):
            if job.join(max(0.0, deadline - time.monotonic())):
                self.jobs.remove(job)
        return not self.jobs

    # -- helpers -------------------------------------------------------------------------------------
    def _editable(self) -> TeachDataset | None:
        """The data set, unless a recording is under way (labels and clips wait for it)."""
        if self.plan is not None:
            self.panel.show_message("Wait until the recording has ended", error=True)
            return None
        return self.ensure_dataset()

    def _run(self, job: Job) -> None:
        self.jobs = [j for j in self.jobs if j.running]
        self.jobs.append(job)
        job.start()
