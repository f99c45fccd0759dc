"""Recording teach clips: ClipRecorder, record_clips and ``dcrn record`` with real sources and real files.

Sources are the real synthetic stream, video files written here with VideoWriter, and the real RTSP
test server; clips are tiny (0.5-2 s at 64x48) so every test takes a second or two.
"""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest

from dcrn.app.cli import main
from dcrn.engine.errors import SourceError
from dcrn.engine.recorder import MIN_KEEP_S, ClipRecorder, parse_cut, record_clips
from dcrn.engine.sources.base import SourceOptions
from dcrn.engine.sources.synthetic import SyntheticSource
from dcrn.models.data import scan
from dcrn.models.errors import ConfigError, DataError
from dcrn.models.teach_data import BACKGROUND_LABEL, DATASET_FILE, TeachDataset
from dcrn.models.video_io import VideoWriter, read_video

SYNTHETIC = "synthetic:?width=64&height=48&fps=30"
FAST = SourceOptions(pace=False)


def make_video(path, seconds: float, fps: float = 30.0, size=(48, 64)):
    """A real video file whose frame brightness counts frames (frame i has value 4*i), for cutting."""
    with VideoWriter(path, fps) as writer:
        for i in range(round(seconds * fps)):
            writer.write(np.full((*size, 3), min(4 * i, 255), dtype=np.uint8))
    return path


def partial_files(root):
    return sorted(p.name for p in root.rglob("*.partial.mp4"))


class DyingSource(SyntheticSource):
    """The synthetic stream, lost for good after ``frames`` frames (like a camera unplugged)."""

    def __init__(self, frames: int) -> None:
        self.left = frames
        super().__init__(width=64, height=48, options=FAST)

    def _read(self):
        if self.left <= 0:
            raise SourceError(f"{self.uri}: read failed")
        self.left -= 1
        return super()._read()


# -- ClipRecorder ---------------------------------------------------------------------------------


def test_recorder_writes_a_partial_file_then_renames_and_registers_it(tmp_path):
    dataset = TeachDataset.create(tmp_path)
    recorder = ClipRecorder(dataset, BACKGROUND_LABEL, fps=30.0, source="rtsp://admin:pw@cam/1", session="s1")
    frames = np.random.default_rng(0).integers(0, 255, (12, 48, 64, 3), dtype=np.uint8)
    for frame in frames:
        assert recorder.write(frame, wait=True)
    assert recorder.partial.exists() and not recorder.path.exists()
    assert scan_has_no_clips(tmp_path)  # a clip being written is never read as training data
    info = recorder.finish()
    assert recorder.path.is_file() and not recorder.partial.exists()
    assert (info.frames, info.width, info.height, info.session) == (12, 64, 48, "s1")
    assert info.source == "rtsp://***@cam/1"
    assert TeachDataset.open(tmp_path).clips == [info]
    decoded, fps = read_video(recorder.path)
    assert decoded.shape == frames.shape and fps == pytest.approx(30.0)
    assert recorder.finish() == info  # finishing twice is harmless


def scan_has_no_clips(root) -> bool:
    with pytest.raises(DataError, match="no videos found"):
        scan(root)
    return True


def test_recorder_abort_removes_the_partial_file_and_registers_nothing(tmp_path):
    dataset = TeachDataset.create(tmp_path)
    recorder = ClipRecorder(dataset, BACKGROUND_LABEL, fps=30.0, source=SYNTHETIC, session="s1")
    for _ in range(5):
        recorder.write(np.zeros((48, 64, 3), np.uint8))
    recorder.abort()
    assert partial_files(tmp_path) == [] and not recorder.path.exists()
    assert TeachDataset.open(tmp_path).clips == []


def test_recorder_without_frames_finishes_to_none_and_leaves_no_file(tmp_path):
    dataset = TeachDataset.create(tmp_path)
    recorder = ClipRecorder(dataset, BACKGROUND_LABEL, fps=30.0, source=SYNTHETIC, session="s1")
    assert recorder.finish() is None
    assert list((tmp_path / BACKGROUND_LABEL).iterdir()) == []


