"""Start, kill and restart the real RTSP test camera (scripts/rtsp_server.py) from tests.

The server runs under the SYSTEM Python, which has GStreamer's ``gi`` bindings (the venv has not).
Used by the ``rtsp_server`` fixture in tests/conftest.py:

    def test_something(rtsp_server):
        source = open_source(rtsp_server.url)
        rtsp_server.kill()       # like a camera losing power
        rtsp_server.restart()    # same port, same URL
"""

from __future__ import annotations

import functools
import logging
import os
import select
import signal
import subprocess
import tempfile
import time
from pathlib import Path

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "rtsp_server.py"
SYSTEM_PYTHON = os.environ.get("DCRN_SYSTEM_PYTHON", "/usr/bin/python3")
EXIT_NOT_INSTALLED = 3


@functools.lru_cache(maxsize=1)
def unavailable_reason() -> str | None:
    """Why the RTSP test server cannot run here (None when it can)."""
    if not Path(SYSTEM_PYTHON).exists():
        return f"RTSP test server needs the system Python with GStreamer bindings ({SYSTEM_PYTHON} not found)"
    probe = (
        "import gi; gi.require_version('Gst', '1.0'); gi.require_version('GstRtspServer', '1.0'); "
        "from gi.repository import Gst, GstRtspServer; Gst.init(None); "
        "missing = [n for n in ('videotestsrc', 'videoconvert', 'x264enc', 'rtph264pay', 'timeoverlay') "
        "if Gst.ElementFactory.find(n) is None]; print(' '.join(missing))"
    )
    try:
        result = subprocess.run([SYSTEM_PYTHON, "-c", probe], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"RTSP test server: cannot run {SYSTEM_PYTHON} ({exc})"
    if result.returncode != 0:
        return "gst-rtsp-server is not installed (run scripts/install-system-deps)"
    if result.stdout.strip():
        return f"GStreamer elements missing for the RTSP test server: {result.stdout.strip()}"
    return None


class RtspServer:
    """One live H.264 RTSP stream on 127.0.0.1; ``port=0`` picks a free port on the first start."""

    def __init__(
        self,
        *,
        port: int = 0,
        path: str = "/test",
        fps: int = 30,
        width: int = 320,
        height: int = 240,
        user: str | None = None,
        password: str | None = None,
        ready_timeout_s: float = 15.0,
    ) -> None:
        self.port = port
        self.path = path if path.startswith("/") else "/" + path
        self.fps, self.width, self.height = fps, width, height
        self.user, self.password = user, password
        self.ready_timeout_s = ready_timeout_s
        self.starts = 0
        self._proc: subprocess.Popen | None = None
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 (lives as long as the server; close() closes it)

    @property
    def url(self) -> str:
        """The stream's URL, with the credentials when the server requires them."""
        auth = f"{self.user}:{self.password}@" if self.user else ""
        return f"rtsp://{auth}127.0.0.1:{self.port}{self.path}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        """Start and wait until clients can connect. A port still held by a dying server is retried."""
        if self.running:
            return
        deadline = time.monotonic() + self.ready_timeout_s
        while True:
            error = self._start_once(deadline)
            if error is None:
                self.starts += 1
                return
            if "cannot listen" in error and self.port and time.monotonic() < deadline:
                time.sleep(0.2)  # the previous server's socket is not released yet
                continue
            raise RuntimeError(f"RTSP test server did not start: {error}")

    def _start_once(self, deadline: float) -> str | None:
        args = [SYSTEM_PYTHON, str(SCRIPT), "--port", str(self.port), "--path", self.path, "--fps", str(self.fps)]
        args += ["--width", str(self.width), "--height", str(self.height)]
        if self.user:
            args += ["--user", self.user, "--password", self.password or ""]
        self._stderr.seek(0)
        self._stderr.truncate()
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=self._stderr, text=True, start_new_session=True)
        line = ""
        while time.monotonic() < deadline:
            ready, _, _ = select.select([proc.stdout], [], [], min(0.2, max(0.0, deadline - time.monotonic())))
            if ready:
                line = proc.stdout.readline()
                break
            if proc.poll() is not None:
                break
        if line.startswith("READY "):
            self._proc = proc
            self.port = int(line.split()[1].rsplit(":", 1)[1].split("/", 1)[0])
            log.info("RTSP test server up on port %d (pid %d)", self.port, proc.pid)
            return None
        self._terminate(proc)
        self._stderr.seek(0)
        error = self._stderr.read().decode(errors="replace").strip() or f"no READY line, exit code {proc.returncode}"
        if proc.returncode == EXIT_NOT_INSTALLED:
            error = f"not installed: {error}"
        return error

    def kill(self) -> None:
        """Kill the server at once (SIGKILL), like a camera losing power; its clients lose the stream."""
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait(timeout=10)
            self._proc = None

    def restart(self) -> None:
        """Kill (if running) and start again on the same port, so the same URL works again."""
        self.kill()
        self.start()

    def pause(self) -> None:
        """Freeze the server (SIGSTOP): connections stay open but no data flows."""
        if self._proc is not None:
            self._proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        if self._proc is not None:
            self._proc.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        """Stop cleanly (SIGTERM, then SIGKILL after 5 s). Safe to call more than once."""
        if self._proc is not None:
            self._terminate(self._proc)
            self._proc = None

    def close(self) -> None:
        self.stop()
        self._stderr.close()

    @staticmethod
    def _terminate(proc: subprocess.Popen) -> None:
        if proc.poll() is None:
            proc.send_signal(signal.SIGCONT)  # a paused server cannot handle SIGTERM
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        if proc.stdout is not None:
            proc.stdout.close()

    def __enter__(self) -> RtspServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
