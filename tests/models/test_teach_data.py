"""Teach data sets on disk: labels, clips, atomic saves, bad input, and reading them as a training set."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from dcrn.models.data import scan, scan_splits
from dcrn.models.errors import DataError
from dcrn.models.teach_data import (
    BACKGROUND_LABEL,
    DATASET_FILE,
    ClipInfo,
    TeachDataset,
    utc_now_iso,
)
from dcrn.models.video_io import read_video, write_video

SIZE = (48, 64)  # height, width


def record(dataset: TeachDataset, label: str, session: str = "s1", frames: int = 6) -> ClipInfo:
    """Write a tiny real clip into ``label``'s folder and register it, as a recorder does."""
    path = dataset.new_clip_path(label)
    video = np.full((frames, *SIZE, 3), 40 * (len(dataset.clips) % 6), dtype=np.uint8)
    write_video(path, video, 30.0)
    info = ClipInfo(
        path=path.relative_to(dataset.root).as_posix(),
        label=label,
        session=session,
        frames=frames,
        fps=30.0,
        width=SIZE[1],
        height=SIZE[0],
        source="synthetic:?seed=0",
        recorded=utc_now_iso(),
    )
    dataset.add_clip(info)
    return info


def test_create_writes_dataset_json_with_the_background_label(tmp_path):
    dataset = TeachDataset.create(tmp_path / "ds")
    data = json.loads((tmp_path / "ds" / DATASET_FILE).read_text())
    assert data == {
        "version": 1,
        "labels": [BACKGROUND_LABEL],
        "background": BACKGROUND_LABEL,
        "fps": None,
        "size": None,
        "source": None,
        "clips": [],
    }
    assert dataset.counts() == {BACKGROUND_LABEL: 0}
    assert (tmp_path / "ds" / "clips.csv").read_text() == "clip,label,source_group\n"
    assert TeachDataset.create(tmp_path / "bare", background=False).labels == []


def test_create_refuses_an_existing_data_set_and_open_or_create_opens_it(tmp_path):
    TeachDataset.create(tmp_path).add_label("wave")
    with pytest.raises(DataError, match="already exists"):
        TeachDataset.create(tmp_path)
    assert TeachDataset.open_or_create(tmp_path).labels == [BACKGROUND_LABEL, "wave"]


def test_labels_and_clips_round_trip_through_reopen(tmp_path):
    dataset = TeachDataset.create(tmp_path)
    dataset.add_label("  wave ")  # stored stripped
    dataset.add_label("clap")
    wave = record(dataset, "wave")
    record(dataset, "wave")
    clap = record(dataset, "clap", session="s2")
    dataset.rename_label("wave", "hand wave")
    dataset.delete_clip(clap.path)
    dataset.delete_label(BACKGROUND_LABEL)

    again = TeachDataset.open(tmp_path)
    assert again.labels == ["hand wave", "clap"]
    assert again.background is None
    assert again.counts() == {"hand wave": 2, "clap": 0}
    renamed = again.clips[0]
    assert renamed.path == "hand wave/" + wave.path.split("/")[1] and renamed.label == "hand wave"
    assert renamed.frames == 6 and renamed.session == "s1" and renamed.source == "synthetic:?seed=0"
    assert all((tmp_path / c.path).is_file() for c in again.clips)
    assert not (tmp_path / clap.path).exists()
    assert not (tmp_path / "wave").exists() and not (tmp_path / BACKGROUND_LABEL).exists()
    assert (again.fps, again.size) == (30.0, (SIZE[1], SIZE[0]))
    with open(tmp_path / "clips.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["clip"], r["label"], r["source_group"]) for r in rows] == [
        (c.path, "hand wave", "s1") for c in again.clips
    ]
    assert not list(tmp_path.glob(".*.tmp"))  # atomic saves leave no temporary files behind


def test_renaming_the_background_label_keeps_it_the_background(tmp_path):
    dataset = TeachDataset.create(tmp_path)
    dataset.rename_label(BACKGROUND_LABEL, "idle")
    assert TeachDataset.open(tmp_path).background == "idle"


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("", "cannot be empty"),
        ("   ", "cannot be empty"),
        ("a/b", "contains '/'"),
        ("a\\b", "contains"),
        ("what?", "contains '?'"),
        ("tab\there", "contains"),
        (".hidden", "cannot start with '.'"),
        ("train", "reserved"),
        ("x" * 65, "at most 64"),
        ("Wave", "already exists"),
    ],
)
def test_a_bad_label_is_refused_with_one_line_naming_the_problem(tmp_path, name, problem):
    dataset = TeachDataset.create(tmp_path)
    dataset.add_label("wave")
    with pytest.raises(DataError, match=problem.replace("?", r"\?")) as info:
        dataset.add_label(name)
    assert "\n" not in str(info.value)
    assert TeachDataset.open(tmp_path).labels == [BACKGROUND_LABEL, "wave"]  # nothing changed


