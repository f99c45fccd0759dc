"""Backends: one step interface; torch (eager / CUDA graph), onnxruntime and openvino agree with DCRN.step."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from dcrn.engine.backends import openvino_backend
from dcrn.engine.backends.base import model_hash
from dcrn.engine.backends.choice import create_backend, resolve_device
from dcrn.engine.errors import BackendUnavailable
from dcrn.models import DCRN, DCRNConfig
from dcrn.models.errors import ConfigError, DcrnError

HAS_EXPORT = importlib.util.find_spec("dcrn.models.export") is not None


def small_model(cell: str = "gru") -> DCRN:
    config = DCRNConfig(num_classes=4, encoder_widths=(8, 16), cell=cell, hidden_size=16, input_size=32)
    return DCRN(config).eval()


def run_steps(backend, frames: torch.Tensor) -> torch.Tensor:
    """frames (T, B, 3, S, S) -> logits (T, B, C) by stepping the backend from its zero state."""
    state = backend.initial_state(frames.shape[1])
    out = []
    for frame in frames:
        logits, state = backend.step(frame.to(backend.device), state)
        out.append(logits.cpu())
    return torch.stack(out)


def reference(model: DCRN, frames: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.forward_sequence(frames.transpose(0, 1)).transpose(0, 1)  # (T, B, C)


@pytest.mark.parametrize("cell", ["gru", "lstm", "convgru"])
def test_torch_cpu_steps_reproduce_forward_sequence(cell):
    model = small_model(cell)
    frames = torch.randn(6, 3, 3, 32, 32)  # (T, B, 3, S, S)
    backend = create_backend("torch", model, max_batch=3)
    assert torch.allclose(run_steps(backend, frames), reference(model, frames), atol=1e-5)


def test_torch_backend_folds_batch_norm_in_its_own_copy():
    config = DCRNConfig(
        num_classes=4, encoder_widths=(8, 16), encoder_norm="batch", cell="convgru_delta", hidden_size=8, input_size=32
    )
    model = DCRN(config)
    with torch.no_grad():
        model.forward_sequence(torch.randn(2, 3, 3, 32, 32) + 1)  # running statistics that are not 0 / 1
    model.eval()
    frames = torch.randn(6, 2, 3, 32, 32)
    backend = create_backend("torch", model, max_batch=2)
    # Folded in the backend's copy; the caller's model is untouched.
    assert not backend.model.has_foldable_batch_norm() and model.has_foldable_batch_norm()
    assert torch.allclose(run_steps(backend, frames), reference(model, frames), atol=1e-5)


@pytest.mark.skipif(not HAS_EXPORT, reason="dcrn.models.export is not in this build")
@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_onnxruntime_steps_match_torch(cell, tmp_path):
    model = small_model(cell)
    frames = torch.randn(5, 2, 3, 32, 32)
    backend = create_backend("onnxruntime", model, max_batch=4, cache_dir=tmp_path)
    assert torch.allclose(run_steps(backend, frames), reference(model, frames), atol=1e-4)
    state = backend.initial_state(1)
    assert [tuple(s.shape) for s in state] == [(1, *shape) for shape in model.state_shapes]


@pytest.mark.skipif(not HAS_EXPORT, reason="dcrn.models.export is not in this build")
def test_onnxruntime_reuses_the_cached_graph_of_the_same_weights(tmp_path):
    model = small_model()
    first = create_backend("onnxruntime", model, cache_dir=tmp_path)
    stamp = first.path.stat().st_mtime_ns
    second = create_backend("onnxruntime", model, cache_dir=tmp_path)
    assert second.path == first.path and second.path.stat().st_mtime_ns == stamp
    assert first.path.name.startswith(model_hash(model))
    other = create_backend("onnxruntime", small_model(), cache_dir=tmp_path)  # new random weights
    assert other.path != first.path


@pytest.mark.skipif(not HAS_EXPORT, reason="dcrn.models.export is not in this build")
def test_streams_opening_together_in_one_process_export_each_graph_once(tmp_path, caplog):
    """Streams on one cluster host open their backends on threads at the same moment. torch's exporter is
    not thread-safe ("GLOBALS.in_onnx_export must be True"), so exports take turns, and the threads that
    wait find the graph the first one wrote instead of exporting it again."""
    import threading

    models = [small_model("gru"), small_model("lstm")]
    barrier = threading.Barrier(6)
    paths, errors = [None] * 6, []

    def open_backend(k: int) -> None:
        barrier.wait()
        try:
            paths[k] = create_backend("onnxruntime", models[k % 2], cache_dir=tmp_path).path
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_backend, args=(k,)) for k in range(6)]
    with caplog.at_level("INFO", logger="dcrn.engine.backends.step_graph"):
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
    assert not errors, errors
    assert len({paths[0], paths[2], paths[4]}) == 1 and len({paths[1], paths[3], paths[5]}) == 1
    exports = [r for r in caplog.records if r.getMessage().startswith("exporting the step graph")]
    assert len(exports) == 2, [r.getMessage() for r in exports]
    left = sorted(p.name for p in (tmp_path / "onnx").iterdir())
    assert left == sorted({p.name for p in paths})  # and no temporary files


def test_model_hash_depends_on_weights():
    model = small_model()
    before = model_hash(model)
    assert model_hash(model) == before
    with torch.no_grad():
        next(model.parameters()).add_(1.0)
    assert model_hash(model) != before


def test_unknown_backend_is_a_config_error_naming_the_choices():
    with pytest.raises(ConfigError, match=r"unknown backend 'tflite'.*torch, onnxruntime, openvino, tensorrt"):
        create_backend("tflite", small_model())


def test_unknown_device_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown device 'tpu'"):
        resolve_device("tpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cuda_without_a_gpu_is_backend_unavailable():
    with pytest.raises(BackendUnavailable, match="no CUDA GPU"):
        create_backend("torch", small_model(), device="cuda")


@pytest.mark.parametrize("name", ["onnxruntime", "openvino"])
def test_cpu_runtimes_on_cuda_are_refused_clearly(name):
    with pytest.raises(BackendUnavailable):
        create_backend(name, small_model(), device="cuda")


def run_pairs(backend, model: DCRN, frames: torch.Tensor) -> tuple[float, float]:
    """Step ``backend`` and DCRN.step side by side over frames (T, B, 3, S, S), each on its own state; the
    largest |logits diff| relative to the largest |logit|, and the largest |state diff| at the end."""
    state, ref_state, worst = backend.initial_state(frames.shape[1]), model.initial_state(frames.shape[1]), 0.0
    with torch.no_grad():
        for frame in frames:
            logits, state = backend.step(frame, state)
            expected, ref_state = model.step(frame, ref_state)
            worst = max(worst, ((logits - expected).abs().max() / expected.abs().max()).item())
    return worst, max((a - b).abs().max().item() for a, b in zip(state, ref_state, strict=True))


@pytest.mark.parametrize("cell", ["gru", "lstm", "convgru"])
def test_openvino_steps_match_torch_within_its_precision(cell, tmp_path):
    """bf16 where the CPU has it natively: logits within 2% of the largest logit over 40 steps of carried state
    (measured: 0.5% or less); fp32 elsewhere, then as close as ONNX Runtime."""
    model = small_model(cell)
    frames = torch.randn(40, 2, 3, 32, 32)  # (T, B, 3, S, S)
    backend = create_backend("openvino", model, max_batch=2, cache_dir=tmp_path, threads=1)
    assert backend.precision == ("bf16" if openvino_backend.native_bf16() else "fp32")
    logits_rel, state_diff = run_pairs(backend, model, frames)
    if backend.precision == "bf16":
        assert logits_rel < 2e-2 and state_diff < 2e-2, (logits_rel, state_diff)
    else:
        assert logits_rel < 1e-4 and state_diff < 1e-4, (logits_rel, state_diff)
    assert [tuple(s.shape) for s in backend.initial_state(1)] == [(1, *shape) for shape in model.state_shapes]


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_openvino_fp32_matches_torch_within_1e_4(cell, tmp_path):
    model = small_model(cell)
    frames = torch.randn(20, 3, 3, 32, 32)
    backend = openvino_backend.create(model, device=torch.device("cpu"), cache_dir=tmp_path, precision="fp32")
    assert backend.precision == "fp32"
    logits_rel, state_diff = run_pairs(backend, model, frames)
    assert logits_rel < 1e-4 and state_diff < 1e-4, (logits_rel, state_diff)
    assert torch.allclose(run_steps(backend, frames), reference(model, frames), atol=1e-4)


def test_openvino_compiles_the_graph_onnxruntime_exported(tmp_path):
    model = small_model()
    ort_backend = create_backend("onnxruntime", model, cache_dir=tmp_path)
    ov_backend = create_backend("openvino", model, cache_dir=tmp_path)
    assert ov_backend.path == ort_backend.path
    assert list((tmp_path / "onnx").iterdir()) == [ort_backend.path]


def test_openvino_leaves_its_threads_unpinned_so_streams_and_processes_spread_over_the_cores(tmp_path):
    # Pinned (OpenVINO's default on Linux), every one-thread graph lands on the same first core: two
    # processes each stepping a pose graph took twice as long per call as one (docs/BENCHMARKS.md).
    graph = create_backend("onnxruntime", small_model(), cache_dir=tmp_path).path
    compiled, _ = openvino_backend.compile_cpu(graph, threads=1, precision="fp32")
    assert compiled.get_property("ENABLE_CPU_PINNING") is False


def test_openvino_precision_must_be_auto_bf16_or_fp32(tmp_path):
    with pytest.raises(ConfigError, match="openvino precision must be one of auto, bf16, fp32, got 'int4'"):
        openvino_backend.create(small_model(), device=torch.device("cpu"), cache_dir=tmp_path, precision="int4")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_tensorrt_on_a_machine_without_gpu_is_a_one_line_error():
    with pytest.raises(DcrnError) as info:
        create_backend("tensorrt", small_model(), device="cuda")
    assert "\n" not in str(info.value)


@pytest.mark.gpu
@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_cuda_graph_steps_match_eager(cell):
    model = small_model(cell)
    frames = torch.randn(5, 3, 3, 32, 32)
    expected = reference(model, frames)
    backend = create_backend("torch", model, device="cuda", max_batch=4)
    assert backend.use_graph
    assert torch.allclose(run_steps(backend, frames), expected, atol=1e-4)
    assert torch.allclose(run_steps(backend, frames[:, :2]), expected[:, :2], atol=1e-4)  # another batch size
    assert next(model.parameters()).device.type == "cpu"  # the caller's model is left where it was


@pytest.mark.gpu
def test_cuda_graph_fp16_is_close_to_fp32():
    model = small_model()
    frames = torch.randn(4, 2, 3, 32, 32)
    backend = create_backend("torch", model, device="cuda", dtype=torch.float16, max_batch=2)
    out = run_steps(backend, frames.half())
    assert out.dtype == torch.float32
    assert torch.allclose(out, reference(model, frames), atol=5e-2)


def test_a_backend_whose_module_cannot_be_imported_is_unavailable_with_install_advice(monkeypatch):
    import dcrn.engine.backends.choice as backends

    monkeypatch.setitem(backends._MODULES, "tensorrt", "dcrn.engine.no_such_backend_module")
    advice = r"backend 'tensorrt' is not available.*pip install tensorrt .*pip install tensorrt-rtx"
    with pytest.raises(BackendUnavailable, match=advice):
        create_backend("tensorrt", small_model())


def test_openvino_on_a_graph_it_cannot_read_is_backend_unavailable_in_one_line(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not an onnx graph")
    with pytest.raises(BackendUnavailable, match="OpenVINO could not read") as info:
        openvino_backend.OpenVinoBackend(small_model(), bad)
    assert "\n" not in str(info.value)


def test_openvino_compiles_each_batch_size_once_and_steps_any(tmp_path):
    model = small_model()
    backend = create_backend("openvino", model, max_batch=4, cache_dir=tmp_path)
    frames = torch.randn(3, 3, 3, 32, 32)  # batch 3: compiled on first use, beside 1 and 4
    assert torch.allclose(run_steps(backend, frames), reference(model, frames), atol=2e-2)
    assert sorted(backend._requests) == [1, 3, 4]


@pytest.mark.skipif(not HAS_EXPORT, reason="needs the ONNX exporter")
@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_a_corrupt_cached_graph_is_made_again_once(tmp_path, caplog, backend):
    model = small_model()
    first = create_backend(backend, model, cache_dir=tmp_path, threads=1)
    graph = first.path if backend == "onnxruntime" else next((tmp_path / "onnx").glob("*.onnx"))
    first.close()
    graph.write_bytes(b"\x08\x07 truncated by a full disk")
    with caplog.at_level("WARNING", logger="dcrn.engine.backends.cache"):
        again = create_backend(backend, model, cache_dir=tmp_path, threads=1)
    assert "does not load" in caplog.text and "making it again" in caplog.text
    frames = torch.randn(3, 1, 3, 32, 32)
    torch.testing.assert_close(run_steps(again, frames), reference(model, frames), rtol=1e-3, atol=1e-4)


def test_a_cached_file_that_does_not_load_twice_is_one_line_naming_it(tmp_path):
    from dcrn.engine.backends.cache import cached_file, open_cached

    path = tmp_path / "graph.onnx"
    makes = []

    def make() -> object:
        return cached_file(path, lambda tmp: (makes.append(tmp), tmp.write_bytes(b"bad")))

    def load(p):
        raise RuntimeError(f"[ONNXRuntimeError] : 7 : INVALID_PROTOBUF : Load model from {p} failed\nmore")

    with pytest.raises(BackendUnavailable, match="does not load, also when made again") as info:
        open_cached(make, load)
    assert len(makes) == 2
    assert "\n" not in str(info.value) and str(path) in str(info.value)
