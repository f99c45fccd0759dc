"""Capture threads: stamping, discontinuities, end of file, loss and backoff, prompt stop.

Files and synthetic streams are real sources. Loss and recovery against a real server is in
test_rtsp.py; here a scripted live source fails on cue, to pin down the exact event sequence and the
backoff timing without a network.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch

from dcrn.engine.errors import SourceError, SourceUnreachable
from dcrn.engine.frames import STREAM_ENDED, STREAM_LOST, STREAM_RESTORED, StreamEvent
from dcrn.engine.ring.frame_ring import FrameRing
from dcrn.engine.sources.base import Source, SourceOptions
from dcrn.engine.sources.capture import Capture
from dcrn.engine.sources.factory import open_source
from tests.fixtures.media import frame_value, write_video
from tests.fixtures.streams import Events


def drain_ring(ring: FrameRing, timeout: float = 10.0) -> list:
    frames = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        item = ring.get(timeout=max(0.0, deadline - time.monotonic()))
        if item is None:
            break
        with item:
            frames.append(item.frame)
    return frames


class ScriptedLiveSource(Source):
    """A live source that fails on cue: ``fail_after`` frames per connection, ``refuse`` reopen attempts."""

    def __init__(self, *, fail_after: list[int], refuse: list[int], shape=(8, 8)) -> None:
        super().__init__("rtsp://user:topsecret@127.0.0.1:9/cam", "scripted", SourceOptions())
        self.fail_after = list(fail_after)  # frames delivered in each connection before it breaks
        self.refuse = list(refuse)  # failed reopen attempts before each successful one
        self.shape = shape
        self.reopen_times: list[float] = []
        self.count = 0
        self._left = self.fail_after.pop(0) if self.fail_after else 10**9
        self._start()

    def _open(self) -> None:
        if self.count:  # a reopen, not the first open
            self.reopen_times.append(time.monotonic())
            if self.refuse and self.refuse[0] > 0:
                self.refuse[0] -= 1
                raise SourceUnreachable("cannot open rtsp://***@127.0.0.1:9/cam: connection refused")
            if self.refuse:
                self.refuse.pop(0)
            self._left = self.fail_after.pop(0) if self.fail_after else 10**9

    def _read(self):
        if self._left <= 0:
            raise SourceError("rtsp://user:topsecret@127.0.0.1:9/cam: the stream ended")
        self._left -= 1
        self.count += 1
        time.sleep(0.002)
        return np.full((*self.shape, 3), self.count % 256, np.uint8), self.count / 100, None

    def _close(self) -> None:
        pass


def test_file_capture_stamps_every_frame_and_ends_with_stream_ended(tmp_path):
    source = open_source(write_video(tmp_path / "clip.mp4", frames=12, fps=25), options=SourceOptions(pace=False))
    ring, events = FrameRing(capacity=16), Events()
    capture = Capture(source, ring, on_event=events)
    before = time.time()
    capture.start()
    try:
        frames = drain_ring(ring)
        capture.join(timeout=5)
    finally:
        capture.stop()
        capture.join(timeout=5)
    assert not capture.alive and capture.ended and capture.error is None
    assert [f.seq for f in frames] == list(range(12))
    assert [f.discontinuity for f in frames] == [True] + [False] * 11
    assert all(f.stream == "clip" for f in frames)
    assert [f.pts for f in frames] == pytest.approx([i / 25 for i in range(12)])
    assert all(before <= f.wall <= time.time() for f in frames)
    captured = [f.captured for f in frames]
    assert captured == sorted(captured)
    for i, frame in enumerate(frames):
        assert abs(int(frame.image[..., 0].mean()) - frame_value(i)) <= 6
    ended = events.wait_for(STREAM_ENDED, timeout=1)
    assert (ended.stream, ended.frame) == ("clip", 11)
    assert events.drain() == [STREAM_ENDED]
    assert ring.closed and ring.get(timeout=0) is None


def test_looping_file_marks_a_discontinuity_at_every_loop(tmp_path):
    path = write_video(tmp_path / "loop.mp4", frames=5, fps=25)
    source = open_source(path, options=SourceOptions(pace=False, loop=True))
    ring, events = FrameRing(capacity=64), Events()
    capture = Capture(source, ring, on_event=events)
    frames = []
    capture.start()
    try:
        while len(frames) < 17:
            with ring.get(timeout=5) as item:
                frames.append(item.frame)
    finally:
        capture.stop()
        capture.join(timeout=5)
    assert not capture.alive and not capture.ended
    assert [f.seq for f in frames] == list(range(17))  # seq never restarts
    assert [f.seq for f in frames if f.discontinuity] == [0, 5, 10, 15]
    assert events.drain() == []


def test_paced_synthetic_capture_delivers_at_its_frame_rate():
    source = open_source("synthetic:?fps=50&width=64&height=48")
    ring, events = FrameRing(capacity=4), Events()
    with Capture(source, ring, on_event=events):
        first = ring.get(timeout=5)
        first.release()
        start = time.monotonic()
        frames = []
        while len(frames) < 25:
            with ring.get(timeout=5) as item:
                frames.append(item.frame)
        elapsed = time.monotonic() - start
    assert elapsed == pytest.approx(25 / 50, abs=0.2)
    assert all(f.label is not None for f in frames)
    assert ring.dropped == 0


def test_lost_live_source_emits_lost_once_backs_off_then_restored():
    source = ScriptedLiveSource(fail_after=[5, 3], refuse=[3, 0])
    ring, events = FrameRing(capacity=64), Events()
    capture = Capture(source, ring, on_event=events, backoff_s=(0.05, 0.15))
    capture.start()
    try:
        lost = events.wait_for(STREAM_LOST)
        restored = events.wait_for(STREAM_RESTORED)
        lost2 = events.wait_for(STREAM_LOST)
        restored2 = events.wait_for(STREAM_RESTORED)
        frames = []
        while len(frames) < 12:
            with ring.get(timeout=5) as item:
                frames.append(item.frame)
    finally:
        capture.stop()
        capture.join(timeout=5)
    assert not capture.alive
    assert (lost.frame, restored.frame, lost2.frame, restored2.frame) == (4, 5, 7, 8)
    assert events.drain()[:4] == [STREAM_LOST, STREAM_RESTORED, STREAM_LOST, STREAM_RESTORED]
    assert [f.seq for f in frames if f.discontinuity] == [0, 5, 8]
    assert capture.reconnects == 2
    # Three refusals then success: waits of 0.05, 0.1, 0.15 (capped), 0.15 s between attempts.
    gaps = np.diff(source.reopen_times[:4])
    assert gaps == pytest.approx([0.1, 0.15, 0.15], abs=0.04)
    # The reason reaches the event, without credentials.
    assert "topsecret" not in lost.detail and "user" not in lost.detail and lost.detail


def test_stop_during_backoff_returns_promptly():
    source = ScriptedLiveSource(fail_after=[2], refuse=[10**6])
    ring, events = FrameRing(capacity=4), Events()
    capture = Capture(source, ring, on_event=events, backoff_s=(5.0, 30.0))
    capture.start()
    events.wait_for(STREAM_LOST)
    start = time.monotonic()
    capture.stop()
    capture.join(timeout=5)
    assert not capture.alive
    assert time.monotonic() - start < 0.5
    assert ring.closed and source._closed


def test_stop_while_reading_a_paced_file_returns_within_a_frame(tmp_path):
    source = open_source(write_video(tmp_path / "slow.mp4", frames=20, fps=4), options=SourceOptions(pace=True))
    ring = FrameRing(capacity=4)
    capture = Capture(source, ring, on_event=Events())
    capture.start()
    try:
        ring.get(timeout=5).release()
    finally:
        start = time.monotonic()
        capture.stop()
        capture.join(timeout=5)
    assert not capture.alive
    assert time.monotonic() - start < 0.6  # one frame period (0.25 s) plus slack
    assert not capture.ended


def test_a_failing_event_listener_does_not_stop_capture(tmp_path):
    source = open_source(write_video(tmp_path / "clip.mp4", frames=4), options=SourceOptions(pace=False))
    ring = FrameRing(capacity=8)

    def explode(event: StreamEvent) -> None:
        raise RuntimeError("listener bug")

    capture = Capture(source, ring, on_event=explode)
    with capture:
        frames = drain_ring(ring)
    assert len(frames) == 4 and capture.ended and capture.error is None


def test_capture_never_blocks_on_a_consumer_that_does_not_read():
    source = open_source("synthetic:?width=32&height=32", options=SourceOptions(pace=False))
    ring = FrameRing(capacity=2)
    with Capture(source, ring, on_event=Events()) as capture:
        deadline = time.monotonic() + 5
        while capture.frames < 200 and time.monotonic() < deadline:
            time.sleep(0.01)
    assert capture.frames >= 200
    assert ring.dropped == ring.written - ring.pending


def test_unpaced_file_into_a_lossless_ring_loses_nothing_to_a_slow_consumer(tmp_path):
    source = open_source(write_video(tmp_path / "clip.mp4", frames=12), options=SourceOptions(pace=False))
    ring = FrameRing(capacity=2, overwrite=False)
    with Capture(source, ring, on_event=Events()) as capture:
        frames = []
        while (item := ring.get(timeout=5)) is not None:
            with item:
                time.sleep(0.01)
                frames.append(item.frame)
    assert [f.seq for f in frames] == list(range(12)) and ring.dropped == 0 and capture.ended


def test_stop_releases_a_capture_waiting_on_a_full_lossless_ring():
    source = open_source("synthetic:?width=32&height=32", options=SourceOptions(pace=False))
    ring = FrameRing(capacity=2, overwrite=False)
    capture = Capture(source, ring, on_event=Events())
    capture.start()
    deadline = time.monotonic() + 5
    while ring.pending < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    start = time.monotonic()
    capture.stop()
    capture.join(timeout=5)
    assert not capture.alive and time.monotonic() - start < 0.5
    assert ring.dropped == 0


def test_backoff_must_be_ordered():
    source = open_source("synthetic:", options=SourceOptions(pace=False))
    with pytest.raises(ValueError, match="backoff_s"):
        Capture(source, FrameRing(), on_event=Events(), backoff_s=(2.0, 1.0))


def test_threads_do_not_leak():
    before = threading.active_count()
    for _ in range(3):
        source = open_source("synthetic:?width=32&height=32", options=SourceOptions(pace=False))
        with Capture(source, FrameRing(capacity=2), on_event=Events()):
            time.sleep(0.02)
    assert threading.active_count() == before


def test_capture_resizes_for_the_model_as_training_did_and_keeps_the_full_image():
    from dcrn.engine.preprocess import Preprocessor
    from dcrn.models.video_io import resize_frames

    source = open_source("synthetic:?fps=200&width=160&height=120", options=SourceOptions(pace=False))
    ring, events = FrameRing(capacity=64, overwrite=False), Events()
    with Capture(source, ring, on_event=events, resize_to=32):
        items = [ring.get(timeout=5) for _ in range(3)]
    frames = [item.frame for item in items]
    assert all(f.image.shape == (120, 160, 3) and f.small.shape == (32, 32, 3) for f in frames)
    for frame in frames:
        assert np.array_equal(frame.small, resize_frames(frame.image[None], 32)[0])
    preprocess = Preprocessor(32, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    full = preprocess([item.tensor for item in items])
    small = preprocess([torch.from_numpy(f.small) for f in frames])
    assert torch.equal(full, small)  # the model sees the same input either way
    for item in items:
        item.release()
