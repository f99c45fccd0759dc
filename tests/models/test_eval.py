"""dcrn eval: metrics on clips and streams, detection delay, baseline, JSON and the Markdown report."""

from __future__ import annotations

import json

import numpy as np
import pytest

from dcrn.app.cli import main as cli_main
from dcrn.models import DCRN, DCRNConfig, save_checkpoint
from dcrn.models.evaluate import ClipOutputs, EvalOptions, clip_metrics, detection_delays, evaluate
from dcrn.models.report import write_report
from dcrn.models.synth import CLASSES
from tests.fixtures.data import tiny_synthetic_set


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory):
    return tiny_synthetic_set(tmp_path_factory.mktemp("synth"), clips_per_class=2, clip_frames=6, stream_s=3.0)


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    config = DCRNConfig(
        num_classes=len(CLASSES), labels=CLASSES, encoder_widths=(4, 8), hidden_size=8, input_size=24, pool="flatten"
    )
    return save_checkpoint(tmp_path_factory.mktemp("model") / "m.pt", DCRN(config))


def test_detection_delay_counts_frames_until_the_new_label_shows():
    true = np.array([0, 0, 0, 1, 1, 1, 1, 2, 2, 2])
    pred = np.array([0, 0, 0, 0, 0, 1, 1, 1, 2, 2])
    assert detection_delays(pred, true) == [2, 1]
    never = np.array([0, 0, 0, 0, 0, 0, 0, 0, 0, 0])
    assert detection_delays(never, true) == [4, 3]  # a missed change counts its whole segment
    assert detection_delays(true, true) == [0, 0]
    assert detection_delays(pred, np.array([0, 0, -1, 1, 1, 1, 1, 1, 1, 1])) == []  # unlabelled gap: no change


def test_clip_metrics_top1_top5_per_class_and_accuracy_by_frames():
    logits = [np.eye(3)[[1, 0]], np.eye(3)[[2, 1]], np.eye(3)[[2, 2]]]  # (T=2, C=3) each
    outputs = ClipOutputs(labels=np.array([0, 1, 2]), logits=logits, mean_features=np.zeros((3, 4)))
    metrics = clip_metrics(outputs, ("a", "b", "c"))
    assert metrics["top1"] == 1.0 and metrics["num_clips"] == 3
    assert metrics["accuracy_by_frames"] == [pytest.approx(1 / 3, abs=1e-4), 1.0]
    assert metrics["per_class"]["a"] == {"precision": 1.0, "recall": 1.0, "support": 1}
    assert metrics["confusion"] == [[1, 0, 0], [0, 1, 0], [0, 0, 1]]


def test_evaluate_reports_clip_stream_and_baseline_metrics(synth_dir, model_path, tmp_path):
    result = evaluate(EvalOptions(data=synth_dir, model=str(model_path), baseline_folds=2))
    assert result["num_clips"] == 20
    assert set(result["per_class"]) == set(CLASSES)
    assert len(result["accuracy_by_frames"]) == 6
    assert result["num_stream_frames"] == 90 and result["num_changes"] >= 2
    assert 0 <= result["per_frame_accuracy"] <= 1 and result["mean_delay_s"] >= 0
    assert 0 <= result["baseline"]["top1"] <= 1 and "2-fold" in result["baseline"]["method"]
    report = write_report(result, tmp_path / "report")
    text = report.read_text()
    assert "confusion.png" in text and "accuracy_vs_frames.png" in text and "baseline" in text
    for name in ("confusion.png", "confusion.csv", "accuracy_vs_frames.png"):
        assert (tmp_path / "report" / name).stat().st_size > 0
    header = (tmp_path / "report" / "confusion.csv").read_text().splitlines()[0]
    assert header.split(",")[1:] == list(CLASSES)


def test_baseline_can_be_fitted_on_separate_training_clips(synth_dir, model_path, tmp_path):
    train_dir = tiny_synthetic_set(tmp_path / "train", clips_per_class=1, clip_frames=6, stream_s=0, seed=5)
    result = evaluate(EvalOptions(data=synth_dir, model=str(model_path), baseline_train=train_dir))
    assert "fitted on 10 clips" in result["baseline"]["method"]


def test_cli_eval_writes_json_with_the_documented_keys(synth_dir, model_path, tmp_path, capsys):
    out = tmp_path / "metrics.json"
    assert cli_main(["eval", "--data", str(synth_dir), "--model", str(model_path), "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert {"top1", "top5", "num_clips", "per_class", "per_frame_accuracy", "mean_delay_s"} <= set(result)
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["num_clips"] == 20


def test_cli_eval_with_a_missing_model_fails_with_one_line(synth_dir, tmp_path, capsys):
    code = cli_main(["eval", "--data", str(synth_dir), "--model", str(tmp_path / "nope.pt")])
    assert code == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_clip_metrics_list_the_clips_it_got_wrong_most_confident_first():
    logits = [np.array([[0.0, 3.0]]), np.array([[2.0, 0.0]]), np.array([[0.0, 1.0]])]  # (T=1, C=2) each
    names = ["a/one.mp4", "a/two.mp4", "b/three.mp4"]
    outputs = ClipOutputs(np.array([0, 0, 0]), logits, np.zeros((3, 4)), names)
    wrong = clip_metrics(outputs, ("a", "b"))["wrong"]
    assert [w["clip"] for w in wrong] == ["a/one.mp4", "b/three.mp4"]  # p(b) 0.95, then 0.73
    assert wrong[0] == {"clip": "a/one.mp4", "label": "a", "predicted": "b", "score": 0.9526, "label_score": 0.0474}


def test_eval_report_lists_every_wrong_clip_by_its_path(synth_dir, model_path, tmp_path):
    result = evaluate(EvalOptions(data=synth_dir, model=str(model_path), baseline=False))
    wrong = result["wrong"]
    assert len(wrong) == round((1 - result["top1"]) * result["num_clips"]) > 0  # an untrained model errs
    text = write_report(result, tmp_path / "report").read_text()
    assert f"Clips it got wrong ({len(wrong)} of 20)" in text
    for w in wrong:
        assert (synth_dir / w["clip"]).is_file() and f"`{w['clip']}`" in text


def test_eval_draws_a_progress_bar_on_a_terminal(synth_dir, model_path, monkeypatch):
    import io

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    terminal = Terminal()
    monkeypatch.setattr("sys.stderr", terminal)
    evaluate(EvalOptions(data=synth_dir, model=str(model_path), baseline=False))
    shown = terminal.getvalue()
    assert "\reval [" in shown and "20/20" in shown and "\reval streams [" in shown
