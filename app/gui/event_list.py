"""The list of stream and action events, newest at the bottom, savable as CSV or JSON Lines."""

from __future__ import annotations

import csv
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from PyQt6.QtWidgets import QAbstractItemView, QHeaderView, QTreeWidget, QTreeWidgetItem, QWidget

MAX_ROWS = 2000  # the oldest rows go first; a long-running window keeps a bounded list

TITLES = {
    "action_started": "Action started",
    "action_ended": "Action ended",
    "stream_lost": "Stream lost",
    "stream_restored": "Stream restored",
    "stream_ended": "Stream ended",
    "stream_changed": "Stream changed",  # another resolution or frame rate: the state was reset
    "session_started": "Started",
    "session_stopped": "Stopped",
    "error": "Error",
    "model_changed": "Model changed",
    "clip_recorded": "Clip recorded",
    "backend": "Backend",
}


@dataclass
class EventRow:
    wall: float  # seconds since the epoch
    event: str  # a record's "event" name
    detail: str  # label and score, or a reason; already redacted
    stream: str = ""
    pts: float | None = None

    @property
    def time_text(self) -> str:
        return time.strftime("%H:%M:%S", time.localtime(self.wall)) + f".{int(self.wall % 1 * 10)}"


class EventList(QTreeWidget):
    COLUMNS = ("Time", "Event", "Detail")

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.rows: list[EventRow] = []
        self.setColumnCount(len(self.COLUMNS))
        self.setHeaderLabels(self.COLUMNS)
        self.setRootIsDecorated(False)
        self.setUniformRowHeights(True)
        self.setAlternatingRowColors(True)
        self.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        header = self.header()
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(1, QHeaderView.ResizeMode.ResizeToContents)
        header.setStretchLastSection(True)

    def add(self, row: EventRow) -> None:
        at_bottom = self.verticalScrollBar().value() >= self.verticalScrollBar().maximum() - 2
        self.rows.append(row)
        item = QTreeWidgetItem([row.time_text, TITLES.get(row.event, row.event), row.detail])
        item.setToolTip(2, row.detail)
        self.addTopLevelItem(item)
        while len(self.rows) > MAX_ROWS:
            self.rows.pop(0)
            self.takeTopLevelItem(0)
        if at_bottom:
            self.scrollToBottom()

    def texts(self) -> list[str]:
        """Every visible cell of every row, for tests and copying."""
        return [self.topLevelItem(i).text(c) for i in range(self.topLevelItemCount()) for c in range(len(self.COLUMNS))]

    def clear_events(self) -> None:
        self.rows.clear()
        self.clear()

    def save(self, path: str | Path) -> Path:
        """``.jsonl`` -> one JSON object a line; anything else -> CSV with a header row."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix.lower() in (".jsonl", ".json"):
            with path.open("w", encoding="utf-8") as handle:
                for row in self.rows:
                    handle.write(json.dumps({"time": row.time_text, **asdict(row)}) + "\n")
        else:
            with path.open("w", encoding="utf-8", newline="") as handle:
                writer = csv.writer(handle)
                writer.writerow(["time", "wall", "event", "detail", "stream", "pts"])
                for row in self.rows:
                    writer.writerow([row.time_text, f"{row.wall:.3f}", row.event, row.detail, row.stream, row.pts])
        return path
