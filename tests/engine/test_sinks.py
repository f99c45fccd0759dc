"""Sinks: whole, flushed lines of the records (docs/pipeline.md); rotation; clear errors for bad specs and paths."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os

import pytest

from dcrn.engine.errors import SinkError
from dcrn.engine.sinks.factory import parse_sink
from dcrn.engine.sinks.files import CsvSink, JsonlSink
from dcrn.engine.sinks.stdout import StdoutSink

PREDICTION = {
    "type": "prediction",
    "stream": "cam0",
    "frame": 7,
    "pts": 0.233,
    "wall": 1764201234.5,
    "label": "wave",
    "score": 0.93,
    "top": [["wave", 0.93], ["clap", 0.04]],
    "latency_ms": 3.1,
    "logits": [1.0, -2.0],
}
EVENT = {"type": "event", "event": "action_started", "stream": "cam0", "frame": 7, "pts": 0.233, "wall": 1.0,
         "label": "wave", "score": 0.93}  # fmt: skip
STATS = {"type": "stats", "stream": "cam0", "fps": 30.0, "dropped": 0, "latency_ms_p50": 3.0, "latency_ms_p99": 9.0}


def test_jsonl_writes_one_flushed_json_object_per_line(tmp_path):
    path = tmp_path / "out.jsonl"
    with JsonlSink(path) as sink:
        sink.write(PREDICTION)
        assert path.read_text().endswith("\n")  # on disk before close
        sink.write(EVENT)
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert lines[0] == {k: v for k, v in PREDICTION.items() if k != "logits"}
    assert lines[1] == EVENT


def test_jsonl_keeps_logits_when_asked(tmp_path):
    with parse_sink(f"jsonl:{tmp_path / 'l.jsonl'}?logits=1") as sink:
        sink.write(PREDICTION)
    assert json.loads((tmp_path / "l.jsonl").read_text())["logits"] == [1.0, -2.0]


def test_jsonl_rotates_by_size_and_keeps_k_files(tmp_path):
    path = tmp_path / "r.jsonl"
    sink = parse_sink(f"jsonl:{path}?max_mb=0.001&keep=2")  # ~1 kB per file
    with sink:
        for i in range(60):
            sink.write({**EVENT, "frame": i})
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["r.jsonl", "r.jsonl.1", "r.jsonl.2"]
    for name in files:
        text = (tmp_path / name).read_text()
        assert len(text.encode()) <= 1100 and text.endswith("\n")
        assert all(json.loads(line)["type"] == "event" for line in text.splitlines())
    newest = [json.loads(line)["frame"] for line in path.read_text().splitlines()]
    assert newest[-1] == 59


def test_csv_has_a_header_and_a_row_per_record(tmp_path):
    path = tmp_path / "out.csv"
    with CsvSink(path) as sink:
        for record in (PREDICTION, EVENT, STATS):
            sink.write(record)
    rows = list(csv.DictReader(path.open()))
    assert [r["type"] for r in rows] == ["prediction", "event", "stats"]
    assert rows[0]["label"] == "wave" and json.loads(rows[0]["top"])[0] == ["wave", 0.93]
    assert rows[1]["event"] == "action_started" and rows[2]["latency_ms_p99"] == "9.0"
    with CsvSink(path) as sink:  # appending does not repeat the header
        sink.write(EVENT)
    assert path.read_text().count("type,stream") == 1


def test_stdout_json_and_text():
    out = io.StringIO()
    with StdoutSink(stream=out) as sink:
        sink.write(STATS)
    assert json.loads(out.getvalue()) == STATS
    out = io.StringIO()
    with StdoutSink(text=True, stream=out) as sink:
        sink.write(PREDICTION)
        sink.write(EVENT)
    header, first, second = out.getvalue().splitlines()
    assert header.startswith("#") and "wave" in first and "0.93" in first and "action_started wave" in second


def test_stdout_text_names_its_columns_once_at_open():
    out = io.StringIO()
    sink = parse_sink("stdout?format=text")
    sink._stream = out
    with sink:
        assert out.getvalue().count("\n") == 1  # the header is there before any record
        sink.write(PREDICTION)
        sink.write(PREDICTION)
        sink.open()  # already open: no second header
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("#") and lines.count(lines[0]) == 1
    assert all(name in lines[0] for name in ("stream", "frame", "pts", "label", "score"))
    assert len(lines) == 3 and not lines[1].startswith("#")
    json_out = io.StringIO()
    with StdoutSink(stream=json_out) as sink:  # JSON lines stay pure JSON: no header
        sink.write(PREDICTION)
    assert json.loads(json_out.getvalue())["label"] == "wave"


def test_a_path_that_cannot_be_written_fails_at_open(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    sink = parse_sink(f"jsonl:{blocker / 'out.jsonl'}")
    with pytest.raises(SinkError, match="cannot write") as info:
        sink.open()
    assert "\n" not in str(info.value)
    with pytest.raises(SinkError, match="cannot write"):
        parse_sink(f"csv:{tmp_path}").open()  # a folder


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("kafka:topic", "unknown sink"),
        ("jsonl:", "needs a path"),
        ("jsonl:/tmp/x.jsonl?max_mb=lots", "max_mb must be a number"),
        ("jsonl:/tmp/x.jsonl?colour=red", "unknown options \\['colour'\\]"),
        ("stdout?format=xml", "format must be json or text"),
    ],
)
def test_bad_specs_are_one_line_sink_errors(spec, message):
    with pytest.raises(SinkError, match=message):
        parse_sink(spec)


def test_writing_after_close_is_an_error(tmp_path):
    sink = JsonlSink(tmp_path / "x.jsonl").open()
    sink.close()
    with pytest.raises(SinkError):
        sink.write(EVENT)


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_a_write_that_fails_mid_run_is_a_one_line_sink_error():
    sink = JsonlSink("/dev/full").open()
    with pytest.raises(SinkError, match="write failed: No space left on device"):
        sink.write(EVENT)
    with contextlib.suppress(OSError):
        sink.close()
