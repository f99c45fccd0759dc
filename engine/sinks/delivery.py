"""Sinks that deliver records to another system (``mqtt://``, ``webhook:``): an outbox on disk and a sender.

``write(record)`` never waits for the network: it picks the records the sink sends (events always, stats
at most one per ``stats_s`` per stream, predictions when asked), appends them to the sink's
:class:`~dcrn.engine.sinks.outbox.Outbox` and wakes the sender thread. The sender delivers the oldest
records first, one batch at a time, and drops them from the outbox only once the other side has
acknowledged them (at least once, in order). While the other side is down it retries with exponential
backoff and jitter; the records wait on disk, so an outage loses nothing and the next run sends what a
run left. ``close()`` lets the sender deliver what it can for ``close_s`` seconds, then stops it.

A subclass implements the transport: :meth:`DeliverySink._prepare` (connect when needed),
:meth:`DeliverySink._deliver` (send a batch, return how many of its first records are done) and
:meth:`DeliverySink._finish` (say goodbye, disconnect). Either raises :class:`Retry` when it should be
tried again later; its message is shown (it must name the redacted spec only).
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import ssl
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from dcrn.engine.errors import SinkError
from dcrn.engine.redact import redact
from dcrn.engine.sinks.base import Sink, finite
from dcrn.engine.sinks.outbox import Entry, Outbox, OutboxLimits
from dcrn.models.files import cache_root

log = logging.getLogger(__name__)

IDLE_S = 1.0  # the sender looks at the outbox at least this often
MAX_RETRY_AFTER_S = 300.0  # a server's Retry-After is followed up to this
# Options every delivery sink takes (its spec's query, or a webhook URL's fragment).
COMMON_OPTIONS = frozenset(
    {"predictions", "stats", "stats_s", "outbox", "max_records", "max_mb", "retry_max_s", "close_s"}
)
TRUE, FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


class Retry(Exception):
    """A delivery failed in a way that may heal (connection refused, timeout, HTTP 5xx/408/429)."""

    def __init__(self, message: str, *, after_s: float | None = None) -> None:
        super().__init__(message)
        self.after_s = after_s  # the other side asked to wait this long (HTTP Retry-After)


@dataclass(frozen=True)
class DeliveryOptions:
    """What a delivery sink sends, where its outbox lives and how it retries."""

    predictions: bool = False  # also send prediction records (every frame of every stream)
    stats: bool = True  # send stats records ...
    stats_s: float = 10.0  # ... at most one per stream this often (0: every one)
    outbox: Path | None = None  # the outbox folder; None: cache_root()/outbox/<hash of the sink>
    limits: OutboxLimits = field(default_factory=OutboxLimits)
    retry_s: float = 0.5  # the first wait after a failure; doubled each time ...
    retry_max_s: float = 10.0  # ... up to this (with jitter)
    close_s: float = 5.0  # close() delivers for at most this long; the rest waits on disk for the next run


def parse_options(options: dict[str, str], shown: str, *, stats: bool) -> DeliveryOptions:
    """The :data:`COMMON_OPTIONS` of ``options`` as :class:`DeliveryOptions`; one-line SinkError when bad.
    ``stats`` is the sink's default for sending stats records."""

    def number(name: str, default: float, low: float, high: float) -> float:
        text = options.get(name)
        if text is None:
            return default
        try:
            value = float(text)
        except ValueError:
            value = float("nan")
        if not low <= value <= high:  # NaN fails too
            raise SinkError(f"sink {shown!r}: {name} must be a number from {low:g} to {high:g}, got {text!r}")
        return value

    limits = OutboxLimits(
        max_records=int(number("max_records", OutboxLimits.max_records, 1, 1e9)),
        max_bytes=int(number("max_mb", OutboxLimits.max_bytes / 1024**2, 0.01, 1e6) * 1024**2),
    )
    outbox = options.get("outbox")
    if outbox is not None and not outbox.strip():
        raise SinkError(f"sink {shown!r}: outbox must name a folder")
    return DeliveryOptions(
        predictions=flag(options, "predictions", False, shown),
        stats=flag(options, "stats", stats, shown),
        stats_s=number("stats_s", 10.0, 0, 1e6),
        outbox=Path(outbox).expanduser() if outbox else None,
        limits=limits,
        retry_max_s=number("retry_max_s", 10.0, 0.1, 3600),
        close_s=number("close_s", 5.0, 0, 3600),
    )