def test_rename_and_delete_refuse_unknown_or_taken_labels(tmp_path):
    dataset = TeachDataset.create(tmp_path)
    dataset.add_label("wave")
    with pytest.raises(DataError, match="no label 'jump'"):
        dataset.rename_label("jump", "hop")
    with pytest.raises(DataError, match="already exists"):
        dataset.rename_label("wave", "Nothing")
    with pytest.raises(DataError, match="no label 'jump'"):
        dataset.delete_label("jump")
    with pytest.raises(DataError, match="no clip"):
        dataset.delete_clip("wave/nope.mp4")


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("{not json", "not JSON"),
        ("[]", "expected an object"),
        ('{"version": 9, "labels": []}', "version 9"),
        ('{"version": 1, "labels": "wave"}', "'labels' must be a list"),
        ('{"version": 1, "labels": ["a", "a"]}', "twice"),
        ('{"version": 1, "labels": ["a"], "clips": [{"path": "a/x.mp4"}]}', "clip 1 lacks"),
        (
            '{"version": 1, "labels": ["a"], "clips": [{"path": "b/x.mp4", "label": "b", "session": "s", '
            '"frames": 1, "fps": 30, "width": 2, "height": 2, "source": "", "recorded": ""}]}',
            "unknown label 'b'",
        ),
    ],
)
def test_a_damaged_dataset_json_is_one_data_error_line(tmp_path, text, problem):
    (tmp_path / DATASET_FILE).write_text(text)
    with pytest.raises(DataError, match="damaged data set file") as info:
        TeachDataset.open(tmp_path)
    assert problem in str(info.value) and "\n" not in str(info.value)


def test_opening_a_folder_without_a_data_set_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="not a teach data set"):
        TeachDataset.open(tmp_path / "missing")


def test_clips_gone_from_disk_are_left_out_when_opening(tmp_path):
    dataset = TeachDataset.create(tmp_path)
    kept = record(dataset, BACKGROUND_LABEL)
    gone = record(dataset, BACKGROUND_LABEL)
    (tmp_path / gone.path).unlink()
    assert [c.path for c in TeachDataset.open(tmp_path).clips] == [kept.path]


def test_new_clip_paths_are_unique_and_add_clip_needs_the_file(tmp_path):
    dataset = TeachDataset.create(tmp_path)
    first = dataset.new_clip_path(BACKGROUND_LABEL)
    first.write_bytes(b"")
    second = dataset.new_clip_path(BACKGROUND_LABEL)
    assert second != first and second.parent == tmp_path / BACKGROUND_LABEL and second.suffix == ".mp4"
    info = ClipInfo(f"{BACKGROUND_LABEL}/{second.name}", BACKGROUND_LABEL, "s", 1, 30.0, 2, 2, "", utc_now_iso())
    with pytest.raises(DataError, match="does not exist"):
        dataset.add_clip(info)


def test_check_trainable_needs_two_labels_with_two_clips_each(tmp_path):
    dataset = TeachDataset.create(tmp_path)
    dataset.add_label("wave")
    record(dataset, "wave")
    record(dataset, "wave")
    with pytest.raises(DataError, match="at least 2 labels"):
        dataset.check_trainable()
    record(dataset, BACKGROUND_LABEL)
    with pytest.raises(DataError, match=f"only 1 of {BACKGROUND_LABEL}"):
        dataset.check_trainable()
    record(dataset, BACKGROUND_LABEL)
    dataset.add_label("empty")  # a label with no clips yet does not block training
    dataset.check_trainable()


def test_scan_reads_a_teach_data_set_in_label_order_with_session_groups(tmp_path):
    dataset = TeachDataset.create(tmp_path)
    for label in ("wave", "clap", "unused"):
        dataset.add_label(label)
    for session in ("s1", "s2", "s3"):
        for label in ("wave", "clap", BACKGROUND_LABEL):
            record(dataset, label, session=session)
    (tmp_path / "wave" / "20990101-000000-000.partial.mp4").write_bytes(b"half written")

    index = scan(tmp_path)
    assert index.classes == ("nothing", "wave", "clap")  # dataset.json order; "unused" has no clips
    assert len(index.clips) == 9
    assert {s.group for s in index.samples} == {"s1", "s2", "s3"}
    assert all(".partial." not in s.path.name for s in index.samples)
    frames, fps = read_video(index.clips[0].path)
    assert frames.shape == (6, *SIZE, 3) and fps == pytest.approx(30.0)

    train, val = scan_splits(tmp_path, val_fraction=0.34, seed=1)
    assert val is not None and {s.group for s in train.samples}.isdisjoint({s.group for s in val.samples})
