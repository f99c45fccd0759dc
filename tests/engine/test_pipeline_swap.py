"""Pipeline.swap_model: a running stream switches to another checkpoint between two frames."""

from __future__ import annotations

import threading
import time

import pytest

from dcrn.engine.pipeline import Pipeline, PipelineConfig
from dcrn.models import DCRN, DCRNConfig, save_checkpoint
from dcrn.models.errors import BadCheckpoint

SOURCE = "synthetic:?fps=30&width=64&height=48"


def write_model(path, labels: tuple[str, ...], cell: str = "gru", input_size: int = 32) -> str:
    config = DCRNConfig(
        num_classes=len(labels), labels=labels, encoder_widths=(8, 16), cell=cell, hidden_size=16, input_size=input_size
    )
    save_checkpoint(path, DCRN(config).eval())
    return str(path)


def wait_for(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_swap_model_switches_labels_without_reopening_the_source(tmp_path):
    first = write_model(tmp_path / "a.pt", ("still", "wave"))
    # another state shape and input size
    second = write_model(tmp_path / "b.pt", ("nothing", "knock", "door"), cell="lstm", input_size=48)
    records: list[dict] = []
    frames: list[int] = []
    config = PipelineConfig(sources=[SOURCE], model=first, threads=1, stats_interval_s=0)
    pipeline = Pipeline(config, on_record=records.append, on_frame=lambda frame, _p: frames.append(frame.seq))
    thread = threading.Thread(target=pipeline.run)
    thread.start()
    try:
        wait_for(lambda: len(frames) >= 5)
        pipeline.swap_model(second)
        wait_for(lambda: any(r.get("event") == "model_changed" for r in records))
        wait_for(lambda: sum(r["type"] == "prediction" for r in records[-5:]) >= 5)
    finally:
        pipeline.stop()
        thread.join(5.0)
    assert not thread.is_alive()
    changed = next(i for i, r in enumerate(records) if r.get("event") == "model_changed")
    event = records[changed]
    assert event["model"] == second and event["labels"] == ["nothing", "knock", "door"]
    before = [r for r in records[:changed] if r["type"] == "prediction"]
    after = [r for r in records[changed:] if r["type"] == "prediction"]
    assert before and after
    assert {r["label"] for r in before} <= {"still", "wave"}
    assert {r["label"] for r in after} <= {"nothing", "knock", "door"}
    assert after[0]["frame"] == event["frame"] + 1, "the next frame of the same stream: nothing reopened"
    assert not any(r.get("event") in ("stream_ended", "stream_lost") for r in records[:-1])
    assert pipeline.labels == ("nothing", "knock", "door")
    assert pipeline.streams[0].capture.resize_to == 48, "capture threads resize for the new model"


def test_a_bad_checkpoint_fails_the_swap_and_the_old_model_runs_on(tmp_path):
    first = write_model(tmp_path / "a.pt", ("still", "wave"))
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not a checkpoint")
    records: list[dict] = []
    pipeline = Pipeline(PipelineConfig(sources=[SOURCE], model=first, threads=1), on_record=records.append)
    thread = threading.Thread(target=pipeline.run)
    thread.start()
    try:
        wait_for(lambda: any(r["type"] == "prediction" for r in records))
        with pytest.raises(BadCheckpoint):
            pipeline.swap_model(str(broken))
        count = len(records)
        wait_for(lambda: len(records) > count + 3)
    finally:
        pipeline.stop()
        thread.join(5.0)
    assert not any(r.get("event") == "model_changed" for r in records)
    assert {r["label"] for r in records if r["type"] == "prediction"} <= {"still", "wave"}


def test_swap_model_before_run_is_refused(tmp_path):
    pipeline = Pipeline(PipelineConfig(sources=[SOURCE], model=write_model(tmp_path / "a.pt", ("a", "b"))))
    with pytest.raises(RuntimeError):
        pipeline.swap_model(str(tmp_path / "a.pt"))
