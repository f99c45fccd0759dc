"""Models taught on keypoints, end to end on real frames: teach keeps the kind that separates the labels,
the live front end computes exactly what teaching computed, and nobody in view is the background class.

Real footage from ``../shared/data``: GMDCSA24 clips of a person in a room. The clips with nobody in them are
composed from real footage: the right-hand 220 px of GMDCSA24 ``Subject 1/Fall/13.mp4`` (wall and door),
which the man does not reach in its first seconds (tests/engine/test_keypoints.py checks that no body is
found there), panned slowly so the picture is not frozen.
"""

from __future__ import annotations

import json
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch

from dcrn.engine.keypoints.front import ClipReader, FrontEnd, FrontState, clip_inputs
from dcrn.engine.pipeline import Pipeline, PipelineConfig
from dcrn.models.checkpoint import load_checkpoint, save_checkpoint
from dcrn.models.dcrn import DCRN
from dcrn.models.errors import DataError
from dcrn.models.frame_vector import FLOW_SIZE, flow_dim
from dcrn.models.teach import TeachOptions, features_config, teach
from dcrn.models.teach_features import KeypointCache, frame_features
from dcrn.models.teach_fit import WARMUP_FRAMES
from dcrn.models.video_io import read_video, resize_frames, write_video

FRAMES = 24
PEOPLE = ["gmdcsa24/Subject 1/ADL/10.mp4", "gmdcsa24/Subject 3/ADL/07.mp4", "gmdcsa24/Subject 2/ADL/23.mp4"]
ROOM = "gmdcsa24/Subject 1/Fall/13.mp4"


def empty_room(shared_dir, offset: int) -> np.ndarray:
    """(FRAMES, 480, 200, 3): the part of the room the man does not reach, panning ``offset`` px right."""
    frames, _ = read_video(shared_dir / "data" / ROOM, None, FRAMES)
    width = frames.shape[2]
    shifts = [(t + offset) % 20 for t in range(len(frames))]
    return np.stack([f[:, width - 220 + s : width - 20 + s] for s, f in zip(shifts, frames, strict=True)])


@pytest.fixture(scope="module")
def data(shared_dir, tmp_path_factory):
    """3 clips of someone (3 subjects) and 3 of nobody, 24 frames each, real footage."""
    root = tmp_path_factory.mktemp("keypoint-data")
    for k, rel in enumerate(PEOPLE):
        frames, fps = read_video(shared_dir / "data" / rel, None, 60)
        write_video(root / "someone" / f"s{k}.mp4", frames[-FRAMES:], fps=fps or 30)
        write_video(root / "nobody" / f"n{k}.mp4", empty_room(shared_dir, 7 * k), fps=30)
    return root


