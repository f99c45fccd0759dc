"""The run loop that the one-box pipeline and the cluster driver share: sinks as one, deadline, stats
timer, stop flag, and the shutdown path."""

from __future__ import annotations

import errno
import io
import threading
import time

import pytest

from dcrn.engine.errors import SinkError
from dcrn.engine.run.loop import RunLoop, SinkSet
from dcrn.engine.sinks.base import Sink
from dcrn.engine.sinks.files import JsonlSink


class FullDiskSink(Sink):
    """A sink whose file system is full when it is closed."""

    def __init__(self, spec: str) -> None:
        super().__init__()
        self.spec = spec

    def _open(self):
        return io.StringIO()

    def _close(self, handle) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")


def test_closing_a_sink_set_closes_every_sink_and_names_each_that_failed(tmp_path):
    good = JsonlSink(tmp_path / "good.jsonl")
    sinks = SinkSet([FullDiskSink("jsonl:/full/a.jsonl"), good, FullDiskSink("csv:/full/b.csv")])
    sinks.open()
    sinks.write({"type": "prediction", "stream": "a"})
    with pytest.raises(SinkError) as error:
        sinks.close()
    assert good._handle is None  # closed although the sink before it failed
    assert "jsonl:/full/a.jsonl: closing failed: No space left on device" in str(error.value)
    assert "csv:/full/b.csv: closing failed: No space left on device" in str(error.value)
    assert (tmp_path / "good.jsonl").read_text().count("\n") == 1


def test_one_sink_that_fails_to_close_raises_its_own_error(tmp_path):
    sinks = SinkSet([JsonlSink(tmp_path / "good.jsonl"), FullDiskSink("jsonl:/full/a.jsonl")])
    sinks.open()
    with pytest.raises(SinkError, match=r"^jsonl:/full/a\.jsonl: closing failed: No space left on device$"):
        sinks.close()


def test_the_loop_ends_at_the_deadline_and_writes_stats_every_interval():
    loop = RunLoop(duration_s=0.35, stats_interval_s=0.1, poll_s=0.01)
    stats: list[float] = []
    started = time.monotonic()
    loop.run(lambda: False, done=lambda: False, done_note="done", stats=lambda: stats.append(time.monotonic()))
    assert 0.35 <= time.monotonic() - started < 1.0
    assert 2 <= len(stats) <= 4


def test_the_loop_ends_when_done_and_when_stopped_from_another_thread():
    turns = []
    loop = RunLoop(duration_s=None, stats_interval_s=0, poll_s=0.01)
    loop.run(lambda: turns.append(1) or True, done=lambda: len(turns) == 3, done_note="done", stats=lambda: None)
    assert len(turns) == 3  # busy turns follow each other; done() ends it
    loop = RunLoop(duration_s=None, stats_interval_s=0, poll_s=10.0)
    threading.Timer(0.1, loop.stop).start()
    started = time.monotonic()
    loop.run(lambda: False, done=lambda: False, done_note="done", stats=lambda: None)
    assert time.monotonic() - started < 2.0  # stop() wakes a loop that waits


def test_shutting_down_after_an_error_finishes_closes_and_keeps_that_error(tmp_path):
    loop = RunLoop(duration_s=None, stats_interval_s=0, poll_s=0.01)
    sink = JsonlSink(tmp_path / "out.jsonl")
    sinks = SinkSet([sink, FullDiskSink("jsonl:/full/a.jsonl")])
    steps = []
    with (
        pytest.raises(ValueError, match="the source broke"),
        loop.shutting_down(
            sinks, finish=lambda: steps.append("finish"), release=lambda: steps.append("release"), what="the test"
        ),
    ):
        sinks.open()
        raise ValueError("the source broke")  # the closing failure after it is only its echo
    assert steps == ["finish", "release"] and sink._handle is None


def test_shutting_down_raises_the_first_error_of_the_shutdown(tmp_path):
    loop = RunLoop(duration_s=None, stats_interval_s=0, poll_s=0.01)
    sinks = SinkSet([JsonlSink(tmp_path / "out.jsonl"), FullDiskSink("jsonl:/full/a.jsonl")])
    released = []

    def finish() -> None:
        sinks.write({"type": "stats"})  # final records go out before the sinks close

    with (
        pytest.raises(SinkError, match=r"jsonl:/full/a\.jsonl: closing failed"),
        loop.shutting_down(sinks, finish=finish, release=lambda: released.append(True), what="the test"),
    ):
        sinks.open()
    assert released == [True]
    assert (tmp_path / "out.jsonl").read_text().count("\n") == 1
