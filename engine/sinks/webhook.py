"""``webhook:URL``: each record sent as an HTTP POST of its JSON (``Content-Type: application/json``).

``webhook:https://hooks.example/dcrn`` sends every event record (stats with ``stats=1``, predictions with
``predictions=1``). The URL is used as written, its own query included; the sink's options go after a
``#`` (a fragment is never sent): ``webhook:https://host/hook?key=abc#stats=1&stats_s=60&timeout_s=5``.

- **2xx**: delivered. **408, 429, 5xx**, a refused connection, a timeout, a TLS failure: tried again with
  exponential backoff and jitter (a ``Retry-After`` is followed), the record waiting in the outbox.
  **Any other status** (400, 401, 404, a redirect...): the endpoint will never take that record; it is
  dropped with a warning, so one bad record cannot hold back those behind it.
- ``https://`` is verified against the system's CA certificates (or ``#ca=PATH``); each request has a
  timeout (``timeout_s``, 10 s). The connection is kept open between records.
- ``https://user:pass@host/...`` sends HTTP basic authentication; ``$DCRN_WEBHOOK_TOKEN`` sends
  ``Authorization: Bearer TOKEN``. Neither shows in a log line or error (they name the redacted URL).
"""

from __future__ import annotations

import base64
import http.client
import logging
import os
import ssl
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlsplit

from dcrn.engine.errors import SinkError
from dcrn.engine.redact import redact
from dcrn.engine.sinks.delivery import (
    COMMON_OPTIONS,
    DeliveryOptions,
    DeliverySink,
    Retry,
    describe,
    parse_options,
)
from dcrn.engine.sinks.outbox import Entry

log = logging.getLogger(__name__)

TOKEN_ENV = "DCRN_WEBHOOK_TOKEN"
OPTIONS = COMMON_OPTIONS | {"timeout_s", "ca"}
RETRY_STATUS = frozenset({408, 429})
WARN_EVERY_S = 10.0  # at most one "dropped" warning this often (each is counted)


@dataclass(frozen=True)
class WebhookConfig:
    """Where the sink posts; the ``authorization`` header value never shows in a repr."""

    scheme: str  # http or https
    host: str
    port: int
    target: str  # path and query, as sent in the request line
    authorization: str | None = field(default=None, repr=False)
    timeout_s: float = 10.0  # per request: connect, send, answer
    ca_file: str | None = None  # https: verify against this CA bundle instead of the system's

    @property
    def destination(self) -> str:
        """The URL without credentials (it names the sink's default outbox)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}{self.target}"


def parse_webhook(spec: str) -> WebhookSink:
    """``webhook:http[s]://[user:pass@]host[:port]/path[?query][#options]`` -> a :class:`WebhookSink`."""
    shown = redact(spec)
    url = spec[len("webhook:") :] if spec.startswith("webhook:") else spec
    url, _, fragment = url.partition("#")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        detail = "the port must be a whole number from 1 to 65535" if "port" in str(exc).lower() else "malformed URL"
        raise SinkError(f"sink {shown!r}: {detail}") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise SinkError(f"sink {shown!r}: use webhook:https://host/path (or http://), got a {parts.scheme!r} URL")
    if not parts.hostname:
        raise SinkError(f"sink {shown!r} needs a host: webhook:https://host/path")
    try:
        options = dict(parse_qsl(fragment, keep_blank_values=True, strict_parsing=bool(fragment)))
    except ValueError:
        raise SinkError(f"sink {shown!r}: options go after '#' and look like name=value&name=value") from None
    unknown = sorted(set(options) - OPTIONS)
    if unknown:
        raise SinkError(f"sink {shown!r}: unknown options {unknown} (this sink takes {sorted(OPTIONS)})")
    try:
        timeout_s = float(options.get("timeout_s", 10.0))
    except ValueError:
        timeout_s = float("nan")
    if not 0.1 <= timeout_s <= 600:
        raise SinkError(f"sink {shown!r}: timeout_s must be a number from 0.1 to 600")
    ca_file = options.get("ca")
    if ca_file is not None and not Path(ca_file).expanduser().is_file():
        raise SinkError(f"sink {shown!r}: the CA file {ca_file!r} does not exist")
    scheme = parts.scheme.lower()
    authorization = None
    if parts.username is not None or parts.password is not None:
        user_pass = f"{unquote(parts.username or '')}:{unquote(parts.password or '')}"
        authorization = "Basic " + base64.b64encode(user_pass.encode("utf-8")).decode("ascii")
    elif os.environ.get(TOKEN_ENV):
        authorization = f"Bearer {os.environ[TOKEN_ENV]}"
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    config = WebhookConfig(
        scheme=scheme,
        host=parts.hostname,
        port=port or (443 if scheme == "https" else 80),
        target=target,
        authorization=authorization,
        timeout_s=timeout_s,
        ca_file=str(Path(ca_file).expanduser()) if ca_file else None,
    )
    return WebhookSink(config, parse_options(options, shown, stats=False), shown=shown)


