"""The run loop that both runners share: :class:`~dcrn.engine.pipeline.Pipeline` (one box) and
:class:`~dcrn.engine.cluster.driver.ClusterRun` (many).

Both turn the same way: take what is ready and write its records, end when every stream is done, the
``--duration`` deadline passed or ``stop()`` was asked (from any thread or a signal handler), write
stats every ``--stats-interval`` seconds, and on the way out, whatever happened, finish their streams,
write what those still had, then close every sink (all of them, also after one failed) and release
what they hold. What a turn does, what "done" means and what a stats record holds stay the runner's.

- :class:`SinkSet`: the run's sinks used as one (``open``, ``write(record)``, ``flush``, ``close``).
- :class:`RunLoop`: the stop flag and wake-up event, :meth:`RunLoop.run` (deadline, stats timer) and
  :meth:`RunLoop.shutting_down` (the shutdown path, around the whole run).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence

from dcrn.engine.errors import SinkError
from dcrn.engine.sinks.base import Sink

_log = logging.getLogger(__name__)


class SinkSet:
    """Every sink of a run, used as one. Iterating gives the sinks.

    ``log`` is the runner's logger: a sink that fails to close is reported under the runner's name.
    """

    def __init__(self, sinks: Sequence[Sink] = (), *, log: logging.Logger = _log) -> None:
        self.sinks = list(sinks)
        self.log = log

    def __iter__(self) -> Iterator[Sink]:
        return iter(self.sinks)

    def __len__(self) -> int:
        return len(self.sinks)

    @property
    def include_logits(self) -> bool:
        """Whether any sink wants the raw logits in prediction records."""
        return any(getattr(sink, "include_logits", False) for sink in self.sinks)

    def open(self) -> None:
        """Open every sink; the first that cannot be written raises (those opened stay open for ``close``)."""
        for sink in self.sinks:
            sink.open()

    def write(self, record: dict) -> None:
        for sink in self.sinks:
            sink.write(record)

    def flush(self) -> None:
        for sink in self.sinks:
            sink.flush()

    def close(self, *, level: int = logging.ERROR) -> None:
        """Close every sink, also after one failed; each failure is logged at ``level``.

        Raises the sink's own error when one failed, and one :class:`SinkError` naming every sink that
        failed when several did.
        """
        failed: list[tuple[Sink, Exception]] = []
        for sink in self.sinks:
            try:
                sink.close()
            except Exception as exc:
                failed.append((sink, exc))
                self.log.log(level, "closing %r failed: %s", sink, exc)
        if len(failed) == 1:
            raise failed[0][1]
        if failed:
            named = "; ".join(str(exc) if sink.spec in str(exc) else f"{sink.spec}: {exc}" for sink, exc in failed)
            raise SinkError(f"{len(failed)} sinks failed to close: {named}") from failed[0][1]


class RunLoop:
    """When a run turns, writes stats and ends; and how it shuts down.

    ``wake`` is set by whatever brings work (a frame in a ring, a capture event, a model swap) and by
    :meth:`stop`; a turn that found nothing waits on it for at most ``poll_s``. ``log`` is the runner's
    logger, so the lines keep the runner's name.
    """

    def __init__(
        self,
        *,
        duration_s: float | None,
        stats_interval_s: float,
        poll_s: float,
        log: logging.Logger = _log,
    ) -> None:
        self.duration_s = duration_s  # None: no deadline
        self.stats_interval_s = stats_interval_s  # 0: stats only at the end
        self.poll_s = poll_s
        self.log = log
        self.wake = threading.Event()
        self.stop_requested = False
        self._last_stats = 0.0

    def stop(self) -> None:
        """Ask :meth:`run` to end; returns at once. Safe from any thread and from a signal handler."""
        self.stop_requested = True
        # Event.set takes a lock that the interrupted main thread may hold inside Event.wait: set it from a
        # short helper thread, so a signal handler never blocks on it.
        threading.Thread(target=self.wake.set, name="dcrn-stop", daemon=True).start()

    def run(
        self,
        turn: Callable[[], bool],
        *,
        done: Callable[[], bool],
        done_note: str,
        stats: Callable[[], None],
    ) -> None:
        """Call ``turn()`` until ``stop()``, ``done()`` or the deadline (counted from now); ``stats()`` every
        stats interval. ``turn`` returns whether it found work: then the next turn starts at once, else
        after waiting up to ``poll_s`` for ``wake``. ``done_note`` is logged when ``done()`` ends the run."""
        deadline = None if self.duration_s is None else time.monotonic() + self.duration_s
        self._last_stats = time.monotonic()
        while not self.stop_requested:
            self.wake.clear()
            busy = turn()
            if done():
                self.log.info("%s", done_note)
                break
            if deadline is not None and time.monotonic() >= deadline:
                self.log.info("duration of %.1f s reached", self.duration_s)
                break
            if self._stats_due():
                stats()
            if not busy:
                self.wake.wait(self.poll_s)

    def _stats_due(self) -> bool:
        now = time.monotonic()
        if self.stats_interval_s <= 0 or now - self._last_stats < self.stats_interval_s:
            return False
        self._last_stats = now
        return True

    @contextlib.contextmanager
    def shutting_down(
        self,
        sinks: SinkSet,
        *,
        finish: Callable[[], None],
        release: Callable[[], None],
        what: str,
    ) -> Iterator[None]:
        """Around a whole run: when the body ends, however it ends, ``finish()`` (stop the streams, write
        what they still had, final stats), then close every sink and ``release()``, also when ``finish``
        failed. ``what`` names the run in the log ("the pipeline").

        When the body raises, its error is the one that leaves and later errors are logged at DEBUG (they
        are its echoes); otherwise the first error of the shutdown is logged and raised.
        """
        try:
            yield
        except BaseException:
            self._shut_down(sinks, finish, release, what, raising=True)
            raise
        self._shut_down(sinks, finish, release, what, raising=False)

    def _shut_down(
        self,
        sinks: SinkSet,
        finish: Callable[[], None],
        release: Callable[[], None],
        what: str,
        *,
        raising: bool,
    ) -> None:
        errors: list[BaseException] = []
        quiet = logging.DEBUG if raising else logging.ERROR
        try:
            finish()
        except BaseException as exc:  # keep closing; raised below unless the run already raises
            errors.append(exc)
            self.log.log(quiet, "error while stopping %s: %s", what, exc)
            self.log.debug("while stopping", exc_info=True)
        finally:
            try:
                sinks.close(level=quiet)
            except Exception as exc:
                errors.append(exc)
            release()
        if errors and not raising:
            raise errors[0]
