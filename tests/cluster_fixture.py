"""A real multi-node Ray cluster on this machine for tests: scripts/local_cluster.py in a subprocess.

    with LocalCluster(workers=2) as cluster:
        env = cluster.env()                 # RAY_AUTH_MODE / RAY_AUTH_TOKEN for a driver that joins
        run("dcrn run --cluster", cluster.address, env=env)
        cluster.kill(0)                     # worker node 0 dies (SIGKILL of its raylet and workers)

Each worker node has one Ray CPU and, on a machine with as many cores, one core of its own (``cores``
chooses which). Ray's session folder (logs included) is a fresh temporary folder, so a test can read
everything Ray wrote. scripts/cluster_scaling.py uses it too.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "local_cluster.py"


class LocalCluster:
    def __init__(
        self,
        *,
        workers: int = 2,
        cores: list[int] | None = None,
        dashboard: bool = False,
        ready_timeout_s: float = 90.0,
        stderr_path: Path | None = None,
    ) -> None:
        self.workers = workers
        if cores is None and (os.cpu_count() or 1) >= workers:
            cores = list(range(workers))
        self.cores = cores or []  # worker node K on core cores[K]; none: not pinned
        self.dashboard_wanted = dashboard
        self.ready_timeout_s = ready_timeout_s
        self.temp_dir = Path(tempfile.mkdtemp(prefix="dcrnray", dir="/tmp"))  # unix socket paths must be short
        # closed in close()
        self._stderr = stderr_path.open("w+b") if stderr_path else tempfile.TemporaryFile()  # noqa: SIM115
        self._proc: subprocess.Popen | None = None
        self.info: dict = {}

    @property
    def address(self) -> str:
        return self.info["address"]

    @property
    def dashboard(self) -> str | None:
        return self.info.get("dashboard")

    @property
    def node_ids(self) -> list[str]:
        return [n["node_id"] for n in self.info["nodes"]]

    def env(self) -> dict[str, str]:
        return dict(os.environ, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=self.info["token"], RAY_USAGE_STATS_ENABLED="0")

    def start(self) -> None:
        args = [sys.executable, str(SCRIPT), "--workers", str(self.workers), "--temp-dir", str(self.temp_dir)]
        args += ["--cores", ",".join(map(str, self.cores))] if self.cores else []
        args += ["--dashboard"] if self.dashboard_wanted else []
        self._proc = subprocess.Popen(
            args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr, text=True, cwd=REPO
        )
        self.info = self._answer(self.ready_timeout_s)

    def kill(self, worker: int) -> dict:
        return self._command(f"kill {worker}")

    def _command(self, line: str, timeout_s: float = 30.0) -> dict:
        assert self._proc is not None and self._proc.stdin is not None
        self._proc.stdin.write(line + "\n")
        self._proc.stdin.flush()
        return self._answer(timeout_s)

    def _answer(self, timeout_s: float) -> dict:
        assert self._proc is not None and self._proc.stdout is not None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self._proc.stdout], [], [], 0.5)
            if ready:
                line = self._proc.stdout.readline()
                if line:
                    return json.loads(line)
            if self._proc.poll() is not None:
                break
        raise RuntimeError(f"local Ray cluster did not answer in {timeout_s:g} s:\n{self.stderr()[-3000:]}")

    def stderr(self) -> str:
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace")

    def logs_text(self) -> str:
        """Everything Ray wrote in its session folder (logs of every node and worker), as one text."""
        chunks = []
        for path in self.temp_dir.rglob("*"):
            if path.is_file() and path.suffix in (".log", ".out", ".err", ".txt", ".json", ""):
                try:
                    chunks.append(path.read_text(errors="replace"))
                except OSError:
                    continue
        return "\n".join(chunks)

    def worker_logs(self, tail: int = 2000) -> str:
        """The last ``tail`` characters of each Ray worker's stderr (where a stream host logs), one block each."""
        blocks = []
        for path in sorted(self.temp_dir.rglob("worker-*.err")):
            text = path.read_text(errors="replace").strip()
            if text:
                blocks.append(f"--- {path.name[:16]}...{path.name[-12:]}\n{text[-tail:]}")
        return "\n".join(blocks)

    def close(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            try:
                if proc.poll() is None and proc.stdin is not None:
                    proc.stdin.write("quit\n")
                    proc.stdin.flush()
                proc.wait(60)
            except (OSError, subprocess.TimeoutExpired):
                proc.kill()
                proc.wait(10)
        self._stderr.close()
        shutil.rmtree(self.temp_dir, ignore_errors=True)

    def __enter__(self) -> LocalCluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