def test_recorder_evens_odd_sizes_and_resizes_frames_that_change_size(tmp_path):
    dataset = TeachDataset.create(tmp_path)
    recorder = ClipRecorder(dataset, BACKGROUND_LABEL, fps=25.0, source=SYNTHETIC, session="s1")
    for shape in [(47, 63, 3)] * 3 + [(100, 80, 3)] * 2:  # H.264 4:2:0 needs even sizes
        recorder.write(np.full(shape, 128, np.uint8), wait=True)
    info = recorder.finish()
    assert (info.width, info.height, info.frames) == (62, 46, 5)
    assert read_video(tmp_path / info.path)[0].shape == (5, 46, 62, 3)


def test_recorder_refuses_bad_frames_and_unknown_labels_with_one_line(tmp_path):
    dataset = TeachDataset.create(tmp_path)
    with pytest.raises(DataError, match="no label 'wave'"):
        ClipRecorder(dataset, "wave", fps=30.0, source=SYNTHETIC, session="s1")
    recorder = ClipRecorder(dataset, BACKGROUND_LABEL, fps=30.0, source=SYNTHETIC, session="s1")
    with pytest.raises(DataError, match=r"\(H, W, 3\) uint8 RGB array, got \(48, 64\)"):
        recorder.write(np.zeros((48, 64), np.uint8))
    with pytest.raises(DataError, match="uint8 RGB, got float32"):
        recorder.write(np.zeros((48, 64, 3), np.float32))
    recorder.abort()


# -- record_clips -----------------------------------------------------------------------------------


def test_record_clips_from_the_synthetic_source_counts_down_and_saves_each_clip(tmp_path):
    dataset = TeachDataset.create(tmp_path)
    messages: list[str] = []
    clips = record_clips(SYNTHETIC, dataset, "wave", seconds=0.5, count=2, countdown=0.3, on_status=messages.append)
    assert [c.frames for c in clips] == [15, 15]
    assert len({c.session for c in clips}) == 1
    assert all(c.source == "synthetic:?seed=0&fps=30&width=64&height=48" for c in clips)
    assert dataset.counts() == {BACKGROUND_LABEL: 0, "wave": 2}
    assert "clip 1/2 of 'wave' in 1..." in messages and any(m.startswith("REC clip 2/2") for m in messages)
    for clip in clips:
        assert read_video(tmp_path / clip.path)[0].shape == (15, 48, 64, 3)
    assert partial_files(tmp_path) == []


def test_record_clips_from_a_file_splits_it_into_consecutive_clips_until_it_ends(tmp_path):
    video = make_video(tmp_path / "talk.mp4", seconds=1.6)
    dataset = TeachDataset.create(tmp_path / "ds")
    messages: list[str] = []
    start = time.monotonic()
    clips = record_clips(str(video), dataset, "nod", seconds=0.5, count=5, on_status=messages.append)
    assert time.monotonic() - start < 5  # files are read at decode speed, without countdown
    assert [c.frames for c in clips] == [15, 15, 15]  # the 3 frames left are too short to keep
    first = read_video(tmp_path / "ds" / clips[1].path)[0]
    assert abs(int(first[0].mean()) - 4 * 15) <= 3  # clip 2 starts at frame 15: no frame lost or repeated
    assert any("ended after 3 of 5 clip(s)" in m for m in messages)
    assert all(c.source.endswith("talk.mp4") for c in clips)


def test_cuts_from_a_file_become_clips_of_exactly_those_spans(tmp_path):
    video = make_video(tmp_path / "talk.mp4", seconds=2.0)
    dataset = TeachDataset.create(tmp_path / "ds")
    clips = record_clips(str(video), dataset, "nod", cuts=[(1.5, 2.0), (0.2, 0.7), (0.5, 1.0)])
    by_cut = {c.cut: c for c in clips}
    assert set(by_cut) == {(0.2, 0.7), (0.5, 1.0), (1.5, 2.0)}  # overlapping cuts and one up to the end
    for (in_s, out_s), clip in by_cut.items():
        frames = read_video(tmp_path / "ds" / clip.path)[0]
        assert clip.frames == len(frames) == round((out_s - in_s) * 30)
        assert abs(int(frames[0].mean()) - 4 * round(in_s * 30)) <= 3
    assert TeachDataset.open(tmp_path / "ds").counts()["nod"] == 3


