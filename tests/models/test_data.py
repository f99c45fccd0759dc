"""Data set readers, splits, clip sampling and augmentation on generated media."""

from __future__ import annotations

import numpy as np
import pytest

from dcrn.models.augment import AugmentOptions, ClipAugment, flip_map_from_names, parse_flip_map
from dcrn.models.data import read_split_list, scan, scan_splits, split_by_groups
from dcrn.models.datasets import ClipDataset, SamplingOptions, clip_indices
from dcrn.models.errors import ConfigError, DataError
from dcrn.models.synth import CLASSES, HFLIP, render_clip
from dcrn.models.video_io import iter_video, read_frame_labels, read_video, write_video
from tests.fixtures.data import SIZE, tiny_synthetic_set


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory):
    return tiny_synthetic_set(tmp_path_factory.mktemp("synth"))


def test_video_round_trip_keeps_frames_close(tmp_path):
    frames = render_clip("move_right", 1, 12, size=SIZE)
    write_video(tmp_path / "clip.mp4", frames, 30.0)
    decoded, fps = read_video(tmp_path / "clip.mp4")
    assert decoded.shape == frames.shape and fps == pytest.approx(30.0)
    assert np.abs(decoded.astype(int) - frames.astype(int)).mean() < 6
    small, _ = read_video(tmp_path / "clip.mp4", size=32)
    assert small.shape == (12, 32, 32, 3)


def test_a_clip_is_decoded_as_its_frames_are_taken(tmp_path):
    write_video(tmp_path / "clip.mp4", render_clip("move_right", 1, 12, size=SIZE), 30.0)
    frames, fps = iter_video(tmp_path / "clip.mp4", max_frames=5)  # opened now, nothing decoded yet
    assert fps == pytest.approx(30.0)
    first = next(frames)
    assert first.shape == (*SIZE, 3) and first.dtype == np.uint8
    assert np.array_equal(np.stack([first, *frames]), read_video(tmp_path / "clip.mp4", max_frames=5)[0])
    with pytest.raises(DataError, match="cannot open"):
        iter_video(tmp_path / "missing.mp4")


def test_scan_finds_class_folders_and_labelled_streams_in_class_order(synth_dir):
    index = scan(synth_dir)
    assert index.classes == CLASSES  # the order written in synth.json
    assert len(index.clips) == 2 * len(CLASSES)
    assert len(index.streams) == 1
    clip = index.clips[0]
    assert CLASSES[clip.label] == clip.path.parent.name
    labels = read_frame_labels(index.streams[0].frame_labels, index.classes)
    assert len(labels) == 90 and len(set(labels.tolist())) > 1


def test_frame_folders_are_read_in_name_order(tmp_path):
    import cv2

    folder = tmp_path / "data" / "blink" / "clip_a"
    folder.mkdir(parents=True)
    frames = render_clip("blink", 2, 5, size=SIZE)
    for i, frame in enumerate(frames):
        cv2.imwrite(str(folder / f"{i:03d}.png"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    index = scan(tmp_path / "data")
    assert index.classes == ("blink",)
    decoded, _ = read_video(index.samples[0].path)
    assert np.array_equal(decoded, frames)


def test_empty_folder_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="no videos found"):
        scan(tmp_path)
    with pytest.raises(DataError, match="does not exist"):
        scan(tmp_path / "missing")


def test_unreadable_video_is_a_clear_error(tmp_path):
    bad = tmp_path / "data" / "still" / "broken.mp4"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"this is not a video" * 10)
    index = scan(tmp_path / "data")
    with pytest.raises(DataError, match=r"broken\.mp4"):
        ClipDataset(index, SamplingOptions(clip_len=4), 32, cache=True)


def test_split_list_with_unknown_class_is_a_clear_error(synth_dir, tmp_path):
    index = scan(synth_dir)
    good = tmp_path / "train.txt"
    good.write_text("move_left/move_left_0_0000.mp4 2\nblink/blink_0_0001.mp4\n")
    subset = read_split_list(index, good)
    assert [s.path.name for s in subset.samples] == ["move_left_0_0000.mp4", "blink_0_0001.mp4"]
    bad = tmp_path / "bad.txt"
    bad.write_text("move_left/move_left_0_0000.mp4\ndance/dance_0.mp4\n")
    with pytest.raises(DataError, match=r"bad\.txt:2: unknown class 'dance'"):
        read_split_list(index, bad)


def test_hmdb_split_files_divide_train_and_test(synth_dir, tmp_path):
    splits = tmp_path / "splits"
    splits.mkdir()
    (splits / "grow_test_split1.txt").write_text("grow_0_0000.mp4 1\ngrow_0_0001.mp4 2\n")
    train, test = scan_splits(synth_dir, hmdb_splits=splits, hmdb_split=1)
    assert [s.path.name for s in train.samples] == ["grow_0_0000.mp4"]
    assert [s.path.name for s in test.samples] == ["grow_0_0001.mp4"]


