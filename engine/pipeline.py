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
final stats and closes every sink, also when it raises: the loop, its deadline and stats timer and that
shutdown path are :mod:`dcrn.engine.run.loop`'s, shared with the cluster driver.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from dcrn.engine.backends.choice import Backend, BackendChoice, choose_backend, open_backend
from dcrn.engine.backends.quantize import calibration_for
from dcrn.engine.evidence.recorder import EvidenceRecorder
from dcrn.engine.frames import STREAM_ENDED, Frame, Roi, StreamEvent
from dcrn.engine.inputs import ModelInputs
from dcrn.engine.people import PeopleRows
from dcrn.engine.postprocess import StreamPostprocessor
from dcrn.engine.redact import redact
from dcrn.engine.ring.frame_ring import FrameRing, RingFrame
from dcrn.engine.run.config import DTYPES, PipelineConfig
from dcrn.engine.run.events import CaptureEvents
from dcrn.engine.run.loop import RunLoop, SinkSet
from dcrn.engine.run.records import event_record, model_changed_record
from dcrn.engine.sinks.base import Sink
from dcrn.engine.slots import StateSlots
from dcrn.engine.sources.base import Source, SourceInfo, SourceOptions
from dcrn.engine.sources.capture import Capture
from dcrn.engine.sources.factory import open_sources, unique_name
from dcrn.engine.stats import StreamStats, log_line, total_line
from dcrn.models.checkpoint import load_checkpoint
from dcrn.models.dcrn import DCRN

log = logging.getLogger(__name__)

POLL_S = 0.05  # longest wait for a frame before limits, stop and capture events are looked at again


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
    roi: Roi | None = None  # the part of the picture the model sees (None: all of it)


