"""Delivery sinks against real parts: a Mosquitto broker and an HTTP endpoint started by the tests.

Outages (broker killed, endpoint down) lose no event, keep each stream's order and never block the writer;
what waits in the outbox survives a new sink and a killed process; availability and the last will; Home
Assistant discovery; TLS verified; no password in a log line, error or file; one-line errors for bad specs.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from dcrn.engine.errors import SinkError
from dcrn.engine.sinks.delivery import DeliverySink
from dcrn.engine.sinks.factory import parse_sink
from tests.fixtures.http_receiver import Receiver
from tests.fixtures.mqtt import Broker, Subscriber, TlsFiles, free_port, unavailable_reason

MAX_WRITE_S = 0.1  # a write that waited on the network would take a connect timeout or a backoff (>= 0.5 s)


@pytest.fixture
def broker(tmp_path):
    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    server = Broker(tmp_path / "broker")
    try:
        yield server.start()
    finally:
        server.close()


def event(stream: str, frame: int, name: str = "action_started", label: str = "wave") -> dict:
    return {"type": "event", "event": name, "stream": stream, "frame": frame, "pts": frame / 30, "wall": time.time(),
            "label": label, "score": 0.9}  # fmt: skip


def write_for(sink: DeliverySink, seconds: float, streams: dict[str, int], durations: list[float], hz: float = 20):
    """Write events of every stream at ``hz`` for ``seconds``; ``streams`` holds each stream's next frame."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for stream in streams:
            record = event(stream, streams[stream])
            start = time.perf_counter()
            sink.write(record)
            durations.append(time.perf_counter() - start)
            streams[stream] += 1
        time.sleep(1 / hz)


