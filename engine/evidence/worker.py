"""One stream's evidence thread: encodes its frames, keeps its pre-roll, writes its clips and snapshots.

The recorder (on the pipeline's thread) posts work into the worker's inbox and never waits for it:
frames (dropped when ``queue_frames`` are already waiting, so a slow disk or encoder never holds the
stream back) and commands (never dropped): start a clip from the pre-roll, end a clip after its
post-roll, write a snapshot, cut every clip now (the stream was lost or ended), close. Everything runs in
the order it was posted, so a clip started after frame N starts from the pre-roll as it was at frame N.
An error is logged and costs its clip (or snapshot) only; the worker and the run go on.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dcrn.engine.evidence.clip import ClipFile
from dcrn.engine.evidence.config import EvidenceConfig, EvidenceError
from dcrn.engine.evidence.encoder import CodecChoice, EncodedPacket, StreamEncoder, i420_size
from dcrn.engine.evidence.preroll import PreRoll
from dcrn.engine.evidence.snapshot import SnapshotJob, write_snapshot

log = logging.getLogger(__name__)

MAX_OPEN_CLIPS = 4  # clips of one stream written at once (overlapping post-rolls); the oldest closes first

# Called on the worker's thread when a clip or snapshot is finished: (final path, written or None).
Done = Callable[[Path, bool], None]


@dataclass
class StartClip:
    clip: ClipFile
    begin: float | None  # stream time the pre-roll reaches back to (None: from the oldest packet kept)


@dataclass
class EndClip:
    final: Path  # the clip's final path
    stop_at: float | None  # stream time after which it is complete (None: the newest frame so far)


@dataclass
class Snapshot:
    job: SnapshotJob


class CutClips:
    """Finish every open clip now: no more frames will come (stream lost or ended)."""


_CLOSE = object()


@dataclass
class WorkerStats:
    encoded: int = 0  # frames encoded
    clips: int = 0  # clips written
    snapshots: int = 0  # snapshots written
    errors: int = 0  # clips, snapshots or frames lost to an error
    encode_s: float = 0.0  # thread CPU time spent encoding, seconds
    preroll_bytes: int = 0  # size of the encoded pre-roll now


class StreamWorker:
    """The worker thread of one stream (see the module notes)."""

    def __init__(self, stream: str, choice: CodecChoice, config: EvidenceConfig, on_done: Done) -> None:
        self.stream = stream
        self.choice = choice
        self.config = config
        self.on_done = on_done
        self.stats = WorkerStats()
        self.preroll = PreRoll(config.pre_s)
        self.clips: list[ClipFile] = []
        self._encoder: StreamEncoder | None = None
        self._last_t: float | None = None  # stream time of the newest packet
        self._inbox: deque[object] = deque()
        self._frames_waiting = 0
        self._ready = threading.Condition()
        self._closing = False
        self._thread = threading.Thread(target=self._run, name=f"dcrn-evidence-{stream}", daemon=True)
        self._thread.start()

    # -- called by the recorder ----------------------------------------------------------------------

    def put_frame(self, yuv: np.ndarray, t: float) -> bool:
        """Queue a frame for encoding; False (and nothing queued) when ``queue_frames`` are waiting."""
        with self._ready:
            if self._closing or self._frames_waiting >= self.config.queue_frames:
                return False
            self._frames_waiting += 1
            self._inbox.append((yuv, t))
            self._ready.notify()
        return True

    def put(self, command: object) -> None:
        with self._ready:
            if self._closing:
                return
            self._inbox.append(command)
            self._ready.notify()

    def close(self, timeout: float | None = None) -> bool:
        """Finish every clip and snapshot, stop the thread; False when it did not stop within ``timeout``."""
        with self._ready:
            if not self._closing:
                self._closing = True
                self._inbox.append(_CLOSE)
                self._ready.notify()
        self._thread.join(timeout)
        return not self._thread.is_alive()

    # -- the thread ----------------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._ready:
                while not self._inbox:
                    self._ready.wait()
                item = self._inbox.popleft()
                if isinstance(item, tuple):
                    self._frames_waiting -= 1
            try:
                if item is _CLOSE:
                    self._close()
                else:
                    self._handle(item)
            except Exception as exc:  # one lost item, never a dead worker
                self.stats.errors += 1
                if isinstance(exc, EvidenceError):
                    log.error("%s", exc)
                else:
                    log.exception("evidence: %s: unexpected error", self.stream)
            if item is _CLOSE:
                return

    def _handle(self, item: object) -> None:
        if isinstance(item, tuple):
            self._encode(*item)
        elif isinstance(item, StartClip):
            self._start(item)
        elif isinstance(item, EndClip):
            for clip in self.clips:
                if clip.final == item.final:
                    stop_at = item.stop_at if item.stop_at is not None else self._last_t
                    clip.end(stop_at if stop_at is not None else float("-inf"))
                    if self._last_t is not None and self._last_t >= clip.stop_at:  # type: ignore[operator]
                        self._finish(clip)
        elif isinstance(item, Snapshot):
            self._snapshot(item.job)
        elif isinstance(item, CutClips):
            self._finish_all()
        else:
            raise TypeError(f"evidence worker: unknown item {item!r}")

    def _encode(self, yuv: np.ndarray, t: float) -> None:
        width, height = i420_size(yuv)
        encoder = self._encoder
        if encoder is None or (encoder.width, encoder.height) != (width, height):
            if encoder is not None:
                log.info(
                    "evidence: %s changed from %dx%d to %dx%d; its open clips end here",
                    self.stream,
                    encoder.width,
                    encoder.height,
                    width,
                    height,
                )
                self._finish_all()
                self.preroll.clear()
            self._encoder = None
            encoder = self._encoder = StreamEncoder(self.choice, width, height, gop_s=self.config.gop_s)
        started = time.thread_time()
        packets = encoder.encode(yuv, t)
        self.stats.encode_s += time.thread_time() - started
        self.stats.encoded += 1
        for packet in packets:
            self._packet(packet)

    def _packet(self, packet: EncodedPacket) -> None:
        self.preroll.add(packet)
        self.stats.preroll_bytes = self.preroll.bytes
        self._last_t = packet.t
        for clip in list(self.clips):
            try:
                complete = clip.add(packet)
            except EvidenceError as exc:
                self._failed(clip, exc)
                continue
            if complete:
                self._written(clip)

    def _start(self, item: StartClip) -> None:
        if len(self.clips) >= MAX_OPEN_CLIPS:  # overlapping post-rolls: the one that started first ends now
            self._finish(self.clips[0])
        clip = item.clip
        self.clips.append(clip)
        for packet in self.preroll.since(item.begin):
            try:
                complete = clip.add(packet)
            except EvidenceError as exc:
                self._failed(clip, exc)
                return
            if complete:
                self._written(clip)
                return

    def _finish(self, clip: ClipFile) -> None:
        try:
            clip.finish()
        except EvidenceError as exc:
            self._failed(clip, exc)
            return
        self._written(clip)

    def _finish_all(self) -> None:
        for clip in list(self.clips):
            self._finish(clip)

    def _written(self, clip: ClipFile) -> None:
        if clip in self.clips:
            self.clips.remove(clip)
        written = clip.frames > 0
        if written:
            self.stats.clips += 1
            log.info(
                "evidence: wrote %s (%.1f s, %d frames, %.2f MB)",
                clip.final.name,
                clip.duration_s,
                clip.frames,
                clip.final.stat().st_size / 1e6 if clip.final.exists() else 0.0,
            )
        self.on_done(clip.final, written)

    def _failed(self, clip: ClipFile, exc: EvidenceError) -> None:
        self.stats.errors += 1
        log.error("%s", exc)
        clip.abort()
        if clip in self.clips:
            self.clips.remove(clip)
        self.on_done(clip.final, False)

    def _snapshot(self, job: SnapshotJob) -> None:
        try:
            write_snapshot(job)
        except EvidenceError as exc:
            self.stats.errors += 1
            log.error("%s", exc)
            self.on_done(job.path, False)
            return
        self.stats.snapshots += 1
        self.on_done(job.path, True)

    def _close(self) -> None:
        encoder, self._encoder = self._encoder, None
        if encoder is not None:
            try:
                for packet in encoder.flush():
                    self._packet(packet)
            except Exception as exc:  # the clips still close with what they have
                log.warning("evidence: %s: flushing the encoder failed: %s", self.stream, exc)
        self._finish_all()
