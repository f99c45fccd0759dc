"""File names of clips and snapshots: safe characters only, always inside the evidence folder.

A clip of ``fight`` on stream ``cam0`` that started at 12:34:56.789 UTC on 1 May 2026 is
``cam0/cam0_20260501T123456.789Z_fight.mp4``, its snapshot the same name with ``.jpg``; both paths are
relative to the evidence folder, with ``/`` between parts. Stream and label names keep ASCII letters,
digits, ``_`` and ``-`` (anything else becomes ``-``; at most 48 characters), so a name can hold no ``/``,
``..``, leading dot or drive letter. While a clip is written it is ``.NAME.partial.mp4`` beside its final
name.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path

from dcrn.engine.evidence.config import EvidenceError

UNSAFE = re.compile(r"[^A-Za-z0-9_\-]+")
MAX_PART = 48  # characters of a stream or label name in a file name
PARTIAL = ".partial"  # temporary names: "." + stem + PARTIAL + suffix
CLIP_SUFFIX = ".mp4"
SNAPSHOT_SUFFIX = ".jpg"
# Device names that Windows refuses as file names, whatever the extension.
RESERVED = {"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(10)), *(f"LPT{i}" for i in range(10))}


def safe_part(text: object, fallback: str) -> str:
    """``text`` as a file-name part: ASCII letters, digits, ``_``, ``-``; ``fallback`` when nothing is left."""
    part = UNSAFE.sub("-", str(text)).strip("-_")[:MAX_PART].strip("-_")
    if not part:
        return fallback
    return f"{part}_" if part.upper() in RESERVED else part


def utc_stamp(wall: float) -> str:
    """Wall-clock seconds -> ``20260501T123456.789Z``."""
    whole = int(wall // 1)
    millis = min(round((wall - whole) * 1000), 999)
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime(whole)) + f".{millis:03d}Z"


def temp_path(final: Path) -> Path:
    """Where ``final`` is written before it is complete: ``.NAME.partial.SUFFIX`` beside it."""
    return final.with_name(f".{final.stem}{PARTIAL}{final.suffix}")


# The stem of every file the recorder writes: stream, UTC time, label (and "-2", "-3", ... when taken).
EVIDENCE_STEM = re.compile(r"[A-Za-z0-9_\-]+_\d{8}T\d{6}\.\d{3}Z_[A-Za-z0-9_\-]+")


def is_evidence(path: Path) -> bool:
    """A clip or snapshot name the recorder gives (``cam0_20260501T123456.789Z_fight.mp4``)."""
    return path.suffix in (CLIP_SUFFIX, SNAPSHOT_SUFFIX) and EVIDENCE_STEM.fullmatch(path.stem) is not None


def is_partial(path: Path) -> bool:
    """A temporary name of a clip or snapshot being written (``.cam0_..._fight.partial.mp4``)."""
    stem = path.stem
    return (
        path.suffix in (CLIP_SUFFIX, SNAPSHOT_SUFFIX)
        and stem.startswith(".")
        and stem.endswith(PARTIAL)
        and EVIDENCE_STEM.fullmatch(stem[1 : -len(PARTIAL)]) is not None
    )


@dataclass(frozen=True)
class EvidenceNames:
    """Where one action's clip and snapshot go: relative names (for records) and absolute paths."""

    clip: str  # relative to the evidence folder, "/"-separated
    snapshot: str
    clip_path: Path
    snapshot_path: Path


def inside(root: Path, path: Path) -> Path:
    """``path`` resolved (symbolic links followed); EvidenceError when that is not inside ``root``."""
    resolved = path.resolve()
    if not resolved.is_relative_to(root):
        raise EvidenceError(f"evidence: {path} resolves to {resolved}, outside the evidence folder {root}")
    return resolved


def choose_names(root: Path, stream: object, label: object, wall: float, taken: set[Path]) -> EvidenceNames:
    """Names for a new clip and snapshot under ``root`` (resolved), unique among files and ``taken``.

    Creates the stream's folder. Raises EvidenceError when that folder resolves outside ``root`` (a
    symbolic link pointing elsewhere) or cannot be created.
    """
    stream_part = safe_part(stream, "stream")
    label_part = safe_part(label, "action")
    folder = root / stream_part
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise EvidenceError(f"evidence: cannot create {folder}: {exc.strerror or exc}") from exc
    folder = inside(root, folder)
    stem = f"{stream_part}_{utc_stamp(wall)}_{label_part}"
    for count in range(1, 10_000):
        name = stem if count == 1 else f"{stem}-{count}"
        clip, snapshot = folder / (name + CLIP_SUFFIX), folder / (name + SNAPSHOT_SUFFIX)
        if not any(p in taken or p.exists() or temp_path(p).exists() for p in (clip, snapshot)):
            return EvidenceNames(
                clip=clip.relative_to(root).as_posix(),
                snapshot=snapshot.relative_to(root).as_posix(),
                clip_path=clip,
                snapshot_path=snapshot,
            )
    raise EvidenceError(f"evidence: no free name for {stem} in {folder}")
