"""The shipped fight-cctv model as the auto rule runs it on a CPU with native bf16 (the openvino backend).

Parity is stated on softmax probabilities stepped frame by frame from a fresh state, the openvino backend
against the float32 graph in ONNX Runtime, on real clips. Measured over 8 clips (4 fight, 4 noFight) on a
Zen 4 core in bf16: at most 0.032 at any frame, at most 0.025 on average over a clip (INT8: up to 0.24).
On a CPU without native bf16 the backend runs float32 and the gap is ~1e-6. Over the five
cross-validation folds bf16 gives the float32 prediction on all 210 held-out clips
(docs/results/fight-cctv-bf16-cv.json, python -m scripts.measure.int8_crossval --openvino).
"""

from __future__ import annotations

import pytest

from dcrn.engine.backends.choice import create_backend
from dcrn.models import load_checkpoint
from tests.fixtures.models import frames_of, stepped_probabilities

MAX_TOL = 0.06  # largest |p_openvino - p_float32| of any class at any frame
MEAN_TOL = 0.03  # its mean over a clip's frames


@pytest.mark.parametrize("kind", ["fight", "noFight"])
def test_fight_cctv_on_openvino_stays_within_tolerance_on_real_clips(shared_dir, tmp_path, kind):
    data = shared_dir / "data" / "fight-cctv"
    model, _ = load_checkpoint("fight-cctv")
    openvino = create_backend("openvino", model, cache_dir=tmp_path, threads=1)
    fp32 = create_backend("onnxruntime", model, cache_dir=tmp_path, threads=1)
    assert openvino.precision in ("bf16", "fp32")
    for path in sorted((data / kind).glob("*.mp4"))[-2:]:
        frames = frames_of(path, model)[:40]
        gap = (stepped_probabilities(openvino, frames) - stepped_probabilities(fp32, frames)).abs().max(-1).values
        assert gap.max() <= MAX_TOL and gap.mean() <= MEAN_TOL, (path.name, openvino.precision, gap)
