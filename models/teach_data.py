"""Teach data sets: labelled clips recorded from a camera (or cut from a file), kept in one folder.

Layout (an ordinary ``dcrn train`` / ``dcrn eval`` data set, see :mod:`dcrn.models.data`)::

    DATASET/
      dataset.json                 labels in display/training order, clips with their metadata
      clips.csv                    clip,label,source_group (group = recording session): honest splits
      nothing/20261129-183501-123.mp4
      wave/20261129-183512-456.mp4
      wave/20261129-183516-789.partial.mp4   a clip being written (or left by a crash): never trained on

``dataset.json``::

    {"version": 1, "labels": ["nothing", "wave"], "background": "nothing",
     "fps": 30.0, "size": [320, 240], "source": "rtsp://***@cam/stream",
     "clips": [{"path": "wave/20261129-183512-456.mp4", "label": "wave", "session": "20261129-183510-042",
                "frames": 90, "fps": 30.0, "width": 320, "height": 240, "source": "...",
                "recorded": "2026-11-29T18:35:12.456+00:00", "cut": null}, ...]}

``fps``, ``size`` and ``source`` describe the clip added last (null before the first). Every mutating
method saves at once, atomically (a temporary file, then ``os.replace``), so nothing recorded is lost
when the process dies. Opening drops clips whose file has gone (a warning says which); files nobody
registered are left alone. Mutations hold a lock, so a recorder thread can register clips while the
GUI edits labels. Pure Python: this module imports nothing from the engine or the app.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import re
import shutil
import threading
import time
from dataclasses import asdict, dataclass, fields, replace
from datetime import datetime, timezone
from pathlib import Path

from .errors import DataError
from .files import atomic_write
from .labels import unsafe_characters

log = logging.getLogger(__name__)

DATASET_FILE = "dataset.json"
CLIPS_FILE = "clips.csv"
BACKGROUND_LABEL = "nothing"  # suggested "nothing happening" label, created by TeachDataset.create(background=True)
VERSION = 1
CLIP_EXT = ".mp4"
PARTIAL_EXT = ".partial.mp4"  # a clip still being written; renamed to .mp4 when finished
MAX_LABEL_LEN = 64
MAX_CLIP_NAME_LEN = 255  # a file name, as most file systems allow
RESERVED_LABELS = ("train", "val", "test")  # split folder names of dcrn.models.data
_BAD_LABEL_CHARS = re.compile(r'[/\\<>:"|?*\x00-\x1f\x7f]')  # path separators, Windows-reserved, control


@dataclass(frozen=True)
class ClipInfo:
    """One recorded clip, as listed in ``dataset.json``."""

    path: str  # relative posix path inside the dataset: "<label>/<YYYYmmdd-HHMMSS-fff>.mp4"
    label: str
    session: str  # recording session id: every clip of one `dcrn record` run / one GUI recording burst shares it
    frames: int
    fps: float
    width: int
    height: int
    source: str  # source URI with credentials redacted (the caller redacts: models must not import engine)
    recorded: str  # ISO-8601 UTC time
    cut: tuple[float, float] | None = None  # (in_s, out_s) when the clip was cut from a file

    def to_dict(self) -> dict:
        data = asdict(self)
        data["cut"] = list(self.cut) if self.cut is not None else None
        return data

    @classmethod
    def from_dict(cls, data: dict) -> ClipInfo:
        """Rebuild from ``dataset.json``; ValueError/TypeError/KeyError when an entry is malformed."""
        names = {f.name for f in fields(cls)}
        missing = sorted(names - {"cut"} - set(data))
        if missing:
            raise KeyError(", ".join(missing))
        cut = data.get("cut")
        if cut is not None:
            in_s, out_s = (float(v) for v in cut)
            cut = (in_s, out_s)
        return cls(
            path=str(data["path"]),
            label=str(data["label"]),
            session=str(data["session"]),
            frames=int(data["frames"]),
            fps=float(data["fps"]),
            width=int(data["width"]),
            height=int(data["height"]),
            source=str(data["source"]),
            recorded=str(data["recorded"]),
            cut=cut,
        )


def utc_now_iso() -> str:
    """The current time as ISO-8601 UTC with milliseconds, e.g. ``2026-11-29T18:35:12.456+00:00``."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def new_session_id() -> str:
    """A recording session id from the local time, e.g. ``20261129-183510-042``."""
    now = time.time()
    return time.strftime("%Y%m%d-%H%M%S", time.localtime(now)) + f"-{int(now * 1000) % 1000:03d}"


