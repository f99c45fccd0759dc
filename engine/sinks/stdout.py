"""``stdout``: JSON lines, or ``?format=text`` human-readable lines (``&every=N`` predictions).

The text format starts with one header line (``#`` first) naming its columns: stream, frame, pts, then
the label and score of a prediction (the runners-up in brackets) or ``>>>`` and an event.
"""

from __future__ import annotations

import contextlib
import os
import sys
from typing import TextIO

from dcrn.engine.sinks.base import Sink, json_line


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

    def open(self) -> StdoutSink:
        opening = self._handle is None
        super().open()
        if opening and self.text:  # once per open: the columns of the lines below
            with self._lock:
                self._write_line(text_header())
        return self

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


def text_header() -> str:
    """The header line of ``format=text``: its columns, aligned with :func:`text_line`'s."""
    return f"# {'stream':<7} {'frame':>6} {'pts':>9}  {'label / event':<14} score  (next best)\n"


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
