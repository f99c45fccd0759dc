"""Pipeline.source_info: what a consumer (the window) may read about a running stream's source."""

from __future__ import annotations

from dcrn.engine.pipeline import Pipeline, PipelineConfig
from dcrn.models import DCRN, DCRNConfig, save_checkpoint
from dcrn.models.synth import CLASSES


def test_source_info_is_none_before_the_source_opens_then_gives_its_fps_and_labels(tmp_path):
    path = tmp_path / "tiny.pt"
    config = DCRNConfig(num_classes=2, labels=("still", "wave"), encoder_widths=(8, 16), hidden_size=16, input_size=32)
    save_checkpoint(path, DCRN(config).eval())
    seen = []
    pipeline_config = PipelineConfig(
        sources=["synthetic:?fps=25&width=64&height=48"], model=str(path), threads=1, max_frames=3, stats_interval_s=0
    )
    pipeline = Pipeline(pipeline_config, on_frame=lambda _frame, _p: seen.append(pipeline.source_info()))
    assert pipeline.source_info() is None
    pipeline.run()
    assert len(seen) == 3
    assert seen[0].fps == 25.0 and seen[0].labels == tuple(CLASSES)
    assert pipeline.source_info(1) is None  # one stream only
