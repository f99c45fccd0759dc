"""``dcrn bench`` machinery on a tiny model with tiny settings: the document's shape, not the speed.

Speed is what the benchmark itself measures (scripts/bench, docs/BENCHMARKS.md); these tests only check
that every measurement runs and reports sane numbers.
"""

from __future__ import annotations

import json

import pytest
import torch

from dcrn.app.cli import main
from dcrn.engine.bench.step import BenchSettings, bench_backend, make_inputs
from dcrn.engine.bench.window import window_runner
from dcrn.models import DCRN, DCRNConfig, save_checkpoint

BACKEND_KEYS = {
    "step_ms_p50",
    "step_ms_p99",
    "throughput_fps",
    "window_ratio",
    "drift",
    "rss_growth_mb",
    "e2e_ms_p50",
    "e2e_ms_p99",
    "dropped",
}
TINY = DCRNConfig(encoder="seed", encoder_widths=(4, 8), cell="gru", hidden_size=8, num_classes=3, input_size=32)


@pytest.fixture(autouse=True)
def _one_thread():
    """One torch thread, as the bench's default: the shared test machine has two cores."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def tiny_checkpoint(tmp_path):
    return save_checkpoint(tmp_path / "tiny.pt", DCRN(TINY).eval())


@pytest.mark.slow
def test_bench_json_has_every_key_for_each_available_backend(tiny_checkpoint, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("DCRN_CACHE_DIR", str(tmp_path / "cache"))  # the exported step graph goes here
    out = tmp_path / "bench.json"
    argv = ["bench", "--model", str(tiny_checkpoint), "--quick", "--stream-frames", "1100", "--batches", "1,2"]
    argv += ["--e2e-seconds", "1.5", "--e2e-threads", "1", "--json", str(out)]
    assert main(argv) == 0
    doc = json.loads(out.read_text())
    assert set(doc["backends"]) == {"torch", "onnxruntime", "openvino", "tensorrt"}
    assert doc["machine"]["logical_cores"] >= 1 and doc["machine"]["torch"] == torch.__version__
    ran = {name: data for name, data in doc["backends"].items() if data["available"]}
    assert {"torch", "onnxruntime", "openvino"} <= set(ran)
    assert ran["torch"]["precision"] == ran["onnxruntime"]["precision"] == "fp32"
    assert ran["openvino"]["precision"] in ("bf16", "fp32")  # bf16 where the CPU has it natively
    for name, data in ran.items():
        assert set(data) >= BACKEND_KEYS, f"{name} lacks {BACKEND_KEYS - set(data)}"
        assert set(data["throughput_fps"]) == {"1", "2"}
        numbers = [data["step_ms_p50"], data["step_ms_p99"], data["window_ratio"], data["drift"]]
        numbers += [*data["throughput_fps"].values(), data["e2e_ms_p50"], data["e2e_ms_p99"]]
        assert all(value > 0 for value in numbers), f"{name}: {numbers}"
        assert data["dropped"] >= 0 and data["e2e"]["1"]["frames"] > 0
    if not doc["backends"]["tensorrt"]["available"]:
        assert doc["backends"]["tensorrt"]["reason"]
    printed = capsys.readouterr().out
    assert "window / step" in printed and "targets" in printed
    precision_row = next(line for line in printed.splitlines() if line.strip().startswith("precision"))
    assert precision_row.split()[1:] == [doc["backends"][n].get("precision") or "-" for n in doc["backends"]]


def test_bench_backend_measures_a_carried_stream_with_positive_numbers():
    from dcrn.engine.backends.choice import create_backend

    model = DCRN(TINY).eval()
    settings = BenchSettings(
        batches=(1, 3),
        warmup_steps=5,
        latency_steps=50,
        throughput_seconds=0.05,
        window_updates=5,
        stream_frames=300,
        drift_at=20,
        drift_span=100,
        frame_pool=8,
    )
    backend = create_backend("torch", model, max_batch=3)
    window_fn, _ = window_runner("torch", model, device=torch.device("cpu"), dtype=torch.float32, window=16)
    inputs = make_inputs(TINY.input_size, settings.frame_pool, torch.device("cpu"))
    result = bench_backend(backend, window_fn, inputs, settings, lambda: create_backend("torch", model, max_batch=3))
    assert result.steps.step_ms_p99 >= result.steps.step_ms_p50 > 0
    assert set(result.steps.throughput_fps) == {1, 3} and min(result.steps.throughput_fps.values()) > 0
    assert result.window.window_ratio > 1  # 16 frames through the encoder cost more than one
    assert result.drift.frames == 300 and result.drift.late_frame == 200
    drift = result.drift
    assert min(drift.drift, drift.drift_same_backend, drift.drift_wall, drift.drift_cpu) > 0


def test_bench_rejects_a_stream_too_short_for_two_spans(tiny_checkpoint, capsys):
    assert main(["bench", "--model", str(tiny_checkpoint), "--stream-frames", "500"]) == 2
    assert "--stream-frames must be >= 1100" in capsys.readouterr().err


@pytest.mark.slow
def test_bench_int8_column_runs_beside_float32_and_names_the_default_backend(tmp_path, capsys, monkeypatch):
    from dcrn.engine.backends.choice import choose_backend
    from tests.fixtures.data import tiny_synthetic_set

    monkeypatch.setenv("DCRN_CACHE_DIR", str(tmp_path / "cache"))
    clips = tiny_synthetic_set(tmp_path / "clips", clips_per_class=1, clip_frames=6, stream_s=0)
    config = DCRNConfig(encoder="seed", encoder_widths=(8, 16), hidden_size=8, num_classes=10, input_size=32)
    checkpoint = save_checkpoint(tmp_path / "conv.pt", DCRN(config).eval())
    out = tmp_path / "bench.json"
    argv = ["bench", "--model", str(checkpoint), "--backend", "auto", "--int8", "--calibration", str(clips)]
    argv += ["--quick", "--stream-frames", "1100", "--batches", "1", "--e2e-seconds", "1.5", "--e2e-threads", "1"]
    assert main([*argv, "--json", str(out)]) == 0
    doc = json.loads(out.read_text())
    default = choose_backend()
    assert doc["default_backend"]["name"] == default.name and doc["default_backend"]["reason"] == default.reason
    assert doc["default_backend"]["precision"] == default.precision
    assert set(doc["backends"]) == {default.name, "onnxruntime-int8"}
    int8 = doc["backends"]["onnxruntime-int8"]
    assert int8["available"] and int8["step_ms_p50"] > 0 and int8["e2e"]["1"]["frames"] > 0
    assert int8["precision"] == "int8"
    assert f"default  {default.name} {default.precision} on {default.device}" in capsys.readouterr().out


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
def test_window_baseline_runs_on_the_backends_own_runtime(runtime):
    model = DCRN(TINY).eval()
    window_fn, how = window_runner(runtime, model, device=torch.device("cpu"), dtype=torch.float32, window=4)
    clip = torch.randn(1, 4, 3, TINY.input_size, TINY.input_size)  # (1, T, 3, S, S)
    with torch.no_grad():
        expected = model.forward_sequence(clip)[:, -1]  # (1, C)
    got = torch.as_tensor(window_fn(clip))
    assert how.startswith(f"{runtime} clip graph") and got.shape == expected.shape
    assert torch.allclose(got, expected, atol=2e-2 * expected.abs().max().item())  # bf16 in openvino
