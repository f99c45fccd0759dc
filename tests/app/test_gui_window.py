"""The window as a new user first sees it: bars per class, a readable overlay after the end, Train in view."""

from __future__ import annotations

import pytest
from PyQt6.QtCore import QPoint, QRect, Qt
from PyQt6.QtGui import QColor, QImage

from dcrn.app.gui.main import build
from dcrn.app.gui.top_bars import ROW_HEIGHT, TopBars
from dcrn.app.gui.video_view import Overlay
from dcrn.app.gui.worker import to_qimage
from dcrn.models.synth import SyntheticActionStream

pytestmark = pytest.mark.gui


@pytest.fixture
def gui(qtbot, tmp_path, monkeypatch):
    monkeypatch.setenv("DCRN_GUI_SETTINGS", str(tmp_path / "never-used.ini"))
    gui = build(tmp_path / "settings.ini")
    qtbot.addWidget(gui.window)
    gui.window.show()
    yield gui
    gui.controller.shutdown()


def _frame() -> QImage:
    stream = SyntheticActionStream(seed=1, size=(240, 320))
    for _ in range(10):
        image = stream.read()[0]
    return to_qimage(image)


def test_a_two_class_model_shows_two_bars_not_three_empty_ones(qtbot, gui, tmp_path):
    window = gui.window
    window.show_frame(_frame(), Overlay(label="wave", score=0.7, status="live"), [["wave", 0.7], ["clap", 0.3]])
    bars = window.bars
    assert bars.count == 2 and len(bars.rows) == 2
    assert bars.minimumHeight() == 2 * ROW_HEIGHT + 4 and bars.sizeHint().height() == 2 * ROW_HEIGHT + 4
    assert window.top_box.title() == "Top 2"
    standalone = TopBars(k=5)
    qtbot.addWidget(standalone)
    standalone.resize(300, 5 * ROW_HEIGHT + 4)
    standalone.set_top([["wave", 0.7], ["clap", 0.3]])
    picture = standalone.grab().toImage()
    picture.save(str(tmp_path / "bars.png"))
    below = [
        picture.pixelColor(x, y) for y in range(2 * ROW_HEIGHT + 6, picture.height()) for x in range(picture.width())
    ]
    assert len({c.rgb() for c in below}) == 1, "no empty tracks below the two bars"
    standalone.clear()
    assert standalone.count == 2, "clearing keeps the number of classes"


def test_after_the_stream_ends_the_last_label_stays_readable(qtbot, gui, tmp_path):
    window = gui.window
    window.resize(1200, 720)
    window.show_frame(_frame(), Overlay(label="wave", score=0.87, status="live"), [["wave", 0.87]])
    window.set_status("ended")  # what the controller does on a stream_ended record
    view = window.view
    assert view.overlay.label == "wave" and view.image is not None
    assert view.caption == "Stream ended"
    picture = view.grab().toImage()
    assert picture.save(str(tmp_path / "ended.png"))
    colors = {picture.pixel(x, y) for y in range(0, picture.height(), 7) for x in range(0, picture.width(), 7)}
    assert len(colors) > 50, "the grab shows the dimmed last frame, not a blank view"
    # the label badge (top left) is dark with white text: readable over any picture
    scaled = view.image.size().scaled(view.size(), Qt.AspectRatioMode.KeepAspectRatio)
    top = (view.height() - scaled.height()) // 2
    left = (view.width() - scaled.width()) // 2
    badge = QRect(left + 14, top + 14, 120, 30)
    lum = [
        QColor(picture.pixel(x, y)).lightness()
        for y in range(badge.top(), badge.bottom())
        for x in range(badge.left(), badge.right())
    ]
    assert min(lum) < 40 and max(lum) > 200
    window.set_status("live")
    assert view.caption == ""


def test_at_the_default_size_train_and_its_errors_are_visible_without_scrolling(qtbot, gui, tmp_path):
    window = gui.window
    assert (window.width(), window.height()) == (1200, 720)
    window.show_teach()
    qtbot.waitUntil(lambda: window.tabs.currentWidget() is window.teach_tab and window.teach.isVisible())
    teach = window.teach
    teach.set_report("Not trained: the data set needs two labels", ok=False)
    teach.show_message("Could not train: only one label has clips.", error=True)
    qtbot.wait(50)
    assert window.grab().save(str(tmp_path / "teach.png"))
    for widget in (teach.train, teach.report, teach.message):
        assert widget.isVisible() and not widget.visibleRegion().isEmpty(), widget
        assert not teach.scroll.isAncestorOf(widget), "not behind the scroll area's viewport"
        top_left = widget.mapTo(window, QPoint(0, 0))
        inside = window.centralWidget().geometry()
        assert inside.contains(QRect(top_left, widget.size())), f"{widget} at {top_left} outside {inside}"
