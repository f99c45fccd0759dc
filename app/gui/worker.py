"""The bridge between the streaming engine and the window: the only GUI module that imports ``dcrn.engine``.

:class:`EngineWorker` builds a :class:`~dcrn.engine.pipeline.Pipeline` and runs it in a plain thread.
Everything it learns reaches the GUI thread only through Qt signals (queued across threads):

- ``frame_ready(Shown)`` -- a frame converted to a ``QImage`` with its prediction (and, for a model taught on
  hands or bodies, a :class:`~.keypoint_overlay.Keypoints` copy of what it found there). At most
  ``MAX_IN_FLIGHT`` frames wait in the GUI's event queue; newer ones are dropped here (and counted) when
  painting falls behind, so a slow window never slows the engine or grows a backlog.
- ``record(dict)`` -- every event and stats record (predictions travel with their frames).
- ``failed(str)`` -- the pipeline could not start or stopped with an error (credentials redacted).
- ``swap_failed(str)`` -- :meth:`EngineWorker.swap_model` could not load the new model; the old one runs on.
- ``finished()`` -- the engine thread has ended.

The other engine names the GUI needs pass through here as well, so this module's ``__all__`` is the whole
engine surface the window depends on: ``redact`` (credential-free text), ``Frame`` and the clip recording
of the Teach panel (``ClipRecorder``, ``record_clips``, ``MIN_KEEP_S``, and ``keypoint_reader`` for the
clips' hands and bodies; run off the GUI thread by :mod:`.teach_jobs`), and ``probe_cameras`` (run off the
GUI thread by :mod:`.cameras`). Other GUI modules import these from here, never from the engine
(tests/app/test_gui_boundary.py checks it).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import numpy as np
from PyQt6.QtCore import QObject, pyqtSignal
from PyQt6.QtGui import QImage

from dcrn.engine.frames import Frame
from dcrn.engine.pipeline import Pipeline, PipelineConfig
from dcrn.engine.postprocess import PostprocessConfig
from dcrn.engine.recorder import MIN_KEEP_S, ClipRecorder, record_clips
from dcrn.engine.redact import redact, without_secrets
from dcrn.engine.sources.camera import probe_cameras
from dcrn.models.errors import DcrnError
from dcrn.models.frame_vector import hand_order

from .keypoint_overlay import Keypoints

if TYPE_CHECKING:
    from dcrn.engine.keypoints.front import FrontResult

log = logging.getLogger(__name__)

MAX_IN_FLIGHT = 2  # frames posted to the GUI and not yet painted
STATS_INTERVAL_S = 1.0  # the window shows fresh fps / latency figures every second
TOP_K = 5  # probability bars
SWAP_WAIT_S = 30.0  # swap_model on a stream still starting waits this long for it to run

__all__ = [
    "MIN_KEEP_S",
    "ClipRecorder",
    "EngineWorker",
    "Frame",
    "SessionSpec",
    "Shown",
    "keypoint_reader",
    "probe_cameras",
    "record_clips",
    "redact",
    "redact_text",
    "without_secrets",
]


@dataclass(frozen=True)
class SessionSpec:
    """What the user asked to run."""

    source: str  # raw URI (may hold credentials; shown only through redact())
    model: str = "default"  # shipped model name or checkpoint path
    backend: str = "auto"  # auto: engine.backends.choose_backend, as dcrn run
    device: str = "auto"
    loop: bool = False  # video files play once and end (status 'ended'); True restarts them
    timeout_s: float = 5.0  # network sources: open timeout, and no frame for this long -> the stream is lost
    evidence_dir: str | None = None  # clips and snapshots of actions (docs/evidence.md); None: none
    people: int = 1  # a model taught on the body follows up to this many people, each with their own decision


@dataclass
class Shown:
    """One frame on its way to the screen."""

    image: QImage  # RGB888, a deep copy owned by the GUI
    prediction: dict  # the prediction record (label, score, top, latency_ms, ...)
    captured: float  # time.monotonic() at capture (end-to-end latency at paint time)
    truth: str | None = None  # ground-truth label when the source knows it (the demo stream)
    keypoints: Keypoints | None = None  # a keypoint model's landmarks and explanation; None for other models


class EngineWorker(QObject):
    frame_ready = pyqtSignal(object)  # Shown
    record = pyqtSignal(dict)
    failed = pyqtSignal(str)
    swap_failed = pyqtSignal(str)
    finished = pyqtSignal()

    def __init__(self, spec: SessionSpec, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.spec = spec
        self.display_dropped = 0  # frames dropped because the window was still painting
        self._lock = threading.Lock()
        self._in_flight = 0
        self._stop = threading.Event()
        self._pipeline: Pipeline | None = None
        self._labels: tuple[str, ...] | None = None  # the source's ground-truth classes (the demo stream's)
        self._tap: Callable[[Frame], None] | None = None
        self._keypoints_failed = False  # reading the landmarks failed once: the window shows frames without them
        self.source_fps: float | None = None  # the source's nominal frame rate, once it is open
        self._thread = threading.Thread(target=self._run, name="dcrn-gui-engine", daemon=True)

    # -- called on the GUI thread ------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Ask the engine to stop; returns at once (see :meth:`join`)."""
        self._stop.set()
        with self._lock:
            pipeline = self._pipeline
        if pipeline is not None:
            pipeline.stop()

    def join(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the engine thread; True when it has ended."""
        if self._thread.is_alive():
            self._thread.join(timeout)
        return not self._thread.is_alive()

    def swap_model(self, model: str) -> None:
        """Switch the running stream to checkpoint ``model`` without reopening the source; returns at once.

        The checkpoint loads on a helper thread; the engine swaps between two frames and reports it with a
        ``model_changed`` event record. Failures come back as ``swap_failed``.
        """
        threading.Thread(target=self._swap, args=(model,), name="dcrn-gui-swap", daemon=True).start()

    def set_tap(self, tap: Callable[[Frame], None] | None) -> None:
        """Call ``tap(frame)`` on the engine thread for every frame stepped, displayed or not (None: stop).

        ``frame.image`` is valid only during the call. Keep the tap cheap: it runs between two steps.
        """
        self._tap = tap

    @property
    def in_flight(self) -> int:
        """Frames posted to the GUI thread and not yet taken (never more than ``MAX_IN_FLIGHT``)."""
        with self._lock:
            return self._in_flight

    def frame_painted(self) -> None:
        """The GUI took one posted frame off its queue."""
        with self._lock:
            self._in_flight = max(0, self._in_flight - 1)

    # -- the engine thread -------------------------------------------------------------------------
    def _run(self) -> None:
        shown = redact(self.spec.source)
        try:
            config = PipelineConfig(
                sources=[self.spec.source],
                model=self.spec.model,
                backend=self.spec.backend,
                device=self.spec.device,
                loop=self.spec.loop,
                timeout_s=self.spec.timeout_s,
                stall_s=self.spec.timeout_s,  # the status bar shows "stalled" first, then "reconnecting"
                stats_interval_s=STATS_INTERVAL_S,
                postprocess=PostprocessConfig(top_k=TOP_K),
                threads=1,  # as `dcrn run`: the capture, pipeline and Qt threads share the cores
                evidence_dir=self.spec.evidence_dir,  # events then name their `clip` and `snapshot`
                people=self.spec.people,
            )
            pipeline = Pipeline(config, on_frame=self._on_frame, on_record=self._on_record)
            with self._lock:
                self._pipeline = pipeline
            if self._stop.is_set():
                return
            log.info("engine started on %s", shown)
            pipeline.run()
            log.info("engine stopped on %s", shown)
        except DcrnError as exc:
            log.warning("engine error on %s: %s", shown, redact_text(str(exc), self.spec.source))
            self.failed.emit(redact_text(str(exc), self.spec.source))
        except Exception as exc:  # an engine bug must not kill the window; report it there and in the log
            log.exception("engine crashed on %s", shown)
            self.failed.emit(redact_text(f"{type(exc).__name__}: {exc}", self.spec.source))
        finally:
            self.finished.emit()

    def _swap(self, model: str) -> None:
        deadline = time.monotonic() + SWAP_WAIT_S
        while True:  # a stream still starting (opening its source or backend) takes the model once it runs
            with self._lock:
                pipeline = self._pipeline
            running = pipeline is not None and pipeline.backend is not None
            if running or self._stop.is_set() or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        try:
            if not running or self._stop.is_set():
                raise DcrnError("the stream is not running")
            pipeline.swap_model(model)
        except (DcrnError, RuntimeError, OSError) as exc:
            log.warning("model swap to %s failed: %s", model, exc)
            self.swap_failed.emit(f"Could not switch to {model}: {redact_text(str(exc), self.spec.source)}")
        except Exception as exc:  # a bug while loading must not kill the window
            log.exception("model swap to %s crashed", model)
            self.swap_failed.emit(f"Could not switch to {model}: {type(exc).__name__}: {exc}")

    def _on_frame(self, frame, prediction: dict) -> None:
        if self._labels is None:  # the first frame: the source is open now
            self._source_opened()
        tap = self._tap
        if tap is not None:
            try:
                tap(frame)
            except Exception:
                log.exception("frame tap failed; removed")
                self._tap = None
        with self._lock:
            if self._in_flight >= MAX_IN_FLIGHT:
                self.display_dropped += 1
                return
            self._in_flight += 1
        truth = None
        if frame.label is not None and 0 <= frame.label < len(self._labels):
            truth = self._labels[frame.label]
        keypoints = self._keypoints(frame.stream, prediction.get("people", ()))
        self.frame_ready.emit(Shown(to_qimage(frame.image), dict(prediction), frame.captured, truth, keypoints))

    def _keypoints(self, stream: str, people: Sequence[dict] = ()) -> Keypoints | None:
        """A keypoint model's landmarks of the stream's newest frame as window-side copies (else None), with
        each person's decision (``people``: the pipeline's per-person ``person``, ``label``, ``score``)."""
        with self._lock:
            pipeline = self._pipeline
        if pipeline is None or not pipeline.model.takes_vectors or self._keypoints_failed:
            return None
        try:
            found = pipeline.keypoints(stream)
            return None if found is None else to_keypoints(*found, people=people)
        except Exception:  # a bug here must not stop the frames (a frame posted is a frame counted in flight)
            log.exception("reading the landmarks for the window failed; frames are shown without them")
            self._keypoints_failed = True
            return None

    def _source_opened(self) -> None:
        with self._lock:
            pipeline = self._pipeline
        info = pipeline.source_info() if pipeline is not None else None
        self._labels = info.labels if info is not None else ()
        self.source_fps = info.fps if info is not None else None

    def _on_record(self, record: dict) -> None:
        if record.get("type") != "prediction":
            self.record.emit(dict(record))


def to_qimage(image: np.ndarray) -> QImage:
    """(H, W, 3) uint8 RGB -> a QImage that owns its pixels."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"frame must be HxWx3 uint8, got {image.shape} {image.dtype}")
    image = np.ascontiguousarray(image)
    height, width = image.shape[:2]
    return QImage(image.data, width, height, image.strides[0], QImage.Format.Format_RGB888).copy()


