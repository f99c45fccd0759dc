"""The backends' cache of derived files: exported step graphs, INT8 graphs, TensorRT engines.

Files live under :func:`dcrn.models.files.cache_root`, named by a hash of what they were made from, and
are written whole or not at all (:func:`dcrn.models.files.atomic_file`). :func:`cached_file` makes a file
once per process even when several streams open together; :func:`open_cached` opens one, and a file that
does not load (truncated by a full disk, written by another version) is made again once before the error
reaches the user as one line.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from dcrn.engine.errors import BackendUnavailable
from dcrn.models.errors import ConfigError
from dcrn.models.files import atomic_file

log = logging.getLogger(__name__)

T = TypeVar("T")

_CACHE_LOCK = threading.RLock()


def cached_file(path: Path, make: Callable[[Path], object]) -> Path:
    """``path`` from the cache, or made now: ``make(tmp)`` writes a temporary file beside it, which then
    replaces ``path`` whole (another process never reads half a file). Threads of one process make a file
    once: streams that open together on a cluster host wait for the first and find its file. Re-entrant,
    so a maker may use the cache itself (the INT8 graph starts from the float32 one)."""
    if path.is_file():
        return path
    with _CACHE_LOCK:
        if path.is_file():
            return path
        try:
            with atomic_file(path) as tmp:
                make(tmp)
        except OSError as exc:
            raise BackendUnavailable(f"cannot write to the cache folder {path.parent}: {exc.strerror or exc}") from None
    return path


def open_cached(make: Callable[[], Path], load: Callable[[Path], T]) -> T:
    """``load(make())``; when the cached file does not load, it is removed and made again, once.

    ``make`` returns the cached file's path (making it if it is missing, through :func:`cached_file`).
    A second failure is a :class:`BackendUnavailable` naming the file and the first line of the cause; a
    :class:`ConfigError` (the request is wrong, not the file) passes through at once.
    """
    path = make()
    try:
        return load(path)
    except ConfigError:
        raise  # the request is wrong, not the file
    except Exception as exc:  # any runtime's reader: onnxruntime, OpenVINO, TensorRT, onnx
        log.warning("the cached %s does not load (%s): making it again", path, _first_line(exc))
        with _CACHE_LOCK:
            path.unlink(missing_ok=True)
    path = make()
    try:
        return load(path)
    except Exception as exc:
        raise BackendUnavailable(f"{path} does not load, also when made again: {_first_line(exc)}") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]
