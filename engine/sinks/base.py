"""Sinks: where records go. The ``Sink`` base; the kinds live beside it, the spec parser in ``factory``.

Kinds: ``stdout``, ``jsonl:PATH`` (size-based rotation), ``csv:PATH``.

Every sink is a context manager that also offers ``open()`` / ``close()``, and takes whole records with
``write(record)``. A record becomes one line that is written whole and flushed at once, so a stop at any
moment (SIGTERM included) leaves complete lines only. ``open()`` fails with a one-line :class:`SinkError`
when the file cannot be written, so a bad path is reported at start-up, not after the first frame.

Spec options come as a query: ``jsonl:/var/log/dcrn.jsonl?max_mb=100&keep=5&logits=1``,
``stdout?format=text&every=10`` (a human-readable line for every 10th prediction, every event and stats).
``logits=1`` adds the raw per-frame logits to prediction records.
"""

from __future__ import annotations

import json
import math
import threading
from typing import TextIO

from dcrn.engine.errors import SinkError


class Sink:
    """Base: a line-oriented writer of records. Subclasses implement ``_open`` and ``_format``."""

    spec = "sink"

    def __init__(self, *, include_logits: bool = False) -> None:
        self.include_logits = include_logits
        self.written = 0
        self._handle: TextIO | None = None
        self._lock = threading.Lock()  # records may come from the pipeline and a signal-time flush

    def open(self) -> Sink:
        if self._handle is None:
            self._handle = self._open()
        return self

    def close(self) -> None:
        with self._lock:
            handle, self._handle = self._handle, None
            if handle is not None:
                try:
                    self._close(handle)
                except OSError as exc:
                    raise SinkError(f"{self.spec}: closing failed: {exc.strerror or exc}") from None

    def write(self, record: dict) -> None:
        if "logits" in record and not self.include_logits:
            record = {k: v for k, v in record.items() if k != "logits"}
        line = self._format(record)
        if line is None:
            return
        with self._lock:
            if self._handle is None:
                raise SinkError(f"{self.spec}: write to a sink that is not open")
            try:
                self._write_line(line)
            except OSError as exc:  # disk full, file system gone, ...: one clear line, not a traceback
                raise SinkError(f"{self.spec}: write failed: {exc.strerror or exc}") from None
            self.written += 1

    def flush(self) -> None:
        with self._lock:
            if self._handle is not None:
                try:
                    self._handle.flush()
                except OSError as exc:
                    raise SinkError(f"{self.spec}: write failed: {exc.strerror or exc}") from None

    def __enter__(self) -> Sink:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.spec!r})"

    # -- for subclasses ----------------------------------------------------------------------------

    def _open(self) -> TextIO:
        raise NotImplementedError

    def _close(self, handle: TextIO) -> None:
        handle.flush()
        handle.close()

    def _format(self, record: dict) -> str | None:
        return json_line(record)

    def _write_line(self, line: str) -> None:
        assert self._handle is not None
        self._handle.write(line)  # one call per whole line ...
        self._handle.flush()  # ... handed to the OS at once


def json_line(record: dict) -> str:
    return json.dumps(finite(record), separators=(", ", ": "), ensure_ascii=False) + "\n"


def finite(value):
    """NaN/inf are not JSON: write them as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value
