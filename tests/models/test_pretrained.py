"""``pretrained=True`` goes through torchvision's weights API, offline from torch's cache."""

from __future__ import annotations

import pytest
import torch

from dcrn.models import DCRN, DCRNConfig, PretrainedWeightsUnavailable

MOBILENET_V2_FILE = "mobilenet_v2-b0353104.pth"


def test_pretrained_loads_imagenet_weights_from_torch_cache(shared_dir, monkeypatch):
    torch_home = shared_dir / "weights" / "torch"
    cached = torch_home / "hub" / "checkpoints" / MOBILENET_V2_FILE
    if not cached.is_file():
        pytest.skip(f"{cached} is not present")
    monkeypatch.setenv("TORCH_HOME", str(torch_home))
    model = DCRN(DCRNConfig(encoder="mobilenet_v2", pretrained=True, input_size=64))
    reference = torch.load(cached, weights_only=True)
    first_conv = model.encoder.features[0][0].weight
    assert torch.equal(first_conv, reference["features.0.0.weight"])


def test_pretrained_without_cache_or_network_fails_clearly(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # an empty cache
    for var in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")  # the discard port: no network at all
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    with pytest.raises(PretrainedWeightsUnavailable) as info:
        DCRN(DCRNConfig(encoder="mobilenet_v2", pretrained=True, input_size=64))
    message = str(info.value)
    assert MOBILENET_V2_FILE in message and str(tmp_path) in message and "TORCH_HOME" in message


def test_loading_a_checkpoint_never_fetches_pretrained_weights(tmp_path, monkeypatch):
    from dcrn.models import load_checkpoint, save_checkpoint

    model = DCRN(DCRNConfig(encoder="resnet18", input_size=32))
    payload_path = save_checkpoint(tmp_path / "m.pt", model)
    data = torch.load(payload_path, weights_only=True)
    data["config"]["pretrained"] = True  # as if trained from ImageNet weights
    torch.save(data, payload_path)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))
    loaded, _ = load_checkpoint(payload_path)  # must not try to download
    assert loaded.config.pretrained
