"""EvidenceRecorder: pre-roll, clips and snapshots of every action, for any number of streams.

    recorder = EvidenceRecorder("/var/lib/dcrn/evidence", EvidenceConfig(pre_s=3, post_s=2, max_s=60))
    recorder.frame("cam0", image_rgb, pts, wall)     # every frame (H, W, 3) uint8 RGB; returns at once
    recorder.prediction(prediction_record)           # every prediction record: finds the action's peak
    record = recorder.event(event_record)            # every event record; action_started / action_ended
                                                     # come back with "clip" and "snapshot" added
    recorder.close()                                 # clips still open are finished, complete

All calls come from one thread (the pipeline's); each returns at once. Per frame the caller pays the
RGB -> I420 conversion (about 0.2 ms at 640x480) and a queue append; the encoding runs on the stream's own
worker thread (:mod:`.worker`), which PyAV lets run beside the model. ``action_started`` names the clip
and snapshot before they exist: the clip reaches back ``pre_s`` (to the keyframe before, at most
``gop_s`` more), runs ``post_s`` past the matching ``action_ended`` and at most ``max_s`` in all; the
snapshot is the frame with the highest score of the action's class, written when the action ends.
``stream_lost`` / ``stream_ended`` finish the stream's clips at once. Retention runs once at start and
after every clip. ``on_written(name)`` (optional) hears of every clip and snapshot once it is complete under
its final name. See docs/evidence.md.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dcrn.engine.evidence.clip import ClipFile
from dcrn.engine.evidence.config import EvidenceConfig, EvidenceError
from dcrn.engine.evidence.encoder import choose_codec, to_i420
from dcrn.engine.evidence.names import EvidenceNames, choose_names, temp_path
from dcrn.engine.evidence.preroll import Timeline
from dcrn.engine.evidence.retention import enforce_retention
from dcrn.engine.evidence.snapshot import SnapshotJob
from dcrn.engine.evidence.worker import CutClips, EndClip, Snapshot, StartClip, StreamWorker, WorkerStats
from dcrn.engine.frames import ACTION_ENDED, ACTION_STARTED, STREAM_ENDED, STREAM_LOST

log = logging.getLogger(__name__)

CLOSE_TIMEOUT_S = 30.0  # longest wait for one stream's worker to finish its clips at close()


@dataclass
class _Action:
    """The running action of a stream, as the recorder follows it."""

    names: EvidenceNames
    label: str
    peak_score: float = -math.inf
    peak_wall: float = 0.0
    peak_image: np.ndarray | None = None  # I420 of the peak frame (the frame's own converted copy)
    pending: tuple[float, float, float] | None = None  # (score, pts, wall): a peak whose frame comes next


@dataclass(eq=False)
class _Stream:
    name: str
    worker: StreamWorker
    timeline: Timeline = field(default_factory=Timeline)
    last_t: float | None = None  # clock time of the newest frame (encoded or not)
    last_pts: float | None = None  # pts of the newest encoded frame, rounded as records round it
    last_image: np.ndarray | None = None  # its I420
    last_wall: float = 0.0
    next_t: float | None = None  # max_fps: the next frame to encode is the first at or after this time
    action: _Action | None = None
    frames: int = 0  # frames seen
    dropped: int = 0  # frames left out because the worker was behind
    skipped: int = 0  # frames left out by max_fps


@dataclass
class EvidenceStats:
    """One stream's evidence counters (see :meth:`EvidenceRecorder.stats`)."""

    frames: int
    encoded: int
    dropped: int
    skipped: int
    clips: int
    snapshots: int
    errors: int
    preroll_mb: float
    encode_ms: float  # mean thread CPU time per encoded frame


