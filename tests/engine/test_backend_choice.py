"""``--backend auto``: one rule picks the backend on every kind of machine, and says why.

Machines this one is not (a GPU with or without TensorRT, a ROCm GPU, no ONNX Runtime or OpenVINO, a CPU
with or without native bf16) are simulated at their edges: what torch reports about CUDA, what OpenVINO
reports about the CPU, and imports that fail (``sys.modules[name] = None`` makes ``import name`` raise
ImportError, as a missing package does). The rule itself runs unchanged, and the backends it opens are real.
"""

from __future__ import annotations

import sys
import types

import pytest
import torch

from dcrn.engine.backends import openvino_backend
from dcrn.engine.backends.choice import choose_backend, create_backend, open_backend
from dcrn.models import DCRN, DCRNConfig


def tiny_model() -> DCRN:
    return DCRN(DCRNConfig(num_classes=3, encoder_widths=(8,), hidden_size=8, input_size=32)).eval()


@pytest.fixture
def no_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def cpu_bf16(monkeypatch, native: bool) -> None:
    """OpenVINO reports a CPU with (AVX512_BF16 / AMX) or without native bf16."""
    monkeypatch.setattr(openvino_backend, "native_bf16", lambda: native)


def missing(monkeypatch, *modules: str) -> None:
    for name in modules:
        monkeypatch.setitem(sys.modules, name, None)


