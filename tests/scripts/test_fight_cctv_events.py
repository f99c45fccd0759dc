"""scripts/measure/fight_cctv_events.py: the stream order of held-out clips and how events are scored against
them."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from dcrn.engine.frames import Frame
from dcrn.engine.postprocess import PostprocessConfig, StreamPostprocessor
from scripts.measure import fight_cctv_events as events


def test_stream_order_alternates_classes_and_avoids_a_group_twice_in_a_row():
    labels = [0] * 4 + [1] * 8
    groups = ["a", "a", "b", "b", "c", "c", "c", "c", "d", "d", "d", "d"]
    order = events.stream_order(labels, groups, seed=3)
    assert sorted(order) == list(range(12))  # every clip once
    assert order == events.stream_order(labels, groups, seed=3)  # fixed by the seed
    first = [labels[i] for i in order[:8]]
    assert all(x != y for x, y in itertools.pairwise(first))  # the classes alternate while both are left
    for seed in range(5):  # one class, two groups: they alternate
        order = events.stream_order([1] * 6, ["c", "c", "c", "d", "d", "d"], seed=seed)
        assert all(x // 3 != y // 3 for x, y in itertools.pairwise(order))


def test_score_events_counts_hits_found_clips_delay_and_frames():
    segments = [
        {"label": "fight", "group": "a", "start": 0, "end": 10},
        {"label": "noFight", "group": "b", "start": 10, "end": 20},
        {"label": "fight", "group": "c", "start": 20, "end": 30},
        {"label": "noFight", "group": "d", "start": 30, "end": 40},
    ]
    pts = np.arange(40) / 10.0
    probs = np.zeros(40)
    score = events.score_events([(3, 15), (25, 40), (33, 36)], segments, pts, probs)
    assert (score["events"], score["hits"], score["false_events"], score["found"]) == (3, 2, 1, 2)
    assert score["precision"] == pytest.approx(2 / 3, abs=1e-4)
    assert score["recall"] == 1.0
    assert score["delay_s_mean"] == pytest.approx((0.3 + 0.5) / 2)
    assert score["carried"] == 0
    assert score["fight_frames_flagged"] == pytest.approx(12 / 20)  # frames 3-9 and 25-29
    assert score["nofight_frames_flagged"] == pytest.approx(15 / 20)  # frames 10-14 and 30-39
    assert score["event_frames_on_fight_clips"] == pytest.approx(12 / 27, abs=1e-4)


def test_an_event_running_into_the_next_fight_clip_is_found_but_has_no_delay():
    segments = [
        {"label": "fight", "group": "a", "start": 0, "end": 10},
        {"label": "fight", "group": "b", "start": 10, "end": 20},
    ]
    score = events.score_events([(2, 20)], segments, np.arange(20) / 25.0, np.zeros(20))
    assert (score["found"], score["carried"], score["recall"]) == (2, 1, 1.0)
    assert score["delay_s_mean"] == pytest.approx(2 / 25)  # only the first clip's


def test_event_intervals_read_the_postprocessors_records():
    labels = ("fight", "noFight")
    post = StreamPostprocessor(labels, PostprocessConfig())
    records = []
    for k in range(40):
        logits = torch.tensor([4.0, -4.0]) if 5 <= k < 20 else torch.tensor([-4.0, 4.0])
        records += post.update(logits, Frame(stream="s", seq=k, pts=k / 25, image=np.zeros((1, 1, 3), np.uint8)))[1]
    records += post.reset()
    intervals = events.event_intervals(records)
    assert len(intervals) == 1
    start, end = intervals[0]
    assert 5 < start < 12 and 20 < end < 30  # smoothed and held for 3 frames either way


@pytest.mark.parametrize(
    "argv",
    [
        ["--sweep", "0.5,high"],
        ["--sweep", "0.5,1.5"],
        ["--class-threshold", "fight"],
        ["--class-threshold", "fight=x"],
        [],  # no fold checkpoints in --runs
    ],
)
def test_bad_input_is_a_one_line_error_before_any_work(argv, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        events.main([*argv, "--runs", str(tmp_path / "none"), "--json", str(tmp_path / "out.json")])
    assert exc.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert any(word in error for word in ("threshold", "--sweep", "train-fight-cctv --cv")), error
    assert not (tmp_path / "out.json").exists()
