"""The pipeline end to end on real files and synthetic streams: streaming equals offline, per-stream state."""

from __future__ import annotations

import threading
import time

import cv2
import numpy as np
import pytest
import torch

from dcrn.engine.errors import SourceNotFound
from dcrn.engine.pipeline import Pipeline, PipelineConfig
from dcrn.engine.postprocess import PostprocessConfig
from dcrn.engine.preprocess import Preprocessor
from dcrn.engine.sinks.files import JsonlSink
from dcrn.models import DCRN
from tests.fixtures.models import LABELS, write_model


def write_video(path, frames: int, *, seed: int, fps: float = 100.0, size=(48, 64)) -> None:
    """A small mp4 of smooth moving blobs (codec-friendly), different per seed."""
    height, width = size
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    assert writer.isOpened()
    rng = np.random.default_rng(seed)
    colour = rng.integers(0, 255, 3)
    for t in range(frames):
        image = np.full((height, width, 3), rng.integers(0, 60), np.uint8)
        x, y = (seed * 7 + 3 * t) % width, (seed * 5 + 2 * t) % height
        cv2.circle(image, (x, y), 10, tuple(int(c) for c in colour), -1)
        writer.write(image)
    writer.release()


def decode(path) -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, bgr = capture.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    capture.release()
    return frames


def offline_logits(model: DCRN, frames: list[np.ndarray], device: str = "cpu") -> torch.Tensor:
    """forward_sequence over decoded frames, preprocessed the one way the engine does -> (T, C) on the CPU.

    ``device="cuda"``: the frames start on the GPU, as the CUDA FrameRing hands them over.
    """
    images = [torch.from_numpy(f).to(device) for f in frames]
    clip = Preprocessor.from_config(model.config, device=device)(images)  # (T, 3, S, S)
    with torch.no_grad():
        return model.to(device).forward_sequence(clip.unsqueeze(0))[0].cpu()


def run(config: PipelineConfig, **kwargs) -> tuple[Pipeline, list[dict]]:
    records: list[dict] = []
    pipeline = Pipeline(config, on_record=records.append, **kwargs)
    pipeline.run()
    return pipeline, records


def predictions(records: list[dict], stream: str) -> list[dict]:
    return [r for r in records if r["type"] == "prediction" and r["stream"] == stream]


@pytest.mark.parametrize(
    ("backend", "cell", "pace"), [("torch", "gru", True), ("torch", "lstm", False), ("onnxruntime", "lstm", False)]
)
def test_streaming_logits_equal_forward_sequence_on_a_file(tmp_path, backend, cell, pace):
    model = write_model(tmp_path / "m.pt", cell)
    write_video(tmp_path / "a.mp4", 30, seed=1)
    config = PipelineConfig(
        sources=[str(tmp_path / "a.mp4")],
        model=str(tmp_path / "m.pt"),
        backend=backend,
        pace=pace,
        include_logits=True,
        cache_dir=str(tmp_path / "cache"),
        threads=1,
    )
    _, records = run(config)
    got = predictions(records, "a")
    seqs = [r["frame"] for r in got]
    # Paced (100 fps) a busy machine may drop a few frames, newest first; unpaced every frame is stepped.
    assert len(got) >= 10 if pace else seqs == list(range(30))
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    frames = decode(tmp_path / "a.mp4")
    expected = offline_logits(model, [frames[s] for s in seqs])  # the frames that were stepped, in order
    streamed = torch.tensor([r["logits"] for r in got])
    assert torch.allclose(streamed, expected, atol=1e-4), (streamed - expected).abs().max()
    ended = [r for r in records if r["type"] == "event" and r["event"] == "stream_ended"]
    assert len(ended) == 1 and records.index(ended[0]) > records.index(got[-1])


def test_a_file_read_without_pacing_steps_every_frame_exactly_once(tmp_path):
    model = write_model(tmp_path / "m.pt", "convgru")
    write_video(tmp_path / "a.mp4", 40, seed=5)
    config = PipelineConfig(
        sources=[str(tmp_path / "a.mp4")], model=str(tmp_path / "m.pt"), pace=False, include_logits=True, threads=1
    )
    pipeline, records = run(config)
    got = predictions(records, "a")
    assert [r["frame"] for r in got] == list(range(40))
    assert pipeline.stats["a"].record()["dropped"] == 0
    expected = offline_logits(model, decode(tmp_path / "a.mp4"))
    assert torch.allclose(torch.tensor([r["logits"] for r in got]), expected, atol=1e-4)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_streaming_on_cuda_matches_forward_sequence(tmp_path, dtype):
    model = write_model(tmp_path / "m.pt", "lstm")
    write_video(tmp_path / "a.mp4", 30, seed=1)
    config = PipelineConfig(
        sources=[str(tmp_path / "a.mp4")],
        model=str(tmp_path / "m.pt"),
        device="cuda",
        dtype=dtype,
        pace=False,
        include_logits=True,
    )
    pipeline, records = run(config)
    assert pipeline.backend.use_graph
    got = predictions(records, "a")
    assert [r["frame"] for r in got] == list(range(30))
    expected = offline_logits(model, decode(tmp_path / "a.mp4"), device="cuda")
    atol = 1e-3 if dtype == "float32" else 5e-2
    assert torch.allclose(torch.tensor([r["logits"] for r in got]), expected, atol=atol)


