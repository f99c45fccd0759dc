"""The main window: layout, actions and display methods. It knows nothing of the engine.

User intents leave as signals (``start_stop_requested``, ``source_chosen``, ...); the controller calls the
display methods (``show_frame``, ``set_status``, ``show_error``, ...) on the GUI thread.
"""

from __future__ import annotations

from pathlib import Path

from PyQt6.QtCore import Qt, QUrl, pyqtSignal
from PyQt6.QtGui import QAction, QCloseEvent, QDesktopServices, QImage
from PyQt6.QtWidgets import (
    QFileDialog,
    QFrame,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QMainWindow,
    QPushButton,
    QSplitter,
    QTabWidget,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from .clip_player import ClipPlayer
from .event_list import EventList, EventRow
from .source_panel import Choice, SourcePanel
from .teach_panel import TeachPanel
from .top_bars import TopBars
from .video_view import Overlay, VideoView

APP_TITLE = "DCRN Live"
VIDEO_FILTER = "Videos (*.mp4 *.avi *.mkv *.mov *.webm *.m4v *.mpg *.ts);;All files (*)"


class ErrorBanner(QFrame):
    """A red strip above the video; never modal, dismissed by a click or the next successful start."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("errorBanner")
        self.setStyleSheet("#errorBanner { background: #8b1e1e; border-radius: 4px; } QLabel { color: white; }")
        self.label = QLabel()
        self.label.setWordWrap(True)
        self.label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        close = QToolButton()
        close.setText("✕")
        close.setAutoRaise(True)
        close.setStyleSheet("color: white;")
        close.clicked.connect(self.hide)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(10, 6, 6, 6)
        layout.addWidget(self.label, 1)
        layout.addWidget(close, 0, Qt.AlignmentFlag.AlignTop)
        self.hide()

    def show_message(self, text: str) -> None:
        self.label.setText(text)
        self.show()


class ModelNotice(QFrame):
    """A calm strip above the video: the model running cannot know what this source shows; offers Teach."""

    teach_requested = pyqtSignal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("modelNotice")
        self.setStyleSheet(
            "#modelNotice { background: #1f4e79; border-radius: 4px; } QLabel { color: white; }"
            " QToolButton { color: white; }"
        )
        self.label = QLabel()
        self.label.setWordWrap(True)
        self.teach = QPushButton("Teach…")
        self.teach.setToolTip("Record a few clips of your own actions and train a model on them")
        self.teach.clicked.connect(self.teach_requested)
        close = QToolButton()
        close.setText("✕")
        close.setAutoRaise(True)
        close.clicked.connect(self.hide)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(10, 6, 6, 6)
        layout.addWidget(self.label, 1)
        layout.addWidget(self.teach, 0, Qt.AlignmentFlag.AlignVCenter)
        layout.addWidget(close, 0, Qt.AlignmentFlag.AlignTop)
        self.hide()

    def show_message(self, text: str) -> None:
        self.label.setText(text)
        self.show()


class MainWindow(QMainWindow):
    start_stop_requested = pyqtSignal()
    source_chosen = pyqtSignal(str)
    model_chosen = pyqtSignal(str)
    snapshot_requested = pyqtSignal()
    save_events_requested = pyqtSignal(str)  # path
    teach_shown = pyqtSignal()  # the Teach tab was opened
    closing = pyqtSignal()

    def __init__(self) -> None:
        super().__init__()
        self.setWindowTitle(APP_TITLE)
        self.view = VideoView()
        self.banner = ErrorBanner()
        self.notice = ModelNotice()
        self.teach = TeachPanel()
        self.tabs = QTabWidget()
        self.bars = TopBars(k=5)
        self.events = EventList()
        self.panel = SourcePanel()
        self.start_stop = QPushButton("Start")
        self.snapshot_button = QPushButton("Snapshot")
        self.save_events_button = QPushButton("Save…")
        self.clear_events_button = QPushButton("Clear")
        self.status_label = QLabel("idle")
        self.fps_label = QLabel("– fps")
        self.latency_label = QLabel("latency –")
        self.dropped_label = QLabel("dropped 0")
        self.actions: dict[str, QAction] = {}
        self.player: ClipPlayer | None = None  # the evidence clip playing, if any
        self._build_layout()
        self._build_actions()
        self.panel.source_chosen.connect(self.source_chosen)
        self.panel.model_chosen.connect(self.model_chosen)
        self.panel.browse_file_requested.connect(self.browse_file)
        self.panel.browse_model_requested.connect(self.browse_model)
        self.start_stop.clicked.connect(self.start_stop_requested)
        self.snapshot_button.clicked.connect(self.snapshot_requested)
        self.save_events_button.clicked.connect(self.browse_save_events)
        self.clear_events_button.clicked.connect(self.events.clear_events)
        self.notice.teach_requested.connect(self.show_teach)
        self.events.clip_requested.connect(self.play_clip)
        self.events.file_requested.connect(self.open_file_outside)

    def _build_layout(self) -> None:
        left = QWidget()
        left_layout = QVBoxLayout(left)
        left_layout.setContentsMargins(6, 6, 0, 6)
        left_layout.addWidget(self.banner)
        left_layout.addWidget(self.notice)
        left_layout.addWidget(self.view, 1)

        buttons = QHBoxLayout()
        buttons.addWidget(self.start_stop)
        buttons.addWidget(self.snapshot_button)
        source_box = QGroupBox("Stream")
        source_layout = QVBoxLayout(source_box)
        source_layout.addWidget(self.panel)
        source_layout.addLayout(buttons)
        top_box = self.top_box = QGroupBox(f"Top {self.bars.count}")
        QVBoxLayout(top_box).addWidget(self.bars)
        events_box = QGroupBox("Events")
        live = QWidget()  # the Live tab: what the model sees now, and what happened
        live_layout = QVBoxLayout(live)
        live_layout.setContentsMargins(4, 4, 4, 4)
        live_layout.addWidget(top_box)
        live_layout.addWidget(events_box, 1)
        events_layout = QVBoxLayout(events_box)
        events_layout.addWidget(self.events, 1)
        event_buttons = QHBoxLayout()
        event_buttons.addStretch(1)
        event_buttons.addWidget(self.clear_events_button)
        event_buttons.addWidget(self.save_events_button)
        events_layout.addLayout(event_buttons)

        right = QWidget()
        right.setMinimumWidth(420)
        right_layout = QVBoxLayout(right)
        right_layout.setContentsMargins(0, 6, 6, 6)
        right_layout.addWidget(source_box)
        self.tabs.addTab(live, "Live")
        self.tabs.addTab(self.teach, "Teach")  # it scrolls its upper part itself; Train stays in view
        self.teach_tab = self.teach
        self.tabs.currentChanged.connect(lambda _i: self.tabs.currentWidget() is self.teach and self.teach_shown.emit())
        right_layout.addWidget(self.tabs, 1)

        splitter = QSplitter(Qt.Orientation.Horizontal)
        splitter.addWidget(left)
        splitter.addWidget(right)
        splitter.setStretchFactor(0, 1)
        splitter.setStretchFactor(1, 0)
        splitter.setChildrenCollapsible(False)
        self.setCentralWidget(splitter)

        bar = self.statusBar()
        self.latency_label.setToolTip("capture to screen (capture to prediction), median of the last frames")
        self.dropped_label.setToolTip("frames dropped by the engine and by the display")
        widest = {
            self.status_label: "reconnecting",
            self.fps_label: "000.0 fps",
            self.latency_label: "latency 0000 ms (engine 0000 ms)",
            self.dropped_label: "dropped 0000000",
        }
        for widget, text in widest.items():  # fixed widths: the figures change, the bar does not jitter
            widget.setContentsMargins(6, 0, 6, 0)
            widget.setMinimumWidth(widget.fontMetrics().horizontalAdvance(text) + 12)
            bar.addPermanentWidget(widget)
        self.resize(1200, 720)

    def _build_actions(self) -> None:
        """Every command of the window as a QAction; main.wire_shortcuts gives them their keys."""
        specs = {
            "start_stop": ("&Start / stop", self.start_stop_requested.emit),
            "snapshot": ("Save s&napshot", self.snapshot_requested.emit),
            "demo": ("&Demo stream", lambda: self.source_chosen.emit("synthetic:")),
            "open_file": ("Open &file…", self.browse_file),
            "open_url": ("Open &URL…", self.focus_url),
            "open_model": ("Open &model checkpoint…", self.browse_model),
            "save_events": ("Save &events…", self.browse_save_events),
            "teach": ("&Teach your own actions…", self.show_teach),
            "record": ("&Record a clip", self.teach.record_requested.emit),
            "mark_in": ("Mark &in point", self.teach.mark_in_requested.emit),
            "mark_out": ("Mark &out point", self.teach.mark_out_requested.emit),
            "quit": ("&Quit", self.close),
        }
        for name, (text, slot) in specs.items():
            action = QAction(text, self)
            action.triggered.connect(lambda _checked=False, slot=slot: slot())
            self.actions[name] = action
        menus = {
            "&File": ("open_file", "open_url", "demo", "open_model", None, "quit"),
            "&Stream": ("start_stop", "snapshot", "save_events"),
            "&Teach": ("teach", "record", "mark_in", "mark_out"),
        }
        for title, names in menus.items():
            menu = self.menuBar().addMenu(title)
            for name in names:
                if name is None:
                    menu.addSeparator()
                else:
                    menu.addAction(self.actions[name])

    # -- display, called by the controller -----------------------------------------------------------
    def show_frame(self, image: QImage, overlay: Overlay, top: list) -> None:
        self.view.show_frame(image, overlay)
        self.bars.set_top(top)
        title = f"Top {self.bars.count}"  # a two-class model: "Top 2", two bars
        if self.top_box.title() != title:
            self.top_box.setTitle(title)

    def set_running(self, running: bool) -> None:
        self.start_stop.setText("Stop" if running else "Start")

    def set_status(self, status: str) -> None:
        self.status_label.setText(status)
        self.view.set_status(status)

    def set_stats(self, fps: float | None, latency_ms: float | None, engine_ms: float | None, dropped: int) -> None:
        """Display fps; latency from capture to screen (and to the prediction); frames dropped."""
        self.fps_label.setText("– fps" if fps is None else f"{fps:.1f} fps")
        if latency_ms is None:
            self.latency_label.setText("latency –")
        else:
            engine = "" if engine_ms is None else f" (engine {engine_ms:.0f} ms)"
            self.latency_label.setText(f"latency {latency_ms:.0f} ms{engine}")
        self.dropped_label.setText(f"dropped {dropped}")

    def set_session(self, source_text: str, model_text: str) -> None:
        self.setWindowTitle(f"{source_text} — {model_text} — {APP_TITLE}" if source_text else APP_TITLE)

    def set_choices(self, sources: list[Choice], source: str, models: list[Choice], model: str) -> None:
        self.panel.set_sources(sources, source)
        self.panel.set_models(models, model)

    def add_event(self, row: EventRow) -> None:
        self.events.add(row)

    def show_error(self, text: str) -> None:
        self.banner.show_message(text)

    def clear_error(self) -> None:
        self.banner.hide()

    def show_model_notice(self, text: str | None) -> None:
        """A notice about the model and the source (None hides it)."""
        if text:
            self.notice.show_message(text)
        else:
            self.notice.hide()

    def show_teach(self) -> None:
        if self.tabs.currentWidget() is self.teach_tab:
            self.teach_shown.emit()
        else:
            self.tabs.setCurrentWidget(self.teach_tab)  # currentChanged emits teach_shown

    def play_clip(self, path: str) -> ClipPlayer | None:
        """Play an event's evidence clip in a small window of its own (one at a time)."""
        if not Path(path).is_file():  # written under a .partial name until its post-roll has passed
            self.notify(f"The clip is not complete yet: {Path(path).name}")
            return None
        if self.player is not None:
            self.player.close()
        self.player = ClipPlayer(path, self)
        self.player.show()
        return self.player

    def open_file_outside(self, path: str) -> None:
        if not Path(path).is_file() or not QDesktopServices.openUrl(QUrl.fromLocalFile(path)):
            self.notify(f"Cannot open {Path(path).name}")

    def notify(self, text: str, ms: int = 5000) -> None:
        self.statusBar().showMessage(text, ms)

    # -- dialogs (user actions only; tests call the signals and methods behind them) ------------------
    def browse_file(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open a video file", "", VIDEO_FILTER)
        if path:
            self.source_chosen.emit(path)

    def browse_model(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open a model checkpoint", "", "Checkpoints (*.pt);;All files (*)")
        if path:
            self.model_chosen.emit(path)

    def browse_save_events(self) -> None:
        path, _ = QFileDialog.getSaveFileName(
            self, "Save events", "events.csv", "CSV (*.csv);;JSON Lines (*.jsonl);;All files (*)"
        )
        if path:
            self.save_events_requested.emit(path)

    def focus_url(self) -> None:
        self.panel.url.setFocus()
        self.panel.url.selectAll()

    def closeEvent(self, event: QCloseEvent) -> None:
        if self.player is not None:
            self.player.close()
        self.closing.emit()
        super().closeEvent(event)
