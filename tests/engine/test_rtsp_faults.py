"""Cameras that misbehave, against a real RTSP camera on 127.0.0.1 (GStreamer gst-rtsp-server): one that
freezes (SIGSTOP: its TCP connection stays open, nothing arrives), one that comes back with another
resolution and frame rate, a port that answers with garbage or not at all, and a stream whose timestamps
jump back (an MPEG-TS stream over HTTP whose clock restarts). Every wait is bounded.
"""

from __future__ import annotations

import contextlib
import http.server
import io
import os
import socket
import threading
import time

import numpy as np
import pytest

from dcrn.engine.errors import SourceError, SourceUnreachable
from dcrn.engine.frames import STREAM_CHANGED, STREAM_LOST, STREAM_RESTORED
from dcrn.engine.ring.frame_ring import FrameRing
from dcrn.engine.sources.base import SourceOptions
from dcrn.engine.sources.capture import Capture
from dcrn.engine.sources.factory import open_source
from tests.fixtures.models import write_model
from tests.fixtures.streams import Events, take

pytestmark = pytest.mark.rtsp

BACKENDS = ["pyav", "opencv"]
STALL_S = 1.5


def options(backend: str, *, timeout_s: float = 3.0, stall_s: float = STALL_S) -> SourceOptions:
    return SourceOptions(timeout_s=timeout_s, stall_s=stall_s, backend=backend)


def drain(ring: FrameRing) -> None:
    while (item := ring.get(timeout=0)) is not None:
        item.release()


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_frozen_camera_is_lost_within_the_stall_time_and_restored_when_it_thaws(rtsp_server, backend):
    source = open_source(rtsp_server.url, options=options(backend))
    ring, events = FrameRing(capacity=4), Events()
    capture = Capture(source, ring, on_event=events, backoff_s=(0.2, 1.0))
    capture.start()
    try:
        take(ring, 5)
        rtsp_server.pause()
        paused = time.monotonic()
        lost = events.wait_for(STREAM_LOST, timeout=10)
        detected = time.monotonic() - paused
        assert detected < STALL_S + 1.0, f"a {STALL_S} s stall was noticed only after {detected:.2f} s"
        assert "no data" in lost.detail or "no frame" in lost.detail, lost.detail
        time.sleep(1.0)  # frozen for longer than one open attempt could wait unnoticed
        drain(ring)
        rtsp_server.resume()
        thawed = time.monotonic()
        restored = events.wait_for(STREAM_RESTORED, timeout=10)
        assert time.monotonic() - thawed < 5.0
        frames = [f for f in take(ring, 10) if f.seq >= restored.frame]
        assert frames and frames[0].seq == restored.frame and frames[0].discontinuity
    finally:
        rtsp_server.resume()
        capture.stop()
        capture.join(timeout=10)
    assert not capture.alive
    assert events.drain() == [STREAM_LOST, STREAM_RESTORED]  # no stream_changed: same camera, same settings


def test_stop_returns_within_the_stall_time_while_the_camera_is_frozen(rtsp_server):
    source = open_source(rtsp_server.url, options=options("pyav"))
    ring, events = FrameRing(capacity=4), Events()
    capture = Capture(source, ring, on_event=events)
    capture.start()
    try:
        take(ring, 3)
        rtsp_server.pause()
        time.sleep(0.3)  # the capture thread now waits in a read that gets nothing
        stopping = time.monotonic()
        capture.stop()
        capture.join(timeout=10)
        assert not capture.alive
        assert time.monotonic() - stopping < STALL_S + 0.5
    finally:
        rtsp_server.resume()
        capture.stop()


