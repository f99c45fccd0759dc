"""The list of stream and action events, newest at the bottom, savable as CSV or JSON Lines.

An action event with evidence (``dcrn gui --evidence DIR``) shows its clip in the last column; a double
click, or "Open clip" in the row's menu, asks the window to play it (``clip_requested(path)``).
"""

from __future__ import annotations

import csv
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from PyQt6.QtCore import QPoint, Qt, pyqtSignal
from PyQt6.QtWidgets import QAbstractItemView, QHeaderView, QMenu, QTreeWidget, QTreeWidgetItem, QWidget

CLIP_TEXT = "▶ clip"  # the Clip column of a row whose action has a clip
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
    "model_not_used": "Model not used",  # taught, not clearly better than chance: waits for "Use it anyway"
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
    clip: str = ""  # the action's evidence clip (a full path), when evidence is on
    snapshot: str = ""  # and its snapshot

    @property
    def time_text(self) -> str:
        return time.strftime("%H:%M:%S", time.localtime(self.wall)) + f".{int(self.wall % 1 * 10)}"


class EventList(QTreeWidget):
    COLUMNS = ("Time", "Event", "Detail", "Clip")
    clip_requested = pyqtSignal(str)  # the path of a row's clip: play it
    file_requested = pyqtSignal(str)  # a snapshot (or a clip) to open outside the window

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
        header.setSectionResizeMode(2, QHeaderView.ResizeMode.Stretch)
        header.setSectionResizeMode(3, QHeaderView.ResizeMode.ResizeToContents)
        header.setStretchLastSection(False)
        self.itemDoubleClicked.connect(lambda item, _column: self._open(item, "clip"))
        self.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.customContextMenuRequested.connect(self._menu)

    def add(self, row: EventRow) -> None:
        at_bottom = self.verticalScrollBar().value() >= self.verticalScrollBar().maximum() - 2
        self.rows.append(row)
        item = QTreeWidgetItem(
            [row.time_text, TITLES.get(row.event, row.event), row.detail, CLIP_TEXT if row.clip else ""]
        )
        item.setToolTip(2, row.detail)
        if row.clip:
            item.setToolTip(3, f"{row.clip}\ndouble-click to play")
        self.addTopLevelItem(item)
        while len(self.rows) > MAX_ROWS:
            self.rows.pop(0)
            self.takeTopLevelItem(0)
        if at_bottom:
            self.scrollToBottom()

    def row_of(self, item: QTreeWidgetItem | None) -> EventRow | None:
        index = self.indexOfTopLevelItem(item) if item is not None else -1
        return self.rows[index] if 0 <= index < len(self.rows) else None

    def clip_rows(self) -> list[EventRow]:
        """The rows that have a clip, oldest first."""
        return [row for row in self.rows if row.clip]

    def open_clip(self, index: int) -> None:
        """Play the clip of row ``index`` (what a double click does)."""
        self._open(self.topLevelItem(index), "clip")

    def _open(self, item: QTreeWidgetItem | None, kind: str) -> None:
        row = self.row_of(item)
        if row is None or not getattr(row, kind):
            return
        (self.clip_requested if kind == "clip" else self.file_requested).emit(getattr(row, kind))

    def _menu(self, at: QPoint) -> None:
        item = self.itemAt(at)
        row = self.row_of(item)
        if row is None or not (row.clip or row.snapshot):
            return
        menu = QMenu(self)
        if row.clip:
            menu.addAction("Open clip", lambda: self._open(item, "clip"))
            menu.addAction("Open clip in the system player", lambda: self.file_requested.emit(row.clip))
        if row.snapshot:
            menu.addAction("Open snapshot", lambda: self._open(item, "snapshot"))
        menu.exec(self.viewport().mapToGlobal(at))

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
                writer.writerow(["time", "wall", "event", "detail", "stream", "pts", "clip", "snapshot"])
                for row in self.rows:
                    wall = f"{row.wall:.3f}"
                    writer.writerow(
                        [row.time_text, wall, row.event, row.detail, row.stream, row.pts, row.clip, row.snapshot]
                    )
        return path
