"""``dcrn teach``: a few clips in, a model that tells the direction of motion out, on real files on disk."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from dcrn.models import load_checkpoint
from dcrn.models.errors import DataError
from dcrn.models.teach import FeatureCache, TeachOptions, clip_features, teach
from dcrn.models.teach_fit import above_chance, chance_rate, wilson_lower
from dcrn.models.video_io import read_video, write_video

MOTIONS = {"pan_left": (-3, 0), "pan_right": (3, 0), "still": (0, 0)}


def texture(seed: int, size: int = 320) -> np.ndarray:
    """A smooth random colour texture: a scene with edges everywhere, different for every seed."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 255, (size // 10, size // 10, 3), dtype=np.uint8)
    return cv2.GaussianBlur(cv2.resize(small, (size, size), interpolation=cv2.INTER_CUBIC), (5, 5), 0)


def camera_clip(seed: int, motion: tuple[int, int], frames: int = 24) -> list[np.ndarray]:
    scene = texture(seed)
    rng = np.random.default_rng(seed + 1000)
    x, y = 80 + int(rng.integers(-10, 10)), 80 + int(rng.integers(-10, 10))
    out = []
    for t in range(frames):
        left, top = x - motion[0] * t, y - motion[1] * t  # the view moves: the content moves the other way
        out.append(np.ascontiguousarray(scene[top : top + 96, left : left + 128]))
    return out


def make_dataset(root: Path, clips_per_label: int, *, first_seed: int = 0) -> Path:
    for label, motion in MOTIONS.items():
        for k in range(clips_per_label):
            seed = first_seed + 10 * k + list(MOTIONS).index(label)
            write_video(root / label / f"clip{k:02d}.mp4", camera_clip(seed, motion), fps=25)
    return root


@pytest.fixture(scope="module")
def taught(tmp_path_factory):
    root = make_dataset(tmp_path_factory.mktemp("teach") / "data", 4)
    out = root.parent / "taught.pt"
    stages = []
    report = teach(TeachOptions(data=root, out=out, progress=lambda *a: stages.append(a)))
    return root, out, report, stages


def test_teach_learns_the_direction_of_motion_from_four_clips_each(taught):
    _, _, report, _ = taught
    assert report.labels == ("pan_left", "pan_right", "still")
    assert report.clips_per_label == {"pan_left": 4, "pan_right": 4, "still": 4}
    assert report.cv_split == "clip" and report.cv_accuracy >= 0.9, report.summary()
    assert np.trace(np.array(report.confusion)) == round(report.cv_accuracy * 12)


def test_taught_model_tells_a_clip_from_the_same_clip_played_backwards(taught, tmp_path):
    _, out, _, _ = taught
    model, meta = load_checkpoint(out)
    assert meta["taught"]["labels"] == ["pan_left", "pan_right", "still"]
    clip = np.stack(camera_clip(seed=999, motion=MOTIONS["pan_left"]))  # a scene it never saw
    predictions = []
    for frames in (clip, clip[::-1]):
        path = write_video(tmp_path / f"{len(predictions)}.mp4", frames, fps=25)
        x = torch.from_numpy(read_video(path, model.config.input_size)[0]).permute(0, 3, 1, 2).float() / 255
        with torch.no_grad():
            logits = model.forward_sequence(x[None])  # (1, T, C)
        predictions.append(model.config.labels[int(logits[0, -1].argmax())])
    assert predictions == ["pan_left", "pan_right"]


def test_streaming_steps_reproduce_the_features_teach_cached(taught):
    root, out, _, _ = taught
    model, _ = load_checkpoint(out)
    path = root / "pan_right" / "clip00.mp4"
    frames = torch.from_numpy(read_video(path, model.config.input_size)[0]).permute(0, 3, 1, 2).float() / 255
    cached = torch.from_numpy(clip_features(model, path))  # (T, F), batched as teach computes them
    memory = model.cell.memory_trajectory(cached)
    state = model.initial_state(1)
    with torch.no_grad():
        for t in range(len(frames)):
            _, state = model.step(frames[t : t + 1], state)
            assert torch.allclose(state[1][0], memory[t], atol=1e-4)


def test_progress_reports_every_stage_and_features_are_computed_once(taught, tmp_path, caplog):
    root, _, _, stages = taught
    assert {s[0] for s in stages} == {"features", "cross-validation", "training"}
    assert ("features", 12, 12) in stages
    cache_files = sorted((root / ".cache" / "features").glob("*.npy"))
    assert len(cache_files) == 12
    write_video(root / "still" / "clip99.mp4", camera_clip(77, MOTIONS["still"]), fps=25)  # one new clip
    with caplog.at_level("INFO", logger="dcrn.models"):
        teach(TeachOptions(data=root, out=tmp_path / "again.pt"))
    assert "features of 13 clips ready (1 computed now" in caplog.text
    assert len(list((root / ".cache" / "features").glob("*.npy"))) == 13
    (root / "still" / "clip99.mp4").unlink()


def test_a_label_with_one_clip_is_refused_with_a_one_line_error(tmp_path):
    root = make_dataset(tmp_path / "data", 2)
    for extra in sorted((root / "still").iterdir())[1:]:
        extra.unlink()
    with pytest.raises(DataError, match=r"at least 2 clips of each label; too few: still \(1\)") as info:
        teach(TeachOptions(data=root, out=tmp_path / "m.pt"))
    assert "\n" not in str(info.value)
    assert not (tmp_path / "m.pt").exists()
    assert len(list(root.rglob("*.mp4"))) == 5, "nothing recorded is touched"


