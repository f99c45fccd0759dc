"""The controller: turns the window's intents into engine sessions and engine signals into display calls.

It runs on the GUI thread only. Each session is one :class:`EngineWorker`; a source or model switch stops
the old worker (without waiting) and starts a new one, and signals from a worker that is no longer
current are ignored. It owns the :class:`~.teach.TeachController` and is its :class:`~.teach.TeachHost`
(by shape: a Protocol cannot be a base class beside QObject).
"""

from __future__ import annotations

import logging
import statistics
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

from PyQt6.QtCore import QObject, Qt, QTimer

from dcrn.models import shipped_models

from .cameras import CameraProbe
from .event_list import EventRow
from .settings import GuiSettings, SettingsStore
from .source_panel import DEMO_SOURCE, Choice
from .teach import TeachController
from .video_view import Overlay
from .window import MainWindow
from .worker import EngineWorker, Frame, SessionSpec, Shown, redact, redact_text

log = logging.getLogger(__name__)

DEMO_MODEL_NOTICE = (
    "The default model knows only the demo stream's synthetic actions (moving shapes), not what this "
    "source shows. Teach it your own actions: record a few clips of each, then train."
)
STALL_AFTER_S = 1.0  # no frame for this long while live -> "stalled" (the engine calls it lost at timeout_s)
REFRESH_MS = 500  # status bar refresh and stall check


class FpsMeter:
    """Frames per second over the last ``window_s`` seconds: ``tick()`` per frame, read ``fps``."""

    def __init__(self, window_s: float = 2.0) -> None:
        self.window_s = window_s
        self._ticks: deque[float] = deque(maxlen=1000)

    def tick(self) -> None:
        self._ticks.append(time.monotonic())

    def reset(self) -> None:
        self._ticks.clear()

    @property
    def fps(self) -> float | None:
        now = time.monotonic()
        while self._ticks and now - self._ticks[0] > self.window_s:
            self._ticks.popleft()
        if len(self._ticks) < 2:
            return None
        return (len(self._ticks) - 1) / max(1e-6, self._ticks[-1] - self._ticks[0])


def describe_source(uri: str) -> str:
    """Short, credential-free text for a source URI."""
    if uri == DEMO_SOURCE or uri.startswith(DEMO_SOURCE + "?"):
        return "Demo stream" if uri == DEMO_SOURCE else f"Demo stream ({uri[len(DEMO_SOURCE) + 1 :]})"
    if uri.strip().isdigit():
        return f"Camera {int(uri)}"
    return redact(uri)


def describe_model(model: str) -> str:
    """``default (shipped)`` for a shipped model's name, the file name for a checkpoint path."""
    if model in shipped_models() or not any(c in model for c in "/\\."):
        return f"{model} (shipped)"
    return Path(model).name


