"""Data set indexes: which videos there are, what class each shows, and how they split.

A data folder holds any mix of:

* **class folders** — ``DIR/<class>/<clip>.mp4`` (or ``.avi .mkv .webm .mov``), or ``DIR/<class>/<clip>/``
  frame folders of images; each clip shows one action;
* **continuous streams** — ``DIR/<name>.mp4`` with per-frame labels in ``DIR/<name>.labels.csv`` (see
  :mod:`dcrn.models.video_io`); actions change inside the video.

``DIR/train`` and ``DIR/val`` (or ``test``) inside a folder are used as the split when present. Otherwise
the split comes from a UCF101-style list (``Class/clip.avi [index]`` per line), from HMDB51-style split
files (``<class>_test_split<N>.txt``: ``clip.avi 0|1|2``), or from a held-out fraction of *groups*: clips
listed with a ``source_group`` in ``DIR/clips.csv`` (``clip,label,source_group``) stay together, so no
source video appears on both sides of the split. ``val_groups`` names the held-out groups explicitly.

Class order: a ``synth.json`` (``classes``) or a teach data set's ``dataset.json`` (``labels``, see
:mod:`dcrn.models.teach_data`) fixes it when present, else it is sorted. Clips still being written
(``*.partial.mp4``) are never read.
"""

from __future__ import annotations

import csv
import json
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from .errors import DataError
from .video_io import IMAGE_EXTS, VIDEO_EXTS, is_frame_folder, is_video, labels_file

SPLIT_NAMES = ("train", "val", "test")
PARTIAL_SUFFIX = ".partial.mp4"  # a clip still being written (dcrn.engine.recorder): never read


@dataclass(frozen=True)
class Sample:
    """One video (or frame folder) of a data set."""

    path: Path
    label: int  # class index of a clip; -1 for a stream (its labels are per frame)
    frame_labels: Path | None = None  # a stream's ``.labels.csv``
    group: str = ""  # source group: samples of one group never straddle a split

    @property
    def is_stream(self) -> bool:
        return self.frame_labels is not None


@dataclass(frozen=True)
class DataIndex:
    root: Path
    classes: tuple[str, ...]
    samples: tuple[Sample, ...]

    def __len__(self) -> int:
        return len(self.samples)

    def subset(self, samples: Sequence[Sample]) -> DataIndex:
        return replace(self, samples=tuple(samples))

    @property
    def clips(self) -> tuple[Sample, ...]:
        return tuple(s for s in self.samples if not s.is_stream)

    @property
    def streams(self) -> tuple[Sample, ...]:
        return tuple(s for s in self.samples if s.is_stream)


