"""Checkpoints rebuild their model alone; damaged or foreign files fail with a clear error."""

from __future__ import annotations

import os

import pytest
import torch

from dcrn.models import (
    DCRN,
    BadCheckpoint,
    CheckpointNotFound,
    DCRNConfig,
    DcrnError,
    load_checkpoint,
    save_checkpoint,
)


@pytest.fixture
def saved(tmp_path):
    config = DCRNConfig(
        num_classes=3,
        labels=("wave", "clap", "idle"),
        cell="convgru",
        input_size=32,
        encoder_widths=(8, 16),
        hidden_size=8,
        mean=(0.5, 0.5, 0.5),
        std=(0.25, 0.25, 0.25),
    )
    model = DCRN(config).eval()
    path = save_checkpoint(tmp_path / "model.pt", model, meta={"epoch": 3})
    return model, path


def test_round_trip_gives_identical_outputs(saved):
    model, path = saved
    loaded, meta = load_checkpoint(path)
    clip = torch.randn(2, 5, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model.forward_sequence(clip), loaded.forward_sequence(clip))
    assert loaded.config == model.config
    assert loaded.config.labels == ("wave", "clap", "idle")
    assert loaded.config.mean == (0.5, 0.5, 0.5) and loaded.config.input_size == 32
    assert meta["epoch"] == 3 and meta["path"] == str(path)
    assert not loaded.training


def test_truncated_file_raises_bad_checkpoint_naming_the_file(saved, tmp_path):
    _, path = saved
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(BadCheckpoint, match=r"truncated\.pt: not a readable checkpoint"):
        load_checkpoint(truncated)


def test_random_bytes_raise_bad_checkpoint(tmp_path):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(os.urandom(4096))
    with pytest.raises(BadCheckpoint, match=r"junk\.pt: not a readable checkpoint") as info:
        load_checkpoint(junk)
    assert isinstance(info.value, ValueError) and isinstance(info.value, DcrnError)
    assert "\n" not in str(info.value)


def test_foreign_torch_file_is_not_a_dcrn_checkpoint(tmp_path):
    foreign = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(1)}, foreign)
    with pytest.raises(BadCheckpoint, match="not a DCRN Live checkpoint"):
        load_checkpoint(foreign)


def test_weights_that_do_not_fit_the_config_are_reported(saved, tmp_path):
    _, path = saved
    payload = torch.load(path, weights_only=True)
    payload["config"]["hidden_size"] = 16
    torch.save(payload, tmp_path / "mismatch.pt")
    with pytest.raises(BadCheckpoint, match="weights do not fit the stored config"):
        load_checkpoint(tmp_path / "mismatch.pt")


def test_missing_file_is_checkpoint_not_found(tmp_path):
    with pytest.raises(CheckpointNotFound, match="no checkpoint file") as info:
        load_checkpoint(tmp_path / "nope.pt")
    assert isinstance(info.value, FileNotFoundError)


def test_failed_save_keeps_the_previous_checkpoint(saved, monkeypatch):
    model, path = saved
    before = path.read_bytes()

    def explode(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", explode)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, model)
    assert path.read_bytes() == before
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left behind