def test_a_cut_past_the_end_is_one_error_line_and_earlier_cuts_survive(tmp_path):
    video = make_video(tmp_path / "talk.mp4", seconds=1.0)
    dataset = TeachDataset.create(tmp_path / "ds")
    with pytest.raises(DataError, match=r"cut\(s\) 5:6 start after the end of the video") as info:
        record_clips(str(video), dataset, "nod", cuts=[(0.0, 0.5), (5.0, 6.0)])
    assert "\n" not in str(info.value) and "1 clip(s) saved" in str(info.value)
    assert TeachDataset.open(tmp_path / "ds").counts()["nod"] == 1


def test_cutting_needs_a_file_source_and_well_formed_spans(tmp_path):
    dataset = TeachDataset.create(tmp_path)
    with pytest.raises(ConfigError, match="needs a video file source"):
        record_clips(SYNTHETIC, dataset, "wave", cuts=[(0.0, 1.0)])
    assert parse_cut("2.5:5") == (2.5, 5.0)
    for text in ("5", "a:b", "3:1", "-1:2"):
        with pytest.raises(ConfigError, match="IN"):
            parse_cut(text)


def test_an_empty_label_records_nothing(tmp_path):
    dataset = TeachDataset.create(tmp_path)
    with pytest.raises(DataError, match="cannot be empty"):
        record_clips(SYNTHETIC, dataset, "  ", seconds=0.5, countdown=0)
    assert dataset.labels == [BACKGROUND_LABEL]


@pytest.mark.parametrize(("die_after", "kept"), [(60 + 20, 1), (60 + 40, 2)])
def test_a_source_lost_mid_clip_keeps_finished_clips_and_a_partial_of_at_least_1_s(tmp_path, die_after, kept):
    """Clip 2 is cut short after 20 frames (0.67 s: removed) or 40 frames (1.33 s: kept)."""
    dataset = TeachDataset.create(tmp_path)
    source = DyingSource(frames=die_after)
    with pytest.raises(SourceError) as info:
        record_clips(source, dataset, "wave", seconds=2.0, count=3, countdown=0)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("source lost while recording clip 2/3 of 'wave': ")
    assert f"{kept} clip(s) saved in {tmp_path}" in message
    again = TeachDataset.open(tmp_path)
    assert [c.frames for c in again.clips] == [60, 40][:kept]
    assert kept == 1 or again.clips[1].frames / 30 >= MIN_KEEP_S
    assert partial_files(tmp_path) == []
    assert all((tmp_path / c.path).is_file() for c in again.clips)


def test_cancel_stops_recording_at_once(tmp_path):
    dataset = TeachDataset.create(tmp_path)
    cancel = threading.Event()
    timer = threading.Timer(0.4, cancel.set)
    timer.start()
    start = time.monotonic()
    try:
        clips = record_clips(SYNTHETIC, dataset, "wave", seconds=5.0, count=3, countdown=0, cancel=cancel)
    finally:
        timer.cancel()
    assert time.monotonic() - start < 2
    assert clips == [] and partial_files(tmp_path) == []


# -- dcrn record ------------------------------------------------------------------------------------


