"""A bounded first-in, first-out queue of records kept on disk: what a delivery sink has not delivered yet.

A delivery sink (``mqtt://``, ``webhook:``) appends every record it takes to its outbox and a sender
thread takes them from the front, so a broker or endpoint that is down loses nothing and a restart of
``dcrn run`` sends what was waiting. The folder holds:

- ``NNNNNNNN.jsonl``: append-only segments, one JSON record a line. Each run of a sink writes a new
  segment (a line half-written by a crash stays in an old one and is skipped), rolled at ``segment_bytes``.
- ``ack.json``: how far the records were delivered, ``{"segment": N, "offset": BYTES, "dropped": K}``,
  replaced whole (:func:`dcrn.models.files.atomic_write`). Segments before it are deleted.
- ``spec.txt``: the sink it belongs to, credentials redacted (for people looking at the folder).
- ``lock``: held (``flock``) while a sink has the outbox open, so two runs never share one.

The acknowledged offset is written lazily (by the sender, at most every ``ack_every_s``), so a crash may
send a few records twice: delivery is at least once. Appends are handed to the OS at once (a killed process
loses nothing) and synced to disk by :meth:`Outbox.sync` from the sender thread, never from the writer.

Bounded by ``max_records`` and ``max_bytes``: when an append would pass either, the oldest records are
dropped, counted, and a warning says so (at most one every ``WARN_EVERY_S``). The records waiting are
mirrored in memory (the same bound), so the sender never reads the files back while the run goes on.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from dcrn.engine.errors import SinkError
from dcrn.models.files import atomic_write

try:  # POSIX; elsewhere two runs sharing an outbox are not prevented
    import fcntl
except ImportError:  # pragma: no cover - not on Linux
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

ACK_FILE = "ack.json"
WARN_EVERY_S = 10.0  # at most one "outbox full" warning this often


@dataclass(frozen=True)
class OutboxLimits:
    """How much an outbox keeps; past either bound the oldest records are dropped."""

    max_records: int = 100_000  # records waiting
    max_bytes: int = 64 * 1024 * 1024  # bytes of records waiting (64 MB)
    segment_bytes: int = 4 * 1024 * 1024  # a segment file is rolled past this size
    ack_every_s: float = 1.0  # the delivered offset is written to disk at most this often

    def __post_init__(self) -> None:
        if self.max_records < 1 or self.max_bytes < 1024 or self.segment_bytes < 1024 or self.ack_every_s < 0:
            raise ValueError(
                f"outbox limits must be max_records >= 1, max_bytes >= 1024, segment_bytes >= 1024 and "
                f"ack_every_s >= 0, got {self.max_records}, {self.max_bytes}, {self.segment_bytes}, {self.ack_every_s}"
            )


@dataclass(frozen=True)
class Entry:
    """One record waiting: its place in this run (``seq``) and on disk (where its line ends)."""

    seq: int
    segment: int
    end: int  # byte offset just past the line's newline in ``segment``
    line: bytes  # the JSON record, without the newline

    def record(self) -> dict:
        return json.loads(self.line)


class Outbox:
    """The records a sink has not delivered yet, in order, on disk under ``folder``.

    Thread-safe: one writer (:meth:`append`) and one sender (:meth:`peek`, :meth:`ack`, :meth:`sync`).
    """

    def __init__(self, folder: str | os.PathLike, *, limits: OutboxLimits | None = None, label: str = "") -> None:
        self.folder = Path(folder)
        self.limits = limits or OutboxLimits()
        self.label = label or str(self.folder)  # how messages name it (the sink's redacted spec)
        self.dropped = 0  # records dropped because the outbox was full, in this run
        self.loaded = 0  # records found waiting from an earlier run
        self._lock = threading.Lock()
        self._pending: deque[Entry] = deque()
        self._bytes = 0
        self._seq = 0
        self._acked = (0, 0)  # (segment, offset) delivered up to
        self._acked_on_disk = (0, 0)
        self._dropped_total = 0  # across runs, as kept in ack.json
        self._segment = 0
        self._handle: BinaryIO | None = None
        self._lock_handle: BinaryIO | None = None
        self._last_sync = 0.0
        self._last_warning = -WARN_EVERY_S
        self._unsynced = False

    # -- life cycle --------------------------------------------------------------------------------

    def open(self) -> Outbox:
        """Lock the folder, read what an earlier run left and start a new segment. Raises SinkError."""
        if self._handle is not None:
            return self
        self._pending.clear()  # the folder says what waits (also when a closed outbox is opened again)
        self._bytes = 0
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            self._lock_folder()
            (self.folder / "spec.txt").write_text(self.label + "\n", encoding="utf-8")
            self._acked = self._acked_on_disk = self._read_ack()
            segments = self._segments()
            for number in segments:
                if number < self._acked[0]:
                    (self.folder / f"{number:08d}.jsonl").unlink(missing_ok=True)
                else:
                    self._load(number)
            self.loaded = len(self._pending)
            self._segment = max([*segments, self._acked[0]]) + 1  # always past the delivered offset
            self._handle = open(self.folder / f"{self._segment:08d}.jsonl", "ab")  # noqa: SIM115 - kept open
        except SinkError:
            self._unlock()
            raise
        except OSError as exc:
            self._unlock()
            raise SinkError(f"{self.label}: cannot use outbox {self.folder}: {exc.strerror or exc}") from None
        with self._lock:
            self._enforce_bounds(incoming=0)
        if self.loaded:
            log.info("%s: %d records waiting in outbox %s from an earlier run", self.label, self.loaded, self.folder)
        return self

    def close(self) -> None:
        """Write the delivered offset, close the files and unlock. Records not delivered stay on disk."""
        with self._lock:
            handle, self._handle = self._handle, None
        if handle is None:
            return
        try:
            handle.flush()
            os.fsync(handle.fileno())
            handle.close()
            self._write_ack(force=True)
            if not self._pending:  # nothing waits: leave an empty folder (and no ever-growing segment numbers)
                for number in self._segments():
                    (self.folder / f"{number:08d}.jsonl").unlink(missing_ok=True)
                (self.folder / ACK_FILE).unlink(missing_ok=True)
        except OSError as exc:
            raise SinkError(f"{self.label}: closing outbox {self.folder} failed: {exc.strerror or exc}") from None
        finally:
            self._unlock()

    # -- the writer --------------------------------------------------------------------------------

    def append(self, line: bytes) -> None:
        """Add one record (a JSON line without its newline). Never waits for the sender; raises SinkError
        when the disk cannot be written."""
        data = line + b"\n"
        with self._lock:
            if self._handle is None:
                raise SinkError(f"{self.label}: write to an outbox that is not open")
            self._enforce_bounds(incoming=len(data))
            if self._handle.tell() + len(data) > self.limits.segment_bytes and self._handle.tell() > 0:
                self._roll()
            try:
                self._handle.write(data)
                self._handle.flush()  # handed to the OS: a killed process loses nothing
            except OSError as exc:
                raise SinkError(f"{self.label}: outbox {self.folder}: write failed: {exc.strerror or exc}") from None
            self._seq += 1
            self._pending.append(Entry(self._seq, self._segment, self._handle.tell(), line))
            self._bytes += len(data)
            self._unsynced = True

    # -- the sender --------------------------------------------------------------------------------

    def __len__(self) -> int:
        with self._lock:
            return len(self._pending)

    def peek(self, limit: int) -> list[Entry]:
        """Up to ``limit`` of the oldest records waiting (they stay until :meth:`ack`)."""
        with self._lock:
            return [self._pending[i] for i in range(min(limit, len(self._pending)))]

    def ack(self, entry: Entry) -> None:
        """``entry`` and every record before it are delivered (or given up): drop them from the outbox."""
        with self._lock:
            while self._pending and self._pending[0].seq <= entry.seq:
                done = self._pending.popleft()
                self._bytes -= len(done.line) + 1
                self._acked = (done.segment, done.end)

    def sync(self, *, force: bool = False) -> None:
        """From the sender thread: sync appended records to disk and write the delivered offset (at most
        every ``ack_every_s`` unless ``force``). Errors are logged, not raised: the records are still there."""
        now = time.monotonic()
        if not force and now - self._last_sync < self.limits.ack_every_s:
            return
        self._last_sync = now
        try:
            with self._lock:
                handle, unsynced, self._unsynced = self._handle, self._unsynced, False
            if handle is None:  # closed (close() writes the offset itself)
                return
            if unsynced:
                os.fsync(handle.fileno())
            self._write_ack(force=force)
        except (OSError, ValueError) as exc:  # ValueError: closed meanwhile
            log.warning("%s: outbox %s: %s", self.label, self.folder, getattr(exc, "strerror", None) or exc)

    # -- inside ------------------------------------------------------------------------------------

    def _enforce_bounds(self, *, incoming: int) -> None:
        """Drop the oldest records until ``incoming`` more bytes (and one more record) fit. Lock held."""
        limits, dropped = self.limits, 0
        extra = 1 if incoming else 0
        while self._pending and (
            len(self._pending) + extra > limits.max_records or self._bytes + incoming > limits.max_bytes
        ):
            done = self._pending.popleft()
            self._bytes -= len(done.line) + 1
            self._acked = (done.segment, done.end)
            dropped += 1
        if not dropped:
            return
        self.dropped += dropped
        self._dropped_total += dropped
        now = time.monotonic()
        if now - self._last_warning >= WARN_EVERY_S:
            self._last_warning = now
            log.warning(
                "%s: outbox %s is full (%d records, %.1f MB at most): dropped the oldest; %d dropped so far",
                self.label,
                self.folder,
                limits.max_records,
                limits.max_bytes / 1e6,
                self.dropped,
            )

    def _roll(self) -> None:
        assert self._handle is not None
        self._handle.close()
        self._segment += 1
        self._handle = open(self.folder / f"{self._segment:08d}.jsonl", "ab")  # noqa: SIM115 - kept open

    def _segments(self) -> list[int]:
        return sorted(int(p.stem) for p in self.folder.glob("*.jsonl") if p.stem.isdigit())

    def _load(self, number: int) -> None:
        """Queue the complete, readable lines of segment ``number`` past the delivered offset."""
        start = self._acked[1] if number == self._acked[0] else 0
        data = (self.folder / f"{number:08d}.jsonl").read_bytes()
        position, bad = start, 0
        while position < len(data):
            end = data.find(b"\n", position)
            if end < 0:  # a line cut short by a crash: never completed, never sent
                bad += 1
                break
            line = data[position:end]
            position = end + 1
            try:
                if not isinstance(json.loads(line), dict):
                    raise ValueError("not a record")
            except ValueError:
                bad += 1
                continue
            self._seq += 1
            self._pending.append(Entry(self._seq, number, position, line))
            self._bytes += len(line) + 1
        if bad:
            log.warning(
                "%s: outbox %s: skipped %d unreadable lines in %08d.jsonl", self.label, self.folder, bad, number
            )

    def _read_ack(self) -> tuple[int, int]:
        path = self.folder / ACK_FILE
        if not path.exists():
            return (0, 0)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            segment, offset = int(data["segment"]), int(data["offset"])
            self._dropped_total = int(data.get("dropped", 0))
            if segment < 0 or offset < 0:
                raise ValueError("negative")
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("%s: outbox %s: %s unreadable (%s): sending all it holds", self.label, self.folder, path, exc)
            return (0, 0)
        return (segment, offset)

    def _write_ack(self, *, force: bool) -> None:
        with self._lock:
            acked = self._acked
        if acked == self._acked_on_disk:
            return
        content = {"segment": acked[0], "offset": acked[1], "dropped": self._dropped_total}
        atomic_write(self.folder / ACK_FILE, json.dumps(content) + "\n")
        self._acked_on_disk = acked
        for number in self._segments():
            if number >= acked[0]:
                break
            (self.folder / f"{number:08d}.jsonl").unlink(missing_ok=True)

    def _lock_folder(self) -> None:
        if fcntl is None:
            return
        handle = open(self.folder / "lock", "ab")  # noqa: SIM115 - held while open
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            raise SinkError(
                f"{self.label}: outbox {self.folder} is in use by another run (give each run its own with ?outbox=DIR)"
            ) from None
        self._lock_handle = handle

    def _unlock(self) -> None:
        handle, self._lock_handle = self._lock_handle, None
        if handle is not None:
            with contextlib.suppress(OSError):
                handle.close()
