"""``mqtt://[user:pass@]host[:port]/PREFIX``: records published to an MQTT broker (paho-mqtt, QoS 1).

Topics (``STREAM`` is the stream's name with ``/ + #`` and control characters as ``_``):

- ``PREFIX/availability``: ``online`` (retained) while the sink is connected, ``offline`` (retained) when it
  closes, and the broker's last will ``offline`` when the connection dies without a goodbye.
- ``PREFIX/STREAM/event``: each event record, as JSON.
- ``PREFIX/STREAM/action``: the running action's label, ``none`` when there is none (retained).
- ``PREFIX/STREAM/stats``: a stats record at most every ``stats_s`` (10 s) per stream.
- ``PREFIX/STREAM/prediction``: every prediction record, only with ``?predictions=1``.
- With ``?ha=1`` (or ``?discovery=homeassistant``, or another discovery prefix): a retained Home Assistant
  discovery config per stream on ``homeassistant/sensor/dcrn_STREAM_action/config``, so each camera's
  action shows up as a sensor.

``mqtts://`` connects with TLS, verified against the system's CA certificates (or ``?ca=PATH``), port 8883
by default. A password can stay off the command line: ``mqtt://user@host/dcrn`` takes it from
``$DCRN_MQTT_PASSWORD`` (and ``mqtt://host/dcrn`` the user from ``$DCRN_MQTT_USERNAME``). Records go
through the sink's outbox (:mod:`dcrn.engine.sinks.delivery`). docs/DEPLOY.md shows payloads.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import secrets
import ssl
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qsl, unquote

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

DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883}
DEFAULT_PREFIX = "dcrn"
HA_PREFIX = "homeassistant"
USER_ENV = "DCRN_MQTT_USERNAME"
PASSWORD_ENV = "DCRN_MQTT_PASSWORD"
OPTIONS = COMMON_OPTIONS | {"ha", "discovery", "ca", "client_id", "keepalive"}
NO_ACTION = "none"  # the action topic's payload when no action runs


@dataclass(frozen=True)
class MqttConfig:
    """Where and how the sink connects; ``password`` never shows in a repr."""

    host: str
    port: int = 1883
    prefix: str = DEFAULT_PREFIX  # topics start with this
    tls: bool = False  # mqtts://: TLS, the broker's certificate verified
    ca_file: str | None = None  # verify against this CA bundle instead of the system's
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    discovery_prefix: str | None = None  # "homeassistant": publish Home Assistant discovery configs
    client_id: str = ""  # "": dcrn-<random>, new for each run
    keepalive_s: int = 30  # the broker declares the sink dead (last will) after 1.5x this without a word
    connect_timeout_s: float = 5.0
    publish_timeout_s: float = 10.0  # a batch not acknowledged by then: reconnect and send it again

    @property
    def destination(self) -> str:
        """The broker and prefix, no credentials: names the sink's default outbox."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'mqtts' if self.tls else 'mqtt'}://{host}:{self.port}/{self.prefix}"


