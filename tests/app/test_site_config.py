"""The site config (``dcrn run --config``, ``dcrn config check``), regions of interest and ``--metrics``."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest

from dcrn.app import cli
from dcrn.app.site_config import load_site_config
from dcrn.app.site_run import apply_site_defaults, site_groups

ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}

GOOD = """\
cameras:
  - name: left
    source: "synthetic:"
    roi: [0, 0, 0.5, 1]
    thresholds: {{blink: 0.7}}
  - name: right
    source: "synthetic:"
    evidence: off
sinks: ["jsonl:{out}"]
backend: torch
device: cpu
threads: 1
"""


def dcrn(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "dcrn.app", *args], capture_output=True, text=True, timeout=timeout, env=ENV
    )


def write(tmp_path: Path, text: str, name: str = "site.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def check(capsys, path: Path) -> tuple[int, str]:
    code = cli.main(["config", "check", str(path)])
    return code, capsys.readouterr().err


def test_good_file_runs_every_camera_into_the_files_sink(tmp_path, model):
    out = tmp_path / "records.jsonl"
    site = write(tmp_path, GOOD.format(out=out).replace("cameras:", f"model: {model}\ncameras:"))
    if model != "default":  # a tiny model has other labels
        site.write_text(site.read_text().replace("{blink: 0.7}", "{}"))
    done = dcrn("run", "--config", str(site), "--duration", "3", "--stats-interval", "1")
    assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in out.read_text().splitlines()]
    streams = {r["stream"] for r in records if r["type"] == "prediction"}
    assert streams == {"left", "right"}
    assert any(r["type"] == "stats" and r["stream"] == "left" for r in records)


def test_config_check_prints_the_summary(tmp_path, capsys):
    site = write(tmp_path, GOOD.format(out=tmp_path / "r.jsonl"))
    code = cli.main(["config", "check", str(site)])
    text = capsys.readouterr().out
    assert code == 0
    assert "left: synthetic:" in text and "roi [0.0, 0.0, 0.5, 1.0]" in text and text.strip().endswith("ok")


BAD = {
    "unknown top key": ("cameras: []\nzones: 3\n", 2, "zones: unknown key"),
    "unknown camera key": ('cameras:\n  - name: a\n    source: "synthetic:"\n    colour: red\n', 4, "colour"),
    "list not mapping": ("- name: a\n", 1, "expected a mapping"),
    "nan threshold": ('cameras:\n  - name: a\n    source: "synthetic:"\n    thresholds: {x: .nan}\n', 4, "finite"),
    "negative threads": ('cameras:\n  - {name: a, source: "synthetic:"}\nthreads: -1\n', 3, "threads"),
    "roi outside": ('cameras:\n  - name: a\n    source: "synthetic:"\n    roi: [0.6, 0, 0.6, 1]\n', 4, "roi"),
    "roi short": ('cameras:\n  - name: a\n    source: "synthetic:"\n    roi: [0, 0, 1]\n', 4, "roi"),
    "duplicate camera": (
        'cameras:\n  - {name: a, source: "synthetic:"}\n  - {name: a, source: "synthetic:"}\n',
        3,
        "already the name",
    ),
    "unknown sink": ('cameras:\n  - {name: a, source: "synthetic:"}\nsinks: [stdout, "kafka:x"]\n', 3, "kafka"),
    "negative pre-roll": ('cameras:\n  - {name: a, source: "synthetic:"}\nevidence: {pre_s: -1}\n', 3, "pre_s"),
    "missing file source": ("cameras:\n  - {name: a, source: /no/such.mp4}\n", 2, "no such file"),
    "missing model file": ('cameras:\n  - {name: a, source: "synthetic:", model: /no/m.pt}\n', 2, "checkpoint"),
    "evidence on as text": ('cameras:\n  - {name: a, source: "synthetic:", evidence: maybe}\n', 2, "on or off"),
    "no people": ('cameras:\n  - {name: a, source: "synthetic:", people: 0}\n', 2, "people"),
    "people as text": ('cameras:\n  - {name: a, source: "synthetic:"}\npeople: many\n', 3, "people"),
    "people in thousands": ('cameras:\n  - {name: a, source: "synthetic:"}\npeople: 1000\n', 3, "people"),
    "unknown backend": ('cameras:\n  - {name: a, source: "synthetic:"}\nbackend: cuda\n', 3, "backend"),
    "no cameras": ("sinks: [stdout]\n", 1, "cameras: missing"),
    "not yaml": ("cameras: [a\n  b: {\n", None, "not valid YAML"),
    "key twice": ("cameras: []\ncameras: []\n", 2, "given twice"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_file_is_one_line_naming_key_and_line(tmp_path, capsys, case):
    text, line, needle = BAD[case]
    code, err = check(capsys, write(tmp_path, text))
    assert code == 2
    assert err.count("\n") == 1, err
    assert needle in err
    if line is not None:
        assert f"line {line}:" in err


def test_missing_and_binary_files_are_one_line(tmp_path, capsys):
    code, err = check(capsys, tmp_path / "nope.yaml")
    assert (code, err.count("\n")) == (2, 1) and "no such file" in err
    binary = tmp_path / "bin.yaml"
    binary.write_bytes(b"\xff\xfe\x00\x01")
    code, err = check(capsys, binary)
    assert (code, err.count("\n")) == (2, 1) and "not a text file" in err


def test_run_with_a_bad_config_exits_2_before_starting(tmp_path):
    site = write(tmp_path, 'cameras:\n  - {name: a, source: "synthetic:"}\nthreads: .inf\n')
    done = dcrn("run", "--config", str(site))
    assert done.returncode == 2
    assert re.fullmatch(r"dcrn run: error: .*line 3: threads: expected a finite number.*\n", done.stderr)


def test_flags_win_over_the_file(tmp_path):
    site_path = write(tmp_path, GOOD.format(out=tmp_path / "r.jsonl"))
    argv = ["run", "--config", str(site_path), "--backend", "onnxruntime", "--sink", "stdout"]
    args = cli.build_parser().parse_args([*argv, "--class-threshold", "blink=0.9", "--evidence-pre", "1"])
    site = load_site_config(site_path)
    args.source_given = bool(args.source)
    apply_site_defaults(args, site)
    assert (args.backend, args.sink, args.device, args.threads, args.model) == (
        "onnxruntime",
        ["stdout"],
        "cpu",
        1,
        "default",
    )
    assert args.source == ["synthetic:", "synthetic:"] and args.evidence_pre == 1

    from dcrn.engine.run.config import PipelineConfig

    configs = site_groups(PipelineConfig(sources=args.source), site, args, {"blink": 0.9})
    assert len(configs) == 2  # left and right differ in evidence on / off
    assert all(c.postprocess.class_thresholds == {"blink": 0.9} for c in configs)
    assert configs[0].names == ["left"] and configs[0].rois[0].w == 0.5


def test_people_followed_come_from_the_camera_then_the_file_and_the_flag_wins(tmp_path, capsys):
    text = GOOD.replace("    evidence: off\n", "    evidence: off\n    people: 3\n") + "people: 2\n"
    site_path = write(tmp_path, text.format(out=tmp_path / "r.jsonl"))
    from dcrn.engine.run.config import PipelineConfig

    for flag, expected in (([], [2, 3]), (["--people", "4"], [4, 4])):
        args = cli.build_parser().parse_args(["run", "--config", str(site_path), *flag])
        args.source_given = False
        site = load_site_config(site_path)
        apply_site_defaults(args, site)
        configs = site_groups(PipelineConfig(sources=args.source, people=args.people), site, args, {})
        assert [c.people for c in configs] == expected
    capsys.readouterr()
    assert cli.main(["config", "check", str(site_path)]) == 0
    assert "right: synthetic:, model default, up to 3 people" in capsys.readouterr().out


def test_roi_box_takes_fractions_and_clips_pixels():
    from dcrn.engine.frames import Roi

    assert Roi(0.5, 0.0, 0.5, 1.0).box(48, 64) == (0, 48, 32, 64)
    assert Roi(10, 5, 500, 20, fractions=False).box(48, 64) == (5, 25, 10, 64)


def test_capture_gives_the_model_the_region_resized():
    from dcrn.engine.frames import Roi
    from dcrn.engine.ring.frame_ring import FrameRing
    from dcrn.engine.sources.capture import Capture
    from dcrn.engine.sources.factory import open_source

    source = open_source("synthetic:")
    try:
        image = np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)
        capture = Capture(source, FrameRing(2, "cpu"), on_event=lambda e: None, resize_to=16, roi=Roi(0, 0, 0.5, 0.5))
        small = capture._small(image)
    finally:
        source.close()
    expected = cv2.resize(np.ascontiguousarray(image[:24, :32]), (16, 16), interpolation=cv2.INTER_AREA)
    assert small.shape == (16, 16, 3) and np.array_equal(small, expected)


def test_roi_changes_what_the_model_sees(tmp_path):
    from dcrn.engine.frames import Roi
    from dcrn.engine.pipeline import Pipeline, PipelineConfig
    from dcrn.models import DCRN, DCRNConfig, save_checkpoint

    model = tmp_path / "m.pt"
    config = DCRNConfig(num_classes=2, labels=("a", "b"), encoder_widths=(8, 16), hidden_size=16, input_size=32)
    save_checkpoint(model, DCRN(config).eval())
    video = tmp_path / "v.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 25.0, (64, 48))
    for t in range(12):
        image = np.full((48, 64, 3), 40, np.uint8)
        cv2.circle(image, (48, (3 * t) % 48), 8, (200, 90, 30), -1)  # moves in the right half only
        writer.write(image)
    writer.release()

    def logits(roi: Roi | None) -> list[list[float]]:
        seen: list[list[float]] = []
        cfg = PipelineConfig(sources=[str(video)], model=str(model), pace=False, include_logits=True, rois=[roi])
        Pipeline(cfg, on_record=lambda r: seen.append(r["logits"]) if r["type"] == "prediction" else None).run()
        return seen

    whole, everything, left = logits(None), logits(Roi(0, 0, 1, 1)), logits(Roi(0, 0, 0.5, 1))
    assert len(whole) == 12
    assert np.allclose(whole, everything)
    assert not np.allclose(whole, left, atol=1e-4)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as answer:
        return answer.read().decode()


def test_metrics_are_served_while_running(tmp_path, model):
    port = free_port()
    cmd = [sys.executable, "-m", "dcrn.app", "run", "--source", "synthetic:", "--model", model, "--backend", "torch"]
    cmd += ["--device", "cpu", "--duration", "20", "--stats-interval", "1", "--metrics", f"127.0.0.1:{port}"]
    cmd += ["--sink", f"jsonl:{tmp_path / 'r.jsonl'}"]
    process = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=ENV)
    text, deadline = "", time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            time.sleep(0.5)
            try:
                text = scrape(port)
            except OSError:
                continue
            fps = re.search(r'^dcrn_stream_fps\{stream="synthetic"\} (\S+)', text, re.M)
            if fps and float(fps.group(1)) > 0 and "dcrn_events_total{" in text:
                break
    finally:
        process.terminate()
        process.wait(30)
    for name in ("dcrn_stream_fps", "dcrn_stream_dropped_frames", "dcrn_stream_up", "dcrn_backend_info"):
        assert f"{name}{{" in text, name
    assert "dcrn_prediction_latency_seconds_bucket{" in text
    assert float(re.search(r'^dcrn_stream_fps\{stream="synthetic"\} (\S+)', text, re.M).group(1)) > 0
    events = re.findall(r'^dcrn_events_total\{event="action_started",[^}]*\} (\S+)', text, re.M)
    assert events and sum(float(n) for n in events) >= 1
    assert process.returncode == 0, process.stderr.read()


@pytest.mark.parametrize("value", ["70000", "host:", "bad host:9100", "nan"])
def test_bad_metrics_address_is_one_line(value):
    done = dcrn("run", "--source", "synthetic:", "--metrics", value)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "--metrics" in done.stderr