def flag(options: dict[str, str], name: str, default: bool, shown: str) -> bool:
    text = options.get(name)
    if text is None:
        return default
    if text.lower() in TRUE:
        return True
    if text.lower() in FALSE:
        return False
    raise SinkError(f"sink {shown!r}: {name} must be 1 or 0, got {text!r}")


def default_outbox(key: str) -> Path:
    """Where the outbox of the sink identified by ``key`` (its redacted destination) lives by default."""
    return cache_root() / "outbox" / hashlib.sha256(key.encode("utf-8")).hexdigest()[:16]


def describe(exc: BaseException) -> str:
    """A network error in a few words, credentials redacted."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        text = f"TLS certificate not trusted: {exc.verify_message or exc.reason}"
    elif isinstance(exc, OSError) and exc.strerror:
        text = exc.strerror
    else:
        text = str(exc) or type(exc).__name__
    return redact(text)


class Backoff:
    """Exponential backoff with jitter: each wait is between half and all of ``first * 2**n``, at most
    ``most``."""

    def __init__(self, first: float, most: float) -> None:
        self.first, self.most = first, most
        self.failures = 0

    def next(self) -> float:
        ceiling = min(self.most, self.first * 2 ** min(self.failures, 30))
        self.failures += 1
        return ceiling * random.uniform(0.5, 1.0)

    def reset(self) -> None:
        self.failures = 0


class DeliverySink(Sink):
    """Base of the sinks that deliver to another system through an on-disk outbox (see the module)."""

    batch = 1  # records handed to one _deliver call
    what = "destination"  # how messages name the other side ("broker", "endpoint")

    def __init__(self, shown: str, key: str, options: DeliveryOptions) -> None:
        super().__init__(include_logits=False)
        self.spec = shown  # credentials redacted: every message names the sink by this
        self.options = options
        self.outbox = Outbox(options.outbox or default_outbox(key), limits=options.limits, label=shown)
        self.delivered = 0  # records the other side acknowledged
        self.rejected = 0  # records the other side refused for good (dropped with a warning)
        self._stats_sent: dict[str, float] = {}
        self._wake = threading.Event()  # a record came, or the transport has news
        self._closing = threading.Event()
        self._deadline = 0.0
        self._thread: threading.Thread | None = None
        self._down_since: float | None = None

    # -- the Sink interface ------------------------------------------------------------------------

    def open(self) -> DeliverySink:
        if self._thread is None:
            self.outbox.open()
            self._closing.clear()
            self._thread = threading.Thread(target=self._send_loop, name=f"dcrn-{self.what}-sender", daemon=True)
            self._thread.start()
        return self

    def write(self, record: dict) -> None:
        self._saw(record)
        if not self._wanted(record):
            return
        if self._thread is None:
            raise SinkError(f"{self.spec}: write to a sink that is not open")
        record = {k: v for k, v in record.items() if k != "logits"}
        line = json.dumps(finite(record), separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        self.outbox.append(line)
        self.written += 1
        self._wake.set()

    def flush(self) -> None:
        """Nothing to do: each record is on disk (handed to the OS) once ``write`` returns."""

    def close(self) -> None:
        """Deliver what can be for ``close_s`` seconds, stop the sender, keep the rest on disk."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._deadline = time.monotonic() + self.options.close_s
        self._closing.set()
        self._wake.set()
        thread.join(self.options.close_s + 5.0)
        if thread.is_alive():
            log.warning("%s: the sender did not stop in time; what it still had waits in the outbox", self.spec)
        left = len(self.outbox)
        self.outbox.close()
        if left:
            log.warning(
                "%s: %d records not delivered; they wait in the outbox %s for the next run",
                self.spec,
                left,
                self.outbox.folder,
            )
        elif self.delivered or self.rejected:
            log.info("%s: %d records delivered", self.spec, self.delivered)

    # -- for subclasses ----------------------------------------------------------------------------

    def _saw(self, record: dict) -> None:
        """Every record passes here first, also those the sink does not send (e.g. to learn stream names)."""

    def _prepare(self) -> None:
        """Before each batch (and when idle): connect when needed. Raises :class:`Retry`."""

    def _deliver(self, entries: list[Entry]) -> int:
        """Send ``entries`` in order; return how many of the first are done (acknowledged, or refused for
        good: count those in ``rejected``). Raises :class:`Retry` when none is."""
        raise NotImplementedError

    def _finish(self) -> None:
        """The sender stops: say goodbye and disconnect, quickly (bounded by :meth:`_time_left`)."""

    def _time_left(self, default: float) -> float:
        """How long a network call may take: ``default``, less when closing."""
        if not self._closing.is_set():
            return default
        return max(0.05, min(default, self._deadline - time.monotonic()))

    # -- the sender thread -------------------------------------------------------------------------

    def _wanted(self, record: dict) -> bool:
        kind = record.get("type")
        if kind == "event":
            return True
        if kind == "prediction":
            return self.options.predictions
        if kind == "stats" and self.options.stats:
            stream, now = str(record.get("stream", "")), time.monotonic()
            last = self._stats_sent.get(stream)
            if last is not None and now - last < self.options.stats_s:
                return False
            self._stats_sent[stream] = now
            return True
        return False

    def _send_loop(self) -> None:
        backoff = Backoff(self.options.retry_s, self.options.retry_max_s)
        try:
            while not (self._closing.is_set() and time.monotonic() >= self._deadline):
                self._wake.clear()
                try:
                    self._prepare()
                    entries = self.outbox.peek(self.batch)
                    if entries:
                        done = self._deliver(entries)
                        if done:
                            self.outbox.ack(entries[done - 1])
                            self.delivered += done
                        self._up()
                        backoff.reset()
                        self.outbox.sync()
                        continue
                    self._up()
                except Retry as exc:
                    self._down(str(exc))
                    self._pause(exc.after_s if exc.after_s is not None else backoff.next())
                    continue
                except Exception as exc:  # a bug or an odd library error: keep the sender alive, retry later
                    log.debug("%s: sender error", self.spec, exc_info=True)
                    self._down(f"{type(exc).__name__}: {exc}")
                    self._pause(backoff.next())
                    continue
                if self._closing.is_set():
                    break  # nothing left to deliver
                self.outbox.sync()
                self._wake.wait(IDLE_S)
        finally:
            try:
                self._finish()
            except Exception as exc:
                log.debug("%s: while disconnecting: %s", self.spec, exc)
            self.outbox.sync(force=True)

    def _pause(self, seconds: float) -> None:
        """Wait before the next try; a close cuts the wait short (one more try before its deadline)."""
        self.outbox.sync()
        seconds = min(seconds, MAX_RETRY_AFTER_S)
        if self._closing.is_set():
            time.sleep(max(0.0, min(seconds, self._deadline - time.monotonic())))
        else:
            self._closing.wait(seconds)

    def _down(self, why: str) -> None:
        if self._down_since is None:
            self._down_since = time.monotonic()
            log.warning(
                "%s: %s; %d records wait in the outbox, retrying with backoff",
                self.spec,
                why,
                len(self.outbox),
            )
        else:
            log.debug("%s: still failing: %s", self.spec, why)

    def _up(self) -> None:
        if self._down_since is not None:
            log.info(
                "%s: delivering again after %.1f s; %d records waiting",
                self.spec,
                time.monotonic() - self._down_since,
                len(self.outbox),
            )
            self._down_since = None
