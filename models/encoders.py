"""Per-frame encoders: x_t (B, 3, H, W) -> feature map f_t (B, C, h, w)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import nn

from .config import DCRNConfig
from .errors import PretrainedWeightsUnavailable


class SeedCNN(nn.Module):
    """The article's small CNN: blocks of Conv 3x3 + ReLU + MaxPool 2x2.

    ``norm="batch"`` puts a BatchNorm after each convolution (Conv -> BN -> ReLU -> MaxPool). Without it a
    from-scratch CNN of this kind starts with activations that shrink block by block, and on the synthetic
    actions training never left chance; with it, it does. At inference BN is a fixed per-channel affine map
    (ONNX Runtime and TensorRT fold it into the convolution), so a frame costs the same.
    """

    def __init__(
        self, widths: tuple[int, ...], padding: str = "same", in_channels: int = 3, norm: str = "none"
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for width in widths:
            pad = 1 if padding == "same" else 0
            layers.append(nn.Conv2d(in_channels, width, kernel_size=3, padding=pad, bias=norm == "none"))
            if norm == "batch":
                layers.append(nn.BatchNorm2d(width))
            layers += [nn.ReLU(inplace=True), nn.MaxPool2d(2)]
            in_channels = width
        self.blocks = nn.Sequential(*layers)
        self.out_channels = in_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x)  # (B, C, H / 2^n, W / 2^n)


class LumaEncoder(nn.Module):
    """The frame's brightness, contrast-normalised per frame: (B, 3, H, W) -> (B, 1, H, W). No learned weights.

    For the ``flow_memory`` cell, which measures motion on it: undoing the model's RGB normalisation and
    standardising each frame's brightness keeps the measured motion the same under lighting changes and
    camera gain, and leaves nothing of a scene's colours for a classifier to memorise.
    """

    out_channels = 1
    LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601 weights of R, G, B

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        weights = torch.tensor(self.LUMA)
        # luma = sum_c LUMA_c * (x_c * std_c + mean_c): one 1x1 convolution on the normalised input
        self.register_buffer("weight", (weights * torch.tensor(std)).view(1, 3, 1, 1))
        self.register_buffer("bias", (weights * torch.tensor(mean)).sum().view(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        luma = nn.functional.conv2d(x, self.weight, self.bias)  # (B, 1, H, W) in [0, 1]
        mean = luma.mean(dim=(2, 3), keepdim=True)
        spread = (luma - mean).square().mean(dim=(2, 3), keepdim=True).sqrt()
        return (luma - mean) / (spread + 0.02)  # a flat frame stays near 0 instead of amplifying noise


# name -> (torchvision weights enum name, channels of the final feature map)
_BACKBONES = {
    "mobilenet_v2": ("MobileNet_V2_Weights", 1280),
    "mobilenet_v3_small": ("MobileNet_V3_Small_Weights", 576),
    "resnet18": ("ResNet18_Weights", 512),
    "efficientnet_b0": ("EfficientNet_B0_Weights", 1280),
}


class TorchvisionEncoder(nn.Module):
    """A torchvision classification backbone without its classifier, built by torchvision's own API."""

    def __init__(self, name: str, pretrained: bool = False) -> None:
        super().__init__()
        import torchvision

        weights_name, channels = _BACKBONES[name]
        weights = getattr(torchvision.models, weights_name).IMAGENET1K_V1 if pretrained else None
        net = torchvision.models.get_model(name, weights=None)
        if weights is not None:
            net.load_state_dict(_imagenet_state_dict(name, weights))
        if name == "resnet18":
            self.features = nn.Sequential(*list(net.children())[:-2])  # drop avgpool and fc
        else:
            self.features = net.features
        self.out_channels = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)  # (B, C, H / 32, W / 32)


def _imagenet_state_dict(name: str, weights) -> dict:
    """Load ImageNet weights through torchvision's weights API (torch's cache first, then download)."""
    filename = Path(urlparse(weights.url).path).name
    cached = Path(torch.hub.get_dir()) / "checkpoints" / filename
    try:
        return weights.get_state_dict(progress=False, check_hash=True)
    except Exception as exc:  # urllib, socket and hash errors all mean the same thing to the user
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise PretrainedWeightsUnavailable(
            f"ImageNet weights for {name} are not in torch's cache ({cached}) and could not be "
            f"downloaded ({reason}); put {filename} there, or set TORCH_HOME to a folder whose "
            f"hub/checkpoints/ holds it"
        ) from None


def build_encoder(config: DCRNConfig, pretrained: bool) -> nn.Module:
    if config.encoder == "seed":
        return SeedCNN(config.encoder_widths, config.encoder_padding, norm=config.encoder_norm)
    if config.encoder == "luma":
        return LumaEncoder(config.mean, config.std)
    if config.encoder == "features":  # the per-frame vectors are computed outside the graph
        return nn.Identity()
    return TorchvisionEncoder(config.encoder, pretrained=pretrained)