def validate_label(name: str) -> str:
    """``name`` stripped of surrounding white space, or :class:`DataError` naming what is wrong with it."""
    if not isinstance(name, str):
        raise DataError(f"a label must be text, got {type(name).__name__}")
    label = name.strip()
    if not label:
        raise DataError("a label cannot be empty")
    if len(label) > MAX_LABEL_LEN:
        raise DataError(f"label {label[:20]!r}... is {len(label)} characters long; at most {MAX_LABEL_LEN}")
    bad = sorted(set(_BAD_LABEL_CHARS.findall(label)) | set(unsafe_characters(label)))
    if bad:
        shown = " ".join(repr(c) for c in bad)
        raise DataError(
            f'label {label!r} contains {shown}; a label cannot use / \\ < > : " | ? * or control characters'
        )
    if label.startswith("."):
        raise DataError(f"label {label!r} cannot start with '.'")
    if label.lower() in RESERVED_LABELS:
        raise DataError(f"label {label!r} is reserved (train, val and test name data set splits)")
    return label


def clip_path_problem(path: str, label: str) -> str | None:
    """Why ``path`` is not ``<label>/<file name>`` (one file directly in its label's folder), or None.

    A ``dataset.json`` may have been edited by anyone: a clip path such as ``../x`` or ``wave/../../x``
    would make deleting the clip delete a file outside the data set.
    """
    folder, sep, name = path.partition("/")
    if (
        not sep
        or folder != label
        or name in ("", ".", "..")
        or name.startswith(".")
        or "/" in name
        or "\\" in name
        or len(name) > MAX_CLIP_NAME_LEN
        or unsafe_characters(name)
    ):
        return f"clip path {path[:80]!r} is not '<label>/<file name>' for the label {label!r}"
    return None