class EvidenceRecorder:
    """Pre-roll, clips and snapshots of actions under ``root`` (see the module notes)."""

    def __init__(
        self,
        root: str | os.PathLike,
        config: EvidenceConfig | None = None,
        *,
        on_written: Callable[[str], None] | None = None,
    ) -> None:
        self.config = config or EvidenceConfig()
        self.on_written = on_written  # called on a worker thread with the relative name of each file written
        folder = Path(root).expanduser()
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise EvidenceError(f"evidence folder {folder}: cannot create it ({exc.strerror or exc})") from None
        if not os.access(folder, os.W_OK | os.X_OK):
            raise EvidenceError(f"evidence folder {folder}: not writable")
        self.root = folder.resolve()
        self.choice = choose_codec(self.config)
        self._streams: dict[str, _Stream] = {}
        self._reserved: set[Path] = set()  # final and temporary paths of clips and snapshots to come
        self._lock = threading.Lock()  # _reserved, shared with the workers
        self._retention_lock = threading.Lock()  # one retention pass at a time
        self._drop_warned: set[str] = set()
        self.closed = False
        self.enforce_retention()
        log.info(
            "evidence: clips and snapshots of actions in %s (%s; pre-roll %.1f s, post-roll %.1f s, at most %.0f s)",
            self.root,
            self.choice.describe(),
            self.config.pre_s,
            self.config.post_s,
            self.config.max_s,
        )

    # -- per frame -----------------------------------------------------------------------------------

    def frame(self, stream: str, image: np.ndarray, pts: float, wall: float | None = None) -> None:
        """One frame of ``stream``: (H, W, 3) uint8 RGB, its pts and wall-clock time (seconds)."""
        if self.closed:
            return
        state = self._state(stream)
        t = state.timeline.map(float(pts))
        state.last_t = t
        state.frames += 1
        interval = None if self.config.max_fps is None else 1.0 / self.config.max_fps
        if interval is not None:
            if state.next_t is not None and t < state.next_t - 1e-6:
                state.skipped += 1
                return
            late = state.next_t is None or t - state.next_t >= interval
            state.next_t = t + interval if late else state.next_t + interval
        yuv = to_i420(image)
        state.last_pts, state.last_image = round(float(pts), 4), yuv
        state.last_wall = time.time() if wall is None else float(wall)
        action = state.action
        if action is not None and action.pending is not None:
            score, pending_pts, pending_wall = action.pending
            action.pending = None  # this frame is the peak, or the peak's frame was never encoded
            if pending_pts == state.last_pts:
                action.peak_score, action.peak_wall, action.peak_image = score, pending_wall, yuv
        if not state.worker.put_frame(yuv, t):
            state.dropped += 1
            if stream not in self._drop_warned:
                self._drop_warned.add(stream)
                log.warning("evidence: %s: the encoder is behind; frames are left out of its clips", stream)

    def prediction(self, record: dict) -> None:
        """A prediction record: a higher score of the running action's class makes its frame the peak."""
        state = self._streams.get(record.get("stream"))  # type: ignore[arg-type]
        action = None if state is None else state.action
        if action is None:
            return
        score = score_of(record, action.label)
        if score is None or score <= action.peak_score:
            return
        self._offer_peak(state, action, score, record.get("pts"), record.get("wall"))

    # -- events --------------------------------------------------------------------------------------

    def event(self, record: dict) -> dict:
        """An event record; ``action_started`` / ``action_ended`` come back (copied) with ``clip`` and
        ``snapshot``: paths relative to the evidence folder. Other records come back as they are."""
        kind = record.get("event")
        if kind == ACTION_STARTED:
            return self._start(record)
        if kind == ACTION_ENDED:
            return self._end(record)
        if kind in (STREAM_LOST, STREAM_ENDED):
            state = self._streams.get(record.get("stream"))  # type: ignore[arg-type]
            if state is not None and not self.closed:
                state.worker.put(CutClips())
        return record

    def record(self, record: dict) -> dict:
        """Any record: predictions go to :meth:`prediction`, events to :meth:`event`; returns the record."""
        kind = record.get("type")
        if kind == "prediction":
            self.prediction(record)
        elif kind == "event":
            return self.event(record)
        return record

    def _start(self, record: dict) -> dict:
        if self.closed:
            return record
        stream = str(record.get("stream"))
        state = self._state(stream)
        if state.action is not None:  # a start without an end: the previous action ends here
            self._finish_action(state, state.last_t)
        label = str(record.get("label"))
        wall = record.get("wall")
        wall = time.time() if not isinstance(wall, (int, float)) or not math.isfinite(wall) else float(wall)
        with self._lock:
            try:
                names = choose_names(self.root, stream, label, wall, self._reserved)
            except EvidenceError as exc:
                log.error("%s; no clip for this %s", exc, label)
                return record
            for path in (names.clip_path, names.snapshot_path):
                self._reserved.update((path, temp_path(path)))
        clip = ClipFile(names.clip_path, temp_path(names.clip_path), self.choice, max_s=self.config.max_s)
        begin = None if state.last_t is None else state.last_t - self.config.pre_s
        state.worker.put(StartClip(clip, begin))
        action = state.action = _Action(names, label)
        score = record.get("score")
        if isinstance(score, (int, float)):
            self._offer_peak(state, action, float(score), record.get("pts"), record.get("wall"))
        return {**record, "clip": names.clip, "snapshot": names.snapshot}

    def _end(self, record: dict) -> dict:
        state = self._streams.get(str(record.get("stream")))
        action = None if state is None else state.action
        if action is None or action.label != record.get("label"):
            return record
        stop_at = None if state.last_t is None else state.last_t + self.config.post_s
        self._finish_action(state, stop_at)
        return {**record, "clip": action.names.clip, "snapshot": action.names.snapshot}

    def _offer_peak(self, state: _Stream, action: _Action, score: float, pts: object, wall: object) -> None:
        wall = float(wall) if isinstance(wall, (int, float)) else state.last_wall
        if state.last_image is not None and pts == state.last_pts:  # the frame came first
            action.peak_score, action.peak_wall, action.peak_image = score, wall, state.last_image
        elif isinstance(pts, (int, float)) and (action.pending is None or score > action.pending[0]):
            action.pending = (score, float(pts), wall)  # the frame comes next

    def _finish_action(self, state: _Stream, stop_at: float | None) -> None:
        """End the stream's action: its clip runs on to ``stop_at`` (None: the newest frame), snapshot now."""
        action, state.action = state.action, None
        if action is None:
            return
        state.worker.put(EndClip(action.names.clip_path, stop_at))
        image, score, wall = action.peak_image, action.peak_score, action.peak_wall
        if image is None:  # no frame of the action was encoded: the newest one
            image, score, wall = state.last_image, None, state.last_wall
        if image is None:
            log.warning("evidence: %s: no frame for the snapshot %s", state.name, action.names.snapshot)
            self._release(action.names.snapshot_path, False)
            return
        job = SnapshotJob(
            path=action.names.snapshot_path,
            image=image,
            label=action.label,
            score=None if score is None or not math.isfinite(score) else score,
            stream=state.name,
            wall=wall,
            quality=self.config.jpeg_quality,
        )
        state.worker.put(Snapshot(job))

    # -- state, retention, closing -------------------------------------------------------------------

    def _state(self, stream: str) -> _Stream:
        state = self._streams.get(stream)
        if state is None:
            worker = StreamWorker(stream, self.choice, self.config, self._release)
            state = self._streams[stream] = _Stream(stream, worker)
        return state

    def _release(self, path: Path, written: bool) -> None:
        """A worker finished ``path`` (a clip or snapshot); after a clip, retention runs."""
        with self._lock:
            self._reserved.discard(path)
            self._reserved.discard(temp_path(path))
        if written and self.on_written is not None:
            try:
                self.on_written(path.relative_to(self.root).as_posix())
            except Exception:
                log.exception("evidence: the on_written callback failed")
        if written and path.suffix == ".mp4":
            self.enforce_retention()

    def enforce_retention(self) -> None:
        """Apply the size and age limits now (also done at start and after every clip)."""
        config = self.config
        if config.max_bytes is None and config.max_age_s is None:
            return
        with self._retention_lock:
            with self._lock:
                protected = set(self._reserved)
            enforce_retention(self.root, max_bytes=config.max_bytes, max_age_s=config.max_age_s, protected=protected)

    def stats(self) -> dict[str, EvidenceStats]:
        out = {}
        for name, state in self._streams.items():
            worker: WorkerStats = state.worker.stats
            out[name] = EvidenceStats(
                frames=state.frames,
                encoded=worker.encoded,
                dropped=state.dropped,
                skipped=state.skipped,
                clips=worker.clips,
                snapshots=worker.snapshots,
                errors=worker.errors,
                preroll_mb=round(worker.preroll_bytes / 1e6, 3),
                encode_ms=round(worker.encode_s * 1000.0 / max(worker.encoded, 1), 3),
            )
        return out

    def close(self) -> None:
        """End running actions (snapshots now, clips complete up to the newest frame), stop every worker."""
        if self.closed:
            return
        for state in self._streams.values():
            if state.action is not None:
                self._finish_action(state, None)
        self.closed = True
        for state in self._streams.values():
            state.worker.close(timeout=0)  # all of them finish at once ...
        for state in self._streams.values():
            if not state.worker.close(timeout=CLOSE_TIMEOUT_S):  # ... then wait for each
                log.warning("evidence: %s: the worker did not finish its clips in %.0f s", state.name, CLOSE_TIMEOUT_S)

    def __enter__(self) -> EvidenceRecorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def score_of(record: dict, label: str) -> float | None:
    """The score of ``label`` in a prediction record (its ``label`` / ``score``, else its ``top`` list)."""
    if record.get("label") == label and isinstance(record.get("score"), (int, float)):
        return float(record["score"])
    for entry in record.get("top") or ():
        if len(entry) == 2 and entry[0] == label and isinstance(entry[1], (int, float)):
            return float(entry[1])
    return None