def scan(root: Path, classes: Sequence[str] | None = None) -> DataIndex:
    """Index a data folder: class folders and labelled streams (see the module notes).

    ``classes`` fixes the class list and its order (e.g. a checkpoint's labels); a class folder outside
    it is an error. Without it, the order comes from ``synth.json`` when the folder has one, else sorted.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: data folder does not exist")
    folders = sorted(p for p in root.iterdir() if p.is_dir() and p.name not in SPLIT_NAMES and _has_media(p))
    streams = sorted(p for p in root.iterdir() if is_video(p) and labels_file(p).is_file())
    if classes is None:
        classes = _class_order(root, [p.name for p in folders], streams)
    classes = tuple(classes)
    unknown = [p.name for p in folders if p.name not in classes]
    if unknown:
        raise DataError(f"{root}: class folder(s) {unknown} are not among the classes {list(classes)}")
    groups = _read_groups(root)
    samples: list[Sample] = []
    for folder in folders:
        for item in sorted(folder.iterdir()):
            if (is_video(item) and not item.name.endswith(PARTIAL_SUFFIX)) or is_frame_folder(item):
                rel = item.relative_to(root).as_posix()
                samples.append(Sample(item, classes.index(folder.name), None, groups.get(rel, rel)))
    for video in streams:
        samples.append(Sample(video, -1, labels_file(video), video.name))
    if not samples:
        raise DataError(
            f"{root}: no videos found; expected class folders of clips ({', '.join(VIDEO_EXTS)} or frame folders)"
            " or stream videos with a .labels.csv beside them"
        )
    return DataIndex(root, classes, tuple(samples))


def scan_splits(
    root: Path,
    classes: Sequence[str] | None = None,
    *,
    split_list: Path | None = None,
    val_list: Path | None = None,
    hmdb_splits: Path | None = None,
    hmdb_split: int = 1,
    val_fraction: float = 0.1,
    val_groups: Sequence[str] = (),
    seed: int = 0,
) -> tuple[DataIndex, DataIndex | None]:
    """(train, val) indexes by the first rule that applies (see the module notes); val may be None."""
    root = Path(root)
    if (root / "train").is_dir():
        train = scan(root / "train", classes)
        for name in ("val", "test"):
            if (root / name).is_dir():
                return train, scan(root / name, train.classes)
        return train, None
    index = scan(root, classes)
    if split_list is not None:
        train = read_split_list(index, split_list)
        val = read_split_list(index, val_list) if val_list is not None else None
        return train, val
    if hmdb_splits is not None:
        return read_hmdb_splits(index, hmdb_splits, hmdb_split)
    if val_groups:
        return split_by_groups(index, val_groups)
    if val_fraction <= 0:
        return index, None
    return split_fraction(index, val_fraction, seed)


def split_by_groups(index: DataIndex, val_groups: Sequence[str]) -> tuple[DataIndex, DataIndex]:
    known = {s.group for s in index.samples}
    missing = sorted(set(val_groups) - known)
    if missing:
        raise DataError(f"{index.root}: validation group(s) {missing} do not occur in the data")
    held = set(val_groups)
    train = [s for s in index.samples if s.group not in held]
    val = [s for s in index.samples if s.group in held]
    if not train:
        raise DataError(f"{index.root}: every sample is in the validation groups; nothing is left to train on")
    return index.subset(train), index.subset(val)


def split_fraction(index: DataIndex, fraction: float, seed: int = 0) -> tuple[DataIndex, DataIndex | None]:
    """Hold out about ``fraction`` of the groups of each class (streams: of the streams), seeded."""
    rng = random.Random(seed)
    by_class: dict[int, list[str]] = {}
    for sample in index.samples:
        groups = by_class.setdefault(sample.label, [])
        if sample.group not in groups:
            groups.append(sample.group)
    held: set[str] = set()
    for groups in by_class.values():
        if len(groups) < 2:
            continue
        rng.shuffle(groups)
        # A group that spans classes (a recording session of several labels) and is already held out for
        # another class counts first, so the classes do not, between them, hold out every group.
        ordered = [g for g in groups if g in held] + [g for g in groups if g not in held]
        held.update(ordered[: max(1, round(len(groups) * fraction))])
    if not held:  # no class has two groups of its own: hold out a fraction of all groups
        groups = sorted({s.group for s in index.samples})
        if len(groups) < 2:
            return index, None
        rng.shuffle(groups)
        held.update(groups[: max(1, round(len(groups) * fraction))])
    return split_by_groups(index, sorted(held))


def read_split_list(index: DataIndex, list_file: Path) -> DataIndex:
    """A UCF101-style list: ``Class/clip.avi [label index]`` per line, paths relative to the data folder."""
    by_path = {s.path.relative_to(index.root).as_posix(): s for s in index.samples}
    chosen = []
    for line_no, line in _lines(list_file):
        rel = line.split()[0]
        cls = rel.split("/")[0] if "/" in rel else ""
        if cls not in index.classes:
            raise DataError(f"{list_file}:{line_no}: unknown class {cls!r} in {rel!r}; known: {list(index.classes)}")
        if rel not in by_path:
            raise DataError(f"{list_file}:{line_no}: {rel!r} is not in {index.root}")
        chosen.append(by_path[rel])
    if not chosen:
        raise DataError(f"{list_file}: the split list names no clips")
    return index.subset(chosen)


def read_hmdb_splits(index: DataIndex, folder: Path, split: int) -> tuple[DataIndex, DataIndex]:
    """HMDB51 split files ``<class>_test_split<N>.txt`` with lines ``clip.avi 1`` (train) / ``2`` (test)."""
    by_path = {s.path.relative_to(index.root).as_posix(): s for s in index.samples}
    pattern = re.compile(rf"^(?P<cls>.+)_test_split{split}\.txt$")
    files = sorted(p for p in Path(folder).iterdir() if pattern.match(p.name))
    if not files:
        raise DataError(f"{folder}: no HMDB51 split files '<class>_test_split{split}.txt'")
    train, test = [], []
    for file in files:
        cls = pattern.match(file.name)["cls"]
        if cls not in index.classes:
            raise DataError(f"{file}: unknown class {cls!r}; known: {list(index.classes)}")
        for line_no, line in _lines(file):
            name, _, flag = line.partition(" ")
            rel = f"{cls}/{name}"
            if rel not in by_path:
                raise DataError(f"{file}:{line_no}: {rel!r} is not in {index.root}")
            {"1": train, "2": test}.get(flag.strip(), []).append(by_path[rel])
    return index.subset(train), index.subset(test)


def _lines(path: Path):
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise DataError(f"{path}: cannot read the split list ({exc.strerror})") from None
    for line_no, line in enumerate(text.splitlines(), start=1):
        if line.strip() and not line.lstrip().startswith("#"):
            yield line_no, line.strip()


def _has_media(folder: Path) -> bool:
    return any(
        (is_video(p) and not p.name.endswith(PARTIAL_SUFFIX)) or is_frame_folder(p) or p.suffix.lower() in IMAGE_EXTS
        for p in folder.iterdir()
    )


def _class_order(root: Path, folder_names: list[str], streams: list[Path]) -> list[str]:
    meta = root / "synth.json"
    if meta.is_file():
        listed = _listed_names(meta, "classes")
        if listed and set(folder_names) <= set(listed):
            return list(listed)
    meta = root / "dataset.json"  # a teach data set (dcrn.models.teach_data): its label order, labels with clips
    if meta.is_file() and not streams:
        listed = _listed_names(meta, "labels")
        if listed and set(folder_names) <= set(listed):
            return [name for name in listed if name in folder_names]
    names = set(folder_names)
    for video in streams:
        names.update(_stream_label_names(labels_file(video)))
    return sorted(names)


def _listed_names(meta: Path, key: str) -> list[str]:
    try:
        listed = json.loads(meta.read_text()).get(key, [])
    except (OSError, ValueError, AttributeError):
        return []
    return listed if isinstance(listed, list) and all(isinstance(x, str) for x in listed) else []


def _stream_label_names(path: Path) -> set[str]:
    try:
        with open(path, newline="") as handle:
            return {row[1].strip() for row in csv.reader(handle) if len(row) >= 2 and row[0].strip().isdigit()}
    except OSError as exc:
        raise DataError(f"{path}: cannot read the label file ({exc.strerror})") from None


def _read_groups(root: Path) -> dict[str, str]:
    """``clips.csv`` (clip,label,source_group) -> relative clip path -> group; empty when absent."""
    table = root / "clips.csv"
    if not table.is_file():
        return {}
    with open(table, newline="") as handle:
        reader = csv.DictReader(handle)
        if not reader.fieldnames or not {"clip", "source_group"} <= set(reader.fieldnames):
            raise DataError(f"{table}: expected the columns clip,label,source_group")
        return {row["clip"]: row["source_group"] for row in reader}
