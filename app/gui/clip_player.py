"""A small player for the evidence clips of the event list: decoded off the GUI thread, shown in a VideoView.

:class:`ClipDecoder` reads the file with OpenCV on a plain thread and hands frames over only through Qt
signals; at most ``AHEAD`` frames wait for the screen, so a long clip never piles up in memory.
:class:`ClipPlayer` is a non-modal window that paces them with a ``QTimer`` at the clip's frame rate.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from pathlib import Path

import cv2
from PyQt6.QtCore import QObject, QTimer, QUrl, pyqtSignal
from PyQt6.QtGui import QCloseEvent, QDesktopServices, QImage
from PyQt6.QtWidgets import QDialog, QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget

from .video_view import Overlay, VideoView
from .worker import to_qimage

log = logging.getLogger(__name__)

AHEAD = 8  # decoded frames waiting for the screen at most
DEFAULT_FPS = 25.0  # a file that does not say its frame rate


class ClipDecoder(QObject):
    """Decodes ``path`` on its own thread: ``opened(fps)``, then ``frame(QImage)`` ..., then ``done(error)``."""

    opened = pyqtSignal(float)
    frame = pyqtSignal(QImage)
    done = pyqtSignal(str)  # "" when the clip played to its end, else why it could not

    def __init__(self, path: str, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.path = path
        self.decoded = 0
        self._room = threading.Semaphore(AHEAD)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dcrn-gui-clip", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def taken(self) -> None:
        """The screen took one frame: room for the next (GUI thread)."""
        self._room.release()

    def stop(self, timeout: float = 1.0) -> bool:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
        return not self._thread.is_alive()

    def _run(self) -> None:
        capture = cv2.VideoCapture(self.path)
        try:
            if not capture.isOpened():
                self.done.emit(f"Cannot open the clip {Path(self.path).name}")
                return
            fps = capture.get(cv2.CAP_PROP_FPS)
            self.opened.emit(float(fps) if fps and 1.0 <= fps <= 240.0 else DEFAULT_FPS)
            while not self._stop.is_set():
                ok, bgr = capture.read()
                if not ok:
                    break
                while not self._room.acquire(timeout=0.1):
                    if self._stop.is_set():
                        return
                self.decoded += 1
                self.frame.emit(to_qimage(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)))
            self.done.emit("" if self.decoded else f"No frames in the clip {Path(self.path).name}")
        except Exception as exc:  # a broken file must not kill the window
            log.exception("decoding %s failed", self.path)
            self.done.emit(f"Could not play the clip: {type(exc).__name__}: {exc}")
        finally:
            capture.release()


class ClipPlayer(QDialog):
    """Plays one clip; Replay starts it again, "Open outside" hands it to the desktop's player."""

    def __init__(self, path: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.path = path
        self.setWindowTitle(f"Clip — {Path(path).name}")
        self.view = VideoView()
        self.view.setMinimumSize(320, 240)
        self.position = QLabel("")
        self.replay = QPushButton("Replay")
        self.outside = QPushButton("Open outside")
        self.outside.setToolTip("Open the clip in the desktop's video player")
        close = QPushButton("Close")
        buttons = QHBoxLayout()
        buttons.addWidget(self.position, 1)
        for button in (self.replay, self.outside, close):
            buttons.addWidget(button)
        layout = QVBoxLayout(self)
        layout.addWidget(self.view, 1)
        layout.addLayout(buttons)
        self.replay.clicked.connect(self.play)
        self.outside.clicked.connect(lambda: QDesktopServices.openUrl(QUrl.fromLocalFile(self.path)))
        close.clicked.connect(self.close)
        self.frames_shown = 0
        self.error = ""
        self.decoder: ClipDecoder | None = None
        self._queue: deque[QImage] = deque()
        self._finished = False
        self.timer = QTimer(self)
        self.timer.setInterval(int(1000 / DEFAULT_FPS))
        self.timer.timeout.connect(self._tick)
        self.resize(640, 520)
        self.play()

    def play(self) -> None:
        """Start (again) from the first frame."""
        self._stop_decoder()
        self._queue.clear()
        self._finished = False
        self.error = ""
        self.view.clear()
        decoder = ClipDecoder(self.path, self)
        mine = lambda d=decoder: d is self.decoder  # noqa: E731 - a replay ignores the old decoder's last signals
        decoder.opened.connect(lambda fps: mine() and self._opened(fps))
        decoder.frame.connect(lambda image: mine() and self._queue.append(image))
        decoder.done.connect(lambda error: mine() and self._done(error))
        self.decoder = decoder
        self.view.set_status("connecting")
        decoder.start()
        self.timer.start()

    def _opened(self, fps: float) -> None:
        self.timer.setInterval(max(5, int(1000 / fps)))
        self.view.set_status("playing")

    def _done(self, error: str) -> None:
        self._finished = True
        if error:
            self.error = error
            self.position.setText(error)
            self.view.set_status("error")

    def _tick(self) -> None:
        if self._queue:
            image = self._queue.popleft()
            if self.decoder is not None:
                self.decoder.taken()
            self.frames_shown += 1
            self.view.show_frame(image, Overlay(status="playing", source=Path(self.path).name))
            self.position.setText(f"frame {self.frames_shown}")
        elif self._finished:
            self.timer.stop()
            self.view.set_status("ended" if not self.error else "error")

    def _stop_decoder(self) -> None:
        if self.decoder is not None:
            self.decoder.stop()
            self.decoder.deleteLater()
            self.decoder = None

    def closeEvent(self, event: QCloseEvent) -> None:
        self.timer.stop()
        self._stop_decoder()
        super().closeEvent(event)

    def done(self, result: int) -> None:  # Escape and reject() end here, not in closeEvent
        self.timer.stop()
        self._stop_decoder()
        super().done(result)
