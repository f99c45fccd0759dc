"""The shipped real-footage model ``fight-cctv`` and the source-group cross-validation behind its numbers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dcrn.models import load_checkpoint
from dcrn.models.checkpoint import shipped_models
from dcrn.models.crossval import group_folds
from dcrn.models.data import scan, split_by_groups
from dcrn.models.video_io import read_video


@pytest.fixture(scope="module")
def fight_data(shared_dir):
    root = shared_dir / "data" / "fight-cctv"
    if not (root / "clips.csv").is_file():
        pytest.skip(f"{root} is not present")
    return scan(root)


@pytest.fixture(scope="module")
def fight_model():
    if "fight-cctv" not in shipped_models():
        pytest.skip("models/shipped/fight-cctv.pt is not present")
    return load_checkpoint("fight-cctv")


def test_cross_validation_folds_never_put_a_source_group_on_both_sides(fight_data):
    folds = group_folds(fight_data, 5)
    every_group = {s.group for s in fight_data.clips}
    assert sorted(g for fold in folds for g in fold) == sorted(every_group)  # each group in exactly one fold
    for held in folds:
        train, val = split_by_groups(fight_data, held)
        assert {s.group for s in train.samples}.isdisjoint({s.group for s in val.samples})
        assert len(train) + len(val) == len(fight_data)
    sizes = [sum(s.group in set(held) for s in fight_data.clips) for held in folds]
    assert max(sizes) - min(sizes) <= 5, sizes


def test_shipped_fight_cctv_loads_by_name_with_fight_and_nofight_labels(fight_model):
    model, meta = fight_model
    assert model.config.class_names == ("fight", "noFight")
    assert model.config.encoder == "mobilenet_v2"
    assert meta["path"].endswith("fight-cctv.pt")
    assert "--freeze-encoder" in meta["command"]
    assert model.config.cell == "motion_avg"
    assert not torch.allclose(model.cell.input_std, torch.ones_like(model.cell.input_std))  # fitted by dcrn train


def test_shipped_fight_cctv_steps_on_real_frames_with_sane_probabilities(fight_model, fight_data):
    model, _ = fight_model
    clip = next(s for s in fight_data.clips if s.path.name.startswith("fi"))
    frames, _ = read_video(clip.path, model.config.input_size, max_frames=12)  # (T, S, S, 3)
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255  # (T, 3, S, S)
    x = (x - torch.tensor(model.config.mean).view(1, 3, 1, 1)) / torch.tensor(model.config.std).view(1, 3, 1, 1)
    state = model.initial_state(1)
    stepped = []
    with torch.no_grad():
        for frame in x:
            logits, state = model.step(frame[None], state)  # (1, C)
            stepped.append(logits[0])
        whole = model.forward_sequence(x[None])[0]  # (T, C)
    stepped = torch.stack(stepped)
    probs = stepped.softmax(-1)
    assert torch.isfinite(probs).all()
    assert torch.allclose(probs.sum(-1), torch.ones(len(probs)), atol=1e-5)
    assert float(probs[:, 0].min()) > 0.0 and float(probs[:, 0].max()) < 1.0
    assert torch.allclose(stepped, whole, atol=1e-4)


def test_shipped_fight_cctv_records_its_cross_validation(fight_model):
    _, meta = fight_model
    cv = meta.get("cross_validation")
    assert cv is not None, "the shipped checkpoint should carry its cross-validation summary"
    accuracies = np.array([fold["accuracy"] for fold in cv["folds"]])
    assert len(accuracies) == 5
    assert abs(float(accuracies.mean()) - cv["accuracy_mean"]) < 1e-3
