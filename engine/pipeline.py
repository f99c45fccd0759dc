"""The streaming pipeline: sources -> capture threads -> rings -> preprocess -> batched step -> postprocess -> sinks.

One capture thread per source fills that source's :class:`FrameRing`; the thread that calls
:meth:`Pipeline.run` takes the frames that are ready (at most one per stream), preprocesses them as one
batch on the model's device, advances every stream's own recurrent state in one batched step
(:class:`StateSlots`), turns logits into prediction and event records (:class:`StreamPostprocessor`)
and writes them to every sink. Capture events (lost / restored / ended) become event records; stats
records and a log line follow every ``stats_interval_s``.

:meth:`Pipeline.swap_model` switches a running pipeline to another checkpoint between two batches: the
sources stay open, every stream's state starts afresh and a ``model_changed`` event says so.

``run()`` returns when every source has ended, ``stop()`` was called, or a limit was reached. It always
stops and joins the capture threads, finishes the frames already queued, ends running actions, writes
final stats and closes every sink (try/finally), also when it raises.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from dcrn.engine.backends.choice import Backend, BackendChoice, choose_backend, open_backend
from dcrn.engine.backends.quantize import calibration_for
from dcrn.engine.frames import STREAM_ENDED, STREAM_LOST, Frame, StreamEvent
from dcrn.engine.postprocess import PostprocessConfig, StreamPostprocessor
from dcrn.engine.preprocess import Preprocessor
from dcrn.engine.redact import redact
from dcrn.engine.ring.frame_ring import FrameRing, RingFrame
from dcrn.engine.sinks import Sink
from dcrn.engine.slots import StateSlots
from dcrn.engine.sources.base import Source, SourceOptions
from dcrn.engine.sources.capture import Capture
from dcrn.engine.sources.factory import open_sources, unique_name
from dcrn.engine.stats import StreamStats, log_line, total_line
from dcrn.models.checkpoint import load_checkpoint
from dcrn.models.dcrn import DCRN
from dcrn.models.errors import ConfigError

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "float16": torch.float16}
RESTORED_WAIT_S = 0.2  # how long the first frame after a reconnect waits for its stream_restored event
POLL_S = 0.05  # longest wait for a frame before limits, stop and capture events are looked at again


@dataclass
class PipelineConfig:
    sources: list[str]  # source URIs (camera index, rtsp://, http(s)://, file, synthetic:)
    model: str = "default"  # checkpoint path or shipped model name
    backend: str = "torch"  # torch, onnxruntime, openvino, tensorrt or auto (engine.backends.choose_backend)
    device: str = "cpu"  # cpu, cuda[:N] or auto (the GPU when there is one and the backend runs there)
    int8: bool = False  # the encoder in INT8 on the CPU (onnxruntime; engine.quantize), calibrated on training clips
    calibration: str | None = None  # data folder of those clips (None: the one the checkpoint was trained on)
    dtype: str = "float32"  # float32, or float16 (GPU backends)
    max_frames: int | None = None  # stop each stream after this many frames (None: no limit)
    duration_s: float | None = None  # stop after this many seconds of streaming (None: no limit)
    pace: bool = True  # files and synthetic at their own frame rate; False: files as fast as the model, no drops
    loop: bool = False  # files: start again at the end (a discontinuity: the state resets)
    timeout_s: float = 10.0  # open timeout of network sources (connect to first frame)
    stall_s: float = 3.0  # network sources: no frame for this long and the stream is lost (then reopened)
    stats_interval_s: float = 5.0  # stats records and log line every this many seconds (0: only at the end)
    ring_capacity: int = 4  # frame slots per source; the newest frames win when the model falls behind
    max_gap_s: float | None = 2.0  # a jump in a stream's pts larger than this resets its state
    postprocess: PostprocessConfig = field(default_factory=PostprocessConfig)  # smoothing, thresholds, events
    include_logits: bool = False  # put raw logits into prediction records for every sink
    cache_dir: str | None = None  # exported graphs / engines (default ~/.cache/dcrn or $DCRN_CACHE_DIR)
    backoff_s: tuple[float, float] = (0.5, 8.0)  # reconnect delay of lost live sources: first, cap
    names: list[str] | None = None  # stream names, one per source (default: each source's own name)
    threads: int = 0  # CPU threads for torch (process-wide), onnxruntime and openvino; 0 = the libraries' default

    def __post_init__(self) -> None:
        self.sources = [str(s) for s in self.sources]
        if not self.sources:
            raise ConfigError("at least one source is needed")
        if self.names is not None and len(self.names) != len(self.sources):
            raise ConfigError(f"names must give one name per source, got {len(self.names)} for {len(self.sources)}")
        if self.dtype not in DTYPES:
            raise ConfigError(f"dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if self.max_frames is not None and self.max_frames < 1:
            raise ConfigError(f"max_frames must be >= 1, got {self.max_frames}")
        if self.duration_s is not None and self.duration_s <= 0:
            raise ConfigError(f"duration must be positive, got {self.duration_s}")
        if self.stall_s <= 0:
            raise ConfigError(f"stall_s must be positive, got {self.stall_s}")
        if self.timeout_s <= 0 or self.stats_interval_s < 0 or self.ring_capacity < 1 or self.threads < 0:
            raise ConfigError("timeout_s must be > 0, stats_interval_s >= 0, ring_capacity >= 1 and threads >= 0")


@dataclass(eq=False)
class _Stream:
    name: str
    source: Source
    ring: FrameRing
    capture: Capture | None
    post: StreamPostprocessor
    stats: StreamStats
    frames: int = 0  # frames stepped
    discarded: int = 0  # frames taken from the ring but not stepped (limit reached)
    finished: bool = False  # no more frames will be stepped
    lost: bool = False  # stream_lost was written and stream_restored not yet
    ended: StreamEvent | None = None  # stream_ended, written once the ring is drained
    last: tuple[int, float] = (0, 0.0)  # (seq, pts) of the last frame stepped


class Pipeline:
    """Runs ``config`` and writes records to ``sinks``.

    ``on_frame(frame, prediction)`` is called on the pipeline's thread for every stepped frame, after the
    records were written; ``frame.image`` is valid only during the call (copy what you keep). Keep it
    cheap. ``on_record(record)`` sees every record (predictions, events, stats) after the sinks.
    """

    def __init__(
        self,
        config: PipelineConfig,
        sinks: Sequence[Sink] = (),
        *,
        on_frame: Callable[[Frame, dict], None] | None = None,
        on_record: Callable[[dict], None] | None = None,
    ) -> None:
        self.config = config
        self.sinks = list(sinks)
        self.on_frame = on_frame
        self.on_record = on_record
        self.model, self.meta = load_checkpoint(config.model)
        self.labels: tuple[str, ...] = tuple(self.model.config.class_names)
        config.postprocess.thresholds(self.labels)  # unknown labels in class thresholds fail here, early
        self.streams: list[_Stream] = []
        self.backend: Backend | None = None
        self.choice: BackendChoice | None = None  # the backend that runs (config.backend "auto" resolved)
        self._stop_requested = False
        self._wake = threading.Event()  # set by every ring put, capture event and stop()
        self._events: queue.Queue[StreamEvent] = queue.Queue(maxsize=10_000)
        self._include_logits = config.include_logits or any(getattr(s, "include_logits", False) for s in self.sinks)
        self._started = False
        self._streaming = False  # captures were started: shutdown finishes queued frames and writes final stats
        self._last_stats = 0.0
        self._callback_failed = False
        self._swap_lock = threading.Lock()
        # set by swap_model, applied by the loop between two batches
        self._pending_swap: tuple[DCRN, dict, Backend, BackendChoice] | None = None

    @property
    def stats(self) -> dict[str, StreamStats]:
        return {s.name: s.stats for s in self.streams}

    def stop(self) -> None:
        """Ask ``run`` to finish; returns at once. Safe from any thread and from a signal handler."""
        self._stop_requested = True
        # Event.set takes a lock that the interrupted main thread may hold inside Event.wait: set it from a
        # short helper thread, so a signal handler never blocks on it.
        threading.Thread(target=self._wake.set, name="dcrn-stop", daemon=True).start()

    def swap_model(self, model: str) -> None:
        """Run every stream on checkpoint ``model`` from the next batch on, without reopening a source.

        Loads the checkpoint and builds its backend on the calling thread, so the stream keeps running
        meanwhile; the pipeline's thread switches between two batches: running actions end (with the old
        labels), every stream's state starts afresh and a ``model_changed`` event is written per stream.
        Raises what loading raises (``BadCheckpoint``, ``ConfigError``, ...) and leaves the old model running.
        Needs a running pipeline (``RuntimeError`` before ``run`` has set up its backend).
        """
        config = self.config
        if self.backend is None:
            raise RuntimeError("swap_model needs a running pipeline")
        new_model, meta = load_checkpoint(model)
        config.postprocess.thresholds(tuple(new_model.config.class_names))
        choice = choose_backend(config.backend, config.device, dtype=DTYPES[config.dtype])
        backend, choice = open_backend(
            new_model,
            choice,
            dtype=DTYPES[config.dtype],
            max_batch=len(config.sources),
            cache_dir=config.cache_dir,
            threads=config.threads,
        )
        with self._swap_lock:
            replaced, self._pending_swap = self._pending_swap, (new_model, meta, backend, choice)
        if replaced is not None:  # two swaps before a batch: the newer wins
            replaced[2].close()
        self._wake.set()

    def _apply_swap(self) -> None:
        with self._swap_lock:
            pending, self._pending_swap = self._pending_swap, None
        if pending is None:
            return
        self.model, self.meta, backend, self.choice = pending
        self.labels = tuple(self.model.config.class_names)
        old, self.backend = self.backend, backend
        self.slots = StateSlots(backend, len(self.config.sources), max_gap_s=self.config.max_gap_s)
        self.preprocess = Preprocessor.from_config(self.model.config, device=backend.device, dtype=backend.dtype)
        path = str(self.meta.get("path", ""))
        for stream in self.streams:
            for record in stream.post.reset():  # running actions end under the labels they started with
                self._write(record)
            stream.post = StreamPostprocessor(self.labels, self.config.postprocess)
            self.slots.add(stream.name)
            if stream.capture is not None and stream.capture.resize_to is not None:
                stream.capture.resize_to = self.model.config.input_size  # capture threads resize for this model
            seq, pts = stream.last
            self._write(
                {
                    "type": "event",
                    "event": "model_changed",
                    "stream": stream.name,
                    "frame": seq,
                    "pts": round(pts, 4),
                    "wall": round(time.time(), 4),
                    "label": None,
                    "score": None,
                    "detail": f"{path}: {', '.join(self.labels)}",
                    "model": path,
                    "labels": list(self.labels),
                }
            )
        if old is not None:
            old.close()
        self._flush()
        log.info("switched to %s (%s)", path, ", ".join(self.labels))

    # -- run -----------------------------------------------------------------------------------------

    def run(self) -> None:
        if self._started:
            raise RuntimeError("a Pipeline runs once; build a new one to run again")
        self._started = True
        config = self.config
        try:
            self._open_sinks()
            if config.threads > 0:
                torch.set_num_threads(config.threads)
            int8 = calibration_for(self.meta, config.calibration) if config.int8 else None
            choice = choose_backend(config.backend, config.device, dtype=DTYPES[config.dtype], int8=int8)
            # Sources first: a bad one fails in a second, before a graph export or engine build on first use.
            self._open_streams(torch.device(choice.device))
            log.info("%s", choice.describe())
            self.backend, choice = open_backend(
                self.model,
                choice,
                dtype=DTYPES[config.dtype],
                max_batch=len(config.sources),
                cache_dir=config.cache_dir,
                threads=config.threads,
            )
            self.choice = choice
            self.slots = StateSlots(self.backend, len(config.sources), max_gap_s=config.max_gap_s)
            for stream in self.streams:
                self.slots.add(stream.name)
            self.preprocess = Preprocessor.from_config(
                self.model.config, device=self.backend.device, dtype=self.backend.dtype
            )
            log.info(
                "running %s (%s) on %s with %s (%s) on %s",
                self.meta.get("path", config.model),
                ", ".join(self.labels),
                ", ".join(f"{s.name} ({s.source.uri})" for s in self.streams),
                choice.name,
                choice.precision,
                self.backend.device,
            )
            self._streaming = True
            for stream in self.streams:
                stream.capture.start()
            self._loop()
        except BaseException:
            self._shutdown(raising=True)
            raise
        self._shutdown(raising=False)

    def _open_sinks(self) -> None:
        for sink in self.sinks:
            sink.open()

    def _open_streams(self, device: torch.device) -> None:
        config = self.config
        options = SourceOptions(timeout_s=config.timeout_s, stall_s=config.stall_s, pace=config.pace, loop=config.loop)
        ring_device = device if device.type == "cuda" else "cpu"
        for source in open_sources(config.sources, names=config.names, options=options):  # all at once
            source.name = unique_name(source.name, {s.name for s in self.streams})
            # A file read as fast as possible is offline analysis: every frame, at the model's speed.
            lossless = not (source.is_live or config.pace)
            ring = FrameRing(config.ring_capacity, ring_device, notify=self._wake, overwrite=not lossless)
            stream = _Stream(
                name=source.name,
                source=source,
                ring=ring,
                capture=None,
                post=StreamPostprocessor(self.labels, config.postprocess),
                stats=StreamStats(source.name),
            )
            self.streams.append(stream)  # before Capture: _shutdown closes the source if anything fails
            resize_to = self.model.config.input_size if ring.device.type == "cpu" else None  # off this thread
            stream.capture = Capture(
                source, ring, on_event=self._on_event, backoff_s=config.backoff_s, resize_to=resize_to
            )

    def _loop(self) -> None:
        config = self.config
        deadline = None if config.duration_s is None else time.monotonic() + config.duration_s
        self._last_stats = time.monotonic()
        while not self._stop_requested:
            self._wake.clear()
            self._apply_swap()
            self._handle_events()
            batch = self._collect()
            if batch:
                self._process(batch)
            if all(s.finished for s in self.streams):
                log.info("every source has ended or reached its frame limit")
                break
            if deadline is not None and time.monotonic() >= deadline:
                log.info("duration of %.1f s reached", config.duration_s)
                break
            self._maybe_stats()
            if not batch:
                self._wake.wait(POLL_S)

    def _collect(self) -> list[tuple[_Stream, RingFrame]]:
        """At most one ready frame per stream; streams whose ring is closed and drained finish here."""
        batch = []
        for stream in self.streams:
            if stream.finished:
                continue
            item = stream.ring.get(timeout=0)
            if item is not None:
                batch.append((stream, item))
            elif stream.ring.closed and stream.ring.pending == 0:
                self._finish(stream)
        return batch

    def _process(self, batch: list[tuple[_Stream, RingFrame]]) -> None:
        """Preprocess, step, postprocess and write one batch (one frame per stream)."""
        limit = self.config.max_frames
        taken = time.monotonic()
        everything = batch
        try:
            if limit is not None:
                over = [s for s, _ in batch if s.frames >= limit]
                for stream in over:
                    stream.discarded += 1
                batch = [(s, item) for s, item in batch if s.frames < limit]
            if not batch:
                return
            self._await_restored([s for s, item in batch if s.lost and item.frame.discontinuity])
            records: list[list[dict]] = []
            for stream, item in batch:
                if self.slots.observe(item.frame):  # discontinuity or time gap: a new sequence
                    records.append(stream.post.reset())
                else:
                    records.append([])
            t0 = time.monotonic()
            frames = self.preprocess([self._model_input(item) for _, item in batch])  # (B, 3, S, S) on the device
            t1 = time.monotonic()
            logits = self.slots.step([s.name for s, _ in batch], frames)  # (B, C)
            logits = logits.float().cpu()  # (B, C); also the point where a GPU step has finished
            t2 = time.monotonic()
            for index, (stream, item) in enumerate(batch):
                frame = item.frame
                prediction, events = stream.post.update(logits[index], frame, include_logits=self._include_logits)
                done = time.monotonic()
                prediction["latency_ms"] = round((done - frame.captured) * 1000.0, 3)
                for record in (*records[index], prediction, *events):
                    self._write(record)
                written = time.monotonic()
                stream.frames += 1
                stream.last = (frame.seq, frame.pts)
                stream.stats.add(
                    capture=(taken - frame.captured) * 1000.0,
                    preprocess=(t1 - t0) * 1000.0,
                    step=(t2 - t1) * 1000.0,
                    sink=(written - t2) * 1000.0,
                    total=(written - frame.captured) * 1000.0,
                )
                self._call_on_frame(frame, prediction)
                if limit is not None and stream.frames >= limit:
                    log.info("%s: %d frames done", stream.name, stream.frames)
                    stream.finished = True
                    stream.capture.stop()
                    stream.ring.close()  # frames still on their way are not wanted
        finally:
            for _, item in everything:
                item.release()
            self._flush()

    def _model_input(self, item: RingFrame) -> torch.Tensor:
        """The frame resized on its capture thread when that matches the model, else the ring's tensor."""
        small = item.frame.small
        if small is not None and small.shape[0] == self.preprocess.input_size:
            return torch.from_numpy(small)
        return item.tensor

    def _finish(self, stream: _Stream) -> None:
        """No more frames from this stream: end its running action, write its stream_ended."""
        stream.finished = True
        for record in stream.post.reset():
            self._write(record)
        capture = stream.capture
        if stream.ended is None and capture is not None and capture.error is not None:
            reason = redact(f"capture failed: {type(capture.error).__name__}: {capture.error}")
            stream.ended = StreamEvent(STREAM_ENDED, stream.name, max(capture.frames - 1, 0), 0.0, detail=reason)
        if stream.ended is not None:
            self._write(event_record(stream.ended))
            stream.ended = None
        self._flush()

    # -- capture events ------------------------------------------------------------------------------

    def _on_event(self, event: StreamEvent) -> None:
        """Called on capture threads: hand the event to the pipeline's thread."""
        try:
            self._events.put_nowait(event)
        except queue.Full:
            log.warning("%s: event queue full, %s not recorded", event.stream, event.event)
        self._wake.set()

    def _handle_events(self) -> None:
        while True:
            try:
                event = self._events.get_nowait()
            except queue.Empty:
                break
            stream = next((s for s in self.streams if s.name == event.stream), None)
            if event.event == STREAM_ENDED and stream is not None and not stream.finished:
                stream.ended = event  # written once the frames before it are done (see _finish)
                continue
            self._write(event_record(event))
            if stream is not None:
                stream.lost = event.event == STREAM_LOST
            if event.event == STREAM_LOST and stream is not None:
                for record in stream.post.reset():  # the action cannot be followed while the stream is gone
                    self._write(record)
        self._flush()

    def _await_restored(self, streams: list[_Stream]) -> None:
        """A lost stream's first frame again: write its stream_restored first (emitted right after the put)."""
        deadline = time.monotonic() + RESTORED_WAIT_S
        while streams and time.monotonic() < deadline:
            self._handle_events()
            streams = [s for s in streams if s.lost]
            if streams:
                time.sleep(0.001)

    # -- output --------------------------------------------------------------------------------------

    def _write(self, record: dict) -> None:
        for sink in self.sinks:
            sink.write(record)
        if self.on_record is not None:
            try:
                self.on_record(record)
            except Exception:
                self._callback_error("on_record")

    def _flush(self) -> None:
        for sink in self.sinks:
            sink.flush()

    def _call_on_frame(self, frame: Frame, prediction: dict) -> None:
        if self.on_frame is not None:
            try:
                self.on_frame(frame, prediction)
            except Exception:
                self._callback_error("on_frame")

    def _callback_error(self, name: str) -> None:
        if not self._callback_failed:  # once: a broken callback must not flood the log or stop the run
            self._callback_failed = True
            log.exception("%s callback failed (further failures are not logged)", name)

    def _maybe_stats(self, force: bool = False) -> None:
        interval = self.config.stats_interval_s
        now = time.monotonic()
        if not force and (interval <= 0 or now - self._last_stats < interval):
            return
        self._last_stats = now
        records = []
        for stream in self.streams:
            stream.stats.dropped = stream.ring.dropped + stream.discarded
            record = stream.stats.record()
            records.append(record)
            if self.choice is not None:  # which backend made these numbers, and why it was chosen
                record |= self.choice.record_fields()
            self._write(record)
            log.info("%s", log_line(record))
        if len(records) > 1:
            log.info("%s", total_line(records))
        self._flush()

    # -- shutdown ------------------------------------------------------------------------------------

    def _shutdown(self, raising: bool) -> None:
        """Stop and join captures, finish queued frames, end actions, final stats, close every sink."""
        errors: list[BaseException] = []
        quiet = logging.DEBUG if raising else logging.ERROR  # while raising, later errors are its echoes
        try:
            for stream in self.streams:
                if stream.capture is not None:
                    stream.capture.stop()  # also releases a put waiting on a lossless ring
            for stream in self.streams:
                if stream.capture is not None:
                    stream.capture.join(self.config.timeout_s + self.config.stall_s + 2.0)
                if stream.capture is not None and stream.capture.alive:
                    log.warning("%s: capture thread did not stop in time", stream.name)
                else:
                    stream.source.close()  # closed already when its capture ran; not when it never started
            if self._streaming:
                self._drain()
                self._handle_events()
                for stream in self.streams:
                    if not stream.finished:
                        self._finish(stream)
                    elif stream.post.active is not None:
                        for record in stream.post.reset():
                            self._write(record)
                self._maybe_stats(force=True)
        except BaseException as exc:  # keep closing; re-raised below unless run() already raises
            errors.append(exc)
            log.log(quiet, "error while stopping the pipeline: %s", exc)
            log.debug("while stopping", exc_info=True)
        finally:
            for sink in self.sinks:
                try:
                    sink.close()
                except Exception as exc:
                    errors.append(exc)
                    log.log(quiet, "closing %r failed: %s", sink, exc)
            if self.backend is not None:
                self.backend.close()
            with self._swap_lock:
                pending, self._pending_swap = self._pending_swap, None
            if pending is not None:  # a swap that came too late
                pending[2].close()
        if errors and not raising:
            raise errors[0]

    def _drain(self) -> None:
        """Step the frames still queued in the rings (the captures have stopped), up to each stream's limit."""
        while True:
            batch = []
            for stream in self.streams:
                item = stream.ring.get(timeout=0)
                if item is None:
                    continue
                if stream.finished:  # stopped by its frame limit
                    stream.discarded += 1
                    item.release()
                else:
                    batch.append((stream, item))
            if not batch:
                return
            self._process(batch)


def event_record(event: StreamEvent) -> dict:
    record = {
        "type": "event",
        "event": event.event,
        "stream": event.stream,
        "frame": event.frame,
        "pts": round(event.pts, 4),
        "wall": round(event.wall, 4),
        "label": None,
        "score": None,
    }
    if event.detail:
        record["detail"] = event.detail
    return record
