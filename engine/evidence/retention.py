"""Retention of the evidence folder: a limit on total size and on age, oldest first.

Only evidence files are ever deleted: regular files with the names the recorder gives
(``cam0_20260501T123456.789Z_fight.mp4`` / ``.jpg``) found under the folder without following symbolic
links (a link is never followed nor deleted, so nothing outside the folder is touched; a user's own
``holiday.mp4`` in the folder is neither deleted nor counted), plus temporary ``.NAME.partial.*`` files
left by a crash once they are an hour old. A clip
and its snapshot (same name, other suffix) count and go together, aged by the newer of the two. Names in
``protected`` (clips still being written and the snapshots that will follow them) are never deleted and
still count towards the size.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from dcrn.engine.evidence.names import is_evidence, is_partial

log = logging.getLogger(__name__)

STALE_PARTIAL_S = 3600.0  # a temporary file untouched this long belongs to no running writer


@dataclass
class _Group:
    """A clip and its snapshot: the files that share a name."""

    files: list[tuple[Path, int]] = field(default_factory=list)  # (path, size)
    newest: float = 0.0  # mtime of the newer file
    protected: bool = False

    @property
    def size(self) -> int:
        return sum(size for _, size in self.files)


@dataclass
class RetentionReport:
    deleted: list[Path]  # files removed, oldest first
    kept_bytes: int  # size of the evidence files left
    kept_files: int


def _walk(folder: Path) -> Iterator[os.DirEntry]:
    """Regular files under ``folder``, never through a symbolic link."""
    try:
        entries = list(os.scandir(folder))
    except OSError as exc:
        log.warning("evidence retention: cannot read %s: %s", folder, exc.strerror or exc)
        return
    for entry in entries:
        try:
            if entry.is_dir(follow_symlinks=False):
                yield from _walk(Path(entry.path))
            elif entry.is_file(follow_symlinks=False):
                yield entry
        except OSError:
            continue


def enforce_retention(
    root: Path,
    *,
    max_bytes: int | None,
    max_age_s: float | None,
    protected: Collection[Path] = (),
    now: float | None = None,
) -> RetentionReport:
    """Delete the oldest evidence under ``root`` until it is within both limits (None: no limit)."""
    now = time.time() if now is None else now
    groups: dict[Path, _Group] = {}
    stale: list[Path] = []
    for entry in _walk(root):
        path = Path(entry.path)
        try:
            stat = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        if is_partial(path):
            if path not in protected and now - stat.st_mtime > STALE_PARTIAL_S:
                stale.append(path)
            continue
        if not is_evidence(path):
            continue
        group = groups.setdefault(path.with_suffix(""), _Group())
        group.files.append((path, stat.st_size))
        group.newest = max(group.newest, stat.st_mtime)
        group.protected = group.protected or path in protected
    for key in protected:  # a snapshot not written yet protects its clip
        if key.with_suffix("") in groups:
            groups[key.with_suffix("")].protected = True
    deleted: list[Path] = []
    for path in stale:
        if _remove(path):
            deleted.append(path)
    total = sum(group.size for group in groups.values())
    kept = len(groups)
    for _, group in sorted(groups.items(), key=lambda item: item[1].newest):  # oldest first
        too_old = max_age_s is not None and now - group.newest > max_age_s
        too_big = max_bytes is not None and total > max_bytes
        if not (too_old or too_big):
            break  # every later group is newer, and the size is within its limit
        if group.protected:
            continue
        removed = [(path, size) for path, size in group.files if _remove(path)]
        deleted.extend(path for path, _ in removed)
        total -= sum(size for _, size in removed)
        kept -= len(removed) == len(group.files)
    if deleted:
        log.info("evidence retention: deleted %d files, %.1f MB left in %s", len(deleted), total / 1e6, root)
    return RetentionReport(deleted, total, kept)


def _remove(path: Path) -> bool:
    try:
        path.unlink()
    except FileNotFoundError:
        return True
    except OSError as exc:
        log.warning("evidence retention: cannot delete %s: %s", path, exc.strerror or exc)
        return False
    log.debug("evidence retention: deleted %s", path)
    return True
