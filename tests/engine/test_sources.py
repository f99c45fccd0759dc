"""Sources: files (paced, unpaced, looped), synthetic, and bad input with the right error and message.

Every test writes its own media with OpenCV. Network tests talk to 127.0.0.1 only.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from dcrn.engine.errors import BadSourceURI, SourceError, SourceNotFound, SourceUnreachable, SourceUnreadable
from dcrn.engine.sources.base import SourceOptions
from dcrn.engine.sources.camera import CameraSource
from dcrn.engine.sources.factory import open_source
from dcrn.engine.sources.file import FileSource
from dcrn.engine.sources.synthetic import SyntheticSource
from dcrn.models.errors import DcrnError
from tests.fixtures.media import FRAME_H, FRAME_W, frame_value, write_video


def read_all(source, limit: int = 1000) -> list[tuple[np.ndarray, float, int | None]]:
    items = []
    for _ in range(limit):
        item = source.read()
        if item is None:
            break
        items.append(item)
    return items


def closed_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A TCP server on 127.0.0.1 that accepts connections and never says a word."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    server.settimeout(0.1)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1]
    finally:
        stop.set()
        thread.join(timeout=2)
        for conn in accepted:
            conn.close()
        server.close()


def assert_one_line(exc: BaseException, *must_contain: str) -> str:
    message = str(exc)
    assert "\n" not in message and message.strip() == message and message
    for part in must_contain:
        assert part in message, f"{part!r} not in {message!r}"
    return message


# -- files ----------------------------------------------------------------------------------------------


def test_file_source_reads_every_frame_as_contiguous_rgb_with_pts(tmp_path):
    path = write_video(tmp_path / "walk.mp4", frames=10, fps=25)
    with open_source(str(path), options=SourceOptions(pace=False)) as source:
        assert isinstance(source, FileSource)
        assert source.name == "walk" and not source.is_live and source.fps == pytest.approx(25)
        items = read_all(source)
        assert source.read() is None  # stays ended
    assert len(items) == 10
    for i, (image, pts, label) in enumerate(items):
        assert image.shape == (FRAME_H, FRAME_W, 3) and image.dtype == np.uint8 and image.flags["C_CONTIGUOUS"]
        assert abs(int(image[..., 0].mean()) - frame_value(i)) <= 6  # red is channel 0: RGB, not BGR
        assert image[..., 2].mean() < 6
        assert pts == pytest.approx(i / 25, abs=1e-6)
        assert label is None


def test_file_source_is_paced_at_its_own_frame_rate(tmp_path):
    path = write_video(tmp_path / "paced.mp4", frames=10, fps=20)
    with open_source(path, options=SourceOptions(pace=True)) as source:
        start = time.monotonic()
        times = []
        while source.read() is not None:
            times.append(time.monotonic() - start)
    assert len(times) == 10
    # The first frame at once, then one every 50 ms: never early (a loaded machine may make one late).
    assert all(t >= i / 20 - 0.005 for i, t in enumerate(times)), times
    assert times[-1] == pytest.approx(9 / 20, abs=0.12)


def test_file_source_without_pacing_runs_as_fast_as_it_decodes(tmp_path):
    path = write_video(tmp_path / "slow.mp4", frames=10, fps=2)  # 4.5 s of video when paced
    with open_source(path, options=SourceOptions(pace=False)) as source:
        start = time.monotonic()
        assert len(read_all(source)) == 10
    assert time.monotonic() - start < 1.0


def test_looping_file_starts_again_with_growing_pts_and_a_new_epoch(tmp_path):
    path = write_video(tmp_path / "loop.mp4", frames=10, fps=25)
    with open_source(path, options=SourceOptions(pace=False, loop=True)) as source:
        items, epochs = [], []
        for _ in range(25):
            items.append(source.read())
            epochs.append(source.epoch)
    assert epochs == [0] * 10 + [1] * 10 + [2] * 5
    pts = [item[1] for item in items]
    assert np.all(np.diff(pts) > 0)
    assert pts[10] == pytest.approx(10 / 25, abs=1e-6)
    for i, (image, _, _) in enumerate(items):
        assert abs(int(image[..., 0].mean()) - frame_value(i % 10)) <= 6


def test_file_url_and_path_objects_open_the_same_file(tmp_path):
    path = write_video(tmp_path / "clip.mp4", frames=3)
    for uri in (path, f"file://{path}"):
        with open_source(uri, options=SourceOptions(pace=False)) as source:
            assert len(read_all(source)) == 3


def test_reading_a_closed_source_is_an_error(tmp_path):
    source = open_source(write_video(tmp_path / "c.mp4", frames=2), options=SourceOptions(pace=False))
    source.close()
    source.close()
    with pytest.raises(SourceError, match="closed"):
        source.read()


# -- synthetic --------------------------------------------------------------------------------------------


def test_synthetic_source_gives_labelled_rgb_frames_with_its_options():
    source = open_source("synthetic:?seed=3&fps=50&width=96&height=64", options=SourceOptions(pace=False))
    assert isinstance(source, SyntheticSource)
    assert source.name == "synthetic" and source.is_live and source.fps == 50
    assert source.labels and all(isinstance(name, str) for name in source.labels)
    items = [source.read() for _ in range(20)]
    for i, (image, pts, label) in enumerate(items):
        assert image.shape == (64, 96, 3) and image.dtype == np.uint8 and image.flags["C_CONTIGUOUS"]
        assert pts == pytest.approx(i / 50)
        assert 0 <= label < len(source.labels)
    again = open_source("synthetic:?seed=3&fps=50&width=96&height=64", options=SourceOptions(pace=False))
    assert np.array_equal(again.read()[0], items[0][0])  # deterministic for a seed


def test_synthetic_source_is_paced_at_its_fps():
    source = open_source("synthetic:?fps=40&width=64&height=48")
    start = time.monotonic()
    for _ in range(11):
        source.read()
    assert time.monotonic() - start == pytest.approx(10 / 40, abs=0.1)


def test_synthetic_defaults():
    source = open_source("synthetic:", options=SourceOptions(pace=False))
    image, _, _ = source.read()
    assert image.shape == (240, 320, 3) and source.fps == 30


# -- bad input ------------------------------------------------------------------------------------------


def test_missing_file_is_source_not_found(tmp_path):
    missing = tmp_path / "nope.mp4"
    with pytest.raises(SourceNotFound) as info:
        open_source(str(missing))
    assert_one_line(info.value, str(missing), "not found")
    assert isinstance(info.value, FileNotFoundError) and isinstance(info.value, DcrnError)


def test_file_that_is_not_video_is_source_unreadable(tmp_path):
    bogus = tmp_path / "notes.mp4"
    bogus.write_bytes(b"this is not a video\n" * 200)
    with pytest.raises(SourceUnreadable) as info:
        open_source(bogus)
    assert_one_line(info.value, str(bogus), "not a readable video file")
    empty = tmp_path / "empty.avi"
    empty.write_bytes(b"")
    with pytest.raises(SourceUnreadable):
        open_source(empty)


def test_directory_is_source_unreadable(tmp_path):
    with pytest.raises(SourceUnreadable) as info:
        open_source(str(tmp_path))
    assert_one_line(info.value, "is a directory")


def test_camera_index_that_does_not_exist_is_source_not_found():
    # No camera device exists on CI machines (no /dev/video*); index 7 does not exist anywhere we run.
    for uri in ("7", 7, "/dev/video7"):
        with pytest.raises(SourceNotFound) as info:
            open_source(uri)
        assert_one_line(info.value, "camera 7")


def test_camera_index_opens_a_camera_source_when_one_exists():
    if not os.path.exists("/dev/video0"):
        pytest.skip("no camera device on this machine (/dev/video0)")
    with open_source("0") as source:
        assert isinstance(source, CameraSource) and source.name == "cam0" and source.is_live


@pytest.mark.parametrize(
    ("uri", "problem"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("rtsp://", "no host"),
        ("rtsp:/127.0.0.1/x", "no host"),
        ("rtsp://127.0.0.1:notaport/x", "port"),
        ("rtsp://127.0.0.1:99999/x", "port"),
        ("rtsp://[::1/x", "Invalid IPv6 URL"),
        ("http://127.0.0.1/a b", "white space"),
        ("ftp://127.0.0.1/clip.mp4", "unsupported scheme 'ftp'"),
        ("rtmp://127.0.0.1/live", "unsupported scheme 'rtmp'"),
        ("synthetic:?fps=fast", "fps must be a number"),
        ("synthetic:?fps=0", "fps must be positive"),
        ("synthetic:?colour=red", "unknown option 'colour'"),
        (-1, "negative"),
    ],
)
def test_malformed_uri_is_bad_source_uri(uri, problem):
    with pytest.raises(BadSourceURI) as info:
        open_source(uri)
    assert_one_line(info.value, "bad source URI", problem)
    assert isinstance(info.value, ValueError)


def test_bad_uri_message_hides_credentials():
    with pytest.raises(BadSourceURI) as info:
        open_source("rtsp://admin:hunter2@127.0.0.1:notaport/x")
    message = assert_one_line(info.value, "rtsp://***@127.0.0.1")
    assert "hunter2" not in message and "admin" not in message


BACKENDS = ["pyav", "opencv"]


def backend_options(backend: str, timeout_s: float = 2.0) -> SourceOptions:
    if backend == "pyav":
        pytest.importorskip("av")
    return SourceOptions(timeout_s=timeout_s, backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_closed_port_is_source_unreachable_at_once_and_hides_credentials(backend):
    port = closed_port()
    start = time.monotonic()
    with pytest.raises(SourceUnreachable) as info:
        open_source(f"rtsp://admin:hunter2@127.0.0.1:{port}/cam", options=backend_options(backend))
    assert time.monotonic() - start < 2.0
    message = assert_one_line(info.value, f"rtsp://***@127.0.0.1:{port}/cam", "connection refused")
    assert "hunter2" not in message and "admin" not in message
    assert isinstance(info.value, ConnectionError)


@pytest.mark.parametrize("backend", BACKENDS)
def test_host_that_never_answers_is_source_unreachable_within_the_timeout(backend, silent_server):
    start = time.monotonic()
    with pytest.raises(SourceUnreachable) as info:
        open_source(f"rtsp://127.0.0.1:{silent_server}/cam", options=backend_options(backend, timeout_s=1.0))
    elapsed = time.monotonic() - start
    assert 0.8 <= elapsed < 4.0, f"gave up after {elapsed:.1f} s with a 1 s timeout"
    assert_one_line(info.value, f"127.0.0.1:{silent_server}", "no answer within 1 s")


@pytest.mark.parametrize("backend", BACKENDS)
def test_http_url_to_a_closed_port_is_source_unreachable(backend):
    port = closed_port()
    with pytest.raises(SourceUnreachable) as info:
        open_source(f"http://127.0.0.1:{port}/video.mjpg?token=abc", options=backend_options(backend))
    message = assert_one_line(info.value, f"http://127.0.0.1:{port}/video.mjpg?token=***")
    assert "abc" not in message


def test_source_options_are_validated():
    with pytest.raises(ValueError, match="timeout_s"):
        SourceOptions(timeout_s=0)
    with pytest.raises(ValueError, match="backend"):
        SourceOptions(backend="gstreamer")


@pytest.fixture
def http_server(tmp_path) -> Iterator[tuple[str, Path]]:
    """A plain HTTP server on 127.0.0.1 that serves files from ``tmp_path``."""
    import functools
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    class QuietHandler(SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(tmp_path)))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", tmp_path
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_http_stream_is_read_as_a_live_source_until_it_ends(backend, http_server):
    base, folder = http_server
    write_video(folder / "clip.mp4", frames=8, fps=25)
    with open_source(f"{base}/clip.mp4", options=backend_options(backend)) as source:
        assert source.is_live and source.name == "127.0.0.1-clip"
        images = []
        with pytest.raises(SourceError, match=r"127\.0\.0\.1"):
            for _ in range(100):  # a live source does not end: it is lost (and the capture reopens it)
                images.append(source.read()[0])
    assert len(images) == 8
    for i, image in enumerate(images):
        assert image.shape == (FRAME_H, FRAME_W, 3)
        assert abs(int(image[..., 0].mean()) - frame_value(i)) <= 6


def test_http_path_that_does_not_exist_is_source_not_found(http_server):
    pytest.importorskip("av")
    base, _ = http_server
    with pytest.raises(SourceNotFound) as info:
        open_source(f"{base}/missing.mp4", options=SourceOptions(timeout_s=2, backend="pyav"))
    assert_one_line(info.value, "missing.mp4", "404")