def test_stop_returns_within_the_open_timeout_while_reopening_a_frozen_camera(rtsp_server):
    source = open_source(rtsp_server.url, options=options("pyav", timeout_s=2.0))
    ring, events = FrameRing(capacity=4), Events()
    capture = Capture(source, ring, on_event=events, backoff_s=(0.1, 0.2))
    capture.start()
    try:
        take(ring, 3)
        rtsp_server.pause()
        events.wait_for(STREAM_LOST, timeout=10)
        time.sleep(0.5)  # a reopen attempt now waits for a server that accepted the connection but is frozen
        stopping = time.monotonic()
        capture.stop()
        capture.join(timeout=10)
        assert not capture.alive
        assert time.monotonic() - stopping < 2.0 + STALL_S + 0.5  # the open timeout, then at most one read
    finally:
        rtsp_server.resume()
        capture.stop()


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_camera_that_returns_with_another_resolution_and_frame_rate_says_so_and_resets(rtsp_server, backend):
    source = open_source(rtsp_server.url, options=options(backend))
    ring, events = FrameRing(capacity=4), Events()
    capture = Capture(source, ring, on_event=events, backoff_s=(0.1, 0.4))
    capture.start()
    try:
        assert take(ring, 5)[-1].image.shape == (240, 320, 3)
        rtsp_server.kill()
        events.wait_for(STREAM_LOST, timeout=5)
        drain(ring)
        rtsp_server.width, rtsp_server.height, rtsp_server.fps = 640, 480, 25
        rtsp_server.start()
        restored = events.wait_for(STREAM_RESTORED, timeout=10)
        changed = events.seen[-2]  # emitted just before the frame went into the ring, so before restored
        assert changed.event == STREAM_CHANGED and changed.frame == restored.frame
        if backend == "pyav":  # OpenCV does not always know the frame rate of an RTSP stream
            assert changed.detail == "640x480 at 25 fps, was 320x240 at 30 fps"
        else:
            assert changed.detail.startswith("640x480") and "was 320x240" in changed.detail
        frames = [f for f in take(ring, 10) if f.seq >= restored.frame]
        assert frames[0].seq == restored.frame and frames[0].discontinuity
        assert all(f.image.shape == (480, 640, 3) for f in frames)
        assert not any(f.discontinuity for f in frames[1:])
    finally:
        capture.stop()
        capture.join(timeout=10)
    assert not capture.alive
    assert capture.changes == 1
    assert events.drain() == [STREAM_LOST, STREAM_CHANGED, STREAM_RESTORED]


class JunkServer:
    """A TCP port on 127.0.0.1 that accepts connections and answers with random bytes (``silent``: nothing)."""

    def __init__(self, *, port: int = 0, silent: bool = False) -> None:
        self.silent = silent
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", port))
        self.listener.listen(8)
        self.listener.settimeout(0.1)
        self.port = self.listener.getsockname()[1]
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="junk-server", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        open_connections = []
        try:
            while not self._stop.is_set():
                try:
                    conn, _ = self.listener.accept()
                except TimeoutError:
                    continue
                self.connections += 1
                open_connections.append(conn)
                if not self.silent:
                    with contextlib.suppress(OSError):
                        conn.sendall(os.urandom(4096) + b"RTSP/1.0 999 ???\r\n\r\n" + os.urandom(4096))
        finally:
            for conn in open_connections:
                conn.close()
            self.listener.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def __enter__(self) -> JunkServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@pytest.mark.parametrize("silent", [False, True], ids=["garbage", "silent"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_a_port_that_answers_with_garbage_or_nothing_fails_to_open_within_the_timeout(backend, silent):
    with JunkServer(silent=silent) as junk:
        started = time.monotonic()
        with pytest.raises(SourceError) as info:
            open_source(f"rtsp://admin:hunter2@127.0.0.1:{junk.port}/cam", options=options(backend, timeout_s=2.0))
        elapsed = time.monotonic() - started
    assert junk.connections >= 1
    assert elapsed < 2.0 + STALL_S + 0.5
    assert "hunter2" not in str(info.value) and f"127.0.0.1:{junk.port}/cam" in str(info.value)
    if silent:
        assert isinstance(info.value, SourceUnreachable)


def test_a_camera_whose_port_answers_garbage_for_a_while_is_restored_when_the_camera_returns(rtsp_server):
    source = open_source(rtsp_server.url, options=options("pyav", timeout_s=2.0))
    ring, events = FrameRing(capacity=4), Events()
    capture = Capture(source, ring, on_event=events, backoff_s=(0.1, 0.4))
    capture.start()
    try:
        take(ring, 3)
        rtsp_server.kill()
        events.wait_for(STREAM_LOST, timeout=5)
        with JunkServer(port=rtsp_server.port) as junk:  # something else answers on the camera's port
            deadline = time.monotonic() + 10
            while junk.connections < 3 and time.monotonic() < deadline:
                time.sleep(0.1)
            assert junk.connections >= 3, "the capture gave up instead of retrying"
            assert capture.alive
        rtsp_server.start()
        restored = events.wait_for(STREAM_RESTORED, timeout=10)
        assert [f for f in take(ring, 10) if f.seq >= restored.frame]
    finally:
        capture.stop()
        capture.join(timeout=10)
    assert not capture.alive
    assert events.drain() == [STREAM_LOST, STREAM_RESTORED]


# -- timestamps that jump ----------------------------------------------------------------------------------


def ts_segment(start_s: float, frames: int = 25, fps: int = 25) -> bytes:
    """An H.264 MPEG-TS segment whose first frame is stamped ``start_s``: a moving bar on grey."""
    import av

    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mpegts") as container:
        video = container.add_stream("libx264", rate=fps)
        video.width, video.height, video.pix_fmt = 160, 120, "yuv420p"
        video.options = {"preset": "ultrafast", "tune": "zerolatency", "g": "5"}
        base = round(start_s * fps)
        for index in range(frames):
            image = np.full((120, 160, 3), 90, np.uint8)
            image[:, (index * 6) % 160 :][:, :12] = 230
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts = base + index
            for packet in video.encode(frame):
                container.mux(packet)
        for packet in video.encode():
            container.mux(packet)
    return buffer.getvalue()


class OneFileServer:
    """Serves ``data`` at http://127.0.0.1:PORT/live.ts (a camera's HTTP stream), then closes."""

    def __init__(self, data: bytes) -> None:
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "video/mp2t")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/live.ts"
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=5)