def parse_mqtt(spec: str) -> MqttSink:
    """``mqtt[s]://[user[:pass]@]host[:port][/PREFIX][?options]`` -> an :class:`MqttSink` (not yet open)."""
    shown = redact(spec)
    scheme, sep, rest = spec.partition("://")
    if not sep or scheme.lower() not in DEFAULT_PORTS:
        raise SinkError(f"sink {shown!r}: use mqtt://[user:pass@]host[:port]/PREFIX or mqtts://...")
    scheme = scheme.lower()
    userinfo = None
    if "@" in rest:  # a password may hold any character: the user info runs to the last "@" (as redact reads it)
        userinfo, _, rest = rest.rpartition("@")
    rest, _, query = rest.partition("?")
    hostport, _, path = rest.partition("/")
    host, port = _host_port(hostport, DEFAULT_PORTS[scheme], shown)
    prefix = path.strip("/") or DEFAULT_PREFIX
    if not _valid_topic(prefix):
        raise SinkError(f"sink {shown!r}: the topic prefix must not hold '+', '#' or empty levels, got {prefix!r}")
    try:
        options = dict(parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query)))
    except ValueError:
        raise SinkError(f"sink {shown!r}: options must look like ?name=value&name=value") from None
    unknown = sorted(set(options) - OPTIONS)
    if unknown:
        raise SinkError(f"sink {shown!r}: unknown options {unknown} (this sink takes {sorted(OPTIONS)})")
    username, password = _credentials(userinfo, shown)
    discovery = options.get("discovery") or None
    if discovery is None and options.get("ha", "0").lower() in ("1", "true", "yes", "on"):
        discovery = HA_PREFIX
    elif options.get("ha", "0").lower() not in ("0", "false", "no", "off", "1", "true", "yes", "on"):
        raise SinkError(f"sink {shown!r}: ha must be 1 or 0, got {options['ha']!r}")
    if discovery is not None and not _valid_topic(discovery):
        raise SinkError(f"sink {shown!r}: discovery must be a topic prefix such as homeassistant, got {discovery!r}")
    ca_file = options.get("ca")
    if ca_file is not None:
        if scheme != "mqtts":
            raise SinkError(f"sink {shown!r}: ca= needs mqtts://")
        if not Path(ca_file).expanduser().is_file():
            raise SinkError(f"sink {shown!r}: the CA file {ca_file!r} does not exist")
        ca_file = str(Path(ca_file).expanduser())
    try:
        keepalive = int(options.get("keepalive", 30))
    except ValueError:
        keepalive = 0
    if not 5 <= keepalive <= 65535:
        raise SinkError(f"sink {shown!r}: keepalive must be whole seconds from 5 to 65535")
    client_id = options.get("client_id", "")
    if len(client_id) > 128 or any(ord(c) < 32 for c in client_id):
        raise SinkError(f"sink {shown!r}: client_id must be at most 128 printable characters")
    config = MqttConfig(
        host=host,
        port=port,
        prefix=prefix,
        tls=scheme == "mqtts",
        ca_file=ca_file,
        username=username,
        password=password,
        discovery_prefix=discovery,
        client_id=client_id,
        keepalive_s=keepalive,
    )
    return MqttSink(config, parse_options(options, shown, stats=True), shown=shown)


def _host_port(text: str, default: int, shown: str) -> tuple[str, int]:
    if text.startswith("["):  # [IPv6]:port
        host, _, tail = text[1:].partition("]")
        port_text = tail[1:] if tail.startswith(":") else None
        if tail and port_text is None:
            raise SinkError(f"sink {shown!r}: a bracketed IPv6 host must be followed by :PORT or nothing")
    else:
        host, colon, port_text = text.partition(":")
        port_text = port_text if colon else None
    if not host or re.search(r"[\s/\\]", host):
        raise SinkError(f"sink {shown!r} needs a broker host: mqtt://host[:port]/PREFIX")
    if port_text is None:
        return host, default
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise SinkError(f"sink {shown!r}: the port must be a whole number from 1 to 65535, got {port_text!r}")
    return host, int(port_text)


def _credentials(userinfo: str | None, shown: str) -> tuple[str | None, str | None]:
    """(user, password) from the URL's user info, else from the environment. Never shows the password."""
    user = password = None
    if userinfo is not None:
        user_text, colon, password_text = userinfo.partition(":")
        user = unquote(user_text) or None
        password = unquote(password_text) if colon else None
    if user is None:
        if password:
            raise SinkError(f"sink {shown!r}: a password needs a user name (mqtt://user:pass@host/...)")
        user = os.environ.get(USER_ENV) or None
    if user is not None and password is None:
        password = os.environ.get(PASSWORD_ENV) or None
    return user, password


def _valid_topic(text: str) -> bool:
    return bool(text) and not re.search(r"[+#\x00]", text) and "" not in text.split("/")


def topic_level(name: str) -> str:
    """A stream name as one topic level: no ``/ + #``, no control characters."""
    return re.sub(r"[/+#\x00-\x1f\x7f]", "_", name) or "_"


