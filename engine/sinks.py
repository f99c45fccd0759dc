"""Sinks: where records go. ``stdout``, ``jsonl:PATH`` (size-based rotation), ``csv:PATH``.

Every sink is a context manager that also offers ``open()`` / ``close()``, and takes whole records with
``write(record)``. A record becomes one line that is written whole and flushed at once, so a stop at any
moment (SIGTERM included) leaves complete lines only. ``open()`` fails with a one-line :class:`SinkError`
when the file cannot be written, so a bad path is reported at start-up, not after the first frame.

Spec options come as a query: ``jsonl:/var/log/dcrn.jsonl?max_mb=100&keep=5&logits=1``,
``stdout?format=text&every=10`` (a human-readable line for every 10th prediction, every event and stats).
``logits=1`` adds the raw per-frame logits to prediction records.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import math
import os
import sys
import threading
from pathlib import Path
from typing import TextIO
from urllib.parse import parse_qsl

from dcrn.engine.errors import SinkError

log = logging.getLogger(__name__)

SINK_KINDS = ("stdout", "jsonl", "csv")
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
    return json.dumps(_finite(record), separators=(", ", ": "), ensure_ascii=False) + "\n"


def _finite(value):
    """NaN/inf are not JSON: write them as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


class StdoutSink(Sink):
    """JSON lines on stdout, or ``format=text``: a short human-readable line per record."""

    def __init__(
        self, *, text: bool = False, every: int = 1, include_logits: bool = False, stream: TextIO | None = None
    ) -> None:
        super().__init__(include_logits=include_logits)
        self.text = text
        self.every = every  # text: show every Nth prediction of a stream (events and stats always)
        self.spec = "stdout?format=text" if text else "stdout"
        self._stream = stream
        self._seen: dict[str, int] = {}

    def _open(self) -> TextIO:
        return self._stream or sys.stdout

    def _close(self, handle: TextIO) -> None:
        with contextlib.suppress(BrokenPipeError, ValueError):
            handle.flush()

    def _format(self, record: dict) -> str | None:
        if not self.text:
            return json_line(record)
        if record.get("type") == "prediction" and self.every > 1:
            count = self._seen.get(record.get("stream", ""), 0)
            self._seen[record.get("stream", "")] = count + 1
            if count % self.every:
                return None
        return text_line(record)

    def _write_line(self, line: str) -> None:
        try:
            super()._write_line(line)
        except BrokenPipeError:  # `dcrn run | head`: the reader left; stop writing to it quietly
            self._handle = open(os.devnull, "w")  # noqa: SIM115 - owned by the sink until close()


def text_line(record: dict) -> str:
    """A one-line human view of a record (``stdout?format=text``, ``dcrn demo``)."""
    kind = record.get("type")
    head = f"{record.get('stream', '')} {record.get('frame', '')!s:>6} {_num(record.get('pts'), 2):>8}s"
    if kind == "prediction":
        others = "  ".join(f"{label} {score:.2f}" for label, score in record.get("top", [])[1:])
        return f"{head}  {record['label']:<14} {record['score']:.2f}   ({others})\n"
    if kind == "event":
        score = f" {record['score']:.2f}" if isinstance(record.get("score"), float) else ""
        what = f"{record['event']} {record.get('label') or ''}{score}".strip()
        detail = f" ({record['detail']})" if record.get("detail") else ""
        return f"{head}  >>> {what}{detail}\n"
    if kind == "stats":
        return (
            f"{record.get('stream', '')} stats: {_num(record.get('fps'), 1)} fps, {record.get('dropped')} dropped, "
            f"latency p50 {_num(record.get('latency_ms_p50'), 1)} ms, p99 {_num(record.get('latency_ms_p99'), 1)} ms\n"
        )
    return json_line(record)


def _num(value, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


class JsonlSink(Sink):
    """JSON Lines file; rotates at ``max_mb`` (PATH -> PATH.1 -> ... -> PATH.keep), 0 = never."""

    def __init__(self, path: str | os.PathLike, *, max_mb: float = 0.0, keep: int = 5, include_logits: bool = False):
        super().__init__(include_logits=include_logits)
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
        if self.keep < 1:
            self.path.unlink(missing_ok=True)
        else:
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


def parse_sink(spec: str) -> Sink:
    """``stdout``, ``stdout?format=text``, ``jsonl:PATH[?max_mb=M&keep=K&logits=1]``, ``csv:PATH`` -> a Sink."""
    kind, _, rest = spec.partition(":")
    query = ""
    if kind.startswith("stdout"):
        kind, _, query = kind.partition("?")
        rest = ""
    elif "?" in rest:
        rest, _, query = rest.rpartition("?")
    if kind not in SINK_KINDS:
        raise SinkError(f"unknown sink {spec!r} (use stdout, jsonl:PATH or csv:PATH)")
    try:
        options = dict(parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query)))
    except ValueError:
        raise SinkError(f"sink {spec!r}: options must look like ?name=value&name=value") from None
    allowed = {"stdout": {"format", "every", "logits"}, "jsonl": {"max_mb", "keep", "logits"}, "csv": set()}[kind]
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise SinkError(f"sink {spec!r}: unknown options {unknown} (this sink takes {sorted(allowed) or 'none'})")
    logits = options.get("logits", "0").lower() in ("1", "true", "yes")
    if kind == "stdout":
        fmt = options.get("format", "json")
        if fmt not in ("json", "text"):
            raise SinkError(f"sink {spec!r}: format must be json or text, got {fmt!r}")
        try:
            every = int(options.get("every", 1))
        except ValueError:
            every = 0
        if every < 1:
            raise SinkError(f"sink {spec!r}: every must be a whole number >= 1")
        return StdoutSink(text=fmt == "text", every=every, include_logits=logits)
    if not rest:
        raise SinkError(f"sink {spec!r} needs a path: {kind}:PATH")
    if kind == "csv":
        return CsvSink(rest)
    try:
        max_mb = float(options.get("max_mb", 0))
        keep = int(options.get("keep", 5))
    except ValueError:
        raise SinkError(f"sink {spec!r}: max_mb must be a number and keep an integer") from None
    if max_mb < 0 or keep < 0:
        raise SinkError(f"sink {spec!r}: max_mb and keep must be >= 0")
    return JsonlSink(rest, max_mb=max_mb, keep=keep, include_logits=logits)
