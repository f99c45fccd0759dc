"""Against a real RTSP camera on 127.0.0.1 (GStreamer gst-rtsp-server): frames arrive, and a server that
is killed and restarted, again and again, is lost and restored every time without a hang.

Every wait is bounded; timeouts are short (2 s) to keep the tests fast. Both network backends run.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from dcrn.engine.errors import SourceError, SourceNotFound, SourceUnreachable
from dcrn.engine.frames import STREAM_LOST, STREAM_RESTORED
from dcrn.engine.ring.frame_ring import FrameRing
from dcrn.engine.sources.base import SourceOptions
from dcrn.engine.sources.capture import Capture
from dcrn.engine.sources.factory import open_source
from tests.fixtures.rtsp import RtspServer, unavailable_reason
from tests.fixtures.streams import Events, take

pytestmark = pytest.mark.rtsp

BACKENDS = ["pyav", "opencv"]


def options(backend: str, timeout_s: float = 2.0) -> SourceOptions:
    if backend == "pyav":
        pytest.importorskip("av")
    return SourceOptions(timeout_s=timeout_s, backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_frames_arrive_from_the_rtsp_server_through_capture(rtsp_server, backend):
    source = open_source(rtsp_server.url, options=options(backend))
    assert source.is_live and source.name == "127.0.0.1-test" and source.fps == pytest.approx(30)
    ring, events = FrameRing(capacity=4), Events()
    capture = Capture(source, ring, on_event=events)
    capture.start()
    try:
        start = time.monotonic()
        frames = take(ring, 30)
        elapsed = time.monotonic() - start
    finally:
        capture.stop()
        capture.join(timeout=5)
    assert not capture.alive
    assert [f.seq for f in frames] == list(range(30))
    assert frames[0].discontinuity and not any(f.discontinuity for f in frames[1:])
    assert all(f.image.shape == (240, 320, 3) and f.image.dtype == np.uint8 for f in frames)
    assert all(f.stream == "127.0.0.1-test" for f in frames)
    pts = [f.pts for f in frames]
    assert np.all(np.diff(pts) > 0)
    assert pts[-1] - pts[1] == pytest.approx(28 / 30, abs=0.1)  # the camera's 30 fps timestamps
    assert elapsed < 3.0  # live: about a second for 30 frames
    assert frames[5].image.std() > 10  # a real picture, not a blank
    assert events.drain() == []


@pytest.mark.parametrize("backend", BACKENDS)
def test_server_killed_and_restarted_repeatedly_is_lost_and_restored_every_time(rtsp_server, backend):
    source = open_source(rtsp_server.url, options=options(backend))
    ring, events = FrameRing(capacity=4), Events()
    capture = Capture(source, ring, on_event=events, backoff_s=(0.1, 0.4))
    capture.start()
    cycles = 3
    try:
        take(ring, 10)
        for cycle in range(cycles):
            rtsp_server.kill()
            lost = events.wait_for(STREAM_LOST, timeout=5)
            # Nothing arrives while the server is down; let a few reopen attempts fail.
            time.sleep(0.5)
            while (stale := ring.get(timeout=0)) is not None:
                stale.release()
            assert ring.get(timeout=0.2) is None
            rtsp_server.restart()
            restored = events.wait_for(STREAM_RESTORED, timeout=10)
            frames = take(ring, 10)
            assert frames[0].discontinuity, f"cycle {cycle}: first frame after reconnect must reset state"
            assert frames[0].seq == restored.frame and restored.frame > lost.frame
            assert not any(f.discontinuity for f in frames[1:])
            assert all(f.image.shape == (240, 320, 3) for f in frames)
    finally:
        capture.stop()
        capture.join(timeout=5)
    assert not capture.alive, "the capture thread did not stop"
    names = events.drain()
    assert names == [STREAM_LOST, STREAM_RESTORED] * cycles
    assert capture.reconnects == cycles


@pytest.mark.parametrize("backend", BACKENDS)
def test_server_that_freezes_is_lost_after_the_read_timeout_and_restored(rtsp_server, backend):
    source = open_source(rtsp_server.url, options=options(backend, timeout_s=2.0))
    ring, events = FrameRing(capacity=4), Events()
    capture = Capture(source, ring, on_event=events, backoff_s=(0.1, 0.4))
    capture.start()
    try:
        take(ring, 5)
        rtsp_server.pause()  # connection stays open, no data flows
        paused = time.monotonic()
        events.wait_for(STREAM_LOST, timeout=10)
        assert time.monotonic() - paused < 8  # the 2 s read timeout, at most twice (demux, then decode)
        rtsp_server.resume()
        restored = events.wait_for(STREAM_RESTORED, timeout=10)
        frames = [f for f in take(ring, 10) if f.seq >= restored.frame]  # older ones were buffered before
        assert frames and frames[0].seq == restored.frame and frames[0].discontinuity
    finally:
        rtsp_server.resume()
        capture.stop()
        capture.join(timeout=5)
    assert not capture.alive


def test_stop_is_prompt_while_the_server_stays_down(rtsp_server):
    source = open_source(rtsp_server.url, options=SourceOptions(timeout_s=2.0))
    ring, events = FrameRing(capacity=4), Events()
    capture = Capture(source, ring, on_event=events, backoff_s=(0.1, 0.2))
    capture.start()
    try:
        take(ring, 3)
        rtsp_server.kill()
        events.wait_for(STREAM_LOST, timeout=5)
        time.sleep(1.0)  # several refused reopens
        assert capture.alive
    finally:
        start = time.monotonic()
        capture.stop()
        capture.join(timeout=5)
    assert not capture.alive
    assert time.monotonic() - start < 2.5  # at worst one open attempt (timeout 2 s); refused is instant
    assert ring.closed
    assert events.drain() == [STREAM_LOST]


@pytest.mark.parametrize("backend", BACKENDS)
def test_credentials_work_and_never_show(backend):
    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    with RtspServer(user="admin", password="hunter2") as server:
        source = open_source(server.url, options=options(backend))
        try:
            assert "hunter2" not in source.uri and "admin" not in source.uri
            assert source.uri == f"rtsp://***@127.0.0.1:{server.port}/test"
            assert "hunter2" not in repr(source) and "hunter2" not in source.name
            image, _, _ = source.read()
            assert image.shape == (240, 320, 3)
        finally:
            source.close()
        wrong = f"rtsp://admin:wrong-hunter2@127.0.0.1:{server.port}/test"
        with pytest.raises(SourceError) as info:
            open_source(wrong, options=options(backend))
        message = str(info.value)
        assert "hunter2" not in message and "admin" not in message and "\n" not in message
        assert f"rtsp://***@127.0.0.1:{server.port}/test" in message


def test_unknown_path_on_a_live_server_is_source_not_found(rtsp_server):
    pytest.importorskip("av")
    url = rtsp_server.url.replace("/test", "/no-such-camera")
    with pytest.raises(SourceNotFound) as info:
        open_source(url, options=SourceOptions(timeout_s=2.0, backend="pyav"))
    assert "/no-such-camera" in str(info.value) and "404" in str(info.value)


def test_reopen_fails_cleanly_while_the_server_is_down(rtsp_server):
    source = open_source(rtsp_server.url, options=SourceOptions(timeout_s=2.0))
    try:
        source.read()
        rtsp_server.kill()
        with pytest.raises(SourceError):
            for _ in range(300):  # whatever was buffered, then the failure
                source.read()
        start = time.monotonic()
        with pytest.raises(SourceUnreachable):
            source.reopen()
        assert time.monotonic() - start < 1.0
        rtsp_server.restart()
        source.reopen()
        assert source.read()[0].shape == (240, 320, 3)
        assert source.epoch == 1
    finally:
        source.close()