def test_a_stream_whose_timestamps_jump_back_and_ahead_keeps_its_pts_growing():
    pytest.importorskip("av")
    # The camera's clock restarts (back to 10 s), then leaps ahead by an hour; 25 frames each.
    server = OneFileServer(ts_segment(10.0) + ts_segment(10.0) + ts_segment(3610.0))
    try:
        source = open_source(server.url, options=SourceOptions(timeout_s=3.0, stall_s=STALL_S, backend="pyav"))
        pts = []
        try:
            while True:
                try:
                    item = source.read()
                except SourceError:  # the end of the served data: the connection closed
                    break
                pts.append(item[1])
        finally:
            source.close()
    finally:
        server.close()
    assert len(pts) >= 70  # most of the 75 frames (the demuxer may drop a frame at a segment seam)
    steps = np.diff(pts)
    assert np.all(steps > 0), f"pts went back: {steps.min():.3f} s"
    assert steps.max() < 1.0, f"pts leapt ahead by {steps.max():.1f} s"
    assert source.timestamp_jumps == 2


def test_sources_open_together_so_cameras_that_do_not_answer_cost_one_open_timeout(rtsp_server):
    from dcrn.engine.sources.factory import open_sources

    with JunkServer(silent=True) as junk:
        silent = f"rtsp://127.0.0.1:{junk.port}/cam"
        uris = [rtsp_server.url, silent, silent, silent, "synthetic:?seed=1"]
        started = time.monotonic()
        with pytest.raises(SourceUnreachable) as info:
            open_sources(uris, options=options("pyav", timeout_s=2.0))
        elapsed = time.monotonic() - started
    assert elapsed < 2.0 + STALL_S + 0.5, f"{elapsed:.1f} s: the opens did not run at the same time"
    assert str(junk.port) in str(info.value)
    sources = open_sources([rtsp_server.url, "synthetic:?seed=1"], names=["door", None], options=options("pyav"))
    try:
        assert [s.name for s in sources] == ["door", "synthetic"]
    finally:
        for source in sources:
            source.close()


def test_the_pipeline_writes_changed_and_restored_before_the_new_frames_and_resets_the_state(rtsp_server, tmp_path):
    from dcrn.engine.pipeline import Pipeline, PipelineConfig

    write_model(tmp_path / "model.pt")
    records: list[dict] = []
    config = PipelineConfig(
        sources=[rtsp_server.url],
        model=str(tmp_path / "model.pt"),
        timeout_s=3.0,
        stall_s=STALL_S,
        backoff_s=(0.1, 0.4),
    )
    pipeline = Pipeline(config, on_record=records.append)
    runner = threading.Thread(target=pipeline.run, daemon=True)
    runner.start()
    try:

        def wait(match, timeout=15.0):
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if any(match(r) for r in list(records)):
                    return
                time.sleep(0.05)
            raise AssertionError(f"no such record within {timeout} s; saw {[r.get('event') for r in records]}")

        wait(lambda r: r["type"] == "prediction")
        rtsp_server.kill()
        wait(lambda r: r.get("event") == STREAM_LOST)
        rtsp_server.width, rtsp_server.height = 640, 480
        rtsp_server.start()
        wait(lambda r: r.get("event") == STREAM_RESTORED)
        restored = next(r for r in records if r.get("event") == STREAM_RESTORED)
        wait(lambda r: r["type"] == "prediction" and r["frame"] >= restored["frame"] + 5)
    finally:
        pipeline.stop()
        runner.join(timeout=20)
    assert not runner.is_alive()
    events = [r["event"] for r in records if r["type"] == "event" and r["event"].startswith("stream_")]
    assert events[:3] == [STREAM_LOST, STREAM_CHANGED, STREAM_RESTORED]
    changed_at = next(i for i, r in enumerate(records) if r.get("event") == STREAM_CHANGED)
    assert records[changed_at]["detail"].startswith("640x480")
    later = [r for r in records[:changed_at] if r["type"] == "prediction" and r["frame"] >= restored["frame"]]
    assert not later, "a prediction of the new format came before stream_changed"
    assert pipeline.slots.resets("127.0.0.1-test") >= 2  # the first frame, and the first after the change
