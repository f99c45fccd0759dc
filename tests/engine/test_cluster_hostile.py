"""``dcrn run --cluster`` against what should not be there: an address that is not Ray, credentials typed
into the address, and a private checkpoint on its way to the nodes. No Ray cluster is started."""

from __future__ import annotations

import contextlib
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from dcrn.engine.cluster.driver import ClusterRun
from dcrn.engine.cluster.host import MODELS_FOLDER, checkpoint_blob, materialise
from dcrn.engine.run.config import PipelineConfig
from dcrn.models.errors import DcrnError

PASSWORD = "pw-H0stile"
DCRN = [sys.executable, "-m", "dcrn.app"]


class NotRay:
    """A TCP server on 127.0.0.1 that accepts every connection and then sends ``reply`` once (or nothing),
    keeping the connection open: a port that answers, but not as a Ray head does."""

    def __init__(self, reply: bytes) -> None:
        self.reply = reply
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.connections: list[socket.socket] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> NotRay:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.close()
        for conn in self.connections:
            conn.close()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:  # closed
                return
            self.connections.append(conn)
            if self.reply:
                with contextlib.suppress(OSError):  # the client may be gone already
                    conn.sendall(self.reply)


def free_port() -> int:
    with socket.socket() as probe:  # free a moment ago: nothing listens there
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.parametrize(
    "reply", [b"", b"HTTP/1.1 400 Bad Request\r\n\r\n\x00\xffgarbage" * 4], ids=["silent", "garbage"]
)
def test_a_port_that_answers_but_is_not_ray_ends_in_seconds_with_one_line_and_exit_2(reply):
    with NotRay(reply) as server:
        address = f"127.0.0.1:{server.port}"
        started = time.monotonic()
        result = subprocess.run(
            [*DCRN, "run", "--cluster", address, "--source", "synthetic:", "--duration", "2"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        elapsed = time.monotonic() - started
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("dcrn run: error: ") and f"{address}, but not a Ray head" in lines[0]
    assert elapsed < 30, f"{elapsed:.1f} s"


def test_credentials_in_the_cluster_address_are_never_printed_back():
    address = f"admin:{PASSWORD}@127.0.0.1:{free_port()}"
    result = subprocess.run(
        [*DCRN, "run", "--cluster", address, "--source", "synthetic:", "--max-frames", "5"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "***@127.0.0.1:" in lines[0], result.stderr
    assert PASSWORD not in result.stderr + result.stdout
    assert "admin" not in result.stderr


@pytest.mark.parametrize(
    "address",
    [
        f"admin:{PASSWORD}@10.0.0.9:6379",
        f"ray://admin:{PASSWORD}@10.0.0.9:10001",
        f"adm@in:{PASSWORD}@10.0.0.9:6379",  # an "@" in the user name, another in the password
        f"admin:{PASSWORD}@10.0.0.9",  # no port as well
        f"admin:{PASSWORD}@",
    ],
)
def test_no_cluster_error_shows_the_credentials_of_the_address(address, monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    run = ClusterRun(PipelineConfig(sources=["synthetic:"]), address=address)
    with pytest.raises(DcrnError) as error:
        run.connect()
    assert PASSWORD not in str(error.value) and "***@" in str(error.value)
    monkeypatch.setenv("RAY_ADDRESS", address)  # --cluster auto joins $RAY_ADDRESS: the same care
    with pytest.raises(DcrnError) as error:
        ClusterRun(PipelineConfig(sources=["synthetic:"]), address="auto").connect()
    assert PASSWORD not in str(error.value)


@pytest.mark.parametrize("mode", [0o600, 0o640, 0o644])
def test_a_node_s_cached_checkpoint_keeps_the_original_file_s_mode(tmp_path, monkeypatch, mode):
    monkeypatch.setenv("DCRN_CACHE_DIR", str(tmp_path / "cache"))
    original = tmp_path / "private.pt"
    original.write_bytes(b"weights that are nobody else's business")
    original.chmod(mode)
    cached = Path(materialise(checkpoint_blob(str(original))))  # the driver's blob, as a node writes it
    assert stat.S_IMODE(cached.stat().st_mode) == mode
    assert cached.read_bytes() == original.read_bytes()
    assert cached.parent == tmp_path / "cache" / MODELS_FOLDER


def test_a_copy_cached_with_more_access_than_the_original_loses_it(tmp_path, monkeypatch):
    monkeypatch.setenv("DCRN_CACHE_DIR", str(tmp_path / "cache"))
    original = tmp_path / "private.pt"
    original.write_bytes(b"weights")
    original.chmod(0o644)
    cached = Path(materialise(checkpoint_blob(str(original))))
    original.chmod(0o600)  # the same content, now private: the cached copy follows
    assert Path(materialise(checkpoint_blob(str(original)))) == cached
    assert stat.S_IMODE(cached.stat().st_mode) == 0o600


def test_the_node_cache_follows_xdg_cache_home_without_dcrn_cache_dir(tmp_path, monkeypatch):
    monkeypatch.delenv("DCRN_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    original = tmp_path / "mine.pt"
    original.write_bytes(b"weights")
    cached = Path(materialise(checkpoint_blob(str(original))))
    assert cached.parent == tmp_path / "xdg" / "dcrn" / MODELS_FOLDER
    assert cached.name.endswith("-mine.pt")
    assert not [p for p in cached.parent.iterdir() if p != cached]  # no temporary file left beside it
