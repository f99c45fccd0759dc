"""``--metrics [HOST:]PORT``: Prometheus metrics of a run, made from the same records every sink sees.

A sink like the others: prediction records feed the latency histogram, ``stats`` records the per-stream
gauges and the backend info, events the event counter and the up / down gauge. ``open()`` starts a small
HTTP server (its own thread) that serves ``/metrics`` from a private registry; ``close()`` stops it.
docs/DEPLOY.md lists every metric.
"""

from __future__ import annotations

import logging
import threading

from dcrn.engine.errors import SinkError
from dcrn.engine.sinks.base import Sink

log = logging.getLogger(__name__)

LATENCY_BUCKETS_S = (0.005, 0.01, 0.02, 0.035, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5)
DOWN_EVENTS = ("stream_lost", "stream_ended")  # the stream's up gauge drops to 0
UP_EVENTS = ("stream_restored",)  # ... and comes back to 1 (also with any prediction)


class MetricsSink(Sink):
    """Serves the run's metrics on ``http://HOST:PORT/metrics`` (``port`` 0: any free port, see ``port``)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 9108) -> None:
        super().__init__()
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

        self.host = host
        self.port = port
        self.spec = f"metrics:{host}:{port}"
        self.registry = CollectorRegistry(auto_describe=True)  # private: never the process-wide default
        stream = ["stream"]
        self.fps = Gauge("dcrn_stream_fps", "frames stepped per second", stream, registry=self.registry)
        self.frames = Gauge("dcrn_stream_frames", "frames stepped since the start", stream, registry=self.registry)
        self.dropped = Gauge(
            "dcrn_stream_dropped_frames", "frames dropped since the start", stream, registry=self.registry
        )
        up_help = "1 while the stream delivers frames, 0 once lost or ended"
        self.up = Gauge("dcrn_stream_up", up_help, stream, registry=self.registry)
        self.latency = Histogram(
            "dcrn_prediction_latency_seconds",
            "capture to prediction written",
            stream,
            buckets=LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self.events = Counter(
            "dcrn_events", "event records by kind and label", ["stream", "event", "label"], registry=self.registry
        )
        self.backend = Info("dcrn_backend", "the backend that runs the model", registry=self.registry)
        self._server = None
        self._thread: threading.Thread | None = None

    def open(self) -> MetricsSink:
        if self._server is not None:
            return self
        from prometheus_client import start_http_server

        try:
            self._server, self._thread = start_http_server(self.port, self.host, registry=self.registry)
        except OSError as exc:
            raise SinkError(f"--metrics {self.host}:{self.port}: cannot listen: {exc.strerror or exc}") from None
        self.port = int(self._server.server_port)
        self._handle = True  # type: ignore[assignment]  # open, for the base's bookkeeping
        log.info("metrics on http://%s:%d/metrics", self.host, self.port)
        return self

    def close(self) -> None:
        with self._lock:
            server, self._server = self._server, None
            thread, self._thread = self._thread, None
            self._handle = None
        if server is not None:
            server.shutdown()
            server.server_close()
        if thread is not None:
            thread.join(5.0)

    def flush(self) -> None:
        pass

    def write(self, record: dict) -> None:
        kind = record.get("type")
        name = str(record.get("stream", ""))
        with self._lock:
            if kind == "prediction":
                latency = record.get("latency_ms")
                if isinstance(latency, int | float):
                    self.latency.labels(name).observe(latency / 1000.0)
                self.up.labels(name).set(1)
            elif kind == "stats":
                self.fps.labels(name).set(float(record.get("fps") or 0.0))
                self.frames.labels(name).set(float(record.get("frames") or 0))
                self.dropped.labels(name).set(float(record.get("dropped") or 0))
                if "backend" in record:
                    fields = ("backend", "device", "precision", "int8")
                    self.backend.info({k: str(record.get(k, "")) for k in fields})
            elif kind == "event":
                event = str(record.get("event", ""))
                self.events.labels(name, event, str(record.get("label") or "")).inc()
                if event in DOWN_EVENTS:
                    self.up.labels(name).set(0)
                elif event in UP_EVENTS:
                    self.up.labels(name).set(1)
            self.written += 1