def test_dcrn_record_builds_a_data_set_that_dcrn_train_reads_by_session(tmp_path, capsys):
    out = tmp_path / "ds"
    common = ["--source", SYNTHETIC, "--out", str(out), "--seconds", "0.5", "--countdown", "0.2"]
    assert main(["record", *common, "--label", "wave", "--count", "2"]) == 0
    captured = capsys.readouterr()
    assert captured.out.splitlines() == [c.path for c in TeachDataset.open(out).clips]
    assert "in 1..." in captured.err and "REC clip 1/2" in captured.err and "2 clip(s) of 'wave' saved" in captured.err
    assert main(["record", *common, "--label", "clap", "--count", "2"]) == 0
    assert main(["record", *common, "--label", "Wave", "--count", "1"]) == 0  # more clips of the same label

    dataset = TeachDataset.open(out)
    assert dataset.labels == [BACKGROUND_LABEL, "wave", "clap"]
    assert dataset.counts() == {BACKGROUND_LABEL: 0, "wave": 3, "clap": 2}
    index = scan(out)
    assert index.classes == ("wave", "clap")  # dataset.json order, labels that have clips
    assert len({s.group for s in index.samples}) == 3  # one group per `dcrn record` run


def test_dcrn_record_cuts_clips_from_a_video_file(tmp_path, capsys):
    video = make_video(tmp_path / "talk.mp4", seconds=2.0)
    out = tmp_path / "ds"
    rc = main(["record", "--source", str(video), "--out", str(out), "--label", "nod", "--cut", "0:0.5", "--cut", "1:2"])
    assert rc == 0
    assert len(capsys.readouterr().out.splitlines()) == 2
    clips = TeachDataset.open(out).clips
    assert sorted(c.cut for c in clips) == [(0.0, 0.5), (1.0, 2.0)] and sorted(c.frames for c in clips) == [15, 30]


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        (["--label", ""], "a label cannot be empty"),
        (["--label", "a/b"], "contains '/'"),
        (["--label", "wave", "--cut", "3:1"], "a cut needs 0 <= IN < OUT"),
        (["--label", "wave", "--count", "0"], "argument --count: expected a whole number >= 1"),
        (["--label", "wave", "--source", "nope.mp4"], "video file not found"),
    ],
)
def test_dcrn_record_bad_input_is_one_error_line_and_exit_2(tmp_path, capsys, args, problem):
    argv = ["record", "--source", SYNTHETIC, "--out", str(tmp_path / "ds"), "--countdown", "0"]
    try:
        code = main([*argv, *args])
    except SystemExit as exc:  # refused while parsing the arguments
        code = exc.code
    assert code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("dcrn record: error: ") and problem in err
    assert not (tmp_path / "ds").exists()  # refused before anything was created


def test_dcrn_record_from_rtsp_whose_server_dies_keeps_finished_clips(tmp_path, capsys):
    """A real RTSP camera (with credentials) killed after the first clip: exit 2, one line, clip 1 kept."""
    from tests.fixtures.rtsp import RtspServer, unavailable_reason

    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    out = tmp_path / "ds"
    with RtspServer(width=160, height=120, user="admin", password="s3cret") as server:

        def kill_after_first_clip() -> None:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                meta = out / DATASET_FILE
                if meta.is_file() and json.loads(meta.read_text())["clips"]:
                    time.sleep(0.2)  # well inside clip 2
                    server.kill()
                    return
                time.sleep(0.05)

        killer = threading.Thread(target=kill_after_first_clip)
        killer.start()
        argv = ["record", "--source", server.url, "--out", str(out), "--label", "wave", "--timeout", "2"]
        rc = main([*argv, "--seconds", "0.7", "--count", "3", "--countdown", "0"])
        killer.join()
    err = capsys.readouterr().err
    assert rc == 2
    error_lines = [line for line in err.splitlines() if "error:" in line]
    assert len(error_lines) == 1 and "source lost while recording clip 2/3" in error_lines[0]
    assert "1 clip(s) saved" in error_lines[0] and "s3cret" not in err
    dataset = TeachDataset.open(out)
    assert len(dataset.clips) == 1 and dataset.clips[0].frames >= 15
    assert dataset.source == f"rtsp://***@127.0.0.1:{server.port}/test"
    assert "s3cret" not in (out / DATASET_FILE).read_text()
    assert partial_files(out) == []
