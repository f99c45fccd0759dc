"""Every number a user gives is finite and in range, or the command stops in one line before any work."""

from __future__ import annotations

import json
import time

import pytest

from dcrn.engine.errors import BadSourceURI, SinkError
from dcrn.engine.sinks.factory import parse_sink
from dcrn.engine.sinks.files import JsonlSink
from dcrn.engine.sources.base import SourceOptions
from dcrn.engine.sources.factory import open_source

# Each command with arguments that make it end within seconds if a bad number slipped through (so that
# the test fails fast, not by running forever), then the option and its bad value.
RUN = ["run", "--source", "synthetic:", "--max-frames", "2"]
RECORD = ["record", "--source", "synthetic:", "--out", "{tmp}/ds", "--label", "wave", "--countdown", "0"]
TEACH = ["teach", "--data", "{tmp}/ds", "--out", "{tmp}/m.pt"]
TRAIN = ["train", "--data", "{tmp}/d", "--out", "{tmp}/m.pt"]
SYNTH = ["synth", "--out", "{tmp}/s", "--clips-per-class", "0"]
BENCH = ["bench", "--model", "init", "--stream-frames", "10"]  # too short: refused before measuring
CASES = [
    (RUN, "--duration", "nan"),
    (RUN, "--duration", "inf"),
    (RUN, "--duration", "0"),
    (RUN, "--timeout", "nan"),
    (RUN, "--timeout", "-1"),
    (RUN, "--stall-timeout", "nan"),
    (RUN, "--stall-timeout", "inf"),
    (RUN, "--node-timeout", "nan"),
    (RUN, "--stats-interval", "nan"),
    (["run", "--source", "synthetic:"], "--max-frames", "0"),
    (RUN, "--alpha", "nan"),
    (RUN, "--threshold", "1.5"),
    (RUN, "--threshold-off", "nan"),
    (RUN, "--window", "0"),
    (RUN, "--min-frames", "-3"),
    (RUN, "--threads", "5000"),
    (RUN, "--people", "17"),
    (["gui"], "--people", "0"),
    (["demo", "--max-frames", "2"], "--fps", "nan"),
    (["demo", "--max-frames", "2"], "--fps", "1e9"),
    (RECORD, "--seconds", "nan"),
    (RECORD, "--seconds", "inf"),
    (RECORD, "--countdown", "nan"),
    (RECORD, "--count", "0"),
    (RECORD, "--timeout", "nan"),
    (TEACH, "--min-clips", "0"),
    (TEACH, "--threads", "-1"),
    (TRAIN, "--lr", "nan"),
    (TRAIN, "--epochs", "0"),
    (TRAIN, "--dropout", "1"),
    (TRAIN, "--val-fraction", "nan"),
    (TRAIN, "--weight-decay", "inf"),
    (TRAIN, "--grad-clip", "nan"),
    (TRAIN, "--input-size", "100000"),
    (["eval", "--data", "{tmp}/d"], "--max-frames", "-1"),
    (["export", "--out", "{tmp}/m.onnx"], "--max-batch", "0"),
    (BENCH, "--e2e-seconds", "nan"),
    (["bench", "--model", "init"], "--stream-frames", "0"),
    (SYNTH, "--fps", "inf"),
    (SYNTH, "--stream", "nan"),
    (SYNTH, "--scene-change", "nan"),
    (SYNTH, "--clip-frames", "0"),
    (SYNTH, "--seed", "-1"),
]


@pytest.mark.parametrize(("args", "option", "value"), CASES, ids=[f"{a[0]} {o} {v}" for a, o, v in CASES])
def test_a_bad_number_is_one_line_naming_the_option(tmp_path, cli, args, option, value):
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    start = time.monotonic()
    result = cli(*args, option, value)
    assert time.monotonic() - start < 5
    result.refused(args[0], f"argument {option}", repr(value))
    assert not list(tmp_path.iterdir()), "nothing is created before the arguments are checked"


def test_synth_segment_takes_two_finite_numbers(tmp_path, cli):
    result = cli("synth", "--out", str(tmp_path / "s"), "--clips-per-class", "0", "--segment", "nan", "3")
    result.refused("synth", "argument --segment")


def test_a_class_threshold_that_is_not_a_probability_is_refused(cli):
    result = cli("run", "--source", "synthetic:", "--class-threshold", "wave=nan", "--max-frames", "1")
    result.refused("run", "threshold for wave must be in [0, 1]")


def test_duration_nan_does_not_run_forever(dcrn_process):
    result = dcrn_process("run", "--source", "synthetic:", "--duration", "nan", timeout=60)
    result.refused("run", "--duration")


@pytest.mark.parametrize(
    ("query", "phrase"),
    [
        ("max_mb=nan", "max_mb must be a number from 0"),
        ("max_mb=inf", "max_mb must be a number from 0"),
        ("max_mb=-1", "max_mb must be a number from 0"),
        ("keep=0", "keep (rotated files kept) must be from 1"),
        ("keep=-1", "keep (rotated files kept) must be from 1"),
        ("keep=1e9", "keep a whole number"),
    ],
)
def test_jsonl_options_are_finite_and_in_range(tmp_path, query, phrase):
    with pytest.raises(SinkError, match=phrase.replace("(", r"\(").replace(")", r"\)")):
        parse_sink(f"jsonl:{tmp_path / 'log.jsonl'}?{query}")


def test_rotation_never_deletes_the_log_it_is_writing(tmp_path):
    path = tmp_path / "log.jsonl"
    with pytest.raises(SinkError):
        JsonlSink(path, max_mb=0.001, keep=0)
    with JsonlSink(path, max_mb=0.001, keep=1) as sink:
        for i in range(100):
            sink.write({"type": "prediction", "frame": i, "pad": "x" * 40})
    records = [json.loads(line) for f in (path.with_name("log.jsonl.1"), path) for line in f.read_text().splitlines()]
    assert records[-1]["frame"] == 99 and path.stat().st_size > 0
    assert not path.with_name("log.jsonl.2").exists()


@pytest.mark.parametrize(
    "uri", ["synthetic:?fps=nan", "synthetic:?fps=inf", "synthetic:?fps=1e9", "synthetic:?width=1000000"]
)
def test_synthetic_options_are_finite_and_bounded(uri):
    with pytest.raises(BadSourceURI, match="must be positive and at most"):
        open_source(uri, options=SourceOptions())


@pytest.mark.parametrize("option", ["--batches", "--e2e-threads"])
def test_bench_lists_of_numbers_are_bounded(cli, option):
    cli("bench", option, "1,100000000").refused("bench", f"{option} takes whole numbers from 1 to 1024")