def test_one_label_only_is_refused(tmp_path):
    root = tmp_path / "data"
    write_video(root / "wave" / "a.mp4", camera_clip(1, (2, 0)), fps=25)
    write_video(root / "wave" / "b.mp4", camera_clip(2, (2, 0)), fps=25)
    with pytest.raises(DataError, match="at least 2 labels"):
        teach(TeachOptions(data=root, out=tmp_path / "m.pt"))


def test_feature_cache_key_changes_when_the_clip_file_changes(tmp_path):
    path = write_video(tmp_path / "a.mp4", camera_clip(1, (2, 0)), fps=25)
    cache = FeatureCache(tmp_path / "cache")
    before = cache.key(path)
    write_video(path, camera_clip(2, (0, 2), frames=30), fps=25)
    assert cache.key(path) != before


def test_dcrn_teach_command_writes_the_model_and_a_json_report(tmp_path):
    root = make_dataset(tmp_path / "data", 2)
    out, report = tmp_path / "my.pt", tmp_path / "report.json"
    result = subprocess.run(
        [sys.executable, "-m", "dcrn.app", "teach", "--data", str(root), "--out", str(out), "--json", str(report)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "cross-validated accuracy (by clip" in result.stdout
    stored = json.loads(report.read_text())
    assert stored["labels"] == ["pan_left", "pan_right", "still"]
    assert stored["above_chance"] is True and stored["warning"] is None, "three clearly different motions"
    assert "WARNING" not in result.stderr
    model, meta = load_checkpoint(out)
    assert model.config.cell == "flow_memory" and meta["taught"]["above_chance"] is True


def make_unlearnable(root: Path, clips_per_label: int) -> Path:
    """Two labels whose clips are the same videos: nothing tells them apart, so no model beats chance."""
    for k in range(clips_per_label):
        frames = camera_clip(10 * k, MOTIONS["pan_left"] if k % 2 else MOTIONS["pan_right"])
        for label in ("same_a", "same_b"):
            write_video(root / label / f"clip{k:02d}.mp4", frames, fps=25)
    return root


def test_chance_is_the_majority_rate_and_clearly_above_means_the_wilson_lower_bound_beats_it():
    assert chance_rate([5, 5]) == 0.5 and chance_rate([3, 3, 3]) == pytest.approx(1 / 3)
    assert chance_rate([16, 4]) == 0.8, "unbalanced: always guessing the big label scores 0.8"
    assert wilson_lower(8, 10) == pytest.approx(0.4902, abs=1e-4)  # the textbook 95% interval of 8/10
    assert wilson_lower(10, 10) == pytest.approx(10 / (10 + 1.96**2))
    assert wilson_lower(0, 10) == 0.0 and wilson_lower(0, 0) == 0.0
    assert above_chance(4, 4, [2, 2]), "2 clips per label, all right: just enough evidence"
    assert not above_chance(3, 4, [2, 2])
    assert not above_chance(8, 10, [5, 5]), "80% of 10 clips could still be a coin"
    assert above_chance(17, 20, [10, 10])
    assert not above_chance(16, 20, [16, 4]), "80% is what guessing the big label gets"
    assert above_chance(20, 20, [16, 4])
    assert above_chance(5, 6, [2, 2, 2]) and not above_chance(4, 6, [2, 2, 2])


def test_teach_warns_when_the_labels_cannot_be_told_apart_and_says_what_to_do(tmp_path):
    root = make_unlearnable(tmp_path / "data", 4)
    out, report = tmp_path / "same.pt", tmp_path / "report.json"
    result = subprocess.run(
        [sys.executable, "-m", "dcrn.app", "teach", "--data", str(root), "--out", str(out), "--json", str(report)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("WARNING") == 1 and "not clearly better than chance" in result.stderr
    assert "more clips" in result.stderr and "varied" in result.stderr and "labels" in result.stderr
    assert "above chance (0.50): NO" in result.stdout
    stored = json.loads(report.read_text())
    assert stored["above_chance"] is False and stored["chance"] == 0.5
    assert stored["cv_lower_bound"] < 0.5 and "more clips" in stored["warning"]
    taught = load_checkpoint(out)[1]["taught"]
    assert taught["above_chance"] is False and taught["cv_accuracy"] <= 0.5


def test_dcrn_teach_on_a_missing_folder_is_one_line_and_exit_2(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "dcrn.app", "teach", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "m.pt")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "does not exist" in result.stderr


def test_a_folder_with_train_and_test_inside_teaches_on_train_only(tmp_path):
    root = tmp_path / "data"
    make_dataset(root / "train", 2)
    make_dataset(root / "test", 1, first_seed=500)
    report = teach(TeachOptions(data=root, out=tmp_path / "m.pt"))
    assert report.clips_per_label == {"pan_left": 2, "pan_right": 2, "still": 2}


def test_a_costlier_kind_is_kept_only_when_it_beats_a_cheaper_one_by_more_than_the_noise():
    from dcrn.models.teach import _Tried, choose_candidate

    labels = np.array([0] * 12 + [1] * 11)

    def scored(kinds: tuple[str, ...], right: int) -> _Tried:
        tried = _Tried(kinds, None, [], 1.0)
        tried.pred = labels.copy()
        tried.pred[: len(labels) - right] = 1 - tried.pred[: len(labels) - right]
        return tried

    flow, body = ("flow",), ("body",)
    assert choose_candidate([scored(flow, 18), scored(body, 20)], labels).kinds == body  # 0.78 vs 0.87
    assert choose_candidate([scored(flow, 19), scored(body, 20)], labels).kinds == flow  # within one error
    assert choose_candidate([scored(flow, 23), scored(body, 23)], labels).kinds == flow  # a tie: the cheaper