def test_group_split_keeps_each_source_group_on_one_side(synth_dir, tmp_path):
    index = scan(synth_dir)
    rows = ["clip,label,source_group"]
    for s in index.clips:
        rel = s.path.relative_to(synth_dir).as_posix()
        rows.append(f"{rel},{CLASSES[s.label]},g{s.label % 3}")
    (synth_dir / "clips.csv").write_text("\n".join(rows) + "\n")
    try:
        grouped = scan(synth_dir)
        train, val = split_by_groups(grouped, ["g1"])
        assert {s.group for s in val.samples} == {"g1"}
        assert "g1" not in {s.group for s in train.samples}
        _, val2 = scan_splits(synth_dir, val_fraction=0.3, seed=1)
        for group in {s.group for s in val2.samples}:
            assert all(s.group != group for s in set(grouped.samples) - set(val2.samples))
        with pytest.raises(DataError, match="g9"):
            split_by_groups(grouped, ["g9"])
    finally:
        (synth_dir / "clips.csv").unlink()


def test_train_and_val_folders_are_the_split(tmp_path):
    for part, seed in (("train", 0), ("val", 1)):
        tiny_synthetic_set(tmp_path / part, clips_per_class=1, clip_frames=4, stream_s=0, seed=seed)
    train, val = scan_splits(tmp_path)
    assert len(train.clips) == len(val.clips) == len(CLASSES)
    assert train.root.name == "train" and val.root.name == "val"


def test_clip_sampling_modes():
    consecutive = SamplingOptions(clip_len=4, stride=2)
    assert clip_indices(20, consecutive, None).tolist() == [0, 2, 4, 6]
    rng = np.random.default_rng(0)
    drawn = clip_indices(20, consecutive, rng)
    assert (np.diff(drawn) == 2).all() and drawn[-1] < 20
    uniform = clip_indices(20, SamplingOptions(clip_len=4, mode="uniform"), None)
    assert uniform.tolist() == [2, 7, 12, 17]
    strides = {int(np.diff(clip_indices(40, SamplingOptions(4, "random_stride", 3), rng))[0]) for _ in range(30)}
    assert strides == {1, 2, 3}
    assert clip_indices(3, SamplingOptions(clip_len=5), None).tolist() == [0, 1, 2, -1, -1]
    with pytest.raises(ConfigError):
        SamplingOptions(mode="random")


def test_stream_windows_carry_per_frame_labels_and_clips_repeat_theirs(synth_dir):
    index = scan(synth_dir)
    dataset = ClipDataset(index, SamplingOptions(clip_len=8), 32, cache=True)
    clip_items = [k for k, (_, start) in enumerate(dataset.items) if start < 0]
    stream_items = [k for k, (_, start) in enumerate(dataset.items) if start >= 0]
    assert len(clip_items) == 20 and len(stream_items) == 90 // 8
    frames, labels = dataset[clip_items[0]]
    assert frames.shape == (8, 32, 32, 3) and str(frames.dtype) == "torch.uint8"
    assert len(set(labels.tolist())) == 1
    window_labels = np.concatenate([dataset[k][1].numpy() for k in stream_items])
    assert len(set(window_labels.tolist())) > 1


def test_flip_map_mirrors_frames_and_swaps_directional_labels():
    flip = flip_map_from_names(HFLIP, CLASSES)
    augment = ClipAugment(AugmentOptions(crop_scale=(1, 1), brightness=0, contrast=0, saturation=0, flip_p=1.0), flip)
    frames = render_clip("move_left", 3, 6, size=(32, 32))
    labels = np.full(6, CLASSES.index("move_left"))
    out, out_labels = augment(frames, labels, np.random.default_rng(0), 32)
    assert np.array_equal(out, frames[:, :, ::-1])
    assert set(out_labels.tolist()) == {CLASSES.index("move_right")}
    partial = parse_flip_map("move_left:move_right", CLASSES)
    assert partial[CLASSES.index("rotate_cw")] == CLASSES.index("rotate_cw")
    # A clip whose class the map does not know is never flipped.
    only_still = ClipAugment(augment.options, {0: 0})
    same, same_labels = only_still(frames, labels, np.random.default_rng(0), 32)
    assert np.array_equal(same, frames) and np.array_equal(same_labels, labels)
    assert parse_flip_map("none", CLASSES) is None
    with pytest.raises(ConfigError):
        parse_flip_map("move_left:dance", CLASSES)


def test_augmentation_is_the_same_for_every_frame_of_a_clip():
    augment = ClipAugment(AugmentOptions(crop_scale=(0.5, 0.6)))
    frame = render_clip("still", 4, 1, size=(40, 40))[0]
    clip = np.stack([frame] * 5)
    out, _ = augment(clip, np.zeros(5, dtype=np.int64), np.random.default_rng(1), 24)
    assert out.shape == (5, 24, 24, 3)
    assert all(np.array_equal(out[0], out[t]) for t in range(5))