def test_two_streams_are_batched_and_each_keeps_its_own_state(tmp_path):
    model = write_model(tmp_path / "m.pt")
    write_video(tmp_path / "a.mp4", 40, seed=1)
    write_video(tmp_path / "b.mp4", 40, seed=2, size=(60, 80))
    config = PipelineConfig(
        sources=[str(tmp_path / "a.mp4"), str(tmp_path / "b.mp4")],
        model=str(tmp_path / "m.pt"),
        pace=False,
        include_logits=True,
        threads=1,
    )
    pipeline, records = run(config)
    assert pipeline.slots.batch_sizes[2] >= 5  # frames that arrived together went through one step
    for name in ("a", "b"):
        got = predictions(records, name)
        assert [r["frame"] for r in got] == list(range(40))
        frames = decode(tmp_path / f"{name}.mp4")
        expected = offline_logits(model, [frames[r["frame"]] for r in got])
        assert torch.allclose(torch.tensor([r["logits"] for r in got]), expected, atol=1e-4)


def test_a_looping_file_restarts_its_state_at_every_loop(tmp_path):
    write_model(tmp_path / "m.pt")
    write_video(tmp_path / "a.mp4", 10, seed=3)
    config = PipelineConfig(
        sources=[str(tmp_path / "a.mp4")],
        model=str(tmp_path / "m.pt"),
        loop=True,
        max_frames=30,
        include_logits=True,
        ring_capacity=64,  # keep every frame: the loops must line up frame for frame
        threads=1,
    )
    pipeline, records = run(config)
    got = predictions(records, "a")
    assert len(got) == 30 and pipeline.stats["a"].frames == 30
    first, second = torch.tensor([r["logits"] for r in got[:10]]), torch.tensor([r["logits"] for r in got[10:20]])
    assert torch.allclose(first, second, atol=1e-5)
    assert not [r for r in records if r.get("event") == "stream_ended"]  # it was stopped, it did not end


def test_synthetic_stream_with_stats_records_and_duration_limit(tmp_path):
    write_model(tmp_path / "m.pt")
    config = PipelineConfig(
        sources=["synthetic:?fps=60&width=64&height=48"],
        model=str(tmp_path / "m.pt"),
        duration_s=1.0,
        stats_interval_s=0.3,
        threads=1,
    )
    start = time.monotonic()
    _, records = run(config)
    assert time.monotonic() - start < 8
    got = predictions(records, "synthetic")
    assert 10 <= len(got) <= 80
    assert all(isinstance(r["latency_ms"], float) and r["latency_ms"] >= 0 for r in got)
    stats = [r for r in records if r["type"] == "stats"]
    assert len(stats) >= 3 and stats[-1]["frames"] == len(got)
    assert {"capture", "preprocess", "step", "sink"} == set(stats[-1]["stages"])


@pytest.mark.parametrize("backend", ["openvino", "onnxruntime", "torch"])
def test_stats_records_say_which_backend_ran_and_in_what_precision(tmp_path, backend):
    write_model(tmp_path / "m.pt")
    config = PipelineConfig(
        sources=["synthetic:?fps=60&width=64&height=48"],
        model=str(tmp_path / "m.pt"),
        backend=backend,
        max_frames=6,
        stats_interval_s=0.01,
        cache_dir=str(tmp_path / "cache"),
        threads=1,
    )
    pipeline, records = run(config)
    stats = [r for r in records if r["type"] == "stats"]
    assert stats and all(r["backend"] == backend and r["device"] == "cpu" for r in stats)
    assert {r["precision"] for r in stats} == {pipeline.backend.precision}
    assert pipeline.backend.precision in ("fp32", "bf16")  # bf16: openvino on a CPU with native bf16


def test_stop_from_another_thread_ends_the_run_and_closes_sinks(tmp_path):
    write_model(tmp_path / "m.pt")
    sink = JsonlSink(tmp_path / "out.jsonl")
    seen: list[tuple[tuple[int, ...], str]] = []
    config = PipelineConfig(sources=["synthetic:?fps=30&width=64&height=48"], model=str(tmp_path / "m.pt"), threads=1)
    pipeline = Pipeline(config, [sink], on_frame=lambda frame, pred: seen.append((frame.image.shape, pred["label"])))
    assert pipeline.labels == LABELS  # known before run: the window sets up its bars from it
    timer = threading.Timer(0.8, pipeline.stop)
    timer.start()
    start = time.monotonic()
    pipeline.run()
    timer.join()
    assert time.monotonic() - start < 5
    assert seen and seen[0][0] == (48, 64, 3) and seen[0][1] in LABELS
    assert sink._handle is None  # closed
    lines = (tmp_path / "out.jsonl").read_text().splitlines()
    assert len(lines) >= len(seen)


def test_hysteresis_events_reach_the_records(tmp_path):
    write_model(tmp_path / "m.pt")
    write_video(tmp_path / "a.mp4", 20, seed=4)
    # Thresholds at 0 and no background: the first frames start an action, the end of the file ends it.
    post = PostprocessConfig(threshold_on=0.0, threshold_off=0.0, min_frames_on=1, background=())
    config = PipelineConfig(sources=[str(tmp_path / "a.mp4")], model=str(tmp_path / "m.pt"), postprocess=post)
    _, records = run(config)
    events = [r["event"] for r in records if r["type"] == "event"]
    assert events[0] == "action_started" and events[-2:] == ["action_ended", "stream_ended"]
    assert events.count("action_started") == events.count("action_ended")


def test_a_missing_source_fails_run_and_still_closes_the_sinks(tmp_path):
    write_model(tmp_path / "m.pt")
    write_video(tmp_path / "a.mp4", 5, seed=1)
    sink = JsonlSink(tmp_path / "out.jsonl")
    config = PipelineConfig(sources=[str(tmp_path / "a.mp4"), str(tmp_path / "nope.mp4")], model=str(tmp_path / "m.pt"))
    pipeline = Pipeline(config, [sink])
    with pytest.raises(SourceNotFound):
        pipeline.run()
    assert sink._handle is None
    assert not [t for t in threading.enumerate() if t.name.startswith("capture-")]
