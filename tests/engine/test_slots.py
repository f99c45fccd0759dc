"""State slots: one state per stream, batched steps, resets on discontinuity and time gaps."""

from __future__ import annotations

import pytest
import torch

from dcrn.engine.backends.choice import create_backend
from dcrn.engine.frames import Frame
from dcrn.engine.slots import StateSlots
from dcrn.models import DCRN, DCRNConfig


def small_model(cell: str = "gru") -> DCRN:
    config = DCRNConfig(num_classes=4, encoder_widths=(8, 16), cell=cell, hidden_size=16, input_size=32)
    return DCRN(config).eval()


def frame(stream: str, seq: int, pts: float, discontinuity: bool = False) -> Frame:
    import numpy as np

    return Frame(stream=stream, seq=seq, pts=pts, image=np.zeros((2, 2, 3), np.uint8), discontinuity=discontinuity)


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_one_streams_frames_never_change_another_streams_predictions(cell):
    model = small_model(cell)
    a, b = torch.randn(8, 3, 32, 32), torch.randn(8, 3, 32, 32) * 3  # (T, 3, S, S) per stream
    alone = StateSlots(create_backend("torch", model, max_batch=1), capacity=1)
    alone.add("a")
    solo = torch.stack([alone.step(["a"], a[t : t + 1])[0] for t in range(8)])  # (T, C)

    together = StateSlots(create_backend("torch", model, max_batch=2), capacity=3)
    together.add("b")
    together.add("a")
    mixed = []
    for t in range(8):
        if t % 3 == 2:  # b has no frame now: a steps alone
            mixed.append(together.step(["a"], a[t : t + 1])[0])
        else:  # order inside the batch varies too
            order = ["a", "b"] if t % 2 else ["b", "a"]
            frames = torch.stack([a[t] if s == "a" else b[t] for s in order])
            mixed.append(together.step(order, frames)[order.index("a")])
    assert torch.allclose(torch.stack(mixed), solo, atol=1e-5)
    with torch.no_grad():
        offline = model.forward_sequence(a.unsqueeze(0))[0]  # (T, C)
    assert torch.allclose(solo, offline, atol=1e-5)


def test_reset_zeroes_only_that_streams_state():
    slots = StateSlots(create_backend("torch", small_model()), capacity=2)
    slots.add("a")
    slots.add("b")
    slots.step(["a", "b"], torch.randn(2, 3, 32, 32))
    slots.reset("a")
    a_state, b_state = (s[0] for s in zip(*slots.gather(["a", "b"]), strict=True))
    assert torch.count_nonzero(a_state) == 0 and torch.count_nonzero(b_state) > 0


def test_state_resets_on_discontinuity_gap_and_time_going_back():
    slots = StateSlots(create_backend("torch", small_model()), capacity=1, max_gap_s=1.0)
    slots.add("a")
    assert slots.observe(frame("a", 0, 0.0)) is False
    assert slots.observe(frame("a", 1, 0.5)) is False
    assert slots.observe(frame("a", 2, 0.6, discontinuity=True)) is True
    assert slots.observe(frame("a", 3, 2.0)) is True  # gap 1.4 s > 1.0 s
    assert slots.observe(frame("a", 4, 1.9)) is True  # backwards (seek)
    assert slots.observe(frame("a", 5, 1.95)) is False
    assert slots.resets("a") == 3


def test_a_reset_stream_predicts_as_if_it_just_started():
    model = small_model()
    slots = StateSlots(create_backend("torch", model), capacity=1)
    slots.add("a")
    x = torch.randn(4, 3, 32, 32)
    first = [slots.step(["a"], x[t : t + 1]) for t in range(4)]
    slots.observe(frame("a", 4, 9.0, discontinuity=True))
    again = [slots.step(["a"], x[t : t + 1]) for t in range(4)]
    assert all(torch.allclose(p, q, atol=1e-6) for p, q in zip(first, again, strict=True))


def test_a_batch_with_one_stream_twice_is_refused():
    slots = StateSlots(create_backend("torch", small_model()), capacity=2)
    slots.add("a")
    with pytest.raises(ValueError, match="at most one frame per stream"):
        slots.step(["a", "a"], torch.randn(2, 3, 32, 32))


def test_more_streams_than_slots_is_refused():
    slots = StateSlots(create_backend("torch", small_model()), capacity=1)
    slots.add("a")
    with pytest.raises(ValueError, match="all 1 state slots are in use"):
        slots.add("b")
