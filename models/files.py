"""Files written whole or not at all, and where the project caches what it derives.

Every file the project writes that another run or process reads back (checkpoints, data set indexes,
exported graphs, TensorRT engines, a cluster node's copy of a checkpoint) goes through
:func:`atomic_file` (or :func:`atomic_write` for bytes and text): the content is written to a temporary
file in the target's folder, flushed to disk, then renamed over the target, so a crash or a concurrent
reader never sees half a file.

:func:`cache_root` is the one place that says where derived files live: ``cache_dir`` when given, else
``$DCRN_CACHE_DIR``, else ``$XDG_CACHE_HOME/dcrn``, else ``~/.cache/dcrn``.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """Where derived files are cached: ``cache_dir``, ``$DCRN_CACHE_DIR``, ``$XDG_CACHE_HOME/dcrn`` or
    ``~/.cache/dcrn``."""
    if cache_dir is not None:
        return Path(cache_dir)
    if os.environ.get("DCRN_CACHE_DIR"):
        return Path(os.environ["DCRN_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "dcrn"


@contextmanager
def atomic_file(path: str | os.PathLike, *, mode: int | None = None) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to; when the block ends without an error the file is
    flushed to disk and renamed over ``path``, else removed (``path`` is then left as it was).

    For writers that want a path of their own (an exporter, ``np.save``). ``mode`` sets the permission bits
    (e.g. those of the file it copies); without it the file gets the mode of a new file (0o666 less the umask).
    Raises ``OSError`` when the folder cannot be written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f"{path.suffix}.tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.chmod(tmp, mode if mode is not None else 0o666 & ~_UMASK)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write(path: str | os.PathLike, content: bytes | str, *, mode: int | None = None) -> Path:
    """Write ``content`` (bytes, or text as UTF-8 with its newlines as given) to ``path`` whole or not at
    all (see :func:`atomic_file`), and return ``path``."""
    with atomic_file(path, mode=mode) as tmp:
        tmp.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    return Path(path)


def _read_umask() -> int:
    """The process's umask, read once at import: there is no getter, and setting it to read it back is not
    safe while other threads create files."""
    current = os.umask(0o022)
    os.umask(current)
    return current


_UMASK = _read_umask()