class Controller(QObject):
    def __init__(
        self, window: MainWindow, store: SettingsStore, *, backend: str = "auto", device: str = "auto", people: int = 1
    ):
        super().__init__(window)
        self.window = window
        self.store = store
        self.settings: GuiSettings = store.load()
        self.backend = backend
        self.device = device
        self.people = people  # a model taught on the body follows up to this many people
        self.timeout_s = SessionSpec.timeout_s  # network open / read timeout of new sessions
        self.worker: EngineWorker | None = None
        self.stopping: list[EngineWorker] = []
        self.cameras: list[int] = []
        self.status = "idle"
        self.meter = FpsMeter()
        self.latencies: deque[float] = deque(maxlen=60)
        self.engine_latencies: deque[float] = deque(maxlen=60)  # capture -> prediction, per frame
        self.engine_dropped = 0
        self.backend_shown: str | None = None  # the backend named in the event list this session
        self.last_frame_at = 0.0
        self.failed = False
        self.first_prediction_s: float | None = None  # seconds from start to the first frame shown
        self._started_at = 0.0

        self.timer = QTimer(self)
        self.timer.setInterval(REFRESH_MS)
        self.timer.timeout.connect(self._refresh)
        self.timer.start()
        self.probe = CameraProbe(self)
        self.probe.found.connect(self._cameras_found, Qt.ConnectionType.QueuedConnection)

        window.start_stop_requested.connect(self.toggle)
        window.source_chosen.connect(self.choose_source)
        window.model_chosen.connect(self.choose_model)
        window.snapshot_requested.connect(self.snapshot)
        window.save_events_requested.connect(self.save_events)
        window.closing.connect(self.shutdown)
        if self.settings.geometry:
            window.restoreGeometry(self.settings.geometry)
        self.teach = TeachController(self, window.teach, window.view, self)
        window.teach_shown.connect(self.teach.ensure_dataset)
        self._refresh_choices()

    # -- intents ---------------------------------------------------------------------------------------
    def toggle(self) -> None:
        if self.worker is not None:
            self.stop()
        else:
            self.start()

    def choose_source(self, uri: str) -> None:
        uri = uri.strip()
        if uri and uri != DEMO_SOURCE and not uri.isdigit():
            self.settings.remember_source(uri)
        self.start(source=uri)

    def choose_model(self, model: str) -> None:
        if model not in shipped_models() and model != "default":
            self.settings.remember_model(model)
        self.settings.model = model
        self._refresh_choices()
        if self.worker is not None:
            self.start()
        else:
            self._save()

    def use_model(self, model: str) -> None:
        """Make ``model`` the model of this and later sessions; a running stream switches between two frames."""
        if model not in shipped_models() and model != "default":
            self.settings.remember_model(model)
        self.settings.model = model
        self._refresh_choices()
        self._save()
        if self.worker is not None:
            self.worker.swap_model(model)
        else:
            self.window.show_model_notice(None)

    def start(self, source: str | None = None, model: str | None = None) -> None:
        """(Re)start on ``source`` / ``model``, or on the remembered ones."""
        self._retire()
        self.settings.source = source or self.settings.source or DEMO_SOURCE
        self.settings.model = model or self.settings.model or "default"
        spec = SessionSpec(
            self.settings.source,
            self.settings.model,
            self.backend,
            self.device,
            timeout_s=self.timeout_s,
            evidence_dir=self.settings.evidence_dir or None,
            people=self.people,
        )
        worker = EngineWorker(spec, self)
        queued = Qt.ConnectionType.QueuedConnection
        worker.frame_ready.connect(lambda shown, w=worker: self._on_frame(w, shown), queued)
        worker.record.connect(lambda record, w=worker: self._on_record(w, record), queued)
        worker.failed.connect(lambda message, w=worker: self._on_failed(w, message), queued)
        worker.swap_failed.connect(lambda message, w=worker: self._on_swap_failed(w, message), queued)
        worker.finished.connect(lambda w=worker: self._on_finished(w), queued)
        self.worker = worker
        self.failed = False
        self.meter.reset()
        self.latencies.clear()
        self.engine_latencies.clear()
        self.engine_dropped = 0
        self.backend_shown = None
        self.first_prediction_s = None
        self._started_at = time.monotonic()
        source_text, model_text = describe_source(spec.source), describe_model(spec.model)
        self.window.clear_error()
        self.window.view.clear()
        self.window.view.overlay.source = source_text
        self.window.bars.clear()
        self.window.set_session(source_text, model_text)
        self.window.show_model_notice(DEMO_MODEL_NOTICE if _is_demo_model_elsewhere(spec) else None)
        self.window.set_running(True)
        self.teach.session_started(spec)
        self._set_status("connecting")
        self._event("session_started", f"{source_text} · {model_text}")
        self._refresh_choices()
        self._save()
        log.info("starting %s with model %s", source_text, model_text)
        worker.start()
        self.probe.start(in_use=frozenset({int(spec.source)}) if spec.source.isdigit() else frozenset())

    def stop(self) -> None:
        if self.worker is None:
            return
        self._retire()
        self.teach.session_ended()
        self._set_status("stopped")
        self._event("session_stopped", "")
        self.window.set_running(False)

    def snapshot(self) -> Path | None:
        image = self.window.view.snapshot()
        if image is None:
            self.window.notify("No frame to save yet")
            return None
        folder = Path(self.settings.snapshot_dir)
        folder.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S") + f"-{int(time.time() * 1000) % 1000:03d}"
        path = folder / f"dcrn-{stamp}.png"
        if not image.save(str(path), "PNG"):
            self.window.show_error(f"Could not write the snapshot to {path}")
            return None
        self.window.notify(f"Snapshot saved: {path}")
        log.info("snapshot saved to %s", path)
        return path

    def save_events(self, path: str) -> None:
        try:
            saved = self.window.events.save(path)
        except OSError as exc:
            self.window.show_error(f"Could not save the events: {exc}")
            return
        self.window.notify(f"Events saved: {saved}")

    def shutdown(self, timeout: float = 1.5) -> bool:
        """Stop every engine thread; True when all ended within ``timeout`` seconds."""
        self.timer.stop()
        self._retire()
        deadline = time.monotonic() + timeout
        self.teach.shutdown(timeout)
        for worker in list(self.stopping):
            if worker.join(max(0.0, deadline - time.monotonic())):
                self.stopping.remove(worker)
        self.probe.join(max(0.0, deadline - time.monotonic()))
        self.settings.geometry = bytes(self.window.saveGeometry())
        self._save()
        if self.stopping:
            log.warning("%d engine thread(s) still running after %.1f s", len(self.stopping), timeout)
        return not self.stopping

    # -- engine signals ----------------------------------------------------------------------------------
    def _on_frame(self, worker: EngineWorker, shown: Shown) -> None:
        worker.frame_painted()
        if worker is not self.worker:
            return
        now = time.monotonic()
        if self.first_prediction_s is None:
            self.first_prediction_s = now - self._started_at
            log.info("first prediction after %.2f s", self.first_prediction_s)
        self.last_frame_at = now
        self.meter.tick()
        self.latencies.append((now - shown.captured) * 1000.0)
        p = shown.prediction
        self.teach.frame_shown(p)
        if p.get("latency_ms") is not None:
            self.engine_latencies.append(float(p["latency_ms"]))
        if self.status in ("connecting", "stalled"):  # "reconnecting" ends with stream_restored, not with
            self._set_status("live")  # the frames still queued from before the loss
        overlay = Overlay(
            label=str(p.get("label", "")),
            score=float(p.get("score", 0.0)),
            status=self.status,
            source=self.window.view.overlay.source,
            truth=shown.truth,
            keypoints=shown.keypoints,
        )
        self.window.show_frame(shown.image, overlay, p.get("top", []))

    def _on_record(self, worker: EngineWorker, record: dict) -> None:
        if worker is not self.worker:
            return
        if record.get("type") == "stats":
            self.engine_dropped = int(record.get("dropped") or 0)
            backend = record.get("backend")
            if backend and backend != self.backend_shown:  # once a session: which backend runs, and why
                self.backend_shown = str(backend)
                where = f"{backend} ({record.get('precision')}) on {record.get('device')}"
                self._event("backend", f"{where}: {record.get('backend_reason')}")
            return
        if record.get("type") != "event":
            return
        name = str(record.get("event", ""))
        if name in ("action_started", "action_ended"):
            score = record.get("score")
            detail = f"{record.get('label', '')}" + (f"  {float(score) * 100:.0f}%" if score is not None else "")
        elif name == "model_changed":
            model = str(record.get("model", ""))
            detail = f"{describe_model(model)}: {', '.join(record.get('labels') or [])}"
            self.window.set_session(describe_source(worker.spec.source), describe_model(model))
            self.window.show_model_notice(None)
        else:
            detail = redact_text(str(record.get("detail", "") or ""), worker.spec.source)
        folder = Path(worker.spec.evidence_dir or ".")  # evidence: `clip` / `snapshot` are relative to it
        files = {key: str(folder / record[key]) for key in ("clip", "snapshot") if record.get(key)}
        stream = str(record.get("stream", ""))
        self._event(name, detail, wall=record.get("wall"), pts=record.get("pts"), stream=stream, **files)
        if name == "stream_lost":
            self._set_status("reconnecting")
        elif name == "stream_restored":
            self._set_status("live")
        elif name == "stream_ended":
            self._set_status("ended")

    def _on_failed(self, worker: EngineWorker, message: str) -> None:
        if worker is not self.worker:
            return
        self.failed = True
        self._retire()  # the session is over; its thread finishes on its own
        self.teach.session_ended()
        self.window.set_running(False)
        self.window.show_error(message)
        self._event("error", message)
        self._set_status("error")

    def _on_finished(self, worker: EngineWorker) -> None:
        if worker in self.stopping:
            self.stopping.remove(worker)
        if worker is not self.worker:
            return
        self.worker = None
        self.window.set_running(False)
        self.teach.session_ended()
        if not self.failed:
            if self.status != "ended":
                self._event("stream_ended", "")
            self._set_status("ended")

    def _on_swap_failed(self, worker: EngineWorker, message: str) -> None:
        if worker is not self.worker:
            return
        self.window.show_error(message)
        self._event("error", message)

    # -- TeachHost: what the teach controller may ask of this one ----------------------------------------
    def teach_folder(self) -> str:
        return self.settings.teach_dataset

    def remember_teach_folder(self, folder: str) -> None:
        self.settings.teach_dataset = folder
        self._save()

    def source(self) -> str:
        return self.worker.spec.source if self.worker is not None else self.settings.source

    def stream_status(self) -> str | None:
        return self.status if self.worker is not None else None

    def frame_rate(self) -> float | None:
        return (self.worker.source_fps if self.worker is not None else None) or self.meter.fps

    def set_frame_tap(self, tap: Callable[[Frame], None] | None) -> None:
        if self.worker is not None:
            self.worker.set_tap(tap)

    def play(self, source: str) -> None:
        self.start(source=source)

    def show_teach(self) -> None:
        self.window.show_teach()

    def add_event(self, name: str, detail: str) -> None:
        self._event(name, detail)

    # -- helpers -------------------------------------------------------------------------------------

    def _retire(self) -> None:
        if self.worker is not None:
            self.worker.stop()
            self.stopping.append(self.worker)
            self.worker = None
        for worker in self.stopping:
            worker.stop()

    def _set_status(self, status: str) -> None:
        self.status = status
        self.window.set_status(status)

    def _event(self, name: str, detail: str, *, wall=None, pts=None, stream: str = "", clip="", snapshot="") -> None:
        row = EventRow(float(wall) if wall is not None else time.time(), name, detail, stream, pts, clip, snapshot)
        self.window.add_event(row)

    def _refresh(self) -> None:
        if self.status == "live" and time.monotonic() - self.last_frame_at > STALL_AFTER_S:
            self._set_status("stalled")
        latency = statistics.median(self.latencies) if self.latencies else None
        engine = statistics.median(self.engine_latencies) if self.engine_latencies else None
        dropped = self.engine_dropped + (self.worker.display_dropped if self.worker else 0)
        running = self.status in ("live", "stalled")
        self.window.set_stats(self.meter.fps if running else None, latency, engine, dropped)

    def _cameras_found(self, cameras: list) -> None:
        self.cameras = [int(i) for i in cameras]
        self._refresh_choices()

    def _refresh_choices(self) -> None:
        s = self.settings
        sources = [Choice(DEMO_SOURCE, describe_source(DEMO_SOURCE))]
        sources += [Choice(str(i), describe_source(str(i))) for i in self.cameras]
        sources += [Choice(uri, describe_source(uri)) for uri in s.recent_sources]
        if s.source not in [c.value for c in sources]:
            sources.append(Choice(s.source, describe_source(s.source)))
        models = [Choice(name, describe_model(name)) for name in shipped_models()]
        if "default" not in shipped_models():
            models.insert(0, Choice("default", "default (shipped)"))
        models += [Choice(path, describe_model(path)) for path in s.recent_models if path not in shipped_models()]
        if s.model not in [c.value for c in models]:
            models.append(Choice(s.model, describe_model(s.model)))
        self.window.set_choices(sources, s.source, models, s.model)

    def _save(self) -> None:
        self.store.save(self.settings)


def _is_demo_model_elsewhere(spec: SessionSpec) -> bool:
    """The shipped demo model on a source that is not the demo stream (a camera, a URL, a file)."""
    return spec.model == "default" and not (spec.source == DEMO_SOURCE or spec.source.startswith(DEMO_SOURCE + "?"))
