"""The exported ONNX step graph: parity with torch in ONNX Runtime, dynamic batch, metadata, no loops."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dcrn.models import DCRN, BadCheckpoint, DCRNConfig
from dcrn.models.config import CELLS, ENCODERS
from dcrn.models.export import (
    CONFIG_KEY,
    FORBIDDEN_OPS,
    export_onnx,
    op_counts,
    read_onnx_config,
    read_onnx_metadata,
)

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

STEPS = 16
TOLERANCE = 1e-4


def small_config(encoder: str, cell: str) -> DCRNConfig:
    # Torchvision backbones downsample 32x: 64 px keeps a 2x2 map, so convolutional cells stay spatial.
    if cell == "feature_memory":  # a model taught on keypoints: per-frame vectors in (flow, hands, body)
        labels = ("wave", "clap", "jump", "sit", "none")
        return DCRNConfig(
            encoder="features", cell=cell, features=("flow", "hands", "body"), num_classes=5, labels=labels
        )
    return DCRNConfig(
        encoder=encoder,
        cell=cell,
        num_classes=5,
        labels=("wave", "clap", "jump", "sit", "none"),
        input_size=32 if encoder == "seed" else 64,
        hidden_size=8,
        encoder_widths=(8, 16),
    )


def _randomise_batch_norms(model: DCRN) -> None:
    """Non-trivial running statistics, so a folded or dropped batch norm would show in the parity."""
    generator = torch.Generator().manual_seed(1)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.copy_(torch.randn(module.num_features, generator=generator) * 0.1)
            module.running_var.copy_(torch.rand(module.num_features, generator=generator) + 0.5)


def stream_max_difference(model: DCRN, session, batch: int) -> float:
    """Step torch and ONNX Runtime over the same STEPS frames, each fed its own state back; max |diff|."""
    clip = torch.randn(batch, STEPS, *model.input_shape)  # (B, T, 3, H, W) frames or (B, T, F) vectors
    names_in = ["frame", *(f"{n}_in" for n in model.state_names)]
    state = model.initial_state(batch)
    ort_state = [s.numpy() for s in state]
    worst = 0.0
    for t in range(STEPS):
        with torch.no_grad():
            logits, state = model.step(clip[:, t], state)  # (B, C)
        feed = dict(zip(names_in, [clip[:, t].numpy(), *ort_state], strict=True))
        ort_logits, *ort_state = session.run(None, feed)
        assert ort_logits.shape == (batch, model.config.num_classes)
        diffs = [np.abs(ort_logits - logits.numpy()).max()]
        diffs += [np.abs(a - b.numpy()).max() for a, b in zip(ort_state, state, strict=True)]
        worst = max(worst, *map(float, diffs))
    return worst


# torch.export traces a torchvision backbone for 10-60 s on two shared cores: those cases are marked slow.
EVERY_MODEL = [
    pytest.param(encoder, cell, marks=[pytest.mark.slow] if encoder != "seed" else [])
    for encoder in ENCODERS
    if encoder != "features"  # the features encoder goes with its own cell (small_config)
    for cell in CELLS
    if encoder == "seed" or cell != "feature_memory"
]


def _assert_stream_parity(encoder: str, cell: str, tmp_path, record_property, opset: int | None) -> None:
    model = DCRN(small_config(encoder, cell)).eval()
    _randomise_batch_norms(model)
    options = {} if opset is None else {"opset": opset}
    path = export_onnx(model, tmp_path / "step.onnx", **options)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    worst = max(stream_max_difference(model, session, batch) for batch in (1, 3))  # one graph, two batch sizes
    record_property("ort_max_abs_diff", worst)
    print(f"{encoder}/{cell} opset {opset or 'default'}: max abs diff {worst:.2e}")
    assert worst <= TOLERANCE


@pytest.mark.parametrize(("encoder", "cell"), EVERY_MODEL)
def test_onnxruntime_matches_torch_over_a_16_frame_stream(encoder, cell, tmp_path, record_property):
    """The default export (opset 18, torch.export-based): the graph TensorRT builds from."""
    _assert_stream_parity(encoder, cell, tmp_path, record_property, opset=None)


@pytest.mark.parametrize(
    ("encoder", "cell"),
    [
        *(("seed", c) for c in CELLS),
        *(pytest.param(e, "convlstm", marks=pytest.mark.slow) for e in ENCODERS[1:] if e != "features"),
    ],
)
def test_opset_17_graph_matches_torch_over_a_16_frame_stream(encoder, cell, tmp_path, record_property):
    """Opset 17 (TorchScript exporter, the graph the onnxruntime backend runs): every cell, every backbone."""
    _assert_stream_parity(encoder, cell, tmp_path, record_property, opset=17)


@pytest.mark.parametrize("opset", [17, 18])
@pytest.mark.parametrize("cell", CELLS)
def test_graph_has_named_io_dynamic_batch_and_no_loop_nodes(cell, opset, tmp_path):
    model = DCRN(small_config("seed", cell)).eval()
    proto = onnx.load(str(export_onnx(model, tmp_path / "step.onnx", opset=opset)))
    names = list(model.state_names)
    assert [v.name for v in proto.graph.input] == ["frame", *(f"{n}_in" for n in names)]
    assert [v.name for v in proto.graph.output] == ["logits", *(f"{n}_out" for n in names)]
    for value in [*proto.graph.input, *proto.graph.output]:
        assert value.type.tensor_type.shape.dim[0].dim_param, f"{value.name} needs a dynamic batch axis"
    ops = op_counts(proto)
    assert not set(FORBIDDEN_OPS) & set(ops), ops
    assert not any(node.op_type in FORBIDDEN_OPS for f in proto.functions for node in f.node)
    onnx.checker.check_model(proto, full_check=True)


def test_metadata_round_trips_the_config(tmp_path):
    config = small_config("seed", "lstm")
    path = export_onnx(DCRN(config).eval(), tmp_path / "step.onnx", meta={"epochs": 3, "data": "synthetic"})
    assert read_onnx_config(path) == config
    assert read_onnx_config(path).class_names == ("wave", "clap", "jump", "sit", "none")
    props = read_onnx_metadata(path)
    assert '"epochs": 3' in props["dcrn_meta"]
    assert props["dcrn_dtype"] == "float32"


def test_export_leaves_the_callers_model_untouched(tmp_path):
    model = DCRN(small_config("seed", "gru")).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    export_onnx(model, tmp_path / "step.onnx")
    assert model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("opset", [17, 18])
def test_graph_declares_the_requested_opset(opset, tmp_path):
    path = export_onnx(DCRN(small_config("seed", "gru")).eval(), tmp_path / "step.onnx", opset=opset)
    proto = onnx.load(str(path))
    assert {o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")} == {opset}


def test_float16_graph_keeps_float32_frame_and_logits(tmp_path):
    model = DCRN(small_config("seed", "convgru")).eval()
    path = export_onnx(model, tmp_path / "step16.onnx", dtype=torch.float16)
    proto = onnx.load(str(path))
    types = {v.name: v.type.tensor_type.elem_type for v in [*proto.graph.input, *proto.graph.output]}
    assert types == {
        "frame": onnx.TensorProto.FLOAT,
        "h_in": onnx.TensorProto.FLOAT16,
        "logits": onnx.TensorProto.FLOAT,
        "h_out": onnx.TensorProto.FLOAT16,
    }
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    frame = torch.randn(2, 3, 32, 32)
    state = model.initial_state(2)
    logits, _ = session.run(None, {"frame": frame.numpy(), "h_in": state[0].half().numpy()})
    with torch.no_grad():
        expected, _ = model.step(frame, state)
    assert np.abs(logits - expected.numpy()).max() <= 1e-2 * max(1.0, float(expected.abs().max()))


def test_reading_config_from_a_foreign_onnx_file_names_the_problem(tmp_path):
    path = tmp_path / "other.onnx"
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Relu", ["x"], ["y"])],
        "other",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])],
    )
    onnx.save(onnx.helper.make_model(graph), str(path))
    with pytest.raises(BadCheckpoint, match=CONFIG_KEY):
        read_onnx_config(path)
    (tmp_path / "junk.onnx").write_bytes(b"\x00not onnx")
    with pytest.raises(BadCheckpoint, match=r"junk\.onnx"):
        read_onnx_config(tmp_path / "junk.onnx")
