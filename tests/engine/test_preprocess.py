"""Preprocess: uint8 HWC frames of any size -> normalised (B, 3, S, S) float, one place for all backends."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dcrn.engine.preprocess import Preprocessor, preprocess
from dcrn.models import DCRNConfig


def test_output_is_normalised_chw_at_the_models_input_size():
    config = DCRNConfig(num_classes=3, input_size=32, mean=(0.5, 0.25, 0.0), std=(0.5, 0.25, 1.0))
    image = torch.zeros((48, 64, 3), dtype=torch.uint8)
    image[..., 0], image[..., 1], image[..., 2] = 255, 0, 51  # constant per channel: resize keeps it
    out = preprocess([image], config)
    assert out.shape == (1, 3, 32, 32) and out.dtype == torch.float32
    expected = torch.tensor([(1.0 - 0.5) / 0.5, (0.0 - 0.25) / 0.25, 0.2])
    assert torch.allclose(out[0, :, 5, 7], expected, atol=1e-5)


def test_host_frames_are_resized_exactly_as_the_training_data():
    from dcrn.models.video_io import resize_frames

    config = DCRNConfig(num_classes=3, input_size=40)
    image = np.random.default_rng(0).integers(0, 256, (90, 160, 3), dtype=np.uint8)
    expected = torch.from_numpy(resize_frames(image[None], 40)).permute(0, 3, 1, 2).float() / 255.0  # (1, 3, S, S)
    mean, std = torch.tensor(config.mean).view(1, 3, 1, 1), torch.tensor(config.std).view(1, 3, 1, 1)
    assert torch.allclose(preprocess([torch.from_numpy(image)], config), (expected - mean) / std, atol=1e-5)


@pytest.mark.gpu
def test_gpu_frames_are_resized_within_a_grey_level_of_the_host_path():
    from dcrn.models.synth import SyntheticActionStream

    config = DCRNConfig(num_classes=3, input_size=112, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    frame = SyntheticActionStream(seed=1, fps=30, size=(240, 320)).read()[0]  # a natural-ish picture, not noise
    image = torch.from_numpy(np.ascontiguousarray(frame))
    host = preprocess([image], config)
    gpu = preprocess([image.cuda()], config, device="cuda").cpu()
    assert (gpu - host).abs().mean() * 255 < 1.5


def test_frames_already_at_input_size_are_not_resampled():
    image = torch.randint(0, 256, (16, 16, 3), dtype=torch.uint8)
    out = Preprocessor(16, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))([image])
    assert torch.allclose(out[0], image.permute(2, 0, 1).float() / 255.0, atol=1e-6)


def test_frames_of_different_sizes_make_one_batch():
    frames = [torch.zeros((40, 60, 3), dtype=torch.uint8), torch.full((20, 20, 3), 255, dtype=torch.uint8)]
    out = Preprocessor(24, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))(frames)
    assert out.shape == (2, 3, 24, 24)
    assert torch.allclose(out[0], torch.zeros(3, 24, 24)) and torch.allclose(out[1], torch.ones(3, 24, 24))


def test_a_batch_tensor_gives_the_same_result_as_a_list():
    frames = torch.randint(0, 256, (3, 30, 40, 3), dtype=torch.uint8)
    pre = Preprocessor(20, (0.4, 0.5, 0.6), (0.2, 0.3, 0.4))
    assert torch.equal(pre(frames), pre(list(frames)))


def test_fp16_output_when_asked():
    pre = Preprocessor(16, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), dtype=torch.float16)
    out = pre([torch.zeros((8, 8, 3), dtype=torch.uint8)])
    assert out.dtype == torch.float16


def test_wrong_frame_layout_is_rejected_with_the_actual_shape():
    with pytest.raises(ValueError, match=r"HxWx3 uint8, got \(3, 8, 8\)"):
        Preprocessor(16, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))([torch.zeros((3, 8, 8), dtype=torch.uint8)])
