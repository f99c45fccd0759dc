"""dcrn train end to end on a tiny generated set: checkpoints, resume, fast mode, clear errors."""

from __future__ import annotations

import json

import pytest
import torch

from dcrn.app.cli import main as cli_main
from dcrn.models import load_checkpoint, read_checkpoint
from dcrn.models.evaluate import EvalOptions, evaluate
from dcrn.models.synth import CLASSES
from dcrn.models.train import TrainOptions, train
from tests.fixtures.data import tiny_synthetic_set

TINY = dict(
    encoder_widths=(4, 8),
    hidden_size=8,
    input_size=24,
    clip_len=8,
    batch_size=8,
    threads=1,
    progress=False,
    val_fraction=0.3,
)


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory):
    return tiny_synthetic_set(tmp_path_factory.mktemp("synth"), clips_per_class=3, clip_frames=8, stream_s=4.0)


def test_train_writes_a_checkpoint_that_loads_and_evaluates(synth_dir, tmp_path):
    out = tmp_path / "model.pt"
    result = train(TrainOptions(data=synth_dir, out=out, epochs=2, flip="move_left:move_right", **TINY))
    assert out.is_file() and out.with_suffix(".last.pt").is_file()
    assert len(result.history) == 2 and "val_accuracy" in result.history[0]
    model, meta = load_checkpoint(out)
    assert model.config.labels == CLASSES
    assert meta["best_epoch"] == result.best_epoch
    metrics = evaluate(EvalOptions(data=synth_dir, model=str(out), baseline_folds=2))
    assert metrics["num_clips"] == 30 and 0 <= metrics["top1"] <= 1
    assert 0 <= metrics["per_frame_accuracy"] <= 1 and metrics["mean_delay_s"] is not None


def test_resume_continues_where_training_stopped(synth_dir, tmp_path):
    out = tmp_path / "model.pt"
    first = train(TrainOptions(data=synth_dir, out=out, epochs=1, **TINY))
    after_one = read_checkpoint(out.with_suffix(".last.pt"))
    assert after_one["training"]["epoch"] == 0
    resumed = train(TrainOptions(data=synth_dir, out=out, epochs=2, resume=True, **TINY))
    assert [h["epoch"] for h in resumed.history] == [1, 2]
    assert resumed.history[0] == first.history[0]  # epoch 1 was not run again
    final = read_checkpoint(out.with_suffix(".last.pt"))
    assert final["training"]["epoch"] == 1
    changed = any(
        not torch.equal(after_one["state_dict"][k], v) for k, v in final["state_dict"].items() if v.is_floating_point()
    )
    assert changed


def test_resume_matches_an_uninterrupted_run(synth_dir, tmp_path):
    options = dict(TINY, augment=False, schedule="constant", warmup_epochs=0)
    straight = train(TrainOptions(data=synth_dir, out=tmp_path / "a.pt", epochs=2, **options))
    train(TrainOptions(data=synth_dir, out=tmp_path / "b.pt", epochs=1, **options))
    resumed = train(TrainOptions(data=synth_dir, out=tmp_path / "b.pt", epochs=2, resume=True, **options))
    assert resumed.history[1]["train_loss"] == pytest.approx(straight.history[1]["train_loss"], rel=1e-4)


def test_fast_mode_trains_only_the_cell_and_head_on_cached_features(synth_dir, tmp_path):
    torch.manual_seed(0)
    out = tmp_path / "fast.pt"
    cache = tmp_path / "features"
    options = dict(TINY, epochs=2, freeze_encoder=True, feature_cache=cache)
    train(TrainOptions(data=synth_dir, out=out, **options))
    assert list(cache.rglob("*.npy")), "features are kept on disk"
    trained = read_checkpoint(out.with_suffix(".last.pt"))["state_dict"]
    torch.manual_seed(0)  # the same initial weights as the run above
    train(TrainOptions(data=synth_dir, out=tmp_path / "init.pt", **dict(options, epochs=1, lr=1e-12)))
    initial = read_checkpoint(tmp_path / "init.last.pt")["state_dict"]
    for name, value in trained.items():
        if name.startswith("encoder."):
            assert torch.equal(value, initial[name]), f"{name} changed although the encoder is frozen"
    assert any(not torch.equal(trained[k], initial[k]) for k in trained if k.startswith("cell."))


def test_truncated_bptt_and_other_optimizers_run(synth_dir, tmp_path):
    for optimizer in ("sgd", "rmsprop", "adam"):
        result = train(
            TrainOptions(
                data=synth_dir, out=tmp_path / f"{optimizer}.pt", epochs=1, optimizer=optimizer, bptt=3, **TINY
            )
        )
        assert result.history[0]["train_loss"] > 0


def test_init_starts_from_another_checkpoint(synth_dir, tmp_path):
    first = tmp_path / "first.pt"
    train(TrainOptions(data=synth_dir, out=first, epochs=1, **TINY))
    second = tmp_path / "second.pt"
    train(TrainOptions(data=synth_dir, out=second, epochs=1, init=first, freeze_encoder=True, **TINY))
    a, b = read_checkpoint(first)["state_dict"], read_checkpoint(second.with_suffix(".last.pt"))["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a if k.startswith("encoder."))


def test_cli_train_on_an_empty_folder_fails_with_one_line(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    code = cli_main(["train", "--data", str(tmp_path / "empty"), "--out", str(tmp_path / "m.pt")])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and "no videos found" in err


def test_cli_synth_train_eval_round_trip(tmp_path, capsys):
    data = tmp_path / "data"
    assert (
        cli_main(["synth", "--out", str(data), "--clips-per-class", "2", "--clip-frames", "6", "--size", "40x48"]) == 0
    )
    assert json.loads((data / "synth.json").read_text())["clips"] == 20
    model = tmp_path / "m.pt"
    args = ["train", "--data", str(data), "--out", str(model), "--epochs", "1", "--clip-len", "6", "--no-progress"]
    args += ["--encoder-widths", "4,8", "--hidden-size", "8", "--input-size", "24", "--threads", "1"]
    assert cli_main(args) == 0
    report = tmp_path / "report"
    metrics = tmp_path / "metrics.json"
    assert (
        cli_main(["eval", "--data", str(data), "--model", str(model), "--json", str(metrics), "--report", str(report)])
        == 0
    )
    result = json.loads(metrics.read_text())
    assert {"top1", "top5", "num_clips", "per_class", "baseline"} <= set(result)
    assert (report / "report.md").is_file() and (report / "confusion.png").is_file()