def object_id(name: str) -> str:
    """A stream name as Home Assistant wants it in ids: letters, digits, ``_`` and ``-``."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", name) or "_"


class MqttSink(DeliverySink):
    """Publishes records to a broker at QoS 1 through the outbox (see the module)."""

    batch = 64  # records published before waiting for their acknowledgements
    what = "broker"

    def __init__(self, config: MqttConfig, options: DeliveryOptions | None = None, *, shown: str = "") -> None:
        super().__init__(shown or redact(config.destination), config.destination, options or DeliveryOptions())
        self.config = config
        self.availability_topic = f"{config.prefix}/availability"
        self._client = None  # paho Client of the current connection, or None
        self._connected = threading.Event()
        self._connack = threading.Event()
        self._connack_reason = ""
        self._acked = threading.Event()  # a PUBACK came (or the connection went)
        self._streams: dict[str, None] = {}  # every stream seen, in order
        self._streams_lock = threading.Lock()
        self._announced: set[str] = set()  # discovery configs sent on this connection
        self._reset: set[str] = set()  # action topics set to "none" in this run

    # -- records -----------------------------------------------------------------------------------

    def _saw(self, record: dict) -> None:
        stream = record.get("stream")
        if isinstance(stream, str) and stream not in self._streams:
            with self._streams_lock:
                self._streams[stream] = None
            self._wake.set()

    def messages(self, record: dict) -> list[tuple[str, bytes, bool]]:
        """The (topic, payload, retain) messages that carry ``record``."""
        base = f"{self.config.prefix}/{topic_level(str(record.get('stream', '')))}"
        payload = json.dumps(record, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        kind = record.get("type")
        if kind != "event":
            return [(f"{base}/{kind}", payload, False)]
        out = [(f"{base}/event", payload, False)]
        if record.get("event") == "action_started":
            out.append((f"{base}/action", str(record.get("label")).encode("utf-8"), True))
        elif record.get("event") == "action_ended":
            out.append((f"{base}/action", NO_ACTION.encode(), True))
        return out

    def discovery_config(self, stream: str) -> tuple[str, bytes]:
        """The Home Assistant discovery (topic, payload) that makes ``stream``'s action a sensor."""
        ident = object_id(stream)
        base = f"{self.config.prefix}/{topic_level(stream)}"
        config = {
            "name": "action",
            "unique_id": f"dcrn_{ident}_action",
            "state_topic": f"{base}/action",
            "json_attributes_topic": f"{base}/event",
            "availability_topic": self.availability_topic,
            "payload_available": "online",
            "payload_not_available": "offline",
            "icon": "mdi:motion-sensor",
            "device": {"identifiers": [f"dcrn_{ident}"], "name": f"DCRN {stream}", "manufacturer": "DCRN Live"},
        }
        topic = f"{self.config.discovery_prefix}/sensor/dcrn_{ident}_action/config"
        return topic, json.dumps(config, separators=(",", ":")).encode("utf-8")

    # -- the transport (sender thread) -------------------------------------------------------------

    def _prepare(self) -> None:
        if not self._connected.is_set():
            self._connect()
        self._announce()

    def _deliver(self, entries: list[Entry]) -> int:
        self._announce()  # a stream first seen just now gets its discovery config before its records
        infos: list[list] = []
        for entry in entries:
            infos.append([self._publish(t, p, r) for t, p, r in self.messages(entry.record())])
        deadline = time.monotonic() + self._time_left(self.config.publish_timeout_s)
        while True:
            self._acked.clear()
            done = 0
            while done < len(infos) and all(info.is_published() for info in infos[done]):
                done += 1
            if done == len(infos):
                return done
            if not self._connected.is_set() or time.monotonic() >= deadline:
                why = "connection lost" if not self._connected.is_set() else "no acknowledgement in time"
                self._drop_client()
                if done:
                    return done
                raise Retry(f"{self.what} {self._where()}: {why}")
            self._acked.wait(0.1)

    def _finish(self) -> None:
        client = self._client
        if client is not None and self._connected.is_set():
            try:
                info = client.publish(self.availability_topic, b"offline", qos=1, retain=True)
                deadline = time.monotonic() + self._time_left(1.0)
                while self._connected.is_set() and not info.is_published() and time.monotonic() < deadline:
                    self._acked.wait(0.05)
                    self._acked.clear()
                self._connack.clear()  # set again by on_disconnect
                client.disconnect()
                self._connack.wait(self._time_left(1.0))
            except (RuntimeError, ValueError, OSError) as exc:
                log.debug("%s: goodbye failed: %s", self.spec, exc)
        self._drop_client()

    # -- connection --------------------------------------------------------------------------------

    def _where(self) -> str:
        return f"{self.config.host}:{self.config.port}"

    def _connect(self) -> None:
        import paho.mqtt.client as mqtt

        self._drop_client()
        config = self.config
        client_id = config.client_id or f"dcrn-{secrets.token_hex(6)}"
        client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id,
            clean_session=True,
            protocol=mqtt.MQTTv311,
            reconnect_on_failure=False,  # the sender reconnects, with a new client: nothing paho queued is resent
        )
        client.connect_timeout = self._time_left(config.connect_timeout_s)
        client.max_inflight_messages_set(4 * self.batch)
        if config.username is not None:
            client.username_pw_set(config.username, config.password)
        client.will_set(self.availability_topic, b"offline", qos=1, retain=True)
        if config.tls:
            client.tls_set_context(ssl.create_default_context(cafile=config.ca_file))
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        self._connack.clear()
        self._client = client
        try:
            client.connect(config.host, config.port, keepalive=config.keepalive_s)
        except (OSError, ValueError) as exc:
            self._client = None
            raise Retry(f"{self.what} {self._where()} unreachable: {describe(exc)}") from None
        client.loop_start()  # paho's network thread; it ends with the connection
        if not self._connack.wait(self._time_left(config.connect_timeout_s)):
            self._drop_client()
            raise Retry(f"{self.what} {self._where()} did not answer within {config.connect_timeout_s:g} s")
        if not self._connected.is_set():
            reason = self._connack_reason
            self._drop_client()
            raise Retry(f"{self.what} {self._where()} refused the connection: {reason}")
        self._announced.clear()
        self._publish(self.availability_topic, b"online", True)
        log.info("%s: connected to %s", self.spec, self._where())

    def _drop_client(self) -> None:
        """Forget the current connection: disconnect, close its socket (its network thread then ends)."""
        client, self._client = self._client, None
        self._connected.clear()
        if client is None:
            return
        with contextlib.suppress(OSError, ValueError, RuntimeError):
            client.disconnect()
        sock = client.socket()
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()

    def _publish(self, topic: str, payload: bytes, retain: bool):
        import paho.mqtt.client as mqtt

        client = self._client
        if client is None or not self._connected.is_set():
            raise Retry(f"{self.what} {self._where()}: connection lost")
        info = client.publish(topic, payload, qos=1, retain=retain)
        if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_AGAIN):
            self._drop_client()
            raise Retry(f"{self.what} {self._where()}: publish failed: {mqtt.error_string(info.rc)}")
        return info

    def _announce(self) -> None:
        """Per stream: the action topic set to ``none`` once a run, the discovery config once a connection."""
        with self._streams_lock:
            streams = list(self._streams)
        for stream in streams:
            if stream not in self._reset:
                self._publish(f"{self.config.prefix}/{topic_level(stream)}/action", NO_ACTION.encode(), True)
                self._reset.add(stream)
            if self.config.discovery_prefix and stream not in self._announced:
                topic, payload = self.discovery_config(stream)
                self._publish(topic, payload, True)
                self._announced.add(stream)

    # -- paho callbacks (network thread) -----------------------------------------------------------

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if client is not self._client:
            return
        if reason_code.is_failure:
            self._connack_reason = str(reason_code)
        else:
            self._connected.set()
        self._connack.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        if client is self._client:
            self._connected.clear()
            self._connack.set()  # wakes _finish waiting for the goodbye
            self._acked.set()
            self._wake.set()

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        self._acked.set()