class Pipeline(CaptureEvents):
    """Runs ``config`` and writes records to ``sinks``.

    ``on_frame(frame, prediction)`` is called on the pipeline's thread for every stepped frame, after the
    records were written; ``frame.image`` is valid only during the call (copy what you keep). Keep it
    cheap. With several people followed (``config.people``), ``prediction`` is the first person's with
    ``"people"``: ``{"person", "label", "score"}`` of every person in the frame. ``on_record(record)`` sees
    every record (predictions, events, stats) after the sinks.
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
        self.sinks = SinkSet(sinks, log=log)
        self.on_frame = on_frame
        self.on_record = on_record
        self.model, self.meta = load_checkpoint(config.model)
        self.labels: tuple[str, ...] = tuple(self.model.config.class_names)
        config.postprocess.thresholds(self.labels)  # unknown labels in class thresholds fail here, early
        self.streams: list[_Stream] = []
        self.people = PeopleRows(self.labels, config.postprocess)  # several people per stream (config.people)
        self.inputs: ModelInputs | None = None  # what the step reads; made with the backend in run()
        self.backend: Backend | None = None
        self.choice: BackendChoice | None = None  # the backend that runs (config.backend "auto" resolved)
        self._runloop = RunLoop(
            duration_s=config.duration_s, stats_interval_s=config.stats_interval_s, poll_s=POLL_S, log=log
        )
        self._wake = self._runloop.wake  # set by every ring put, capture event and stop()
        self._events: queue.Queue[StreamEvent] = queue.Queue(maxsize=10_000)
        self._include_logits = config.include_logits or self.sinks.include_logits
        self._started = False
        self._streaming = False  # captures were started: shutdown finishes queued frames and writes final stats
        self._callback_failed = False
        self.evidence: EvidenceRecorder | None = None  # clips and snapshots of actions (config.evidence_dir)
        self._swap_lock = threading.Lock()
        # set by swap_model, applied by the loop between two batches
        self._pending_swap: tuple[DCRN, dict, Backend, BackendChoice] | None = None

    @property
    def stats(self) -> dict[str, StreamStats]:
        return {s.name: s.stats for s in self.streams}

    def source_info(self, stream: int = 0) -> SourceInfo | None:
        """Frame rate and ground-truth labels of the ``stream``-th source; None until it is open."""
        streams = self.streams
        if not 0 <= stream < len(streams):
            return None
        source = streams[stream].source
        return SourceInfo(source.fps, tuple(source.labels or ()))

    def stop(self) -> None:
        """Ask ``run`` to finish; returns at once. Safe from any thread and from a signal handler."""
        self._runloop.stop()

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
            max_batch=len(config.sources) * config.people,
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
        for stream in self.streams:  # every person ends under the labels they started with
            for record in self.people.drop(self.slots, stream.name):
                self._write(record)
        self.model, self.meta, backend, self.choice = pending
        self.labels = tuple(self.model.config.class_names)
        self.people = PeopleRows(self.labels, self.config.postprocess)
        old, self.backend = self.backend, backend
        self.slots = self._state_slots(backend)
        self.inputs = self._model_inputs(self.model, backend)
        path = str(self.meta.get("path", ""))
        for stream in self.streams:
            for record in stream.post.reset():  # running actions end under the labels they started with
                self._write(record)
            stream.post = StreamPostprocessor(self.labels, self.config.postprocess)
            self.slots.add(stream.name)
            if stream.capture is not None and stream.ring.device.type == "cpu":
                stream.capture.resize_to = self.inputs.resize_to  # capture threads resize for this model
            seq, pts = stream.last
            self._write(model_changed_record(stream.name, seq, pts, path, self.labels))
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
        shutdown = self._runloop.shutting_down(
            self.sinks, finish=self._finish_run, release=self._release, what="the pipeline"
        )
        with shutdown:
            self.sinks.open()
            if config.evidence_dir is not None:
                self.evidence = EvidenceRecorder(config.evidence_dir, config.evidence)
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
                max_batch=len(config.sources) * config.people,
                cache_dir=config.cache_dir,
                threads=config.threads,
            )
            self.choice = choice
            self.slots = self._state_slots(self.backend)
            for stream in self.streams:
                self.slots.add(stream.name)
            self.inputs = self._model_inputs(self.model, self.backend)
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
            done = "every source has ended or reached its frame limit"
            self._runloop.run(
                self._turn, done=lambda: all(s.finished for s in self.streams), done_note=done, stats=self._stats
            )

    def _open_streams(self, device: torch.device) -> None:
        config = self.config
        options = SourceOptions(timeout_s=config.timeout_s, stall_s=config.stall_s, pace=config.pace, loop=config.loop)
        ring_device = device if device.type == "cuda" else "cpu"
        sources = open_sources(config.sources, names=config.names, options=options)  # all at once
        for source, roi in zip(sources, config.rois or [None] * len(sources), strict=True):
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
                roi=roi,
            )
            self.streams.append(stream)  # before Capture: _finish_run closes the source if anything fails
            # off this thread; a keypoint model reads the whole frame
            resize_to = (
                self.model.config.input_size if ring.device.type == "cpu" and not self.model.takes_vectors else None
            )
            stream.capture = Capture(
                source, ring, on_event=self._on_event, backoff_s=config.backoff_s, resize_to=resize_to, roi=roi
            )

    def _turn(self) -> bool:
        """One turn of the run loop: a waiting model swap, capture events, then one batch; whether it had frames."""
        self._apply_swap()
        self._handle_events()
        batch = self._collect()
        if batch:
            self._process(batch)
        return bool(batch)

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
            fresh = [self.slots.observe(item.frame) for _, item in batch]  # discontinuity or time gap: a new sequence
            records = [
                stream.post.reset() + self.people.drop(self.slots, stream.name) if new else []
                for (stream, _), new in zip(batch, fresh, strict=True)
            ]
            t0 = time.monotonic()
            frames = self.inputs([(s.name, item, s.roi, new) for (s, item), new in zip(batch, fresh, strict=True)])
            rows = self.inputs.rows  # (index in batch, person or None) per row of frames
            t1 = time.monotonic()
            posts = {s.name: s.post for s, _ in batch}
            names, ended = self.people.names(self.slots, [s.name for s, _ in batch], rows, posts)
            logits = self.slots.step(names, frames).float().cpu()  # (R, C); also where a GPU step has finished
            t2 = time.monotonic()
            for record in ended:
                self._write(record)
            for index, (stream, item) in enumerate(batch):
                frame = item.frame
                include = self._include_logits
                outputs = [
                    self.people.update(stream.post, person, logits[r], frame, include)
                    for r, (i, person) in enumerate(rows)
                    if i == index
                ]
                done = time.monotonic()
                prediction = outputs[0][0]  # the stream's (or its first person's): for the window
                for row_prediction, _ in outputs:
                    row_prediction["latency_ms"] = round((done - frame.captured) * 1000.0, 3)
                for record in (*records[index], *(r for p, events in outputs for r in (p, *events))):
                    self._write(record)
                if self.evidence is not None:
                    self.evidence.frame(frame.stream, frame.image, frame.pts, frame.wall)
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
                self._call_on_frame(frame, _for_window(prediction, [p for p, _ in outputs]))
                if limit is not None and stream.frames >= limit:
                    log.info("%s: %d frames done", stream.name, stream.frames)
                    stream.finished = True
                    stream.capture.stop()
                    stream.ring.close()  # frames still on their way are not wanted
        finally:
            for _, item in everything:
                item.release()
            self._flush()

    def _model_inputs(self, model: DCRN, backend: Backend) -> ModelInputs:
        threads, people = max(1, self.config.threads), self.config.people
        return ModelInputs(model, device=backend.device, dtype=backend.dtype, threads=threads, people=people)

    def _state_slots(self, backend: Backend) -> StateSlots:
        """A row per stream, and per person followed (``people`` > 1); a person's row outlives their frame."""
        config = self.config
        rows = len(config.sources) * (1 + (config.people if config.people > 1 else 0))
        return StateSlots(backend, rows, max_gap_s=config.max_gap_s)

    def keypoints(self, stream: str):
        """A keypoint model's newest FrontResult for ``stream`` and which parts drive the decision, or None
        (:meth:`ModelInputs.explained`). Call it on the pipeline's thread (from ``on_frame``)."""
        return None if self.inputs is None else self.inputs.explained(stream, self.slots)

    def _finish(self, stream: _Stream) -> None:
        """No more frames from this stream: end its running action, write its stream_ended."""
        stream.finished = True
        for record in stream.post.reset() + self.people.drop(self.slots, stream.name):
            self._write(record)
        capture = stream.capture
        if stream.ended is None and capture is not None and capture.error is not None:
            reason = redact(f"capture failed: {type(capture.error).__name__}: {capture.error}")
            stream.ended = StreamEvent(STREAM_ENDED, stream.name, max(capture.frames - 1, 0), 0.0, detail=reason)
        if stream.ended is not None:
            self._write(event_record(stream.ended))
            stream.ended = None
        self._flush()

    # -- output --------------------------------------------------------------------------------------

    def _write(self, record: dict) -> None:
        if self.evidence is not None:  # action events name the clip and snapshot they will have
            record = self.evidence.record(record)
        self.sinks.write(record)
        if self.on_record is not None:
            try:
                self.on_record(record)
            except Exception:
                self._callback_error("on_record")

    def _flush(self) -> None:
        self.sinks.flush()

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

    def _stats(self) -> None:
        """A stats record and log line per stream (every stats interval, and at the end)."""
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

    def _finish_run(self) -> None:
        """Stop and join captures, finish queued frames, end actions, final stats (then the sinks close);
        clips still open end complete, also when finishing fails."""
        try:
            self._finish_streams()
        finally:
            if self.evidence is not None:
                self.evidence.close()

    def _finish_streams(self) -> None:
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
            self._stats()

    def _release(self) -> None:
        """The backends, also one a swap brought too late (after the sinks closed)."""
        if self.backend is not None:
            self.backend.close()
        with self._swap_lock:
            pending, self._pending_swap = self._pending_swap, None
        if pending is not None:
            pending[2].close()

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


def _for_window(prediction: dict, rows: list[dict]) -> dict:
    """The prediction ``on_frame`` gets: the stream's, or its first person's with every person's decision."""
    people = [{"person": r["person"], "label": r["label"], "score": r["score"]} for r in rows if "person" in r]
    return {**prediction, "people": people} if people else prediction
