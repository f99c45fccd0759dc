"""INT8 on the CPU: the encoder of the step graph statically quantised with ONNX Runtime, calibrated on clips.

Parity is stated on what the user sees, softmax probabilities stepped frame by frame from a fresh state,
INT8 graph against float32 graph (the recurrent cell and the head run in float32 in both; only the
encoder's activations and weights are 8 bit):

* a small convolutional encoder with a GRU: within PROB_TOL at every frame;
* the shipped fight-cctv model (MobileNetV2 + motion_avg) on a real clip: within FIGHT_MAX_TOL at every
  frame and FIGHT_MEAN_TOL on average over the clip. Its cell feeds on the *change* of standardised
  features between frames, which quantisation noise also changes, so the first frames (a running average
  of few frames) move most: measured over 7 clips with the default calibration, at most 0.24 in the first
  10 frames, at most 0.09 after them, 0.00-0.06 on average per clip.
"""

from __future__ import annotations

import onnx
import pytest
import torch

from dcrn.engine.backends.choice import choose_backend, create_backend
from dcrn.engine.backends.quantize import Calibration, calibration_for, int8_graph
from dcrn.models import DCRN, DCRNConfig, load_checkpoint
from dcrn.models.errors import ConfigError
from dcrn.models.synth import CLASSES
from tests.fixtures.data import tiny_synthetic_set
from tests.fixtures.models import frames_of, stepped_probabilities

PROB_TOL = 0.05  # largest allowed |p_int8 - p_float32| of any class at any frame
FIGHT_MAX_TOL = 0.3  # fight-cctv: largest |p_int8 - p_float32| at any frame
FIGHT_MEAN_TOL = 0.1  # fight-cctv: its mean over the clip's frames


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    return tiny_synthetic_set(tmp_path_factory.mktemp("data"), clips_per_class=2, clip_frames=12)


def conv_model() -> DCRN:
    torch.manual_seed(0)
    config = DCRNConfig(
        num_classes=len(CLASSES), labels=CLASSES, encoder_widths=(8, 16, 32), cell="gru", hidden_size=16, input_size=32
    )
    return DCRN(config).eval()


def test_int8_steps_match_float32_within_the_stated_tolerance(clips, tmp_path):
    model = conv_model()
    calibration = Calibration(str(clips), clips=6, frames_per_clip=4)
    fp32 = create_backend("onnxruntime", model, cache_dir=tmp_path)
    int8 = create_backend("onnxruntime", model, cache_dir=tmp_path, int8=calibration)
    assert int8.int8 and not fp32.int8 and int8.path != fp32.path
    test_clip = sorted(clips.glob("*/*.mp4"))[-1]
    frames = frames_of(test_clip, model)
    p32, p8 = stepped_probabilities(fp32, frames), stepped_probabilities(int8, frames)
    assert (p8 - p32).abs().max() <= PROB_TOL


def test_only_the_encoder_is_quantised_and_the_graph_is_cached(clips, tmp_path):
    model = conv_model()
    calibration = Calibration(str(clips), clips=4, frames_per_clip=2)
    path = int8_graph(model, calibration, tmp_path)
    stamp = path.stat().st_mtime_ns
    assert int8_graph(model, calibration, tmp_path) == path and path.stat().st_mtime_ns == stamp
    assert int8_graph(model, Calibration(str(clips), clips=4, frames_per_clip=3), tmp_path) != path
    graph = onnx.load(str(path)).graph
    quantised = {n.name for n in graph.node if n.op_type == "DequantizeLinear"}
    convs = [n for n in graph.node if n.op_type == "Conv"]
    assert convs and all(any(i.endswith("_DequantizeLinear_Output") for i in n.input) for n in convs)
    cell = [n for n in graph.node if n.name.startswith(("/cell/", "/head/"))]
    assert cell and not any(i.endswith("_DequantizeLinear_Output") for n in cell for i in n.input if "weight" in i)
    assert quantised


def test_int8_is_chosen_by_auto_on_the_cpu_and_refused_elsewhere(clips):
    calibration = Calibration(str(clips))
    choice = choose_backend("auto", "auto", int8=calibration)
    assert (choice.name, choice.device, choice.record_fields()["int8"]) == ("onnxruntime", "cpu", True)
    with pytest.raises(ConfigError, match="onnxruntime backend"):
        choose_backend("torch", "cpu", int8=calibration)
    with pytest.raises(ConfigError, match="onnxruntime backend"):
        create_backend("torch", conv_model(), int8=calibration)


def test_calibration_defaults_to_the_folder_the_checkpoint_was_trained_on(clips, tmp_path):
    meta = {"trained_with": {"data": str(clips)}, "path": str(tmp_path / "m.pt")}
    assert calibration_for(meta).data == str(clips)
    assert calibration_for(meta, tmp_path).data == str(tmp_path)
    with pytest.raises(Exception, match="calibrate"):
        calibration_for({"trained_with": {"data": str(tmp_path / "gone")}})


def test_fight_cctv_int8_stays_within_tolerance_on_a_real_clip(shared_dir, tmp_path):
    data = shared_dir / "data" / "fight-cctv"
    if not data.is_dir():
        pytest.skip(f"{data} is not present")
    model, meta = load_checkpoint("fight-cctv")
    int8 = create_backend(
        "onnxruntime", model, cache_dir=tmp_path, int8=calibration_for(meta, data, clips=8, frames_per_clip=4)
    )
    fp32 = create_backend("onnxruntime", model, cache_dir=tmp_path)
    frames = frames_of(sorted((data / "fight").glob("*.mp4"))[-1], model)[:40]
    p32, p8 = stepped_probabilities(fp32, frames), stepped_probabilities(int8, frames)
    gap = (p8 - p32).abs().max(-1).values  # (T,)
    assert gap.max() <= FIGHT_MAX_TOL and gap.mean() <= FIGHT_MEAN_TOL, gap
