"""Postprocess: smoothing and hysteresis turn noisy per-frame predictions into stable labels and events."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dcrn.engine.frames import Frame
from dcrn.engine.postprocess import EmaSmoother, Hysteresis, PostprocessConfig, StreamPostprocessor, WindowSmoother
from dcrn.models.errors import ConfigError

LABELS = ("still", "wave", "clap")


def frame(seq: int) -> Frame:
    return Frame(stream="cam0", seq=seq, pts=seq / 10, image=np.zeros((1, 1, 3), np.uint8))


def probs(*values: float) -> torch.Tensor:
    return torch.tensor(values)


def logits_for(p: tuple[float, ...]) -> torch.Tensor:
    return torch.tensor(p).log()


def test_ema_follows_alpha():
    ema = EmaSmoother(0.5)
    assert torch.allclose(ema.update(probs(1.0, 0.0)), probs(1.0, 0.0))
    assert torch.allclose(ema.update(probs(0.0, 1.0)), probs(0.5, 0.5))
    assert torch.allclose(ema.update(probs(0.0, 1.0)), probs(0.25, 0.75))


def test_window_averages_the_last_frames_only():
    window = WindowSmoother(2)
    window.update(probs(1.0, 0.0))
    window.update(probs(0.0, 1.0))
    assert torch.allclose(window.update(probs(0.0, 1.0)), probs(0.0, 1.0))


def test_action_starts_after_min_frames_and_ends_after_min_frames_below_off():
    config = PostprocessConfig(threshold_on=0.6, threshold_off=0.4, min_frames_on=2, min_frames_off=2)
    hyst = Hysteresis(LABELS, config)
    seq = [(0.1, 0.8, 0.1)] * 3 + [(0.5, 0.5, 0.0)] * 2 + [(0.8, 0.1, 0.1)] * 3  # in the band, then below off
    events = [(i, e["event"], e["label"]) for i, p in enumerate(seq) for e in hyst.update(probs(*p), frame(i))]
    assert events == [(1, "action_started", "wave"), (6, "action_ended", "wave")]


def test_one_frame_spike_starts_nothing():
    hyst = Hysteresis(LABELS, PostprocessConfig(min_frames_on=2))
    seq = [(0.9, 0.05, 0.05), (0.1, 0.85, 0.05), (0.9, 0.05, 0.05), (0.9, 0.05, 0.05)]
    assert [e for i, p in enumerate(seq) for e in hyst.update(probs(*p), frame(i))] == []


def test_background_class_never_starts_an_action():
    hyst = Hysteresis(LABELS, PostprocessConfig(min_frames_on=1))
    assert hyst.update(probs(0.99, 0.005, 0.005), frame(0)) == []


def test_background_labels_match_whatever_their_case():
    hyst = Hysteresis(("fight", "noFight"), PostprocessConfig(min_frames_on=1))  # the fight-cctv model's labels
    assert hyst.update(probs(0.01, 0.99), frame(0)) == []
    assert [e["label"] for e in hyst.update(probs(0.99, 0.01), frame(1))] == ["fight"]


def test_a_new_action_ends_the_running_one():
    hyst = Hysteresis(LABELS, PostprocessConfig(min_frames_on=1, min_frames_off=5))
    hyst.update(probs(0.1, 0.8, 0.1), frame(0))
    events = hyst.update(probs(0.1, 0.1, 0.8), frame(1))
    assert [(e["event"], e["label"]) for e in events] == [("action_ended", "wave"), ("action_started", "clap")]


def test_per_class_threshold_applies_to_that_class_only():
    config = PostprocessConfig(threshold_on=0.6, threshold_off=0.4, class_thresholds={"clap": 0.9}, min_frames_on=1)
    hyst = Hysteresis(LABELS, config)
    assert hyst.update(probs(0.1, 0.1, 0.8), frame(0)) == []  # 0.8 < clap's 0.9
    assert [e["label"] for e in hyst.update(probs(0.1, 0.8, 0.1), frame(1))] == ["wave"]


def test_thresholds_for_unknown_labels_are_a_config_error():
    with pytest.raises(ConfigError, match="unknown labels \\['jump'\\]"):
        Hysteresis(LABELS, PostprocessConfig(class_thresholds={"jump": 0.5}))


def test_prediction_record_has_the_design_schema():
    post = StreamPostprocessor(LABELS, PostprocessConfig(smoothing="none", top_k=2))
    record, events = post.update(logits_for((0.2, 0.7, 0.1)), frame(3))
    assert set(record) == {"type", "stream", "frame", "pts", "wall", "label", "score", "top", "latency_ms"}
    assert record["type"] == "prediction" and record["stream"] == "cam0" and record["frame"] == 3
    assert record["label"] == "wave" and record["score"] == pytest.approx(0.7, abs=1e-4)
    assert record["top"] == [["wave", pytest.approx(0.7, abs=1e-4)], ["still", pytest.approx(0.2, abs=1e-4)]]
    assert events == []


def test_logits_only_when_asked():
    post = StreamPostprocessor(LABELS)
    record, _ = post.update(torch.tensor([1.0, 2.0, 3.0]), frame(0), include_logits=True)
    assert record["logits"] == [1.0, 2.0, 3.0]


def test_reset_ends_a_running_action_and_forgets_history():
    post = StreamPostprocessor(LABELS, PostprocessConfig(smoothing="ema", alpha=0.5, min_frames_on=1))
    _, events = post.update(logits_for((0.05, 0.9, 0.05)), frame(0))
    assert [e["event"] for e in events] == ["action_started"] and post.active == "wave"
    ended = post.reset()
    assert [(e["event"], e["label"], e["frame"]) for e in ended] == [("action_ended", "wave", 0)]
    assert post.active is None and post.reset() == []
    record, _ = post.update(logits_for((0.9, 0.05, 0.05)), frame(1))
    assert record["label"] == "still" and record["score"] == pytest.approx(0.9, abs=1e-4)  # no EMA carry-over
