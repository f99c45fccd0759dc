"""The core invariant: streaming ``step`` reproduces ``forward_sequence`` for every encoder x cell."""

from __future__ import annotations

import pytest
import torch

from dcrn.models import DCRN, ConfigError, DCRNConfig
from dcrn.models.config import CELLS, ENCODERS

BATCH, STEPS = 3, 16


def small_config(encoder: str, cell: str) -> DCRNConfig:
    # Torchvision backbones downsample 32x: 64 px keeps a 2x2 map, so convolutional cells stay spatial.
    size = 32 if encoder == "seed" else 64
    return DCRNConfig(
        encoder=encoder, cell=cell, num_classes=5, input_size=size, hidden_size=8, encoder_widths=(8, 16), cell_kernel=3
    )


@pytest.mark.parametrize("cell", [c for c in CELLS if c != "feature_memory"])  # frames in (vectors: below)
@pytest.mark.parametrize("encoder", [e for e in ENCODERS if e != "features"])
def test_step_by_step_reproduces_forward_sequence(encoder, cell):
    config = small_config(encoder, cell)
    model = DCRN(config).eval()
    clip = torch.randn(BATCH, STEPS, 3, config.input_size, config.input_size)  # (B, T, 3, H, W)
    with torch.no_grad():
        offline = model.forward_sequence(clip)  # (B, T, C)
        state = model.initial_state(batch_size=BATCH)
        shapes = [s.shape for s in state]
        online = []
        for t in range(STEPS):
            logits, state = model.step(clip[:, t], state)
            assert [s.shape for s in state] == shapes, "state must keep its shape at every step"
            online.append(logits)
    online = torch.stack(online, dim=1)
    assert offline.shape == (BATCH, STEPS, config.num_classes)
    assert (online - offline).abs().max().item() <= 1e-5


@pytest.mark.parametrize("kinds", [("body",), ("hands",), ("flow", "hands", "body")])
def test_a_features_model_steps_on_vectors_and_step_by_step_reproduces_forward_sequence(kinds):
    config = DCRNConfig(encoder="features", cell="feature_memory", features=kinds, num_classes=4)
    model = DCRN(config).eval()
    with torch.no_grad():
        model.cell.out_std.uniform_(0.5, 2.0)  # fitted statistics, not the identity
        model.cell.out_mean.normal_()
    dim = model.input_shape[0]
    clip = torch.randn(BATCH, STEPS, dim)  # (B, T, F) per-frame vectors
    with torch.no_grad():
        offline = model.forward_sequence(clip)
        state = model.initial_state(batch_size=BATCH)
        online = []
        for t in range(STEPS):
            logits, state = model.step(clip[:, t], state)
            online.append(logits)
    assert model.example_input(3).shape == (3, dim)
    assert (torch.stack(online, dim=1) - offline).abs().max().item() <= 1e-5


def test_a_features_model_names_its_kinds_in_order_once():
    with pytest.raises(ConfigError, match="in the order"):
        DCRNConfig(encoder="features", cell="feature_memory", features=("body", "flow"))
    with pytest.raises(ConfigError, match="some of"):
        DCRNConfig(encoder="features", cell="feature_memory", features=("feet",))
    with pytest.raises(ConfigError, match="needs cell"):
        DCRNConfig(encoder="features", cell="gru", features=("body",))
    with pytest.raises(ConfigError, match="only for encoder"):
        DCRNConfig(encoder="seed", features=("body",))


def test_convolutional_cells_keep_the_spatial_map():
    model = DCRN(DCRNConfig(encoder="seed", cell="convlstm", input_size=32, encoder_widths=(8, 16), hidden_size=4))
    h, c = model.initial_state(batch_size=2)
    assert h.shape == c.shape == (2, 4, 8, 8)  # 32 px / 2 / 2


def test_forward_sequence_continues_from_a_given_state():
    model = DCRN(DCRNConfig(input_size=32, encoder_widths=(8,), hidden_size=8)).eval()
    clip = torch.randn(2, 10, 3, 32, 32)
    with torch.no_grad():
        whole = model.forward_sequence(clip)
        first, state = model.forward_sequence(clip[:, :4], return_state=True)
        rest = model.forward_sequence(clip[:, 4:], state)
    assert torch.allclose(torch.cat([first, rest], dim=1), whole, atol=1e-6)


