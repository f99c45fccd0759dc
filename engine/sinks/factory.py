"""Sink specs (``stdout``, ``jsonl:PATH?...``, ``csv:PATH``) -> open-able sinks, with one-line errors."""

from __future__ import annotations

from urllib.parse import parse_qsl

from dcrn.engine.errors import SinkError
from dcrn.engine.redact import redact
from dcrn.engine.sinks.base import Sink
from dcrn.engine.sinks.files import MAX_KEEP, MAX_MB, CsvSink, JsonlSink
from dcrn.engine.sinks.mqtt import parse_mqtt
from dcrn.engine.sinks.stdout import StdoutSink
from dcrn.engine.sinks.webhook import parse_webhook

SINK_KINDS = ("stdout", "jsonl", "csv", "mqtt", "mqtts", "webhook")


def parse_sink(spec: str) -> Sink:
    """``stdout``, ``stdout?format=text``, ``jsonl:PATH[?max_mb=M&keep=K&logits=1]``, ``csv:PATH`` -> a Sink."""
    shown = redact(spec)  # a spec is a path today; it may be a URL one day
    kind, _, rest = spec.partition(":")
    if kind.lower() in ("mqtt", "mqtts"):  # delivery sinks parse their own URLs (engine/sinks/delivery.py)
        return parse_mqtt(spec)
    if kind == "webhook":
        return parse_webhook(spec)
    query = ""
    if kind.startswith("stdout"):
        kind, _, query = kind.partition("?")
        rest = ""
    elif "?" in rest:
        rest, _, query = rest.rpartition("?")
    if kind not in SINK_KINDS:
        raise SinkError(f"unknown sink {shown!r} (use stdout, jsonl:PATH, csv:PATH, mqtt://HOST/PREFIX or webhook:URL)")
    try:
        options = dict(parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query)))
    except ValueError:
        raise SinkError(f"sink {shown!r}: options must look like ?name=value&name=value") from None
    allowed = {"stdout": {"format", "every", "logits"}, "jsonl": {"max_mb", "keep", "logits"}, "csv": set()}[kind]
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise SinkError(f"sink {shown!r}: unknown options {unknown} (this sink takes {sorted(allowed) or 'none'})")
    logits = options.get("logits", "0").lower() in ("1", "true", "yes")
    if kind == "stdout":
        fmt = options.get("format", "json")
        if fmt not in ("json", "text"):
            raise SinkError(f"sink {shown!r}: format must be json or text, got {fmt!r}")
        try:
            every = int(options.get("every", 1))
        except ValueError:
            every = 0
        if every < 1:
            raise SinkError(f"sink {shown!r}: every must be a whole number >= 1")
        return StdoutSink(text=fmt == "text", every=every, include_logits=logits)
    if not rest:
        raise SinkError(f"sink {shown!r} needs a path: {kind}:PATH")
    if kind == "csv":
        return CsvSink(rest)
    try:
        max_mb = float(options.get("max_mb", 0))
        keep = int(options.get("keep", 5))
    except ValueError:
        raise SinkError(f"sink {shown!r}: max_mb must be a number and keep a whole number") from None
    if not 0 <= max_mb <= MAX_MB:
        raise SinkError(f"sink {shown!r}: max_mb must be a number from 0 (no rotation) to {MAX_MB:g}")
    if not 1 <= keep <= MAX_KEEP:
        raise SinkError(
            f"sink {shown!r}: keep (rotated files kept) must be from 1 to {MAX_KEEP}; max_mb=0 never rotates"
        )
    return JsonlSink(rest, max_mb=max_mb, keep=keep, include_logits=logits)
