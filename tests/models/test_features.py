"""The frozen-encoder feature cache: keyed on what a video holds, not on where it lies or when it was copied."""

from __future__ import annotations

import logging
import re
import shutil

import pytest

from dcrn.models import DCRN, DCRNConfig
from dcrn.models.data import scan
from dcrn.models.features import FeatureStore
from dcrn.models.video_io import media_digest, read_video, write_video
from tests.fixtures.data import tiny_synthetic_set


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory):
    return tiny_synthetic_set(tmp_path_factory.mktemp("synth"), clips_per_class=1, clip_frames=6, stream_s=2.0)


def computed_now(caplog, build) -> int:
    """How many frames ``build()`` had to encode (the rest came from the disk cache)."""
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="dcrn.models.features"):
        build()
    (message,) = [r.getMessage() for r in caplog.records if "features of" in r.getMessage()]
    return int(re.search(r"\((\d+) computed now", message).group(1))


def test_a_copied_data_folder_keeps_its_feature_cache_and_a_changed_video_is_encoded_again(synth_dir, tmp_path, caplog):
    model = DCRN(DCRNConfig(num_classes=10, encoder_widths=(4, 8), hidden_size=8, input_size=24)).eval()
    cache = tmp_path / "features"
    assert computed_now(caplog, lambda: FeatureStore(scan(synth_dir), model, cache_dir=cache)) > 0

    # A plain copy: new paths and modification times, the same bytes. Nothing is encoded again.
    copy = tmp_path / "copy"
    shutil.copytree(synth_dir, copy, copy_function=shutil.copyfile)
    assert computed_now(caplog, lambda: FeatureStore(scan(copy), model, cache_dir=cache)) == 0

    # One clip gets new content (its frames in reverse order): that clip alone is encoded again.
    clip = scan(copy).clips[0].path
    before = media_digest(clip)
    frames, fps = read_video(clip)
    write_video(clip, frames[::-1], fps)
    assert media_digest(clip) != before
    assert computed_now(caplog, lambda: FeatureStore(scan(copy), model, cache_dir=cache)) == len(frames)