def wait_delivered(sink: DeliverySink, count: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while sink.delivered < count and time.monotonic() < deadline:
        time.sleep(0.02)
    return sink.delivered >= count


def first_arrivals(frames: list[int]) -> list[int]:
    """The frames in the order they first arrived (at least once: a frame may come twice)."""
    seen: set[int] = set()
    return [f for f in frames if not (f in seen or seen.add(f))]


def mqtt_frames(sub: Subscriber, stream: str) -> list[int]:
    return [json.loads(m.payload)["frame"] for m in sub.on(f"dcrn/{stream}/event")]


def all_arrived(sub: Subscriber, streams: dict[str, int]):
    return lambda _: all(set(mqtt_frames(sub, s)) >= set(range(n)) for s, n in streams.items())


# -- MQTT: outages --------------------------------------------------------------------------------


@pytest.mark.parametrize("down_s", [2.0, pytest.param(10.0, marks=pytest.mark.slow)])
def test_mqtt_broker_killed_loses_no_event_and_never_blocks_the_writer(broker, tmp_path, down_s):
    streams = {"cam0": 0, "cam1": 0}
    durations: list[float] = []
    with Subscriber(broker.port, ["dcrn/+/event"], client_id="test-watcher") as sub:
        sink = parse_sink(f"mqtt://127.0.0.1:{broker.port}/dcrn?outbox={tmp_path / 'outbox'}&retry_max_s=1")
        with sink:
            write_for(sink, 2.0, streams, durations)  # (the broker saves the watcher's session meanwhile)
            assert sub.wait(all_arrived(sub, streams), timeout=10)
            broker.kill()
            down_from = len(durations)
            write_for(sink, down_s, streams, durations)
            assert len(sink.outbox) > 0  # waiting while the broker is gone
            broker.start()
            write_for(sink, 1.0, streams, durations)
            assert sub.wait(all_arrived(sub, streams), timeout=30), {s: len(mqtt_frames(sub, s)) for s in streams}
    for stream, count in streams.items():
        assert first_arrivals(mqtt_frames(sub, stream)) == list(range(count)), stream
    assert len(durations) - down_from > 20 * down_s  # written while the broker was down
    assert max(durations) < MAX_WRITE_S, f"slowest write {max(durations) * 1e3:.1f} ms"


def test_records_written_while_the_broker_is_down_reach_it_through_a_new_sink(broker, tmp_path):
    spec = f"mqtt://127.0.0.1:{broker.port}/dcrn?outbox={tmp_path / 'outbox'}&close_s=0.5"
    broker.kill()
    with parse_sink(spec) as sink:
        for frame in range(20):
            sink.write(event("cam0", frame))
    assert len(list((tmp_path / "outbox").glob("*.jsonl"))) >= 1  # left on disk for the next run
    broker.start()
    with Subscriber(broker.port, ["dcrn/+/event"]) as sub, parse_sink(spec) as sink:
        assert sink.outbox.loaded == 20
        assert sub.wait(lambda _: len(mqtt_frames(sub, "cam0")) >= 20, timeout=15)
    assert first_arrivals(mqtt_frames(sub, "cam0")) == list(range(20))
    assert not list((tmp_path / "outbox").glob("*.jsonl"))  # delivered: nothing waits


# -- MQTT: availability, last will, discovery ------------------------------------------------------

CHILD = """
import sys, time
from dcrn.engine.sinks.factory import parse_sink
sink = parse_sink(sys.argv[1]).open()
for frame in range(int(sys.argv[2])):
    sink.write({"type": "event", "event": "action_started", "stream": "cam0", "frame": frame, "pts": 0.0,
                "wall": time.time(), "label": "wave", "score": 0.9})
print("written", flush=True)
time.sleep(600)
"""


def run_child(spec: str, records: int) -> subprocess.Popen:
    """A process with a sink that wrote ``records`` events and then waits to be killed."""
    child = subprocess.Popen([sys.executable, "-c", textwrap.dedent(CHILD), spec, str(records)],
                             stdout=subprocess.PIPE, text=True)  # fmt: skip
    assert child.stdout is not None and child.stdout.readline().strip() == "written"
    return child


def test_availability_is_online_then_the_last_will_says_offline_when_the_process_dies(broker, tmp_path):
    with Subscriber(broker.port, ["dcrn/availability"]) as sub:
        child = run_child(f"mqtt://127.0.0.1:{broker.port}/dcrn?outbox={tmp_path / 'outbox'}", 1)
        try:
            assert sub.wait(lambda m: [x.payload for x in m] == [b"online"], timeout=10)
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait(timeout=10)
        assert sub.wait(lambda m: [x.payload for x in m] == [b"online", b"offline"], timeout=10)
    with Subscriber(broker.port, ["dcrn/availability"]) as late:  # retained for whoever comes later
        assert late.wait(lambda m: len(m) == 1, timeout=5)
        assert late.messages[0].payload == b"offline" and late.messages[0].retain


def test_a_clean_close_publishes_offline(broker, tmp_path):
    with Subscriber(broker.port, ["dcrn/availability"]) as sub:
        with parse_sink(f"mqtt://127.0.0.1:{broker.port}/dcrn?outbox={tmp_path / 'outbox'}"):
            assert sub.wait(lambda m: [x.payload for x in m] == [b"online"], timeout=10)
        assert sub.wait(lambda m: [x.payload for x in m] == [b"online", b"offline"], timeout=10)


def test_home_assistant_discovery_config_is_published_retained_per_stream(broker, tmp_path):
    with parse_sink(f"mqtt://127.0.0.1:{broker.port}/dcrn?ha=1&outbox={tmp_path / 'outbox'}") as sink:
        sink.write({"type": "prediction", "stream": "front door", "frame": 0, "label": "still", "score": 0.9})
        sink.write(event("front door", 1, label="wave"))
        assert wait_delivered(sink, 1)
        with Subscriber(broker.port, ["homeassistant/#", "dcrn/front door/action"]) as sub:
            topic = "homeassistant/sensor/dcrn_front_door_action/config"
            assert sub.wait(lambda m: len(m) >= 2, timeout=10)
            (config,) = sub.on(topic)
            assert config.retain
            payload = json.loads(config.payload)
            assert payload["state_topic"] == "dcrn/front door/action"
            assert payload["availability_topic"] == "dcrn/availability"
            assert payload["unique_id"] == "dcrn_front_door_action"
            (state,) = sub.on("dcrn/front door/action")
            assert state.payload == b"wave" and state.retain  # the sensor's state: the running action


def test_predictions_are_not_sent_by_default_and_stats_at_most_every_stats_s(broker, tmp_path):
    spec = f"mqtt://127.0.0.1:{broker.port}/dcrn?stats_s=60&outbox={tmp_path / 'outbox'}"
    with Subscriber(broker.port, ["dcrn/+/+"]) as sub, parse_sink(spec) as sink:
        for frame in range(5):
            sink.write({"type": "prediction", "stream": "cam0", "frame": frame, "label": "still", "score": 0.9})
            sink.write({"type": "stats", "stream": "cam0", "fps": 30.0, "frames": frame})
        sink.write(event("cam0", 5))
        assert sub.wait(lambda _: sub.on("dcrn/cam0/event"), timeout=10)
        assert not sub.on("dcrn/cam0/prediction")
        assert [json.loads(m.payload)["frames"] for m in sub.on("dcrn/cam0/stats")] == [0]


# -- MQTT: TLS and credentials -------------------------------------------------------------------------


def test_mqtts_verifies_the_broker_certificate(tmp_path, caplog):
    if unavailable_reason():
        pytest.skip(unavailable_reason())
    tls = TlsFiles.make(tmp_path / "tls")
    server = Broker(tmp_path / "broker", tls=tls).start()
    try:
        base = f"mqtts://localhost:{server.port}/dcrn?close_s=0.5&outbox="
        with caplog.at_level(logging.WARNING), parse_sink(base + str(tmp_path / "a")) as untrusted:
            untrusted.write(event("cam0", 0))
            time.sleep(1.0)
            assert untrusted.delivered == 0  # the system CAs do not know the test CA
        assert "certificate" in caplog.text.lower()
        with parse_sink(f"{base}{tmp_path / 'b'}&ca={tls.ca}") as trusted:
            trusted.write(event("cam0", 0))
            assert wait_delivered(trusted, 1)
    finally:
        server.close()


def test_a_password_never_shows_in_logs_errors_or_files(tmp_path, caplog, monkeypatch):
    if unavailable_reason():
        pytest.skip(unavailable_reason())
    password, wrong = "s3cr3t-P@ss:w/rd", "hunter2-wrong"
    server = Broker(tmp_path / "broker", users={"alice": password}).start()
    try:
        caplog.set_level(logging.DEBUG)
        bad = parse_sink(f"mqtt://alice:{wrong}@127.0.0.1:{server.port}/dcrn?close_s=0.5&outbox={tmp_path / 'a'}")
        with bad:
            bad.write(event("cam0", 0))
            time.sleep(1.0)
        assert bad.delivered == 0 and "refused the connection" in caplog.text
        encoded = "s3cr3t-P%40ss%3Aw%2Frd"
        with Subscriber(server.port, ["dcrn/+/event"], username="alice", password=password) as sub:
            with parse_sink(f"mqtt://alice:{encoded}@127.0.0.1:{server.port}/dcrn?outbox={tmp_path / 'b'}") as sink:
                sink.write(event("cam0", 0))
                assert sub.wait(lambda m: len(m) >= 1, timeout=10)
                shown = [repr(sink), sink.spec, repr(sink.config)]
            monkeypatch.setenv("DCRN_MQTT_PASSWORD", password)  # off the command line
            with parse_sink(f"mqtt://alice@127.0.0.1:{server.port}/dcrn?outbox={tmp_path / 'c'}") as sink:
                sink.write(event("cam0", 1))
                assert sub.wait(lambda m: len(m) >= 2, timeout=10)
        with pytest.raises(SinkError) as error:
            parse_sink(f"mqtt://alice:{wrong}@127.0.0.1:99999/dcrn")
    finally:
        server.close()
    files = "".join(p.read_text(errors="replace") for p in tmp_path.glob("[abc]/*") if p.is_file())
    for secret in (password, encoded, wrong, "s3cr3t"):
        assert secret not in caplog.text
        assert secret not in str(error.value)
        assert secret not in files
        assert all(secret not in text for text in shown)


@pytest.mark.parametrize(
    "spec",
    [
        "mqtt://",
        "mqtt:///dcrn",
        "mqtt://host:99999/dcrn",
        "mqtt://host:abc/dcrn",
        "mqtt://u:pw-secret@host:0/dcrn",
        "mqtt://host/a+b",
        "mqtt://host/dcrn?bogus=1",
        "mqtt://host/dcrn?stats_s=-1",
        "mqtt://host/dcrn?ha=maybe",
        "mqtts://host/dcrn?ca=/no/such/ca.pem",
        "webhook:ftp://x",
        "webhook:",
        "webhook:https://",
        "webhook:https://host:70000/x",
        "webhook:https://host/x#timeout_s=0",
        "webhook:https://host/x#nope=1",
    ],
)
def test_a_bad_spec_gives_one_line_naming_it(spec):
    with pytest.raises(SinkError) as error:
        parse_sink(spec)
    message = str(error.value)
    assert "\n" not in message and "sink" in message
    assert "pw-secret" not in message


# -- webhook -------------------------------------------------------------------------------------------


def webhook_frames(receiver: Receiver, stream: str) -> list[int]:
    return [body["frame"] for body in receiver.delivered() if body.get("stream") == stream]


@pytest.mark.parametrize("down_s", [3.0, pytest.param(30.0, marks=pytest.mark.slow)])
def test_webhook_endpoint_down_loses_no_event_and_never_blocks_the_writer(tmp_path, down_s):
    streams = {"cam0": 0, "cam1": 0}
    durations: list[float] = []
    with Receiver() as receiver:
        sink = parse_sink(f"webhook:{receiver.url}#outbox={tmp_path / 'outbox'}&retry_max_s=1&timeout_s=2")
        with sink:
            write_for(sink, 1.0, streams, durations)
            receiver.stop()
            write_for(sink, down_s, streams, durations)
            assert len(sink.outbox) > 0
            receiver.start()
            write_for(sink, 1.0, streams, durations)
            done = lambda _: all(set(webhook_frames(receiver, s)) >= set(range(n)) for s, n in streams.items())  # noqa: E731
            assert receiver.wait(done, timeout=30)
        for stream, count in streams.items():
            assert first_arrivals(webhook_frames(receiver, stream)) == list(range(count)), stream
        assert receiver.requests[0].headers["Content-Type"] == "application/json"
    assert max(durations) < MAX_WRITE_S, f"slowest write {max(durations) * 1e3:.1f} ms"


def test_webhook_retries_5xx_and_drops_what_a_4xx_refuses(tmp_path, caplog):
    failures = {"left": 3}

    def answer(body: dict | None) -> int:
        if body and body["frame"] == 1:
            return 422  # this record will never be accepted
        if body and body["frame"] == 2 and failures["left"]:
            failures["left"] -= 1
            return 503
        return 200

    with Receiver() as receiver:
        receiver.answer = answer
        with (
            caplog.at_level(logging.WARNING),
            parse_sink(f"webhook:{receiver.url}#outbox={tmp_path / 'outbox'}&retry_max_s=0.2") as sink,
        ):
            for frame in range(4):
                sink.write(event("cam0", frame))
            sink.write({"type": "prediction", "stream": "cam0", "frame": 9, "label": "still", "score": 0.9})
            assert receiver.wait(lambda bodies: len(bodies) >= 3, timeout=15)
        assert webhook_frames(receiver, "cam0") == [0, 2, 3]  # 1 dropped, 2 retried, no prediction
        assert [r.status for r in receiver.requests] == [200, 422, 503, 503, 503, 200, 200]
        assert sink.rejected == 1 and "HTTP 422" in caplog.text


def test_webhook_records_survive_a_killed_process(tmp_path):
    port = free_port()  # nothing listens there yet
    spec = f"webhook:http://127.0.0.1:{port}/hook#outbox={tmp_path / 'outbox'}&retry_max_s=0.5"
    child = run_child(spec, 30)
    child.send_signal(signal.SIGKILL)  # no close, no flush: only what the outbox put on disk
    child.wait(timeout=10)
    receiver = Receiver()
    receiver.port = port
    with receiver, parse_sink(spec) as sink:
        assert sink.outbox.loaded == 30
        assert receiver.wait(lambda bodies: len(bodies) >= 30, timeout=15)
    assert first_arrivals(webhook_frames(receiver, "cam0")) == list(range(30))


def test_https_webhook_verifies_the_certificate_and_sends_basic_auth(tmp_path, caplog):
    tls = TlsFiles.make(tmp_path / "tls")
    with Receiver(tls=tls) as receiver:
        url = receiver.url.replace("https://", "https://bob:t0ps3cret@")
        with caplog.at_level(logging.DEBUG), parse_sink(f"webhook:{url}#outbox={tmp_path / 'a'}&close_s=0.5") as sink:
            sink.write(event("cam0", 0))
            time.sleep(1.0)
        assert sink.delivered == 0 and not receiver.requests and "certificate" in caplog.text.lower()
        with parse_sink(f"webhook:{url}#outbox={tmp_path / 'b'}&ca={tls.ca}") as sink:
            sink.write(event("cam0", 0))
            assert receiver.wait(lambda bodies: len(bodies) == 1, timeout=10)
        assert receiver.requests[0].headers["Authorization"].startswith("Basic ")
    assert "t0ps3cret" not in caplog.text


# -- the outbox ----------------------------------------------------------------------------------------


def test_a_full_outbox_drops_the_oldest_with_a_counted_warning(tmp_path, caplog):
    port = free_port()
    spec = f"webhook:http://127.0.0.1:{port}/hook#outbox={tmp_path / 'outbox'}&max_records=5&close_s=0"
    with caplog.at_level(logging.WARNING), parse_sink(spec) as sink:
        for frame in range(12):
            sink.write(event("cam0", frame))
        assert [e.record()["frame"] for e in sink.outbox.peek(10)] == list(range(7, 12))
        assert sink.outbox.dropped == 7
    assert "full" in caplog.text and "dropped" in caplog.text
    with parse_sink(spec) as again:  # what was kept is still there for the next run
        assert [e.record()["frame"] for e in again.outbox.peek(10)] == list(range(7, 12))


def test_two_sinks_cannot_share_one_outbox(tmp_path):
    spec = f"webhook:http://127.0.0.1:{free_port()}/hook#outbox={tmp_path / 'outbox'}&close_s=0"
    with parse_sink(spec), pytest.raises(SinkError, match="in use by another run"):
        parse_sink(spec).open()


def test_a_line_cut_short_by_a_crash_is_skipped(tmp_path):
    spec = f"webhook:http://127.0.0.1:{free_port()}/hook#outbox={tmp_path / 'outbox'}&close_s=0"
    with parse_sink(spec) as sink:
        sink.write(event("cam0", 0))
    segment = next((tmp_path / "outbox").glob("*.jsonl"))
    with segment.open("ab") as handle:
        handle.write(b'{"type": "event", "fra')
    with parse_sink(spec) as sink:
        assert [e.record()["frame"] for e in sink.outbox.peek(10)] == [0]


# -- end to end ----------------------------------------------------------------------------------------


@pytest.mark.slow
def test_dcrn_run_delivers_its_action_events_to_the_broker(broker, tmp_path):
    log_path = tmp_path / "run.jsonl"
    env = {**os.environ, "DCRN_CACHE_DIR": str(tmp_path / "cache")}
    with Subscriber(broker.port, ["dcrn/#"]) as sub:
        result = subprocess.run(
            [sys.executable, "-m", "dcrn.app", "run", "--source", "synthetic:", "--duration", "8",
             "--sink", f"mqtt://127.0.0.1:{broker.port}/dcrn", "--sink", f"jsonl:{log_path}"],
            capture_output=True, text=True, timeout=240, env=env,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr[-2000:]
        events = [r for r in map(json.loads, log_path.read_text().splitlines()) if r["type"] == "event"]
        assert any(r["event"] == "action_started" for r in events)
        assert sub.wait(lambda _: len(sub.on("dcrn/synthetic/event")) >= len(events), timeout=10)
    received = [json.loads(m.payload) for m in sub.on("dcrn/synthetic/event")]
    assert received == events
    assert [m.payload for m in sub.on("dcrn/availability")] == [b"online", b"offline"]
    latency = sorted(
        m.received - json.loads(m.payload)["wall"]
        for m in sub.on("dcrn/synthetic/event")
        if json.loads(m.payload)["event"] == "action_started"
    )
    assert latency[-1] < 1.0, latency  # docs/DEPLOY.md gives the measured p50 / p99
