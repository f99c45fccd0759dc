"""A crafted ``dataset.json`` never makes a delete, rename or write reach outside its data set."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from dcrn.models.errors import DataError
from dcrn.models.teach_data import DATASET_FILE, TeachDataset


def make_dataset(root: Path, labels: list[str], clips: list[tuple[str, str]]) -> Path:
    """A data set folder whose ``dataset.json`` says what the test wants, whatever is on disk."""
    root.mkdir(parents=True, exist_ok=True)
    entries = [
        {"path": path, "label": label, "session": "s", "frames": 3, "fps": 30.0, "width": 8, "height": 8,
         "source": "synthetic:", "recorded": "2026-01-01T00:00:00.000+00:00", "cut": None}
        for path, label in clips
    ]  # fmt: skip
    data = {"version": 1, "labels": labels, "background": None, "fps": None, "size": None, "source": None}
    (root / DATASET_FILE).write_text(json.dumps({**data, "clips": entries}))
    return root


def victim(tmp_path: Path) -> Path:
    """A file and a folder beside the data set that nothing may touch."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.mp4").write_bytes(b"precious")
    return outside


@pytest.mark.parametrize(
    "clip",
    ["wave/../../outside/keep.mp4", "../outside/keep.mp4", "wave/../wave/x.mp4", "wave/.hidden.mp4", "wave/a\nb.mp4"],
)
def test_a_clip_path_leaving_its_label_folder_is_refused_at_load(tmp_path, clip):
    outside = victim(tmp_path)
    root = make_dataset(tmp_path / "ds", ["wave"], [(clip, "wave")])
    with pytest.raises(DataError) as info:
        TeachDataset.open(root)
    message = str(info.value)
    assert "damaged data set file" in message and "\n" not in message
    assert (outside / "keep.mp4").read_bytes() == b"precious"


@pytest.mark.parametrize("label", ["../outside", "..", "a/b", "wave\x1b[2J", "x" * 500, " wave"])
def test_a_label_that_is_not_a_plain_folder_name_is_refused_at_load(tmp_path, label):
    outside = victim(tmp_path)
    root = make_dataset(tmp_path / "ds", [label], [])
    with pytest.raises(DataError) as info:
        TeachDataset.open(root)
    assert "damaged data set file" in str(info.value) and "\n" not in str(info.value)
    assert "\x1b" not in str(info.value)
    assert (outside / "keep.mp4").exists()


def test_deleting_a_label_whose_folder_links_outside_deletes_nothing(tmp_path):
    outside = victim(tmp_path)
    root = make_dataset(tmp_path / "ds", ["wave"], [])
    os.symlink(outside, root / "wave")
    dataset = TeachDataset.open(root)
    with pytest.raises(DataError, match="outside the data set"):
        dataset.delete_label("wave")
    with pytest.raises(DataError, match="outside the data set"):
        dataset.rename_label("wave", "hello")
    assert (outside / "keep.mp4").read_bytes() == b"precious"
    assert dataset.labels == ["wave"]


def test_deleting_a_clip_in_a_folder_that_links_outside_deletes_nothing(tmp_path):
    outside = victim(tmp_path)
    root = make_dataset(tmp_path / "ds", ["wave"], [("wave/keep.mp4", "wave")])
    os.symlink(outside, root / "wave")
    dataset = TeachDataset.open(root)
    with pytest.raises(DataError, match="outside the data set"):
        dataset.delete_clip("wave/keep.mp4")
    assert (outside / "keep.mp4").read_bytes() == b"precious"


def test_paths_that_are_not_clips_of_the_data_set_delete_nothing(tmp_path):
    outside = victim(tmp_path)
    dataset = TeachDataset.create(tmp_path / "ds")
    for path in ("../outside/keep.mp4", "nothing/../../outside/keep.mp4"):
        with pytest.raises(DataError):
            dataset.delete_clip(path)
    with pytest.raises(DataError):
        dataset.delete_label("../outside")
    assert (outside / "keep.mp4").read_bytes() == b"precious"


def test_dcrn_record_into_a_crafted_data_set_is_one_line_and_touches_nothing(tmp_path, cli):
    outside = victim(tmp_path)
    root = make_dataset(tmp_path / "ds", ["../outside"], [])
    before = sorted(p.name for p in root.iterdir())
    result = cli("record", "--source", "synthetic:", "--out", str(root), "--label", "wave",
                 "--seconds", "0.2", "--countdown", "0")  # fmt: skip
    result.refused("record", "damaged data set file")
    assert sorted(p.name for p in root.iterdir()) == before
    assert (outside / "keep.mp4").read_bytes() == b"precious"
