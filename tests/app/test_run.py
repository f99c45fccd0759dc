"""``dcrn run`` as a user runs it: a real process, real files, a real RTSP server, real signals."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from dcrn.engine.preprocess import Preprocessor
from dcrn.models import DCRN, DCRNConfig, save_checkpoint

LABELS = ("still", "wave", "clap", "jump")
ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}


def write_model(path: Path, cell: str = "gru") -> DCRN:
    config = DCRNConfig(num_classes=4, labels=LABELS, encoder_widths=(8, 16), cell=cell, hidden_size=16, input_size=32)
    model = DCRN(config).eval()
    save_checkpoint(path, model)
    return model


def write_video(path: Path, frames: int, *, seed: int, fps: float = 100.0) -> None:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (64, 48))
    rng = np.random.default_rng(seed)
    for t in range(frames):
        image = np.full((48, 64, 3), 40, np.uint8)
        colour = tuple(int(c) for c in rng.integers(0, 255, 3))
        cv2.circle(image, ((seed * 9 + 3 * t) % 64, (2 * t) % 48), 9, colour, -1)
        writer.write(image)
    writer.release()


def decode(path: Path) -> list[np.ndarray]:
    capture, frames = cv2.VideoCapture(str(path)), []
    while True:
        ok, bgr = capture.read()
        if not ok:
            return frames
        frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))


def dcrn(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "dcrn.app", *args], capture_output=True, text=True, timeout=timeout, env=ENV
    )


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


class Live:
    """A running ``dcrn`` process whose stdout lines are collected on a thread, for bounded waits."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "dcrn.app", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=ENV,
        )
        self.lines: list[dict] = []
        self.stderr: list[str] = []
        self._threads = [
            threading.Thread(target=self._read_stdout, daemon=True),
            threading.Thread(target=lambda: self.stderr.extend(self.proc.stderr), daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def _read_stdout(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(json.loads(line))

    def wait_for(self, predicate, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate(list(self.lines)):
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        tail = "".join(self.stderr[-15:])
        raise AssertionError(f"no {what} within {timeout} s (exit {self.proc.poll()}); stderr:\n{tail}")

    def finish(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(10)
        for thread in self._threads:
            thread.join(5)
        return code


@pytest.fixture
def model_path(tmp_path) -> Path:
    write_model(tmp_path / "m.pt")
    return tmp_path / "m.pt"


@pytest.mark.parametrize("backend", ["torch", "onnxruntime"])
def test_run_logits_on_a_file_equal_forward_sequence(tmp_path, backend):
    model = write_model(tmp_path / "m.pt", cell="lstm")
    write_video(tmp_path / "clip.mp4", 30, seed=1)
    out = tmp_path / "out.jsonl"
    done = dcrn(
        "run",
        "--source", str(tmp_path / "clip.mp4"),
        "--model", str(tmp_path / "m.pt"),
        "--backend", backend,
        "--cache-dir", str(tmp_path / "cache"),
        "--sink", f"jsonl:{out}?logits=1",
        "--no-pace",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    records = read_jsonl(out)
    got = [r for r in records if r["type"] == "prediction"]
    assert [r["frame"] for r in got] == list(range(30))
    frames = decode(tmp_path / "clip.mp4")
    clip = Preprocessor.from_config(model.config)([torch.from_numpy(frames[r["frame"]]) for r in got])
    with torch.no_grad():
        expected = model.forward_sequence(clip.unsqueeze(0))[0]  # (T, C)
    assert torch.allclose(torch.tensor([r["logits"] for r in got]), expected, atol=1e-4)
    assert [r["event"] for r in records if r["type"] == "event"][-1] == "stream_ended"
    assert records[-1]["type"] == "stats"


def test_run_two_sources_default_sink_is_json_lines_on_stdout(tmp_path, model_path):
    write_video(tmp_path / "a.mp4", 20, seed=1)
    write_video(tmp_path / "b.mp4", 20, seed=2)
    done = dcrn("run", "--source", str(tmp_path / "a.mp4"), "--source", str(tmp_path / "b.mp4"), "--model",
                str(model_path), "--no-pace", "--max-frames", "10")  # fmt: skip
    assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in done.stdout.splitlines()]
    for stream in ("a", "b"):
        preds = [r for r in records if r["type"] == "prediction" and r["stream"] == stream]
        assert len(preds) == 10
        assert {"frame", "pts", "wall", "label", "score", "top", "latency_ms"} <= set(preds[0])
        assert preds[0]["label"] in LABELS


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


BAD_INPUT = [
    "missing file",
    "unreadable file",
    "camera that does not exist",
    "malformed URL",
    "unreachable host",
    "unknown backend",
    "cuda without a GPU",
    "sink that cannot be written",
    "sink that fills up while running",
    "missing model",
]


def bad_input_args(case: str, tmp_path: Path, model_path: Path) -> tuple[list[str], str]:
    """``dcrn run`` arguments for one kind of bad input, and a phrase its error line must hold."""
    if case == "cuda without a GPU" and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    write_video(tmp_path / "ok.mp4", 5, seed=1)
    (tmp_path / "junk.mp4").write_bytes(b"this is not a video\n" * 50)
    (tmp_path / "blocker").write_text("a file, not a folder")
    source, extra, expect = str(tmp_path / "ok.mp4"), [], ""
    if case == "missing file":
        source, expect = str(tmp_path / "nope.mp4"), "not found"
    elif case == "unreadable file":
        source, expect = str(tmp_path / "junk.mp4"), "not a readable video"
    elif case == "camera that does not exist":
        source, expect = "9", "camera 9"
    elif case == "malformed URL":
        source, expect = "rtsp://[::1/stream", "bad source URI"
    elif case == "unreachable host":
        source, expect = f"rtsp://127.0.0.1:{_closed_port()}/cam", "127.0.0.1"
    elif case == "unknown backend":
        extra, expect = ["--backend", "tflite"], "unknown backend 'tflite'"
    elif case == "cuda without a GPU":
        extra, expect = ["--device", "cuda"], "no CUDA GPU"
    elif case == "sink that cannot be written":
        extra, expect = ["--sink", f"jsonl:{tmp_path / 'blocker' / 'out.jsonl'}"], "cannot write"
    elif case == "sink that fills up while running":
        if not Path("/dev/full").exists():
            pytest.skip("needs /dev/full")
        extra, expect = ["--sink", "jsonl:/dev/full"], "write failed: No space left on device"
    elif case == "missing model":
        extra, expect = ["--model", str(tmp_path / "nope.pt")], "no checkpoint file"
    args = ["run", "--source", source, "--model", str(model_path), "--timeout", "3", "--max-frames", "3", *extra]
    return args, expect


@pytest.mark.parametrize("case", BAD_INPUT)
def test_bad_input_is_one_clear_error_line_and_exit_2(tmp_path, model_path, case, capsys):
    from dcrn.app.cli import main

    args, expect = bad_input_args(case, tmp_path, model_path)
    start = time.monotonic()
    code = main(["--log-level", "ERROR", *args])
    assert time.monotonic() - start < 20
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    lines = [line for line in err.strip().splitlines() if line.startswith("dcrn run: error: ")]
    assert len(lines) == 1 and expect in lines[0], err
    assert not [t for t in threading.enumerate() if t.name.startswith(("capture-", "dcrn-pipeline"))]


@pytest.mark.parametrize("case", ["unreachable host", "sink that cannot be written"])
def test_bad_input_as_a_process_prints_exactly_one_line(tmp_path, model_path, case):
    args, expect = bad_input_args(case, tmp_path, model_path)
    done = dcrn(*args, timeout=60)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dcrn run: error: ") and expect in lines[0], done.stderr


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_leaves_complete_lines_with_every_event_and_exits_0(tmp_path, model_path, sig):
    out = tmp_path / "out.jsonl"
    live = Live(
        "run", "--source", "synthetic:?fps=60&width=96&height=72", "--model", str(model_path),
        "--sink", f"jsonl:{out}", "--sink", "stdout",
        # every change of the top class is an event: many events to lose if the stop were careless
        "--smoothing", "none", "--threshold", "0", "--threshold-off", "0", "--min-frames", "1",
        "--background", "nothing",
    )  # fmt: skip
    try:
        live.wait_for(lambda lines: sum(r["type"] == "prediction" for r in lines) >= 30, 60, "predictions")
        before = [r for r in live.lines if r["type"] == "event"]
    finally:
        code = live.finish(sig)
    assert code == 0, "".join(live.stderr)
    text = out.read_text()
    assert text.endswith("\n")
    records = [json.loads(line) for line in text.splitlines()]  # every line is a whole JSON object
    events = [r for r in records if r["type"] == "event"]
    assert before and all(e in events for e in before)
    assert events[0]["event"] == "action_started"
    assert sum(e["event"] == "action_started" for e in events) == sum(e["event"] == "action_ended" for e in events)
    assert records[-1]["type"] == "stats"
    assert sum(r["type"] == "prediction" for r in records) >= 30


@pytest.mark.rtsp
def test_run_survives_the_rtsp_server_being_killed_and_restarted(rtsp_server, tmp_path, model_path):
    out = tmp_path / "out.jsonl"
    live = Live("run", "--source", rtsp_server.url, "--model", str(model_path), "--timeout", "3",
                "--sink", "stdout", "--sink", f"jsonl:{out}", "--stats-interval", "1")  # fmt: skip

    def count(kind: str, value: str):
        return lambda lines: sum(r.get(kind) == value for r in lines)

    try:
        live.wait_for(lambda lines: count("type", "prediction")(lines) >= 10, 60, "first predictions")
        for round_ in range(1, 4):
            rtsp_server.kill()
            live.wait_for(lambda lines, n=round_: count("event", "stream_lost")(lines) >= n, 30, "stream_lost")
            time.sleep(0.5)
            rtsp_server.restart()
            live.wait_for(lambda lines, n=round_: count("event", "stream_restored")(lines) >= n, 45, "stream_restored")
            restored_at = max(i for i, r in enumerate(live.lines) if r.get("event") == "stream_restored")
            live.wait_for(
                lambda lines, i=restored_at: sum(r["type"] == "prediction" for r in lines[i:]) >= 10,
                30,
                "predictions after the restore",
            )
            assert live.proc.poll() is None
    finally:
        code = live.finish(signal.SIGTERM)
    assert code == 0, "".join(live.stderr)
    records = read_jsonl(out)
    events = [r["event"] for r in records if r["type"] == "event" and r["event"].startswith("stream_")]
    assert events == ["stream_lost", "stream_restored"] * 3
    for index, record in enumerate(records):  # a restored stream's frames come after its stream_restored
        if record.get("event") == "stream_restored":
            assert not [r for r in records[:index] if r["type"] == "prediction" and r["frame"] >= record["frame"]]


@pytest.mark.rtsp
def test_credentials_in_the_url_never_reach_records_or_logs(tmp_path, model_path):
    from tests.fixtures.rtsp import RtspServer, unavailable_reason

    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    out = tmp_path / "out.jsonl"
    with RtspServer(user="admin", password="hunter2") as server:
        done = dcrn("--log-level", "DEBUG", "run", "--source", server.url, "--model", str(model_path),
                    "--max-frames", "5", "--timeout", "5", "--sink", f"jsonl:{out}", timeout=90)  # fmt: skip
        refused = dcrn("run", "--source", server.url.replace("hunter2", "wrong-hunter2"), "--model",
                       str(model_path), "--timeout", "5", timeout=90)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert len(read_jsonl(out)) >= 5
    assert refused.returncode == 2 and refused.stderr.startswith("dcrn run: error: ")
    for text in (out.read_text(), done.stdout, done.stderr, refused.stderr):
        assert "hunter2" not in text and "admin:" not in text


def test_run_without_backend_picks_the_cpu_rules_backend_for_fight_cctv_and_says_so(tmp_path):
    """The default ``--backend auto`` on a machine without a GPU: OpenVINO bf16 where the CPU has native bf16,
    else ONNX Runtime; the first log line and every stats record say which, why and in what precision."""
    from dcrn.engine.backends.choice import choose_backend
    from dcrn.models import shipped_models

    if "fight-cctv" not in shipped_models():
        pytest.skip("the fight-cctv model is not installed")
    expected = choose_backend()  # what this machine's rule gives
    if expected.device != "cpu":
        pytest.skip(f"this machine has a GPU: auto picks {expected.name} on {expected.device}")
    assert expected.name in ("openvino", "onnxruntime")
    out = tmp_path / "out.jsonl"
    result = dcrn(
        "run", "--model", "fight-cctv", "--source", "synthetic:?fps=30", "--max-frames", "3",
        "--sink", f"jsonl:{out}", "--cache-dir", str(tmp_path / "cache"),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    first = result.stderr.splitlines()[0]
    assert f"backend {expected.name} ({expected.precision}) on cpu: auto: no CUDA GPU" in first, result.stderr
    stats = [r for r in read_jsonl(out) if r["type"] == "stats"]
    assert stats and all(r["backend"] == expected.name and r["device"] == "cpu" for r in stats)
    assert all(r["precision"] == expected.precision for r in stats)
    assert stats[-1]["backend_reason"] == expected.reason


def test_run_int8_steps_the_quantised_graph_and_says_so(tmp_path):
    from tests.fixtures.data import tiny_synthetic_set

    clips = tiny_synthetic_set(tmp_path / "clips", clips_per_class=1, clip_frames=6, stream_s=0)
    write_model(tmp_path / "m.pt")
    out = tmp_path / "out.jsonl"
    result = dcrn(
        "run", "--model", str(tmp_path / "m.pt"), "--source", "synthetic:?fps=30", "--max-frames", "3",
        "--int8", "--calibration", str(clips), "--sink", f"jsonl:{out}", "--cache-dir", str(tmp_path / "cache"),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "backend onnxruntime (INT8 encoder) on cpu" in result.stderr
    stats = [r for r in read_jsonl(out) if r["type"] == "stats"]
    assert stats and all(r["backend"] == "onnxruntime" and r["int8"] for r in stats)
    assert list((tmp_path / "cache" / "onnx").glob("*-int8-*.onnx"))


def test_stall_timeout_must_be_positive_and_is_listed_in_help(model_path):
    refused = dcrn("run", "--source", "synthetic:", "--model", str(model_path), "--stall-timeout", "0")
    assert refused.returncode == 2 and "argument --stall-timeout: expected seconds > 0" in refused.stderr
    assert "--stall-timeout" in dcrn("run", "--help").stdout
