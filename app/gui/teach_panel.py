"""The Teach panel: a data set of labelled clips, recorded or cut from a file, and a Train button.

A widget only: it shows what the teach controller tells it (``set_dataset``, ``set_recording``,
``set_progress``, ...) and sends what the user asks for as signals. It never touches a file or the engine.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path

from PyQt6.QtCore import Qt, pyqtSignal
from PyQt6.QtGui import QBrush, QColor
from PyQt6.QtWidgets import (
    QAbstractItemView,
    QDoubleSpinBox,
    QFileDialog,
    QFrame,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QInputDialog,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSpinBox,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

WARNING_COLOR = QColor(180, 35, 24)  # a clip row with a warning (no hand or body found in it)
STAGE_TITLES = {
    "features": "Computing features",
    "keypoints": "Finding hands and bodies",
    "cross-validation": "Cross-validating",
    "training": "Training",
}


@dataclass(frozen=True)
class TrainResult:
    """What the panel shows of a training report."""

    labels: tuple[str, ...]
    accuracy: float | None  # cross-validated, None when not estimated
    worst_fold: float | None
    split: str  # "session", "clip" or "none"
    confusion: list[list[int]]  # rows: true label, columns: predicted
    model: str  # where the model was saved
    seconds: float
    details: str = ""  # the full text summary (tooltip)
    warning: str = ""  # not clearly better than chance: why, and what to do (the stream keeps its model)

    def html(self) -> str:
        esc = html.escape
        if self.accuracy is None:
            head = "<b>Accuracy not estimated</b>: record at least 2 clips per label"
        else:
            worst = "" if self.worst_fold is None else f", worst fold {self.worst_fold:.0%}"
            head = f"<b>Cross-validated accuracy {self.accuracy:.0%}</b> (by {esc(self.split)}{worst})"
        table = ""
        if self.confusion:
            cell = "style='padding: 1px 6px;' align='right'"
            header = "".join(f"<th {cell}>{esc(_short(name))}</th>" for name in self.labels)
            rows = [f"<tr><th {cell}>true \\ predicted</th>{header}</tr>"]
            for i, (name, row) in enumerate(zip(self.labels, self.confusion, strict=False)):
                cells = "".join(f"<td {cell}>{f'<b>{v}</b>' if i == j else v}</td>" for j, v in enumerate(row))
                rows.append(f"<tr><th {cell}>{esc(_short(name))}</th>{cells}</tr>")
            table = f"<table cellspacing='0'>{''.join(rows)}</table>"
        saved = f"Trained in {self.seconds:.1f} s, saved as {esc(self.model)}"
        warn = ""
        if self.warning:
            text = esc(self.warning).replace("\n", "<br>")
            warn = f"<p style='color: #b42318;'><b>Not used yet.</b> {text}</p>"
        return f"<p>{head}</p>{table}<p>{saved}</p>{warn}"


def _short(name: str, width: int = 10) -> str:
    return name if len(name) <= width else name[: width - 1] + "…"


@dataclass(frozen=True)
class ClipRow:
    path: str  # relative path inside the data set
    label: str
    seconds: float
    note: str = ""  # "cut 12.0-15.0 s", "recorded 14:03"


class TeachPanel(QWidget):
    dataset_chosen = pyqtSignal(str)  # folder: opened, or created when new
    label_added = pyqtSignal(str)  # the text as typed; the data set validates it
    label_renamed = pyqtSignal(str, str)  # old, new
    label_deleted = pyqtSignal(str)
    record_requested = pyqtSignal()
    clip_play_requested = pyqtSignal(str)  # relative clip path
    clip_delete_requested = pyqtSignal(str)
    mark_in_requested = pyqtSignal()
    mark_out_requested = pyqtSignal()
    cut_requested = pyqtSignal()
    train_requested = pyqtSignal()
    cancel_requested = pyqtSignal()
    use_anyway_requested = pyqtSignal()  # the user's yes to a model not clearly better than chance

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.dataset_path = QLineEdit()
        self.dataset_path.setReadOnly(True)
        self.new_dataset = QPushButton("New…")
        self.open_dataset = QPushButton("Open…")
        self.labels = QListWidget()
        self.labels.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.label_name = QLineEdit()
        self.label_name.setPlaceholderText("new label, e.g. wave")
        self.add_label = QPushButton("Add")
        self.rename_label = QPushButton("Rename…")
        self.delete_label = QPushButton("Delete")
        self.seconds = QDoubleSpinBox()
        self.seconds.setRange(0.5, 30.0)
        self.seconds.setSingleStep(0.5)
        self.seconds.setValue(3.0)
        self.seconds.setSuffix(" s")
        self.countdown = QSpinBox()
        self.countdown.setRange(0, 10)
        self.countdown.setValue(3)
        self.countdown.setSuffix(" s")
        self.count = QSpinBox()
        self.count.setRange(1, 50)
        self.count.setValue(1)
        self.record = QPushButton("● Record")
        self.record.setToolTip("Record clips of the selected label from the video shown (key R)")
        self.record.setStyleSheet("QPushButton { color: #c81e1e; font-weight: bold; }")
        self.clips = QTreeWidget()
        self.clips.setColumnCount(3)
        self.clips.setHeaderLabels(("Clip", "Label", "Length"))
        self.clips.setRootIsDecorated(False)
        self.clips.setAlternatingRowColors(True)
        header = self.clips.header()
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        header.setSectionResizeMode(1, QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(2, QHeaderView.ResizeMode.ResizeToContents)
        header.setStretchLastSection(False)
        self.play_clip = QPushButton("Play")
        self.play_clip.setToolTip("Open the clip as the source")
        self.delete_clip = QPushButton("Delete")
        self.mark_in = QDoubleSpinBox()
        self.mark_out = QDoubleSpinBox()
        for box in (self.mark_in, self.mark_out):
            box.setRange(0.0, 99_999.0)
            box.setDecimals(2)
            box.setSuffix(" s")
        self.mark_in_button = QPushButton("In")
        self.mark_in_button.setToolTip("Mark the in point at the frame shown (key I)")
        self.mark_out_button = QPushButton("Out")
        self.mark_out_button.setToolTip("Mark the out point at the frame shown (key O)")
        self.cut = QPushButton("Cut a clip of the selected label")
        self.cut_hint = QLabel("To cut clips from footage you have, open a video file as the source.")
        self.cut_hint.setWordWrap(True)
        self.cut_hint.setStyleSheet("color: palette(mid);")
        self.cut.setToolTip("Cut the marked part of the file into a clip of the selected label")
        self.train = QPushButton("Train")
        self.train.setToolTip("Train a model on these clips; the stream switches to it when done")
        self.train.setStyleSheet("QPushButton { font-weight: bold; }")
        self.cancel = QPushButton("Cancel")
        self.use_anyway = QPushButton("Use it anyway")
        self.use_anyway.setToolTip("Switch the stream to this model although it is not clearly better than chance")
        self.use_anyway.setVisible(False)
        self.progress = QProgressBar()
        self.progress.setTextVisible(True)
        self.progress.setFormat("")
        self.report = QLabel("")
        self.report.setWordWrap(True)
        self.report.setTextFormat(Qt.TextFormat.RichText)
        self.report.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.message = QLabel("")
        self.message.setWordWrap(True)
        self._warnings: dict[str, str] = {}  # clip path -> what is wrong with it, for the data set shown
        self._build_layout()
        self._connect()
        self.set_file_source(False)
        self.set_training(False)

    # -- layout ----------------------------------------------------------------------------------------
    def _build_layout(self) -> None:
        dataset_box = QGroupBox("Data set")
        row = QHBoxLayout(dataset_box)
        row.addWidget(self.dataset_path, 1)
        row.addWidget(self.new_dataset)
        row.addWidget(self.open_dataset)

        labels_box = QGroupBox("Labels: select one and record")
        labels = QVBoxLayout(labels_box)
        self.labels.setMinimumHeight(60)
        self.labels.setMaximumHeight(100)
        labels.addWidget(self.labels)
        add_row = QHBoxLayout()
        add_row.addWidget(self.label_name, 1)
        add_row.addWidget(self.add_label)
        add_row.addWidget(self.rename_label)
        add_row.addWidget(self.delete_label)
        labels.addLayout(add_row)
        options = QHBoxLayout()
        for text, widget in (("Length", self.seconds), ("Countdown", self.countdown), ("Clips", self.count)):
            caption = QLabel(text)
            caption.setBuddy(widget)
            options.addWidget(caption)
            options.addWidget(widget)
        options.addStretch(1)
        labels.addLayout(options)
        labels.addWidget(self.record)

        clips_box = QGroupBox("Clips")
        clips = QVBoxLayout(clips_box)
        self.clips.setMinimumHeight(70)
        self.clips.setMaximumHeight(130)
        clips.addWidget(self.clips)
        clip_buttons = QHBoxLayout()
        clip_buttons.addWidget(self.cut_hint, 1)
        clip_buttons.addWidget(self.play_clip)
        clip_buttons.addWidget(self.delete_clip)
        clips.addLayout(clip_buttons)

        self.cut_box = QGroupBox("Cut from the video file playing")
        cut = QVBoxLayout(self.cut_box)
        marks = QHBoxLayout()
        marks.addWidget(self.mark_in_button)
        marks.addWidget(self.mark_in, 1)
        marks.addWidget(self.mark_out_button)
        marks.addWidget(self.mark_out, 1)
        cut.addLayout(marks)
        cut.addWidget(self.cut)

        train_box = QGroupBox("Train")
        train = QVBoxLayout(train_box)
        train_row = QHBoxLayout()
        train_row.addWidget(self.train)
        train_row.addWidget(self.progress, 1)
        train_row.addWidget(self.cancel)
        train.addLayout(train_row)
        train.addWidget(self.report)
        train.addWidget(self.use_anyway)

        # the data set, labels and clips scroll; Train, its report and the errors stay in view below them
        upper = QWidget()
        upper_layout = QVBoxLayout(upper)
        upper_layout.setContentsMargins(0, 0, 0, 0)
        for box in (dataset_box, labels_box, clips_box, self.cut_box):
            upper_layout.addWidget(box)
        upper_layout.addStretch(1)
        self.scroll = QScrollArea()
        self.scroll.setWidget(upper)
        self.scroll.setWidgetResizable(True)
        self.scroll.setFrameShape(QFrame.Shape.NoFrame)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(self.scroll, 1)
        layout.addWidget(train_box)
        layout.addWidget(self.message)

    def _connect(self) -> None:
        self.new_dataset.clicked.connect(self.browse_new_dataset)
        self.open_dataset.clicked.connect(self.browse_open_dataset)
        self.add_label.clicked.connect(self._emit_add)
        self.label_name.returnPressed.connect(self._emit_add)
        self.rename_label.clicked.connect(self.ask_rename)
        self.delete_label.clicked.connect(self.ask_delete)
        self.record.clicked.connect(self.record_requested)
        self.play_clip.clicked.connect(lambda: self._emit_clip(self.clip_play_requested))
        self.clips.itemDoubleClicked.connect(lambda *_: self._emit_clip(self.clip_play_requested))
        self.delete_clip.clicked.connect(self.ask_delete_clip)
        self.mark_in_button.clicked.connect(self.mark_in_requested)
        self.mark_out_button.clicked.connect(self.mark_out_requested)
        self.cut.clicked.connect(self.cut_requested)
        self.train.clicked.connect(self.train_requested)
        self.cancel.clicked.connect(self.cancel_requested)
        self.use_anyway.clicked.connect(self.use_anyway_requested)

    # -- display, called by the teach controller ------------------------------------------------------
    def set_dataset(self, path: str, labels: list[str], counts: dict[str, int], clips: list[ClipRow]) -> None:
        """Show a data set; the selected label stays selected when it still exists."""
        if path != self.dataset_path.text():
            self._warnings.clear()
        self.dataset_path.setText(path)
        self.dataset_path.setToolTip(path)
        selected = self.current_label()
        self.labels.clear()
        for name in labels:
            n = counts.get(name, 0)
            item = QListWidgetItem(f"{name}   ·   {n} clip{'s' if n != 1 else ''}")
            item.setData(Qt.ItemDataRole.UserRole, name)
            if n < 2:
                item.setToolTip("Training needs at least 2 clips of each label that has clips")
            self.labels.addItem(item)
        names = list(labels)
        if names:
            self.labels.setCurrentRow(names.index(selected) if selected in names else 0)
        self.clips.clear()
        for clip in clips:
            item = QTreeWidgetItem([clip.path.rsplit("/", 1)[-1], clip.label, f"{clip.seconds:.1f} s"])
            item.setData(0, Qt.ItemDataRole.UserRole, clip.path)
            item.setToolTip(0, f"{clip.path}{'  ·  ' + clip.note if clip.note else ''}")
            self._mark(item)
            self.clips.addTopLevelItem(item)
        if clips:
            self.clips.scrollToBottom()

    def warn_clip(self, path: str, text: str) -> None:
        """Mark the clip ``path`` as one with a problem (``text``, in its tooltip) and say so below."""
        self._warnings[path] = text
        for i in range(self.clips.topLevelItemCount()):
            if self.clips.topLevelItem(i).data(0, Qt.ItemDataRole.UserRole) == path:
                self._mark(self.clips.topLevelItem(i))
        self.show_message(f"{path.rsplit('/', 1)[-1]}: {text}", error=True)

    def clip_warning(self, path: str) -> str:
        """The warning shown on the clip ``path`` ("" when none)."""
        return self._warnings.get(path, "")

    def _mark(self, item: QTreeWidgetItem) -> None:
        warning = self._warnings.get(str(item.data(0, Qt.ItemDataRole.UserRole)), "")
        if warning and not item.text(0).startswith("⚠ "):
            item.setText(0, f"⚠ {item.text(0)}")
            item.setToolTip(0, f"{warning}\n{item.toolTip(0)}")
            for column in range(self.clips.columnCount()):
                item.setForeground(column, QBrush(WARNING_COLOR))

    def set_recording(self, active: bool) -> None:
        """While clips are being recorded, the record button stops them and label edits wait."""
        self.record.setText("■ Stop recording" if active else "● Record")
        for widget in (self.add_label, self.rename_label, self.delete_label, self.delete_clip):
            widget.setEnabled(not active)
        for widget in (self.new_dataset, self.open_dataset, self.train, self.cut):
            widget.setEnabled(not active)

    def set_file_source(self, is_file: bool) -> None:
        """In / out marks work on a video file only: their box shows while one plays, a hint otherwise."""
        self.cut_box.setVisible(is_file)
        self.cut_hint.setVisible(not is_file)

    def set_marks(self, mark_in: float, mark_out: float) -> None:
        self.mark_in.setValue(mark_in)
        self.mark_out.setValue(mark_out)

    def marks(self) -> tuple[float, float]:
        return self.mark_in.value(), self.mark_out.value()

    def set_training(self, running: bool) -> None:
        self.train.setEnabled(not running)
        self.cancel.setVisible(running)
        self.record.setEnabled(not running)
        if running:
            self.progress.setRange(0, 0)  # busy until the first progress report
            self.progress.setFormat("Starting…")
            self.report.setText("")

    def set_progress(self, stage: str, done: int, total: int) -> None:
        title = STAGE_TITLES.get(stage, stage.capitalize())
        if total > 0:
            self.progress.setRange(0, total)
            self.progress.setValue(min(done, total))
            self.progress.setFormat(f"{title} {done}/{total}")
        else:
            self.progress.setRange(0, 0)
            self.progress.setFormat(title)

    def set_report(self, text: str, *, ok: bool = True) -> None:
        """Plain text (a failure, a cancellation) under the Train button."""
        self.progress.setRange(0, 1)
        self.progress.setValue(1 if ok else 0)
        self.progress.setFormat("Done" if ok else "Not trained")
        self.report.setText(html.escape(text).replace("\n", "<br>"))
        self.report.setToolTip("")
        self.use_anyway.setVisible(False)

    def set_result(self, result: TrainResult) -> None:
        """A finished training: accuracy, confusion matrix and where the model went."""
        self.set_report("")
        self.report.setText(result.html())
        self.report.setToolTip(result.details)
        self.use_anyway.setVisible(bool(result.warning))

    def show_message(self, text: str, *, error: bool = False) -> None:
        self.message.setStyleSheet("color: #b42318;" if error else "")
        self.message.setText(text)

    def current_label(self) -> str | None:
        item = self.labels.currentItem()
        return None if item is None else str(item.data(Qt.ItemDataRole.UserRole))

    def select_label(self, name: str) -> None:
        for row in range(self.labels.count()):
            if self.labels.item(row).data(Qt.ItemDataRole.UserRole) == name:
                self.labels.setCurrentRow(row)
                return

    def current_clip(self) -> str | None:
        item = self.clips.currentItem()
        return None if item is None else str(item.data(0, Qt.ItemDataRole.UserRole))

    def label_names(self) -> list[str]:
        return [str(self.labels.item(i).data(Qt.ItemDataRole.UserRole)) for i in range(self.labels.count())]

    def clip_paths(self) -> list[str]:
        items = (self.clips.topLevelItem(i) for i in range(self.clips.topLevelItemCount()))
        return [str(item.data(0, Qt.ItemDataRole.UserRole)) for item in items]

    # -- dialogs (user actions only; tests call the signals behind them) -------------------------------
    def browse_new_dataset(self) -> None:
        name, ok = QInputDialog.getText(self, "New data set", "Name of the new data set:")
        if ok and name.strip():
            parent = QFileDialog.getExistingDirectory(self, "Where to keep it", self._parent_folder())
            if parent:
                self.dataset_chosen.emit(f"{parent}/{name.strip()}")

    def browse_open_dataset(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Open a data set folder", self._parent_folder())
        if folder:
            self.dataset_chosen.emit(folder)

    def ask_rename(self) -> None:
        old = self.current_label()
        if old is None:
            return
        new, ok = QInputDialog.getText(self, "Rename label", f"New name for {old!r}:", text=old)
        if ok and new != old:
            self.label_renamed.emit(old, new)

    def ask_delete(self) -> None:
        name = self.current_label()
        if name is None:
            return
        answer = QMessageBox.question(self, "Delete label", f"Delete the label {name!r} and all its clips?")
        if answer == QMessageBox.StandardButton.Yes:
            self.label_deleted.emit(name)

    def ask_delete_clip(self) -> None:
        path = self.current_clip()
        if path is None:
            return
        answer = QMessageBox.question(self, "Delete clip", f"Delete the clip {path}?")
        if answer == QMessageBox.StandardButton.Yes:
            self.clip_delete_requested.emit(path)

    def _emit_add(self) -> None:
        self.label_added.emit(self.label_name.text())

    def _emit_clip(self, signal) -> None:
        path = self.current_clip()
        if path is not None:
            signal.emit(path)

    def _parent_folder(self) -> str:
        text = self.dataset_path.text()
        return str(Path(text).expanduser().parent) if text else str(Path.home())