def to_keypoints(result: FrontResult, explained: dict, people: Sequence[dict] = ()) -> Keypoints:
    """A FrontResult and its explanation (:meth:`Pipeline.keypoints`) -> copies in the displayed frame's pixels
    (the keypoint graphs saw the frame scaled down by ``result.scale``); ``people``' decisions (several people
    followed) become each person's tag, "#id label score"."""
    scale = np.float32(result.scale)
    shown = tuple(
        np.column_stack([p.landmarks[:, :2] * scale, p.visibility]).astype(np.float32) for p in result.keypoints.people
    )
    hands = tuple((h.landmarks[:, :2] * scale).astype(np.float32) for h in hand_order(result.keypoints.hands))
    tracked = [
        *(() if result.hands is None else result.hands.hands),
        *(() if result.body is None else result.body.people),
    ]
    regions = tuple((t.roi.corners() * scale).astype(np.float32) for t in tracked)
    parts = tuple((str(name), float(share)) for name, share in explained.get("parts", ()))
    decided = {d["person"]: d for d in people}
    tags = tuple(_person_tag(decided.get(p.id), p.id) for p in result.keypoints.people) if decided else ()
    return Keypoints(shown, hands, regions, str(explained.get("label", "")), parts, tags)


def _person_tag(decision: dict | None, person: int) -> str:
    """A person's tag, "#3 fall 92%" (id, decision, score), or "" when they have no decision."""
    if decision is None:
        return ""
    score = decision.get("score")
    return f"#{person} {decision['label']}" + ("" if score is None else f" {float(score):.0%}")


def redact_text(text: str, uri: str) -> str:
    """An engine message made safe to show: URLs redacted, and any stray copy of ``uri``'s password."""
    text = redact(text.replace(uri, redact(uri)) if uri else text)
    password = urlsplit(uri).password if "://" in uri else None
    return text.replace(password, "***") if password else text


def keypoint_reader():
    """Teaching's hand and body finder, or None where the keypoint graphs cannot run here."""
    from dcrn.engine.keypoints import clip_reader

    return clip_reader()