class WebhookSink(DeliverySink):
    """POSTs each record through the outbox, one at a time, in order (see the module)."""

    batch = 1
    what = "endpoint"

    def __init__(self, config: WebhookConfig, options: DeliveryOptions | None = None, *, shown: str = "") -> None:
        destination = redact(config.destination)
        super().__init__(shown or f"webhook:{destination}", destination, options or DeliveryOptions(stats=False))
        self.config = config
        self._connection: http.client.HTTPConnection | None = None
        self._context = ssl.create_default_context(cafile=config.ca_file) if config.scheme == "https" else None
        self._last_warning = -WARN_EVERY_S

    def _deliver(self, entries: list[Entry]) -> int:
        entry = entries[0]
        reused = self._connection is not None
        try:
            status, reason, retry_after = self._post(entry.line)
        except (OSError, http.client.HTTPException) as exc:
            self._disconnect()
            if not reused:
                raise Retry(f"{self.what} unreachable: {describe(exc)}") from None
            try:  # a kept-alive connection the server closed meanwhile: once more on a new one
                status, reason, retry_after = self._post(entry.line)
            except (OSError, http.client.HTTPException) as again:
                self._disconnect()
                raise Retry(f"{self.what} unreachable: {describe(again)}") from None
        if 200 <= status < 300:
            return 1
        if status in RETRY_STATUS or status >= 500:
            raise Retry(f"{self.what} answered HTTP {status} {reason}", after_s=retry_after)
        self.rejected += 1
        now = time.monotonic()
        if now - self._last_warning >= WARN_EVERY_S:
            self._last_warning = now
            log.warning(
                "%s: the endpoint refused a record with HTTP %d %s; dropped it (it would never be accepted); "
                "%d dropped so far",
                self.spec,
                status,
                redact(reason),
                self.rejected,
            )
        return 1

    def _finish(self) -> None:
        self._disconnect()

    def _post(self, body: bytes) -> tuple[int, str, float | None]:
        config = self.config
        timeout = self._time_left(config.timeout_s)
        if self._connection is None:
            if self._context is not None:
                self._connection = http.client.HTTPSConnection(
                    config.host, config.port, timeout=timeout, context=self._context
                )
            else:
                self._connection = http.client.HTTPConnection(config.host, config.port, timeout=timeout)
        connection = self._connection
        connection.timeout = timeout
        if connection.sock is not None:
            connection.sock.settimeout(timeout)
        headers = {"Content-Type": "application/json", "User-Agent": "dcrn-live"}
        if config.authorization:
            headers["Authorization"] = config.authorization
        connection.request("POST", config.target, body=body, headers=headers)
        response = connection.getresponse()
        response.read()
        if response.will_close:
            self._disconnect()
        return response.status, response.reason, _retry_after(response.getheader("Retry-After"))

    def _disconnect(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.close()


def _retry_after(value: str | None) -> float | None:
    """Seconds of a ``Retry-After: N`` header (an HTTP date is ignored: the backoff applies)."""
    if value is None:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return seconds if 0 <= seconds <= 3600 else None
