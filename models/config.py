"""The model's configuration: one dataclass that travels inside every checkpoint."""

from __future__ import annotations

import math
import operator
from dataclasses import asdict, dataclass, fields

from .errors import ConfigError
from .labels import label_problem

ENCODERS = ("seed", "luma", "features", "mobilenet_v2", "mobilenet_v3_small", "resnet18", "efficientnet_b0")
CELLS = ("gru", "lstm", "convrnn", "convgru", "convlstm", "convgru_delta", "motion_avg", "flow_memory")
CELLS += ("feature_memory",)
CONV_CELLS = ("convrnn", "convgru", "convlstm", "convgru_delta")
MAP_CELLS = (*CONV_CELLS, "flow_memory")  # cells that read the feature map itself, not a pooled vector
ENCODER_NORMS = ("none", "batch")
POOLS = ("avg", "flatten")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Bounds of every size (a checkpoint is untrusted: a few bytes of config must not ask for gigabytes).
# Far above any model this project trains, far below what would exhaust a machine's memory.
SIZE_LIMITS = {
    "num_classes": (1, 10_000),
    "hidden_size": (1, 4096),  # GRU/LSTM units or conv-cell channels
    "cell_kernel": (1, 15),
    "head_hidden": (0, 4096),
    "input_size": (16, 1024),  # pixels
}
MAX_ENCODER_BLOCKS = 8  # seed CNN blocks (each halves the frame: 1024 px -> 4 px)
MAX_CHANNELS = 2048  # seed CNN channels per block
# Per-frame features computed outside the step graph (encoder "features"), in this order in the input vector:
# the whole picture's grid optical flow, hands and body keypoints (see dcrn.models.frame_vector).
FEATURE_KINDS = ("flow", "hands", "body")


