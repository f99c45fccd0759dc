"""TensorRT: the step graph builds into an engine (ahead of time, no GPU needed with TensorRT for RTX),
the engine cache, the install advice without TensorRT, and (GPU only) parity of the running backend."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace

import pytest
import torch

from dcrn.engine.backends.trt_build import (
    AOT_GPU,
    BuildOptions,
    cached_engine,
    engine_cache_key,
    load_tensorrt,
)
from dcrn.engine.errors import BackendUnavailable
from dcrn.models import DCRN, DCRNConfig, save_checkpoint
from dcrn.models.config import CELLS, ENCODERS
from dcrn.models.export import export_onnx, read_onnx_config
from tests.fixtures.paths import REPO


def _has_tensorrt() -> bool:
    try:
        load_tensorrt()
    except BackendUnavailable:
        return False
    return True


needs_tensorrt = pytest.mark.skipif(not _has_tensorrt(), reason="neither tensorrt nor tensorrt_rtx is installed")


def small_model(cell: str = "gru", encoder: str = "seed") -> DCRN:
    size = 32 if encoder == "seed" else 64
    if cell == "feature_memory":  # a keypoint model: per-frame vectors in
        return DCRN(DCRNConfig(encoder="features", cell=cell, features=("body",), num_classes=5)).eval()
    config = DCRNConfig(
        encoder=encoder, cell=cell, num_classes=5, input_size=size, hidden_size=8, encoder_widths=(8, 16)
    )
    return DCRN(config).eval()


def _build(model: DCRN, tmp_path, *, fp16: bool, record_property) -> int:
    flavour = load_tensorrt()
    graph_dtype = torch.float16 if fp16 and flavour.strongly_typed else torch.float32
    onnx_path = export_onnx(model, tmp_path / "step.onnx", dtype=graph_dtype)
    engine = cached_engine(onnx_path, tmp_path / "cache", BuildOptions(fp16=fp16, max_batch=8), flavour=flavour)
    assert engine.built and engine.path.is_file()
    assert engine.size == engine.path.stat().st_size > 0
    note = json.loads(engine.path.with_suffix(".json").read_text())
    assert note["flavour"] == flavour.name and note["max_batch"] == 8 and note["fp16"] is fp16
    label = f"{model.config.encoder}/{model.config.cell} {'fp16' if fp16 else 'fp32'}"
    record_property("engine_bytes", engine.size)
    record_property("build_seconds", round(engine.seconds, 3))
    print(f"{label}: engine {engine.size / 1e6:.2f} MB built in {engine.seconds:.2f} s with {flavour.label}")
    return engine.size


@needs_tensorrt
@pytest.mark.parametrize("fp16", [False, True], ids=["fp32", "fp16"])
@pytest.mark.parametrize("cell", CELLS)
def test_step_graph_of_every_cell_parses_and_builds_an_engine(cell, fp16, tmp_path, record_property):
    assert _build(small_model(cell), tmp_path, fp16=fp16, record_property=record_property) > 0


@needs_tensorrt
@pytest.mark.slow
@pytest.mark.parametrize("encoder", [e for e in ENCODERS if e not in ("seed", "features")])
def test_step_graph_of_every_backbone_builds_an_engine(encoder, tmp_path, record_property):
    assert _build(small_model("convlstm", encoder), tmp_path, fp16=False, record_property=record_property) > 0


def test_cache_key_changes_with_the_graph_the_tensorrt_version_the_gpu_and_the_options():
    base = ("a" * 64, "tensorrt_rtx", "1.7.1", AOT_GPU, BuildOptions(max_batch=8))
    key = engine_cache_key(*base)
    assert engine_cache_key(*base) == key  # stable
    variants = [
        ("b" * 64, *base[1:]),
        (base[0], "tensorrt", *base[2:]),
        (*base[:2], "1.7.2", *base[3:]),
        (*base[:3], "NVIDIA GeForce RTX 4090 (sm_89)", base[4]),
        (*base[:4], BuildOptions(max_batch=16)),
        (*base[:4], BuildOptions(max_batch=8, fp16=True)),
    ]
    keys = {engine_cache_key(*variant) for variant in variants}
    assert key not in keys and len(keys) == len(variants)


@needs_tensorrt
def test_cached_engine_is_reused_and_rebuilt_when_graph_or_gpu_change(tmp_path):
    flavour = load_tensorrt()
    model = small_model("convgru")
    onnx_path = export_onnx(model, tmp_path / "a.onnx")
    options = BuildOptions(max_batch=4)
    first = cached_engine(onnx_path, tmp_path / "cache", options, flavour=flavour)
    mtime = first.path.stat().st_mtime_ns
    again = cached_engine(onnx_path, tmp_path / "cache", options, flavour=flavour)
    assert first.built and not again.built
    assert again.path == first.path and again.path.stat().st_mtime_ns == mtime  # reused, not rewritten
    other_gpu = cached_engine(onnx_path, tmp_path / "cache", options, flavour=flavour, gpu="Some Other GPU (sm_86)")
    assert other_gpu.built and other_gpu.key != first.key
    with torch.no_grad():
        model.head[-1].bias.add_(1.0)  # new weights -> new ONNX bytes
    changed = cached_engine(export_onnx(model, tmp_path / "b.onnx"), tmp_path / "cache", options, flavour=flavour)
    assert changed.built and changed.key not in (first.key, other_gpu.key)
    newer = replace(flavour, version=flavour.version + ".1")  # a TensorRT upgrade
    upgraded = cached_engine(onnx_path, tmp_path / "cache", options, flavour=newer)
    assert upgraded.built and upgraded.key not in (first.key, other_gpu.key, changed.key)


# Honest simulation of a machine without TensorRT: the child process blocks both modules with
# sys.modules[name] = None (so `import tensorrt` raises ImportError) before dcrn is imported.
_BLOCK_TENSORRT = "import sys; sys.modules['tensorrt'] = None; sys.modules['tensorrt_rtx'] = None\n"


def _run_without_tensorrt(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", _BLOCK_TENSORRT + code], capture_output=True, text=True, timeout=240, cwd=REPO
    )


def test_tensorrt_backend_without_tensorrt_says_how_to_install_it(tmp_path):
    checkpoint = save_checkpoint(tmp_path / "m.pt", small_model())
    code = (
        "from dcrn.app.cli import main\n"
        f"sys.exit(main(['export', '--model', {str(checkpoint)!r}, '--format', 'tensorrt', "
        f"'--out', {str(tmp_path / 'm.engine')!r}]))\n"
    )
    result = _run_without_tensorrt(code)
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if "error" in line]
    assert len(lines) == 1 and "pip install tensorrt" in lines[0] and "pip install tensorrt-rtx" in lines[0]
    assert "Traceback" not in result.stderr


def test_backend_registry_without_tensorrt_says_how_to_install_it():
    code = (
        "from dcrn.engine.backends.choice import create_backend\n"
        "from dcrn.engine.errors import BackendUnavailable\n"
        "from dcrn.models import DCRN, DCRNConfig\n"
        "model = DCRN(DCRNConfig(input_size=32, encoder_widths=(8,), hidden_size=8))\n"
        "try:\n"
        "    create_backend('tensorrt', model, device='cpu')\n"
        "except BackendUnavailable as exc:\n"
        "    print(exc)\n"
    )
    result = _run_without_tensorrt(code)
    assert result.returncode == 0, result.stderr
    assert "pip install tensorrt" in result.stdout and "tensorrt-rtx" in result.stdout


@pytest.mark.skipif(not (REPO / "app" / "cmd_run.py").is_file(), reason="dcrn run is not in this build")
def test_dcrn_run_with_backend_tensorrt_without_tensorrt_says_how_to_install_it(tmp_path):
    checkpoint = save_checkpoint(tmp_path / "m.pt", small_model())
    code = (
        "from dcrn.app.cli import main\n"
        f"sys.exit(main(['run', '--source', 'synthetic:', '--model', {str(checkpoint)!r}, "
        f"'--backend', 'tensorrt', '--max-frames', '2', '--cache-dir', {str(tmp_path / 'cache')!r}]))\n"
    )
    result = _run_without_tensorrt(code)
    assert result.returncode != 0
    assert "pip install tensorrt" in result.stderr, result.stderr[-2000:]


@needs_tensorrt
@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without a GPU")
def test_tensorrt_backend_without_a_gpu_says_the_engine_needs_one():
    from dcrn.engine.backends.tensorrt_backend import TensorRTBackend

    with pytest.raises(BackendUnavailable, match="NVIDIA GPU"):
        TensorRTBackend(small_model())


@needs_tensorrt
def test_dcrn_export_writes_an_engine_and_an_onnx_graph(tmp_path):
    from dcrn.app.cli import main

    model = small_model("lstm")
    checkpoint = save_checkpoint(tmp_path / "m.pt", model)
    assert main(["export", "--model", str(checkpoint), "--format", "onnx", "--out", str(tmp_path / "m.onnx")]) == 0
    assert read_onnx_config(tmp_path / "m.onnx") == model.config
    engine = tmp_path / "m.engine"
    args = ["export", "--model", str(checkpoint), "--format", "tensorrt", "--out", str(engine), "--max-batch", "4"]
    assert main([*args, "--fp16"]) == 0
    note = json.loads(engine.with_suffix(".json").read_text())
    assert engine.stat().st_size == note["size"] > 0
    assert note["fp16"] is True and note["max_batch"] == 4 and note["config"]["cell"] == "lstm"


# ---- on a GPU with TensorRT (not executed in this project's environment: see docs/TENSORRT.md) -------------


@needs_tensorrt
@pytest.mark.gpu
@pytest.mark.parametrize("cell", ["gru", "convlstm"])
def test_tensorrt_backend_matches_torch_on_cpu_over_a_stream(cell, tmp_path):
    from dcrn.engine.backends.tensorrt_backend import TensorRTBackend

    model = small_model(cell)
    try:
        backend = TensorRTBackend(model, device="cuda", max_batch=4, cache_dir=tmp_path)
    except BackendUnavailable as exc:  # e.g. TensorRT for RTX on an H100 (compute capability 9.0)
        pytest.skip(str(exc))
    clip = torch.randn(3, 16, 3, 32, 32)  # (B, T, 3, H, W)
    state, gpu_state = model.initial_state(3), backend.initial_state(3)
    buffers = set()
    for t in range(16):
        with torch.no_grad():
            expected, state = model.step(clip[:, t], state)
        logits, gpu_state = backend.step(clip[:, t].cuda(), gpu_state)
        buffers.add(gpu_state[0].data_ptr())
        assert (logits.cpu() - expected).abs().max().item() <= 1e-3
    assert len(buffers) == 2  # the state ping-pongs between two buffer sets, never copied
    backend.close()


def test_importing_the_tensorrt_backend_loads_neither_tensorrt_nor_cuda():
    code = (
        "import sys, torch, dcrn.engine.backends.tensorrt_backend, dcrn.engine.backends.trt_build\n"
        "assert not {'tensorrt', 'tensorrt_rtx'} & set(sys.modules), 'TensorRT imported at import time'\n"
        "assert not torch.cuda.is_initialized(), 'CUDA initialised at import time'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=240, cwd=REPO)
    assert result.returncode == 0, result.stderr[-2000:]