def test_seed_preset_has_the_articles_layers():
    model = DCRN(DCRNConfig.seed(num_classes=4))
    conv, relu, pool = model.encoder.blocks
    assert (conv.in_channels, conv.out_channels, conv.kernel_size, conv.padding) == (3, 32, (3, 3), (0, 0))
    assert isinstance(relu, torch.nn.ReLU)
    assert isinstance(pool, torch.nn.MaxPool2d) and pool.kernel_size == 2
    assert isinstance(model.to_cell_input, torch.nn.Flatten)
    assert model.feature_shape == (32 * 31 * 31,)  # 64 -> conv valid 62 -> pool 31
    assert isinstance(model.cell.cell, torch.nn.LSTMCell) and model.cell.cell.hidden_size == 64
    dense1, dense2 = (m for m in model.head if isinstance(m, torch.nn.Linear))
    assert (dense1.in_features, dense1.out_features, dense2.out_features) == (64, 64, 4)
    probs = model.forward_sequence(torch.rand(1, 3, 3, 64, 64)).softmax(-1)
    assert torch.allclose(probs.sum(-1), torch.ones(1, 3))


def test_seed_preset_trains_on_a_tiny_batch():
    model = DCRN(DCRNConfig.seed(num_classes=3))
    clips = torch.rand(6, 4, 3, 64, 64)
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    clips[labels == 1] *= 0.3  # make the classes separable by brightness
    clips[labels == 2, :, 0] = 1.0
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(25):
        logits = model.forward_sequence(clips)  # (B, T, C)
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), labels.repeat_interleave(4))
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"cell": "rnn9"}, "cell must be one of"),
        ({"encoder": "vgg"}, "encoder must be one of"),
        ({"num_classes": 2, "labels": ("a",)}, "labels must name all 2 classes"),
        ({"input_size": 8}, "input_size must be >= 16"),
    ],
)
def test_bad_config_names_the_problem(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        DCRNConfig(**kwargs)


def test_input_too_small_for_the_encoder_is_a_config_error():
    with pytest.raises(ConfigError, match="too small"):
        DCRN(DCRNConfig(encoder="seed", encoder_widths=(8, 8, 8, 8, 8), input_size=16))


def test_batch_norm_seed_encoder_streams_exactly_and_exports_its_statistics():
    config = DCRNConfig(
        input_size=32, encoder_widths=(8, 16), encoder_norm="batch", cell="convgru_delta", hidden_size=8
    )
    model = DCRN(config)
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.encoder.modules()) == 2
    model.train()
    with torch.no_grad():  # give the running statistics something other than their initial values
        model.forward_sequence(torch.randn(2, 4, 3, 32, 32) * 3 + 1)
    model.eval()
    clip = torch.randn(2, 6, 3, 32, 32)
    with torch.no_grad():
        offline = model.forward_sequence(clip)
        state = model.initial_state(batch_size=2)
        online = []
        for t in range(6):
            logits, state = model.step(clip[:, t], state)
            online.append(logits)
    assert (torch.stack(online, dim=1) - offline).abs().max().item() <= 1e-5
    assert any(k.endswith("running_mean") for k in model.state_dict())  # statistics travel in checkpoints
    with pytest.raises(ConfigError, match="encoder_norm"):
        DCRNConfig(encoder_norm="layer")


def test_delta_cell_sees_the_change_since_the_previous_frame():
    model = DCRN(DCRNConfig(input_size=32, encoder_widths=(8,), cell="convgru_delta", hidden_size=4)).eval()
    frame = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        _, (h, prev) = model.step(frame, model.initial_state(batch_size=1))
        x = model.encode(frame)
        assert torch.equal(prev, x)  # the map the next frame is compared against
        # Same map, same h, a different previous map: the cell's answer depends on the change alone.
        still, _ = model.cell(x, (h, x))
        moved, _ = model.cell(x, (h, model.encode(torch.roll(frame, 3, dims=-1))))
        assert (still - moved).abs().max().item() > 1e-4


def test_folding_batch_norm_keeps_the_outputs_and_drops_the_layers():
    config = DCRNConfig(
        input_size=32, encoder_widths=(8, 16), encoder_norm="batch", cell="convgru_delta", hidden_size=8
    )
    model = DCRN(config)
    with torch.no_grad():  # non-trivial running statistics and affine parameters
        model.forward_sequence(torch.randn(2, 4, 3, 32, 32) * 2 + 0.5)
        for m in model.encoder.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 2.0)
                m.bias.uniform_(-0.5, 0.5)
    model.eval()
    clip = torch.randn(2, 6, 3, 32, 32)
    with torch.no_grad():
        before = model.forward_sequence(clip)
        assert model.has_foldable_batch_norm()
        model.fold_batch_norm()
        after = model.forward_sequence(clip)
    assert not model.has_foldable_batch_norm()
    assert (before - after).abs().max().item() <= 1e-5
    with pytest.raises(RuntimeError, match="eval"):
        DCRN(config).train().fold_batch_norm()