@dataclass(frozen=True)
class DCRNConfig:
    """Everything needed to rebuild a DCRN; stored in checkpoints and ONNX metadata."""

    num_classes: int = 9  # size of the softmax head
    labels: tuple[str, ...] = ()  # class names, one per output; empty -> "class_0", "class_1", ...
    encoder: str = "seed"  # per-frame CNN: "seed" (small Conv3x3+ReLU+MaxPool CNN), "luma" (brightness) or a backbone
    encoder_widths: tuple[int, ...] = (16, 32, 64, 128)  # seed CNN: output channels of each block
    encoder_padding: str = "same"  # seed CNN convolutions: "same" (keeps size) or "valid" (Keras' default)
    encoder_norm: str = "none"  # seed CNN: "batch" puts BatchNorm after each convolution
    pretrained: bool = False  # torchvision backbones: start from the standard ImageNet weights
    cell: str = "gru"  # gru, lstm, motion_avg (vectors); convrnn, convgru, convlstm, convgru_delta, flow_memory (maps)
    hidden_size: int = 128  # GRU/LSTM units, or channels of a convolutional cell's state
    cell_kernel: int = 3  # kernel size of the convolutional cells
    pool: str = "avg"  # feature map -> vector before a GRU/LSTM: "avg" (global average) or "flatten"
    head_hidden: int = 0  # 0: linear head; > 0: Linear -> ReLU -> Linear with this many units
    dropout: float = 0.0  # dropout before the head (training only)
    input_size: int = 112  # frames are resized to input_size x input_size
    mean: tuple[float, float, float] = IMAGENET_MEAN  # per-channel normalisation of RGB in [0, 1]
    std: tuple[float, float, float] = IMAGENET_STD
    features: tuple[str, ...] = ()  # encoder "features": which per-frame features (FEATURE_KINDS) the step reads

    def __post_init__(self) -> None:
        # Tuples may arrive as lists from a checkpoint or JSON; store them as tuples. A checkpoint is
        # untrusted input: every size is checked for type and range before anything is allocated for it.
        for name in ("labels", "encoder_widths", "mean", "std", "features"):
            value = getattr(self, name)
            if isinstance(value, str) or not isinstance(value, list | tuple):
                raise ConfigError(f"{name} must be a list, got {type(value).__name__}")
            object.__setattr__(self, name, tuple(value))
        for name, (low, high) in SIZE_LIMITS.items():
            value = _whole(name, getattr(self, name))
            if value < low:
                raise ConfigError(f"{name} must be >= {low}, got {value}")
            if value > high:
                raise ConfigError(f"{name} must be <= {high}, got {value}")
            object.__setattr__(self, name, value)
        if not 1 <= len(self.encoder_widths) <= MAX_ENCODER_BLOCKS:
            raise ConfigError(
                f"encoder_widths must list 1 to {MAX_ENCODER_BLOCKS} blocks, got {len(self.encoder_widths)}"
            )
        widths = tuple(_whole("encoder_widths", w) for w in self.encoder_widths)
        if not all(1 <= w <= MAX_CHANNELS for w in widths):
            raise ConfigError(f"encoder_widths must be channel counts from 1 to {MAX_CHANNELS}, got {widths}")
        object.__setattr__(self, "encoder_widths", widths)
        if self.labels and len(self.labels) != self.num_classes:
            raise ConfigError(f"labels must name all {self.num_classes} classes, got {len(self.labels)}")
        for number, label in enumerate(self.labels, start=1):
            problem = label_problem(label)
            if problem:
                raise ConfigError(f"class {number}: {problem}")
        _check_choice("encoder", self.encoder, ENCODERS)
        _check_choice("cell", self.cell, CELLS)
        _check_choice("pool", self.pool, POOLS)
        _check_choice("encoder_padding", self.encoder_padding, ("same", "valid"))
        _check_choice("encoder_norm", self.encoder_norm, ENCODER_NORMS)
        if not isinstance(self.pretrained, bool):
            raise ConfigError(f"pretrained must be true or false, got {self.pretrained!r}")
        if self.cell_kernel % 2 == 0:
            raise ConfigError(f"cell_kernel must be a positive odd number, got {self.cell_kernel}")
        if not isinstance(self.dropout, int | float) or not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be a number in [0, 1), got {self.dropout!r}")
        if len(self.mean) != 3 or len(self.std) != 3:
            raise ConfigError(f"mean and std need 3 channels, got {self.mean} and {self.std}")
        for value in (*self.mean, *self.std):
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise ConfigError(f"mean and std must be finite numbers, got {self.mean} and {self.std}")
        if min(self.std) <= 0:
            raise ConfigError(f"std must be > 0 in every channel, got {self.std}")
        _check_features(self.encoder, self.cell, self.features)

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.labels or tuple(f"class_{i}" for i in range(self.num_classes))

    @property
    def is_conv_cell(self) -> bool:
        return self.cell in CONV_CELLS

    @property
    def reads_map(self) -> bool:
        """Whether the cell takes the encoder's feature map as it is (no pooling to a vector first)."""
        return self.cell in MAP_CELLS

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> DCRNConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown config keys {unknown}; this version knows {sorted(known)}")
        if not isinstance(data, dict):
            raise ConfigError(f"a config must be a mapping, got {type(data).__name__}")
        return cls(**data)

    @classmethod
    def seed(cls, num_classes: int, labels: tuple[str, ...] = ()) -> DCRNConfig:
        """The article's Keras example, layer for layer, on 64x64 frames.

        TimeDistributed(Conv2D(32, 3x3, relu)) -> TimeDistributed(MaxPooling2D(2x2)) -> TimeDistributed(Flatten)
        -> LSTM(64) -> Dense(64, relu) -> Dense(C, softmax). The printed code leaves out the Flatten, without
        which the LSTM would receive a 4-D tensor; it is restored here.
        """
        return cls(
            num_classes=num_classes,
            labels=labels,
            encoder="seed",
            encoder_widths=(32,),
            encoder_padding="valid",
            cell="lstm",
            hidden_size=64,
            pool="flatten",
            head_hidden=64,
            input_size=64,
            mean=(0.0, 0.0, 0.0),  # the article feeds pixels scaled to [0, 1]
            std=(1.0, 1.0, 1.0),
        )


def _whole(name: str, value: object) -> int:
    """``value`` as an int; ConfigError for anything else (floats, text, booleans, None)."""
    if isinstance(value, bool):
        raise ConfigError(f"{name} must be a whole number, got {value!r}")
    try:
        return operator.index(value)  # int, numpy integers; not 1.5, "8" or None
    except TypeError:
        raise ConfigError(f"{name} must be a whole number, got {str(value)[:40]!r}") from None


def _check_features(encoder: str, cell: str, features: tuple[str, ...]) -> None:
    """Encoder ``features`` names its kinds, once each, in FEATURE_KINDS order, read by ``feature_memory``."""
    if encoder != "features":
        if features:
            raise ConfigError(f"features is only for encoder 'features', got encoder {encoder!r}")
        if cell == "feature_memory":
            raise ConfigError("cell 'feature_memory' reads the 'features' encoder's vectors only")
        return
    if cell != "feature_memory":
        raise ConfigError(f"encoder 'features' needs cell 'feature_memory', got {cell!r}")
    if not features or any(not isinstance(k, str) or k not in FEATURE_KINDS for k in features):
        raise ConfigError(f"features must list some of {', '.join(FEATURE_KINDS)}; got {list(features)[:4]!r}")
    if tuple(k for k in FEATURE_KINDS if k in features) != features:
        raise ConfigError(f"features must name each kind once, in the order {', '.join(FEATURE_KINDS)}")


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if not isinstance(value, str) or value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}; got {value!r}")
