"""Live stats: fps over a window, latency percentiles per stage, the stats record."""

from __future__ import annotations

import pytest

from dcrn.engine.stats import FpsMeter, LatencyWindow, StreamStats, log_line


def test_fps_counts_ticks_over_the_window():
    meter = FpsMeter(window=10.0)
    for i in range(31):
        meter.tick(100.0 + i / 30)
    assert meter.fps == pytest.approx(30.0)


def test_fps_forgets_ticks_older_than_the_window():
    meter = FpsMeter(window=1.0)
    for i in range(10):
        meter.tick(float(i) / 10)  # 10 fps for a second
    for i in range(5):
        meter.tick(5.0 + i / 2)  # then 2 fps
    assert meter.fps == pytest.approx(2.0)


def test_percentiles():
    window = LatencyWindow(size=1000)
    for ms in range(1, 101):
        window.add(float(ms))
    assert window.percentile(50) == pytest.approx(50.0, abs=1)
    assert window.percentile(99) == pytest.approx(99.0, abs=1)
    assert LatencyWindow().percentile(50) is None


def test_stats_record_has_the_design_schema_and_per_stage_latency():
    stats = StreamStats("cam0")
    stats.dropped = 4
    for _ in range(10):
        stats.add(capture=1.0, preprocess=0.5, step=2.0, sink=0.25, total=3.75)
    record = stats.record()
    assert {"type", "stream", "fps", "dropped", "latency_ms_p50", "latency_ms_p99"} <= set(record)
    assert record["type"] == "stats" and record["dropped"] == 4 and record["frames"] == 10
    assert record["latency_ms_p50"] == pytest.approx(3.75)
    assert set(record["stages"]) == {"capture", "preprocess", "step", "sink"}
    assert record["stages"]["step"] == {"p50": 2.0, "p99": 2.0}
    assert "cam0" in log_line(record) and "step 2.0/2.0" in log_line(record)


def test_total_line_sums_the_streams_and_names_the_worst():
    from dcrn.engine.stats import total_line

    records = [
        {"frames": 990, "dropped": 10, "fps": 24.9, "latency_ms_p99": 80.0},
        {"frames": 1000, "dropped": 0, "fps": 25.0, "latency_ms_p99": 120.5},
        {"frames": 0, "dropped": 0, "fps": 0.0, "latency_ms_p99": None},
    ]
    line = total_line(records)
    assert line == "all 3 streams: 49.9 fps (slowest 0.0), 1990 frames, 10 dropped (0.50%), worst latency p99 120.5 ms"
