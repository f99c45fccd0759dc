"""The shipped default model recognises the synthetic actions it was trained on, on scenes it never saw."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dcrn.models import load_checkpoint, shipped_models
from dcrn.models.evaluate import _normalise
from dcrn.models.synth import CLASSES, OPPOSITE, render_clip
from dcrn.models.video_io import resize_frames

pytestmark = pytest.mark.skipif("default" not in shipped_models(), reason="the shipped default model is not here")

SEED = 987_654  # a seed domain no training or test set of scripts/train-default uses


@pytest.fixture(scope="module")
def default_model():
    model, _ = load_checkpoint("default")
    return model.eval()


def _last_frame_predictions(model, clips: list[np.ndarray]) -> np.ndarray:
    size = model.config.input_size
    x = torch.stack([_normalise(resize_frames(clip, size), model) for clip in clips])  # (N, T, 3, S, S)
    with torch.no_grad():
        return model.forward_sequence(x)[:, -1].argmax(-1).numpy()


def test_default_model_recognises_fresh_synthetic_clips(default_model):
    clips, labels = [], []
    for k in range(3):
        for c in range(len(CLASSES)):
            clips.append(render_clip(c, SEED + 100 * k + c, 48))
            labels.append(c)
    predicted = _last_frame_predictions(default_model, clips)
    accuracy = float((predicted == np.array(labels)).mean())
    assert accuracy >= 0.85, f"accuracy {accuracy:.2f} on 30 fresh clips; predicted {predicted.tolist()}"


def test_default_model_tells_a_clip_from_its_time_reversal(default_model):
    # The same frames in the opposite order are a different action: only a model that uses order can pass.
    names = [c for c in CLASSES if OPPOSITE[c] != c] * 3
    clips = [render_clip(name, SEED + 7 + i, 48) for i, name in enumerate(names)]
    forward = _last_frame_predictions(default_model, clips)
    backward = _last_frame_predictions(default_model, [clip[::-1].copy() for clip in clips])
    right = sum(CLASSES[f] == n for f, n in zip(forward, names, strict=True))
    right += sum(CLASSES[b] == OPPOSITE[n] for b, n in zip(backward, names, strict=True))
    assert right >= 0.8 * 2 * len(names), (forward.tolist(), backward.tolist())
