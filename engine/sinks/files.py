"""``jsonl:PATH`` (size-based rotation) and ``csv:PATH``: files written a whole line at a time."""

from __future__ import annotations

import csv
import io
import json
import logging
import os
from pathlib import Path
from typing import TextIO

from dcrn.engine.errors import SinkError
from dcrn.engine.sinks.base import Sink

log = logging.getLogger(__name__)

MAX_MB = 1e6  # jsonl rotation size, MB (a terabyte)
MAX_KEEP = 1000  # rotated jsonl files kept
CSV_FIELDS = (
    "type",
    "stream",
    "frame",
    "pts",
    "wall",
    "event",
    "label",
    "score",
    "latency_ms",
    "fps",
    "dropped",
    "latency_ms_p50",
    "latency_ms_p99",
    "top",
)


class JsonlSink(Sink):
    """JSON Lines file; rotates at ``max_mb`` (PATH -> PATH.1 -> ... -> PATH.keep), 0 = never.

    ``keep`` >= 1: the file being written is never deleted, only renamed to PATH.1.
    """

    def __init__(self, path: str | os.PathLike, *, max_mb: float = 0.0, keep: int = 5, include_logits: bool = False):
        super().__init__(include_logits=include_logits)
        if not 0 <= max_mb <= MAX_MB or not 1 <= keep <= MAX_KEEP:
            raise SinkError(f"jsonl:{path}: max_mb must be in [0, {MAX_MB:g}] and keep in [1, {MAX_KEEP}]")
        self.path = Path(path)
        self.max_bytes = int(max_mb * 1024 * 1024)
        self.keep = keep
        self.spec = f"jsonl:{self.path}"
        self._size = 0

    def _open(self) -> TextIO:
        handle = _open_for_append(self.path, self.spec)
        self._size = handle.tell()
        return handle

    def _write_line(self, line: str) -> None:
        size = len(line.encode("utf-8"))
        if self.max_bytes and self._size and self._size + size > self.max_bytes:
            self._rotate()
        super()._write_line(line)
        self._size += size

    def _rotate(self) -> None:
        assert self._handle is not None
        self._handle.close()
        self._handle = None
        for index in range(self.keep - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{index}")
            if older.exists():
                os.replace(older, self.path.with_name(f"{self.path.name}.{index + 1}"))
        os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))
        log.info("%s: rotated at %.1f MB", self.spec, self._size / 1e6)
        self._handle = _open_for_append(self.path, self.spec)
        self._size = 0


class CsvSink(Sink):
    """One CSV file for every record type, columns ``CSV_FIELDS``; ``top`` is a JSON list."""

    def __init__(self, path: str | os.PathLike, *, include_logits: bool = False) -> None:
        super().__init__(include_logits=False)
        self.path = Path(path)
        self.spec = f"csv:{self.path}"

    def _open(self) -> TextIO:
        handle = _open_for_append(self.path, self.spec)
        if handle.tell() == 0:
            handle.write(self._row({name: name for name in CSV_FIELDS}))
            handle.flush()
        return handle

    def _format(self, record: dict) -> str:
        row = {name: record.get(name) for name in CSV_FIELDS}
        if row["top"] is not None:
            row["top"] = json.dumps(row["top"])
        return self._row(row)

    @staticmethod
    def _row(row: dict) -> str:
        buffer = io.StringIO()
        csv.DictWriter(buffer, fieldnames=CSV_FIELDS, lineterminator="\n").writerow(
            {k: "" if v is None else v for k, v in row.items()}
        )
        return buffer.getvalue()


def _open_for_append(path: Path, spec: str) -> TextIO:
    try:
        if path.parent != Path() and not path.parent.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
        return open(path, "a", encoding="utf-8", newline="")
    except OSError as exc:
        raise SinkError(f"{spec}: cannot write {path}: {exc.strerror or exc}") from None
