"""Capture events on the pipeline's thread: lost, restored and ended streams become event records, in order
with the frames around them. A part of :class:`~dcrn.engine.pipeline.Pipeline`, kept apart to keep it short."""

from __future__ import annotations

import logging
import queue
import time

from dcrn.engine.frames import STREAM_ENDED, STREAM_LOST, StreamEvent
from dcrn.engine.run.records import event_record

log = logging.getLogger("dcrn.engine.pipeline")

RESTORED_WAIT_S = 0.2  # how long the first frame after a reconnect waits for its stream_restored event


class CaptureEvents:
    """Needs from the pipeline: ``_events`` (a Queue), ``_wake`` (an Event), ``streams``, ``people``,
    ``slots``, ``_write`` and ``_flush``."""

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
                # the action cannot be followed while the stream is gone
                for record in stream.post.reset() + self.people.drop(self.slots, stream.name):
                    self._write(record)
        self._flush()

    def _await_restored(self, streams: list) -> None:
        """A lost stream's first frame again: write its stream_restored first (emitted right after the put)."""
        deadline = time.monotonic() + RESTORED_WAIT_S
        while streams and time.monotonic() < deadline:
            self._handle_events()
            streams = [s for s in streams if s.lost]
            if streams:
                time.sleep(0.001)