class TeachDataset:
    """A teach data set folder: labels, clips and their metadata (see the module notes)."""

    def __init__(
        self,
        root: Path,
        labels: list[str],
        clips: list[ClipInfo],
        *,
        background: str | None = None,
        fps: float | None = None,
        size: tuple[int, int] | None = None,
        source: str | None = None,
    ) -> None:
        self.root = Path(root)
        self.labels = labels  # in display/training order; may include labels with no clips yet
        self.clips = clips
        self.background = background  # the "nothing happening" label, when there is one
        self.fps = fps
        self.size = size  # (width, height)
        self.source = source
        self._lock = threading.RLock()

    # -- opening -----------------------------------------------------------------------------------

    @classmethod
    def create(cls, root: Path, *, background: bool = True) -> TeachDataset:
        """A new, empty data set in ``root`` (created if needed), with the background label if asked."""
        root = Path(root)
        if (root / DATASET_FILE).exists():
            raise DataError(f"{root}: a data set already exists here ({DATASET_FILE})")
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DataError(f"{root}: cannot create the data set folder ({exc.strerror or exc})") from None
        dataset = cls(root, [], [])
        if background:
            dataset.labels.append(BACKGROUND_LABEL)
            dataset.background = BACKGROUND_LABEL
            (root / BACKGROUND_LABEL).mkdir(exist_ok=True)
        dataset.save()
        return dataset

    @classmethod
    def open(cls, root: Path) -> TeachDataset:
        """The data set in ``root``; :class:`DataError` (one line) when it is missing or damaged."""
        root = Path(root)
        meta = root / DATASET_FILE
        if not meta.is_file():
            raise DataError(f"{root}: not a teach data set (no {DATASET_FILE})")
        try:
            data = json.loads(meta.read_text(encoding="utf-8"))
        except OSError as exc:
            raise DataError(f"{meta}: cannot read the data set file ({exc.strerror or exc})") from None
        except ValueError as exc:
            raise DataError(f"{meta}: damaged data set file (not JSON: {exc})") from None
        dataset = cls._from_json(root, data, meta)
        present = [c for c in dataset.clips if (root / c.path).is_file()]
        gone = [c.path for c in dataset.clips if c not in present]
        if gone:
            log.warning("%s: %d clip(s) listed but missing on disk, left out: %s", root, len(gone), ", ".join(gone))
            dataset.clips = present
        return dataset

    @classmethod
    def open_or_create(cls, root: Path, *, background: bool = True) -> TeachDataset:
        root = Path(root)
        if (root / DATASET_FILE).exists():
            return cls.open(root)
        return cls.create(root, background=background)

    @classmethod
    def _from_json(cls, root: Path, data: object, meta: Path) -> TeachDataset:
        def damaged(why: str) -> DataError:
            return DataError(f"{meta}: damaged data set file ({why})")

        if not isinstance(data, dict):
            raise damaged(f"expected an object, got {type(data).__name__}")
        version = data.get("version")
        if version != VERSION:
            raise damaged(f"version {version!r}, this build reads version {VERSION}")
        labels = data.get("labels")
        if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
            raise damaged("'labels' must be a list of names")
        if len({x.lower() for x in labels}) != len(labels):
            raise damaged("'labels' lists a name twice")
        for label in labels:
            try:
                if validate_label(label) != label:
                    raise DataError(f"label {label!r} has white space around it")
            except DataError as exc:  # a label names a folder: "../x" would reach outside the data set
                raise damaged(str(exc)) from None
        raw_clips = data.get("clips", [])
        if not isinstance(raw_clips, list):
            raise damaged("'clips' must be a list")
        clips = []
        for number, raw in enumerate(raw_clips, start=1):
            try:
                if not isinstance(raw, dict):
                    raise TypeError(f"expected an object, got {type(raw).__name__}")
                clip = ClipInfo.from_dict(raw)
            except KeyError as exc:
                raise damaged(f"clip {number} lacks {exc.args[0]}") from None
            except (TypeError, ValueError) as exc:
                raise damaged(f"clip {number}: {exc}") from None
            if clip.label not in labels:
                raise damaged(f"clip {clip.path!r} has the unknown label {clip.label!r}")
            problem = clip_path_problem(clip.path, clip.label)
            if problem:
                raise damaged(f"clip {number}: {problem}")
            clips.append(clip)
        background = data.get("background")
        if background is not None and background not in labels:
            background = None
        size = data.get("size")
        try:
            fps = float(data["fps"]) if data.get("fps") is not None else None
            size = (int(size[0]), int(size[1])) if size is not None else None
        except (TypeError, ValueError, IndexError):
            raise damaged("'fps' must be a number and 'size' a [width, height] pair") from None
        source = data.get("source")
        return cls(
            root,
            list(labels),
            clips,
            background=background,
            fps=fps,
            size=size,
            source=str(source) if source is not None else None,
        )

    # -- labels ------------------------------------------------------------------------------------

    def add_label(self, name: str) -> None:
        """Add a label (and its folder); :class:`DataError` when the name is unusable or taken."""
        with self._lock:
            label = validate_label(name)
            self._check_free(label)
            folder = self._inside(label)
            self.labels.append(label)
            self._mkdir(folder)
            self.save()

    def rename_label(self, old: str, new: str) -> None:
        """Rename a label: moves its folder and rewrites the paths of its clips."""
        with self._lock:
            self._check_known(old)
            label = validate_label(new)
            if label == old:
                return
            self._check_free(label, ignore=old)
            src, dst = self._inside(old), self._inside(label)
            try:
                if src.exists():
                    os.rename(src, dst)
                else:
                    dst.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise DataError(f"{src}: cannot rename the label folder to {label!r} ({exc.strerror or exc})") from None
            self.labels[self.labels.index(old)] = label
            if self.background == old:
                self.background = label
            self.clips = [
                replace(c, path=f"{label}/{c.path.split('/', 1)[1]}", label=label) if c.label == old else c
                for c in self.clips
            ]
            self.save()

    def delete_label(self, name: str) -> None:
        """Delete a label, its folder and all its clips."""
        with self._lock:
            self._check_known(name)
            folder = self._inside(name)
            if folder.exists():
                try:
                    shutil.rmtree(folder)
                except OSError as exc:
                    raise DataError(f"{folder}: cannot delete the label folder ({exc.strerror or exc})") from None
            self.labels.remove(name)
            self.clips = [c for c in self.clips if c.label != name]
            if self.background == name:
                self.background = None
            self.save()

    # -- clips -------------------------------------------------------------------------------------

    def new_clip_path(self, label: str) -> Path:
        """Absolute path of a fresh clip file name for ``label`` (neither it nor its partial file exists)."""
        with self._lock:
            self._check_known(label)
            folder = self._inside(label)
            self._mkdir(folder)
            now = time.time()
            stem = time.strftime("%Y%m%d-%H%M%S", time.localtime(now)) + f"-{int(now * 1000) % 1000:03d}"
            candidate, n = stem, 1
            while (folder / (candidate + CLIP_EXT)).exists() or (folder / (candidate + PARTIAL_EXT)).exists():
                candidate = f"{stem}-{n}"
                n += 1
            return folder / (candidate + CLIP_EXT)

    def add_clip(self, info: ClipInfo) -> None:
        """Register a finished clip (its file must already be in place under the label's folder)."""
        with self._lock:
            self._check_known(info.label)
            problem = clip_path_problem(info.path, info.label)
            if problem:
                raise DataError(problem)
            if any(c.path == info.path for c in self.clips):
                raise DataError(f"{self.root}: the clip {info.path!r} is already registered")
            if not self._inside(info.path).is_file():
                raise DataError(f"{self.root / info.path}: the clip file does not exist")
            self.clips.append(info)
            self.fps, self.size, self.source = info.fps, (info.width, info.height), info.source
            self.save()

    def delete_clip(self, path: str) -> None:
        """Remove a clip (by its relative path) from disk and from the data set."""
        with self._lock:
            path = Path(path).as_posix() if not isinstance(path, str) else path
            if not any(c.path == path for c in self.clips):
                raise DataError(f"{self.root}: no clip {path!r} in this data set")
            target = self._inside(path)
            try:
                target.unlink(missing_ok=True)
            except OSError as exc:
                raise DataError(f"{self.root / path}: cannot delete the clip ({exc.strerror or exc})") from None
            self.clips = [c for c in self.clips if c.path != path]
            self.save()

    def clips_of(self, label: str) -> list[ClipInfo]:
        return [c for c in self.clips if c.label == label]

    def counts(self) -> dict[str, int]:
        """Clips per label, in label order; every label is present (0 allowed)."""
        counts = dict.fromkeys(self.labels, 0)
        for clip in self.clips:
            counts[clip.label] = counts.get(clip.label, 0) + 1
        return counts

    def check_trainable(self) -> None:
        """:class:`DataError` unless at least 2 labels have clips and every label with clips has 2 or more."""
        counts = self.counts()
        used = {k: v for k, v in counts.items() if v}
        if len(used) < 2:
            have = ", ".join(f"{k}: {v}" for k, v in counts.items()) or "no labels"
            raise DataError(f"{self.root}: record clips for at least 2 labels before training ({have})")
        few = [k for k, v in used.items() if v < 2]
        if few:
            raise DataError(f"{self.root}: record at least 2 clips of each label; only 1 of {', '.join(few)}")

    # -- saving ------------------------------------------------------------------------------------

    def to_json(self) -> dict:
        return {
            "version": VERSION,
            "labels": list(self.labels),
            "background": self.background,
            "fps": self.fps,
            "size": list(self.size) if self.size is not None else None,
            "source": self.source,
            "clips": [c.to_dict() for c in self.clips],
        }

    def save(self) -> None:
        """Write ``dataset.json`` and ``clips.csv`` atomically (temporary file, then ``os.replace``)."""
        with self._lock:
            table = io.StringIO()
            writer = csv.writer(table, lineterminator="\n")
            writer.writerow(["clip", "label", "source_group"])
            for clip in self.clips:
                writer.writerow([clip.path, clip.label, clip.session])
            _write_atomic(self.root / CLIPS_FILE, table.getvalue())
            _write_atomic(self.root / DATASET_FILE, json.dumps(self.to_json(), indent=1) + "\n")

    # -- helpers -----------------------------------------------------------------------------------

    def _check_known(self, label: str) -> None:
        if label not in self.labels:
            known = ", ".join(self.labels) or "none yet"
            raise DataError(f"{self.root}: no label {label!r} in this data set (labels: {known})")

    def _check_free(self, label: str, ignore: str | None = None) -> None:
        for existing in self.labels:
            if existing != ignore and existing.lower() == label.lower():
                raise DataError(f"{self.root}: the label {existing!r} already exists")

    def _inside(self, relative: str) -> Path:
        """``root / relative`` once it is sure to stay inside the data set (symbolic links resolved);
        :class:`DataError` otherwise. Every delete, rename and write goes through here first."""
        path = self.root / relative
        root = self.root.resolve()
        try:
            resolved = path.resolve()
        except (OSError, RuntimeError) as exc:  # a symbolic link loop
            raise DataError(f"{path}: cannot be resolved ({exc})") from None
        if resolved == root or not resolved.is_relative_to(root):
            raise DataError(f"{self.root}: {relative[:80]!r} is outside the data set; nothing was changed")
        return path

    @staticmethod
    def _mkdir(folder: Path) -> None:
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DataError(f"{folder}: cannot create the folder ({exc.strerror or exc})") from None

    def __repr__(self) -> str:
        return f"TeachDataset({str(self.root)!r}, labels={self.labels}, clips={len(self.clips)})"


def _write_atomic(path: Path, text: str) -> None:
    try:
        atomic_write(path, text)
    except OSError as exc:
        raise DataError(f"{path}: cannot save ({exc.strerror or exc})") from None