def fake_gpu(monkeypatch, capability=(9, 0), name="NVIDIA H200", hip: str | None = None) -> None:
    """torch reports one CUDA device with this compute capability (nothing runs on it in these tests)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda index=None: capability)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=None: name)
    monkeypatch.setattr(torch.version, "hip", hip, raising=False)


def tensorrt_installed(monkeypatch, flavour: str | None) -> None:
    """Only ``flavour`` (tensorrt or tensorrt_rtx) imports; None: neither does."""
    monkeypatch.delenv("DCRN_TENSORRT", raising=False)
    for name in ("tensorrt", "tensorrt_rtx"):
        module = None
        if name == flavour:
            module = types.ModuleType(name)
            module.__version__ = "10.9.0" if name == "tensorrt" else "1.7.1"
        monkeypatch.setitem(sys.modules, name, module)


def test_auto_picks_openvino_bf16_on_a_cpu_with_native_bf16(no_gpu, monkeypatch):
    cpu_bf16(monkeypatch, True)
    choice = choose_backend()
    assert (choice.name, choice.device, choice.precision) == ("openvino", "cpu", "bf16")
    assert "no CUDA GPU" in choice.reason and "OpenVINO" in choice.reason and "native bf16" in choice.reason
    assert [f[0] for f in choice.fallbacks] == ["onnxruntime", "torch"]  # should it fail to open
    assert choice.describe().startswith("backend openvino (bf16) on cpu: auto: no CUDA GPU")


def test_auto_picks_onnxruntime_on_a_cpu_without_native_bf16(no_gpu, monkeypatch):
    cpu_bf16(monkeypatch, False)
    choice = choose_backend()
    assert (choice.name, choice.device, choice.precision) == ("onnxruntime", "cpu", "fp32")
    assert "ONNX Runtime" in choice.reason and "no native bf16" in choice.reason
    assert [f[0] for f in choice.fallbacks] == ["torch"]


def test_auto_picks_onnxruntime_on_the_cpu_when_openvino_is_missing(no_gpu, monkeypatch):
    cpu_bf16(monkeypatch, True)
    missing(monkeypatch, "openvino")
    choice = choose_backend()
    assert (choice.name, choice.precision) == ("onnxruntime", "fp32")
    assert "not OpenVINO" in choice.reason and "openvino" in choice.reason


def test_auto_picks_openvino_without_onnxruntime_and_falls_back_to_torch(no_gpu, monkeypatch):
    cpu_bf16(monkeypatch, True)
    missing(monkeypatch, "onnxruntime")
    choice = choose_backend()
    assert choice.name == "openvino" and [f[0] for f in choice.fallbacks] == ["torch"]


def test_auto_picks_torch_on_the_cpu_when_openvino_and_onnxruntime_are_missing(no_gpu, monkeypatch):
    missing(monkeypatch, "openvino", "onnxruntime")
    choice = choose_backend()
    assert (choice.name, choice.device, choice.precision) == ("torch", "cpu", "fp32")
    assert "neither OpenVINO" in choice.reason and "onnxruntime" in choice.reason


def test_auto_picks_torch_on_the_cpu_when_the_onnx_exporter_is_missing(no_gpu, monkeypatch):
    cpu_bf16(monkeypatch, True)
    missing(monkeypatch, "onnx")
    assert choose_backend().name == "torch"


def test_auto_picks_tensorrt_on_an_nvidia_gpu_where_it_is_installed(monkeypatch):
    fake_gpu(monkeypatch, capability=(9, 0))
    tensorrt_installed(monkeypatch, "tensorrt")
    choice = choose_backend()
    assert (choice.name, choice.device) == ("tensorrt", "cuda:0")
    assert "NVIDIA H200" in choice.reason and "tensorrt 10.9.0" in choice.reason
    assert choice.fallbacks[0][:2] == ("torch", "cuda:0")  # should the engine fail to build
    assert choice.precision == "fp32" and choose_backend(dtype=torch.float16).precision == "fp16"


def test_auto_picks_torch_cuda_graphs_on_an_nvidia_gpu_without_tensorrt(monkeypatch):
    fake_gpu(monkeypatch)
    tensorrt_installed(monkeypatch, None)
    choice = choose_backend()
    assert (choice.name, choice.device) == ("torch", "cuda:0")
    assert "TensorRT is not usable" in choice.reason and "CUDA graphs" in choice.reason


def test_auto_skips_tensorrt_for_rtx_on_a_gpu_it_does_not_run_on(monkeypatch):
    fake_gpu(monkeypatch, capability=(9, 0))  # Hopper: TensorRT for RTX refuses to run there
    tensorrt_installed(monkeypatch, "tensorrt_rtx")
    assert choose_backend().name == "torch"
    fake_gpu(monkeypatch, capability=(8, 9), name="NVIDIA GeForce RTX 4090")
    assert choose_backend().name == "tensorrt"


def test_auto_picks_torch_cuda_graphs_on_a_gpu_that_is_not_nvidia(monkeypatch):
    fake_gpu(monkeypatch, name="AMD Instinct MI300X", hip="6.2")
    tensorrt_installed(monkeypatch, "tensorrt")
    choice = choose_backend()
    assert (choice.name, choice.device) == ("torch", "cuda:0")
    assert "not an NVIDIA GPU" in choice.reason


def test_auto_on_a_gpu_machine_with_device_cpu_picks_the_cpu_rule(monkeypatch):
    fake_gpu(monkeypatch)
    cpu_bf16(monkeypatch, True)
    choice = choose_backend("auto", "cpu")
    assert (choice.name, choice.device) == ("openvino", "cpu")
    assert "the CPU was asked for" in choice.reason
    cpu_bf16(monkeypatch, False)
    assert choose_backend("auto", "cpu").name == "onnxruntime"


def test_a_named_backend_with_device_auto_runs_where_it_can(monkeypatch):
    fake_gpu(monkeypatch)
    assert choose_backend("torch", "auto").device == "cuda:0"
    assert choose_backend("onnxruntime", "auto").device == "cpu"  # ONNX Runtime runs on the CPU here
    assert choose_backend("openvino", "auto").device == "cpu"  # and OpenVINO
    assert choose_backend("torch", "auto").reason == "requested"


def test_auto_with_float16_on_the_cpu_picks_torch(no_gpu, monkeypatch):
    cpu_bf16(monkeypatch, True)
    choice = choose_backend(dtype=torch.float16)
    assert (choice.name, choice.precision) == ("torch", "fp16")


def test_a_requested_openvino_states_the_precision_the_cpu_gives(no_gpu, monkeypatch):
    cpu_bf16(monkeypatch, True)
    assert choose_backend("openvino").precision == "bf16"
    cpu_bf16(monkeypatch, False)
    assert choose_backend("openvino").precision == "fp32"


def test_an_auto_openvino_that_cannot_open_falls_back_to_onnxruntime_and_says_why(no_gpu, monkeypatch, tmp_path):
    cpu_bf16(monkeypatch, True)
    choice = choose_backend()
    assert choice.name == "openvino"
    missing(monkeypatch, "dcrn.engine.backends.openvino_backend")  # the backend fails to import
    backend, used = open_backend(tiny_model(), choice, max_batch=2, cache_dir=tmp_path)
    assert (backend.name, used.name, used.precision) == ("onnxruntime", "onnxruntime", "fp32")
    assert "openvino backend failed to open" in used.reason and "not available" in used.reason
    assert used.record_fields()["precision"] == "fp32"


def test_an_auto_choice_whose_cpu_runtimes_cannot_open_falls_back_to_torch(no_gpu, monkeypatch, tmp_path):
    cpu_bf16(monkeypatch, True)
    choice = choose_backend()
    missing(monkeypatch, "dcrn.engine.backends.openvino_backend", "dcrn.engine.backends.onnxruntime_backend")
    backend, used = open_backend(tiny_model(), choice, max_batch=2, cache_dir=tmp_path)
    assert (backend.name, used.name) == ("torch", "torch")
    assert "onnxruntime backend failed to open" in used.reason and "not available" in used.reason


@pytest.mark.parametrize("bf16", [False, True])
def test_create_backend_auto_steps_like_the_model(no_gpu, monkeypatch, tmp_path, bf16):
    cpu_bf16(monkeypatch, bf16)
    model = tiny_model()
    backend = create_backend("auto", model, device="auto", cache_dir=tmp_path)
    assert backend.name == ("openvino" if bf16 else "onnxruntime")
    frame = torch.randn(1, 3, 32, 32)
    logits, _ = backend.step(frame, backend.initial_state(1))
    with torch.no_grad():
        expected, _ = model.step(frame, model.initial_state(1))
    # bf16 where the CPU really has it (the capability is simulated; OpenVINO reports what it compiled)
    atol = 2e-2 * expected.abs().max().item() if backend.precision == "bf16" else 1e-4
    assert torch.allclose(logits, expected, atol=atol)
