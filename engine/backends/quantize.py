"""INT8 on the CPU: the encoder part of the exported step graph statically quantised with ONNX Runtime.

``int8_graph(model, calibration, cache_dir)`` returns the path of a step graph whose **encoder** nodes
(the per-frame CNN, named ``/encoder/...`` by the exporter) run in INT8, in QDQ form (QuantizeLinear /
DequantizeLinear pairs that ONNX Runtime fuses into integer kernels); the cell, the head and the state
stay float32, so the recurrent arithmetic is exactly as trained. It is made once per model and
calibration and cached beside the float32 graph, keyed by the model's hash and a hash of the calibration
(the clip files' names and contents, how many frames, the method, ONNX Runtime's version).

Calibration is static: ``onnxruntime.quantization.quantize_static`` runs the float32 graph on frames of
training clips (a few from each class and source group, spread over each clip, resized and normalised as
the streaming pipeline does) and fixes every activation's range from them; weights are quantised per
output channel (MobileNetV2's depthwise convolutions lose too much with one scale per tensor).
Activations are unsigned and weights signed 8 bit, which the x86 VNNI and ARM dot-product kernels take.

Where the frames come from: a data folder (as ``dcrn train --data`` takes) or, by default, the folder the
checkpoint records in ``meta["trained_with"]["data"]`` (:func:`calibration_for`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from dcrn.engine.backends.base import model_hash
from dcrn.engine.backends.cache import cached_file
from dcrn.engine.errors import BackendUnavailable
from dcrn.models.dcrn import DCRN
from dcrn.models.errors import ConfigError
from dcrn.models.files import cache_root

log = logging.getLogger(__name__)

ENCODER_SCOPE = "/encoder/"  # node-name prefix of the per-frame encoder in the exported step graph
METHODS = ("minmax", "percentile", "entropy")


@dataclass(frozen=True)
class Calibration:
    """Which frames fix the activation ranges, and how."""

    data: str  # data folder of training clips (calibration_for finds the checkpoint's own)
    clips: int = 48  # clips read, spread over classes and source groups
    frames_per_clip: int = 6  # frames taken evenly over each clip
    method: str = "minmax"  # minmax; percentile / entropy keep every activation (~15 GB for 288 MobileNetV2 frames)
    exclude_groups: tuple[str, ...] = ()  # source groups never calibrated on (a cross-validation fold's test groups)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(f"calibration method must be one of {', '.join(METHODS)}, got {self.method!r}")
        if self.clips < 1 or self.frames_per_clip < 1:
            raise ConfigError(
                f"calibration needs clips >= 1 and frames_per_clip >= 1, got {self.clips}, {self.frames_per_clip}"
            )


def calibration_for(meta: dict | None, data: str | os.PathLike | None = None, **options) -> Calibration:
    """Calibration on ``data``, or on the training data the checkpoint records (when that folder is here)."""
    if data is not None:
        if not Path(data).is_dir():
            raise ConfigError(f"calibration data {data} is not a folder")
        return Calibration(str(data), **options)
    recorded = ((meta or {}).get("trained_with") or {}).get("data")
    if recorded:
        checkpoint = Path((meta or {}).get("path", ".")).resolve()
        for base in (Path.cwd(), *checkpoint.parents):  # relative paths were relative to the training cwd
            folder = (base / recorded) if not Path(recorded).is_absolute() else Path(recorded)
            if folder.is_dir():
                return Calibration(str(folder), **options)
    raise BackendUnavailable(
        "INT8 needs frames of training clips to calibrate on: give a data folder (--calibration DIR)"
        + (f"; the folder this model was trained on ({recorded}) is not here" if recorded else "")
    )


def calibration_clips(folder: Path, model: DCRN, calibration: Calibration) -> list[Path]:
    """Up to ``calibration.clips`` clips of ``folder``, round-robin over classes and their source groups."""
    from dcrn.models.data import scan

    index = scan(folder)  # only frames matter: the folder's classes need not be the model's
    queues: dict[tuple[int, str], list[Path]] = {}
    for sample in index.samples:
        if sample.group and sample.group in calibration.exclude_groups:
            continue
        queues.setdefault((sample.label, sample.group or sample.path.parent.name), []).append(sample.path)
    if not queues:
        raise ConfigError(f"{folder}: no clips to calibrate on")
    order = sorted(queues)
    chosen: list[Path] = []
    while len(chosen) < calibration.clips and any(queues.values()):
        for key in order:
            if queues[key] and len(chosen) < calibration.clips:
                chosen.append(queues[key].pop(0))
    return chosen


def calibration_frames(model: DCRN, clips: list[Path], frames_per_clip: int) -> np.ndarray:
    """(N, 3, S, S) float32 frames as the pipeline feeds them: area-resized to S, scaled, normalised."""
    from dcrn.models.video_io import read_video

    config = model.config
    mean = np.asarray(config.mean, np.float32).reshape(1, 3, 1, 1)
    std = np.asarray(config.std, np.float32).reshape(1, 3, 1, 1)
    out = []
    for path in clips:
        frames, _ = read_video(path, config.input_size)  # (T, S, S, 3) uint8
        if len(frames) == 0:
            continue
        picks = np.unique(np.linspace(0, len(frames) - 1, frames_per_clip).round().astype(int))
        chosen = frames[picks].transpose(0, 3, 1, 2).astype(np.float32) / 255.0  # (k, 3, S, S)
        out.append((chosen - mean) / std)
    if not out:
        raise ConfigError("no frames could be read from the calibration clips")
    return np.concatenate(out)


def encoder_nodes(onnx_path: Path) -> list[str]:
    import onnx

    proto = onnx.load_model(str(onnx_path), load_external_data=False)
    nodes = [n.name for n in proto.graph.node if n.name.startswith(ENCODER_SCOPE)]
    if not nodes:
        raise BackendUnavailable(f"{onnx_path}: no encoder nodes ({ENCODER_SCOPE}...) to quantise")
    return nodes


def quantize_encoder(fp32_path: Path, out_path: Path, model: DCRN, frames: np.ndarray, method: str = "minmax") -> Path:
    """Write ``fp32_path`` with its encoder statically quantised (QDQ, per-channel weights) to ``out_path``."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    states = {
        f"{n}_in": np.zeros((1, *s), np.float32) for n, s in zip(model.state_names, model.state_shapes, strict=True)
    }

    class Frames(CalibrationDataReader):
        def __init__(self) -> None:
            self.i = 0

        def get_next(self) -> dict | None:
            if self.i >= len(frames):
                return None
            self.i += 1
            return {"frame": frames[self.i - 1 : self.i], **states}  # the encoder does not read the state

    methods = {
        "minmax": CalibrationMethod.MinMax,
        "percentile": CalibrationMethod.Percentile,
        "entropy": CalibrationMethod.Entropy,
    }
    root = logging.getLogger()  # the quantiser advises "pre-processing" through logging.warning (the root logger)
    root.addFilter(_no_preprocessing_advice)
    try:
        quantize_static(
            str(fp32_path),
            str(out_path),
            Frames(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            nodes_to_quantize=encoder_nodes(fp32_path),
            calibrate_method=methods[method],
        )
    finally:
        root.removeFilter(_no_preprocessing_advice)
    return out_path


def _no_preprocessing_advice(record: logging.LogRecord) -> bool:
    return "pre-processing" not in record.getMessage()


def int8_graph(model: DCRN, calibration: Calibration, cache_dir: str | os.PathLike | None = None) -> Path:
    """The model's step graph with an INT8 encoder, from the cache or made now (atomically); see the module notes."""
    import onnxruntime

    from dcrn.engine.backends.step_graph import OPSET, exported_graph
    from dcrn.models.video_io import media_digest

    folder = Path(calibration.data)
    clips = calibration_clips(folder, model, calibration)
    ident = hashlib.sha256()
    for path in clips:
        ident.update(f"{path.name}|{media_digest(path)}\n".encode())
    ident.update(json.dumps(asdict(calibration) | {"data": None, "ort": onnxruntime.__version__}).encode())
    cache = cache_root(cache_dir) / "onnx"
    path = cache / f"{model_hash(model)}-opset{OPSET}-int8-{ident.hexdigest()[:12]}.onnx"
    if path.is_file():
        return path

    def quantise(tmp: Path) -> None:
        fp32 = exported_graph(model, cache_dir)
        log.info(
            "quantising the encoder to INT8, calibrated on %d frames of %d clips in %s",
            len(clips) * calibration.frames_per_clip,
            len(clips),
            folder,
        )
        frames = calibration_frames(model, clips, calibration.frames_per_clip)
        quantize_encoder(fp32, tmp, model, frames, calibration.method)

    cached_file(path, quantise)
    log.info("INT8 step graph: %s", path)
    return path
