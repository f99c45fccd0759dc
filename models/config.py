"""The model's configuration: one dataclass that travels inside every checkpoint."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from .errors import ConfigError

ENCODERS = ("seed", "luma", "mobilenet_v2", "mobilenet_v3_small", "resnet18", "efficientnet_b0")
CELLS = ("gru", "lstm", "convrnn", "convgru", "convlstm", "convgru_delta", "motion_avg", "flow_memory")
CONV_CELLS = ("convrnn", "convgru", "convlstm", "convgru_delta")
MAP_CELLS = (*CONV_CELLS, "flow_memory")  # cells that read the feature map itself, not a pooled vector
ENCODER_NORMS = ("none", "batch")
POOLS = ("avg", "flatten")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


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

    def __post_init__(self) -> None:
        # Tuples may arrive as lists from a checkpoint or JSON; store them as tuples.
        for name in ("labels", "encoder_widths", "mean", "std"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if self.num_classes < 1:
            raise ConfigError(f"num_classes must be >= 1, got {self.num_classes}")
        if self.labels and len(self.labels) != self.num_classes:
            raise ConfigError(f"labels must name all {self.num_classes} classes, got {len(self.labels)}")
        _check_choice("encoder", self.encoder, ENCODERS)
        _check_choice("cell", self.cell, CELLS)
        _check_choice("pool", self.pool, POOLS)
        _check_choice("encoder_padding", self.encoder_padding, ("same", "valid"))
        _check_choice("encoder_norm", self.encoder_norm, ENCODER_NORMS)
        if not self.encoder_widths or min(self.encoder_widths) < 1:
            raise ConfigError(f"encoder_widths must be positive channel counts, got {self.encoder_widths}")
        if self.hidden_size < 1 or self.head_hidden < 0:
            raise ConfigError(
                f"hidden_size must be >= 1 and head_hidden >= 0, got {self.hidden_size} and {self.head_hidden}"
            )
        if self.cell_kernel < 1 or self.cell_kernel % 2 == 0:
            raise ConfigError(f"cell_kernel must be a positive odd number, got {self.cell_kernel}")
        if self.input_size < 16:
            raise ConfigError(f"input_size must be >= 16 pixels, got {self.input_size}")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ConfigError(f"mean and std need 3 channels with std > 0, got {self.mean} and {self.std}")

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


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}; got {value!r}")