@pytest.fixture(scope="module")
def taught(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("keypoint-model") / "someone.pt"
    report = teach(TeachOptions(data=data, out=out, keypoints=ClipReader(), kinds=(("flow",), ("body",))))
    return out, report


def test_teach_tries_flow_and_body_reports_both_and_keeps_the_body(taught):
    out, report = taught
    assert set(report.candidates) == {"flow", "body"}
    assert report.kept == "body" and report.cv_accuracy == 1.0
    assert report.found["body"] >= 0.45  # someone in half the clips' frames
    model, meta = load_checkpoint(out)
    assert model.takes_vectors and model.config.features == ("body",)
    assert meta["taught"]["candidates"]["body"]["cv_accuracy"] == 1.0
    assert "kept: body" in report.summary() and "body in" in report.summary()


def test_clips_read_in_a_process_per_core_are_what_one_thread_reads_and_are_cached(data, tmp_path):
    reader = ClipReader()
    assert len(pickle.dumps(reader)) < 1000  # it travels as its settings; each process compiles its graphs
    paths = sorted(data.glob("*/*.mp4"))[:4]
    alone = KeypointCache(tmp_path / "one").clips(reader, paths, workers=1)
    cache = KeypointCache(tmp_path / "many")
    spread = cache.clips(reader, paths, workers=2, processes=True)
    for one, many in zip(alone, spread, strict=True):
        for name, array in one.to_arrays().items():
            np.testing.assert_allclose(many.to_arrays()[name], array, atol=1e-3, err_msg=name)
    assert all(cache.cached(reader, path) is not None for path in paths)


def test_a_clip_that_cannot_be_read_in_a_reading_process_is_one_error_naming_it(data, tmp_path):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video" * 100)
    with pytest.raises(DataError, match=r"broken\.mp4: cannot open"):
        clips = [*sorted(data.glob("*/*.mp4"))[:2], broken]
        KeypointCache(tmp_path / "cache").clips(ClipReader(), clips, workers=2, processes=True)


def test_the_live_front_end_computes_what_teaching_computed(data):
    path = data / "someone" / "s0.mp4"
    frames, _ = read_video(path)
    front = FrontEnd(("flow", "body"))
    state, live, people = FrontState(), [], []
    for frame in frames:
        result, state = front.step(frame, state)
        live.append(result.vector)
        people.append(result.keypoints.people)
    live = np.stack(live)
    taught_flow = frame_features(front.flow, resize_frames(frames, FLOW_SIZE))
    assert np.abs(live[:, : flow_dim()] - taught_flow).max() < 1e-5  # the flow part: the same numbers
    assert (live[:, flow_dim()] == 1.0).mean() > 0.9  # the body's presence flag: she is in view
    cached = ClipReader()(path)  # what teaching caches for the clip: the same landmarks, frame by frame
    for t, found in enumerate(people):
        assert np.isfinite(cached.body[t]).all() == bool(found)
        if found:
            assert np.abs(cached.body[t] - found[0].landmarks).max() < 1e-3


def test_nobody_in_view_is_the_background_class_live_and_someone_is_found(taught, data, shared_dir):
    out, _ = taught
    for clip, expected in ((data / "nobody" / "n1.mp4", "nobody"), (data / "someone" / "s1.mp4", "someone")):
        records: list[dict] = []
        config = PipelineConfig(sources=[str(clip)], model=str(out), backend="onnxruntime", pace=False)
        Pipeline(config, on_record=records.append).run()
        labels = [r["label"] for r in records if r["type"] == "prediction"]
        assert len(labels) == FRAMES
        assert set(labels[WARMUP_FRAMES:]) == {expected}, labels  # after the memory's warm-up, every frame


def test_the_window_gets_landmarks_and_the_parts_behind_the_decision(taught, data):
    out, _ = taught
    seen = []
    config = PipelineConfig(
        sources=[str(data / "someone" / "s0.mp4")], model=str(out), backend="onnxruntime", pace=False
    )
    pipeline = Pipeline(config, on_frame=lambda frame, prediction: seen.append(pipeline.keypoints(frame.stream)))
    pipeline.run()
    found = [s for s in seen if s is not None and s[0].body is not None and s[0].body.people]
    assert len(found) >= FRAMES // 2
    result, explained = found[-1]
    assert result.body.people[0].landmarks.shape == (33, 3)
    assert explained["label"] == "someone" and explained["parts"]
    assert sum(abs(v) for _, v in explained["parts"]) <= 1.0 + 1e-6


def test_eval_and_export_take_a_keypoint_model(taught, data, tmp_path):
    out, _ = taught
    vectors, fps = clip_inputs(load_checkpoint(out)[0], data / "someone" / "s2.mp4")
    assert vectors.shape == (FRAMES, load_checkpoint(out)[0].input_shape[0]) and fps > 0
    result = subprocess.run(
        [sys.executable, "-m", "dcrn.app", "eval", "--model", str(out), "--data", str(data), "--no-progress"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1])["top1"] == 1.0
    onnx = tmp_path / "someone.onnx"
    result = subprocess.run(
        [sys.executable, "-m", "dcrn.app", "export", "--model", str(out), "--out", str(onnx)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape[1] == load_checkpoint(out)[0].input_shape[0]
    assert torch.__version__  # torch and ONNX Runtime loaded side by side


def test_several_people_get_their_own_state_predictions_and_events(shared_dir, tmp_path):
    """fight-cctv ``noFight/nofi075.mp4``: two people walk down a corridor side by side (real footage)."""
    frames, fps = read_video(shared_dir / "data" / "fight-cctv/noFight/nofi075.mp4", None, 30)
    clip = write_video(tmp_path / "corridor.mp4", frames, fps=fps or 25)
    model = DCRN(features_config(("walk", "fall"), ("body",))).eval()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        model.head[-1].weight.copy_(torch.randn(model.head[-1].weight.shape, generator=generator) * 0.05)
    save_checkpoint(tmp_path / "body.pt", model, meta={})
    records: list[dict] = []
    config = PipelineConfig(
        sources=[str(clip)],
        model=str(tmp_path / "body.pt"),
        backend="onnxruntime",
        people=2,
        include_logits=True,
        pace=False,
    )
    shown: list[dict] = []  # what a window gets: the first person's prediction with every person's decision
    Pipeline(config, on_record=records.append, on_frame=lambda frame, p: shown.append(p)).run()
    predictions = [r for r in records if r["type"] == "prediction"]
    assert not any("people" in r for r in predictions), "the records themselves stay one per person"
    by_frame: dict[int, list[dict]] = {}
    for record in predictions:
        by_frame.setdefault(record["frame"], []).append(record)
    both = [rows for rows in by_frame.values() if len(rows) == 2]
    assert len(both) >= 10, "two people followed at once in most frames"
    assert len(by_frame) == 30, "every frame has its predictions"
    a, b = both[-1]
    assert a["person"] != b["person"]
    assert not np.allclose(a["logits"], b["logits"]), "two people: two states, two predictions"
    for window in shown:
        rows = by_frame[window["frame"]]
        if len(rows) == 2:
            decided = {(r["person"], r["label"], r["score"]) for r in rows}
            assert {(p["person"], p["label"], p["score"]) for p in window["people"]} == decided
    assert sum(len(w.get("people", ())) == 2 for w in shown) == len(both)
    people = {r.get("person") for r in predictions}
    assert len(people - {None}) >= 2
    ended = [r for r in records if r.get("event") == "action_ended" and "person" in r]
    started = [r for r in records if r.get("event") == "action_started" and "person" in r]
    assert len(ended) == len(started) >= 2, "each person's action ends with them or at the end of the stream"
