"""Evidence: encoded pre-roll, clips of actions, peak snapshots, retention (docs/evidence.md).

Frames come from the built-in synthetic stream with each frame's index drawn into its bottom-left corner
as a bar code, so a decoded clip tells exactly which source frames it holds.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from dcrn.engine.evidence import EvidenceConfig, EvidenceError, EvidenceRecorder
from dcrn.engine.evidence.encoder import EncodedPacket
from dcrn.engine.evidence.names import safe_part
from dcrn.engine.evidence.preroll import PreRoll, Timeline
from dcrn.engine.evidence.retention import enforce_retention
from dcrn.engine.sources.base import SourceOptions
from dcrn.engine.sources.factory import open_source
from dcrn.models.errors import ConfigError

FPS = 30.0
W, H = 320, 240
BITS, BLOCK = 10, 16  # the frame-index bar code: 10 blocks of 16x16 pixels, black or white
WALL0 = 1_780_000_000.0  # wall-clock time of frame 0
NO_LIMITS = {"max_mb": None, "max_age_days": None, "queue_frames": 10_000}  # tests feed faster than real time


@pytest.fixture(scope="module")
def frames() -> list[np.ndarray]:
    """360 frames (12 s) of the synthetic stream, each with its index as a bar code."""
    source = open_source(f"synthetic:?seed=5&fps={FPS:g}&width={W}&height={H}", options=SourceOptions(pace=False))
    out = []
    try:
        for index in range(360):
            image, _, _ = source.read()
            image = image.copy()
            for bit in range(BITS):
                value = 255 if (index >> bit) & 1 else 0
                image[H - BLOCK :, bit * BLOCK : (bit + 1) * BLOCK] = value
            out.append(image)
    finally:
        source.close()
    return out


def bar_code(image: np.ndarray) -> int:
    gray = image.mean(axis=2)
    blocks = [gray[H - BLOCK + 4 : H - 4, b * BLOCK + 4 : (b + 1) * BLOCK - 4].mean() for b in range(BITS)]
    return sum(1 << bit for bit, mean in enumerate(blocks) if mean > 128)


def event(kind: str, index: int, label: str = "wave", score: float = 0.7, stream: str = "cam0") -> dict:
    pts = round(index / FPS, 4)
    return {"type": "event", "event": kind, "stream": stream, "frame": index, "pts": pts, "wall": WALL0 + pts,
            "label": label, "score": score}  # fmt: skip


def prediction(index: int, score: float, label: str = "wave", stream: str = "cam0") -> dict:
    pts = round(index / FPS, 4)
    return {"type": "prediction", "stream": stream, "frame": index, "pts": pts, "wall": WALL0 + pts,
            "label": label, "score": score, "top": [[label, score], ["still", 1 - score]]}  # fmt: skip


def play(recorder, frames, start, stop, events=None, scores=None, stream="cam0") -> dict[int, dict]:
    """Feed frames[start:stop] as the pipeline does: events of a frame, then the frame, then its prediction."""
    written = {}
    for index in range(start, stop):
        for record in (events or {}).get(index, []):
            written[index] = recorder.event(record)
        pts = index / FPS
        recorder.frame(stream, frames[index], pts, WALL0 + pts)
        recorder.prediction(prediction(index, (scores or {}).get(index, 0.5), stream=stream))
    return written


def decode(path: Path) -> tuple[list[int], list[float]]:
    """The bar codes and times (seconds from the clip's start) of every frame of an mp4."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = list(container.decode(stream))
    return [bar_code(f.to_ndarray(format="rgb24")) for f in frames], [float(f.time) for f in frames]


def wait_for(path: Path, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert path.exists(), f"{path} was not written within {timeout} s"


def test_clip_holds_the_preroll_the_whole_action_and_the_postroll(tmp_path, frames):
    config = EvidenceConfig(pre_s=3.0, post_s=2.0, gop_s=1.0, **NO_LIMITS)
    with EvidenceRecorder(tmp_path, config) as recorder:
        events = {150: [event("action_started", 150)], 240: [event("action_ended", 240)]}
        written = play(recorder, frames, 0, 360, events)
    indices, times = decode(tmp_path / written[150]["clip"])
    first_wanted = 150 - 1 - int(3.0 * FPS)  # the pre-roll reaches back 3 s from the last frame before the start
    assert first_wanted - int(1.0 * FPS) <= indices[0] <= first_wanted  # from the keyframe before, one GOP at most
    assert indices[-1] >= 240 - 1 + int(2.0 * FPS)  # the post-roll: 2 s after the end
    assert indices[-1] <= 240 + int(2.0 * FPS) + 1
    assert indices == list(range(indices[0], indices[-1] + 1))  # every frame, in order, none twice
    assert times[0] == 0.0
    assert np.allclose(np.diff(times), 1 / FPS, atol=1e-3)  # the stream's own timing
    assert cv2.VideoCapture(str(tmp_path / written[150]["clip"])).get(cv2.CAP_PROP_FRAME_COUNT) == len(indices)


def test_action_records_name_their_clip_and_snapshot_relative_to_the_folder(tmp_path, frames):
    with EvidenceRecorder(tmp_path, EvidenceConfig(**NO_LIMITS)) as recorder:
        events = {100: [event("action_started", 100, label="clap")], 130: [event("action_ended", 130, label="clap")]}
        written = play(recorder, frames, 0, 200, events)
        other = recorder.event(event("stream_restored", 200))
    started, ended = written[100], written[130]
    assert started["clip"] == "cam0/cam0_20260528T202643.333Z_clap.mp4"  # stream, UTC start time, label
    assert started["snapshot"] == "cam0/cam0_20260528T202643.333Z_clap.jpg"
    assert (ended["clip"], ended["snapshot"]) == (started["clip"], started["snapshot"])
    assert "clip" not in other
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == [
        "cam0", started["snapshot"], started["clip"]
    ]  # fmt: skip


def test_snapshot_is_the_peak_frame_as_a_jpeg_of_the_frame_size(tmp_path, frames):
    scores = {i: 0.6 + 0.002 * i for i in range(100, 161)} | {137: 0.99}
    with EvidenceRecorder(tmp_path, EvidenceConfig(**NO_LIMITS)) as recorder:
        events = {100: [event("action_started", 100)], 160: [event("action_ended", 160)]}
        written = play(recorder, frames, 0, 220, events, scores)
    data = (tmp_path / written[100]["snapshot"]).read_bytes()
    assert data[:3] == b"\xff\xd8\xff"  # JPEG
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert image.shape == (H, W, 3)
    assert bar_code(image[..., ::-1]) == 137  # the frame with the highest score of the action's class
    band = np.abs(image[:20].astype(int) - frames[137][:20, :, ::-1]).mean()
    assert band > 40  # the text band is drawn over the top of the frame


def test_a_clip_still_open_when_the_recorder_closes_is_complete_and_decodable(tmp_path, frames):
    recorder = EvidenceRecorder(tmp_path, EvidenceConfig(**NO_LIMITS))
    written = play(recorder, frames, 0, 200, {150: [event("action_started", 150)]})
    clip = tmp_path / written[150]["clip"]
    wait_for(clip.with_name(f".{clip.stem}.partial.mp4"))
    assert [p.name for p in clip.parent.iterdir()] == [f".{clip.stem}.partial.mp4"]  # only the temporary name
    recorder.close()
    indices, _ = decode(clip)
    assert indices[-1] == 199 and indices == list(range(indices[0], 200))
    assert (tmp_path / written[150]["snapshot"]).exists()  # the action's snapshot too
    assert not [p for p in tmp_path.rglob(".*")]  # no temporary file left


def test_a_clip_closes_at_its_maximum_length_while_the_action_goes_on(tmp_path, frames):
    with EvidenceRecorder(tmp_path, EvidenceConfig(pre_s=1.0, max_s=4.0, **NO_LIMITS)) as recorder:
        written = play(recorder, frames, 0, 300, {60: [event("action_started", 60)]})
        clip = tmp_path / written[60]["clip"]
        wait_for(clip)  # complete before the action ends
        _, times = decode(clip)
    assert 3.9 <= times[-1] < 4.0


def test_stream_lost_finishes_the_clip_at_once(tmp_path, frames):
    with EvidenceRecorder(tmp_path, EvidenceConfig(**NO_LIMITS)) as recorder:
        written = play(recorder, frames, 0, 120, {100: [event("action_started", 100)]})
        recorder.event({**event("stream_lost", 119), "label": None, "score": None})
        clip = tmp_path / written[100]["clip"]
        wait_for(clip)
        indices, _ = decode(clip)
    assert indices[-1] == 119


def test_a_new_frame_size_ends_the_clip_and_the_next_clip_uses_it(tmp_path, frames):
    small = [cv2.resize(f, (W // 2, H // 2)) for f in frames]
    with EvidenceRecorder(tmp_path, EvidenceConfig(pre_s=1.0, **NO_LIMITS)) as recorder:
        first = play(recorder, frames, 0, 100, {50: [event("action_started", 50)]})
        second = play(recorder, small, 100, 200, {150: [event("action_started", 150, label="clap")]})
    for name, size in ((first[50]["clip"], (W, H)), (second[150]["clip"], (W // 2, H // 2))):
        with av.open(str(tmp_path / name)) as container:
            frame = next(container.decode(video=0))
            assert (frame.width, frame.height) == size


def test_mpeg4_clips_decode_too(tmp_path, frames):
    with EvidenceRecorder(tmp_path, EvidenceConfig(codec="mpeg4", pre_s=1.0, post_s=0.5, **NO_LIMITS)) as recorder:
        events = {60: [event("action_started", 60)], 90: [event("action_ended", 90)]}
        written = play(recorder, frames, 0, 150, events)
    indices, _ = decode(tmp_path / written[60]["clip"])
    assert indices[0] <= 29 and indices[-1] >= 90 + 14 and indices == list(range(indices[0], indices[-1] + 1))


@pytest.mark.parametrize(
    ("stream", "label"),
    [("../../outside", "../../x"), ("/etc", "..\\..\\evil"), (".hidden", "a/b/../../c"), ("", "\x00"), ("CON", "..")],
)
def test_hostile_stream_and_label_names_stay_inside_the_folder(tmp_path, frames, stream, label):
    root = tmp_path / "evidence"
    with EvidenceRecorder(root, EvidenceConfig(**NO_LIMITS)) as recorder:
        written = play(recorder, frames, 0, 40, {20: [event("action_started", 20, label=label, stream=stream)]},
                       stream=stream)  # fmt: skip
    record = written[20]
    for name in (record["clip"], record["snapshot"]):
        assert re.fullmatch(r"[A-Za-z0-9_\-]+/[A-Za-z0-9_\-]+_\d{8}T\d{6}\.\d{3}Z_[A-Za-z0-9_\-]+\.(mp4|jpg)", name)
        assert (root / name).resolve().is_relative_to(root.resolve())
        assert (root / name).is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["evidence"]  # nothing written beside the folder


def test_a_stream_folder_linked_outside_gets_no_clip(tmp_path, frames):
    root, outside = tmp_path / "evidence", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (root / "cam0").symlink_to(outside)
    with EvidenceRecorder(root, EvidenceConfig(**NO_LIMITS)) as recorder:
        written = play(recorder, frames, 0, 40, {20: [event("action_started", 20)]})
    assert "clip" not in written[20] and "snapshot" not in written[20]
    assert list(outside.iterdir()) == []


def test_safe_part_keeps_letters_digits_underscore_and_dash():
    assert safe_part("cam 1/front door", "stream") == "cam-1-front-door"
    assert safe_part("..", "stream") == "stream"
    assert safe_part("nul", "stream") == "nul_"
    assert len(safe_part("x" * 500, "stream")) == 48


def make_evidence(folder: Path, name: str, size: int, age_s: float, now: float) -> list[Path]:
    """A clip and its snapshot named as the recorder names them, ``size`` bytes together, ``age_s`` old."""
    paths = []
    for suffix, share in ((".mp4", 0.9), (".jpg", 0.1)):
        path = folder / f"cam0_20260501T120000.000Z_{name}{suffix}"
        path.write_bytes(b"\0" * int(size * share))
        os.utime(path, (now - age_s, now - age_s))
        paths.append(path)
    return paths


def test_retention_deletes_the_oldest_clips_and_snapshots_until_the_size_fits(tmp_path):
    now = time.time()
    (tmp_path / "cam0").mkdir()
    for k in range(5):  # clip k is k hours old; 1 MB each with its snapshot
        make_evidence(tmp_path / "cam0", f"clip{k}", 1_000_000, 3600.0 * k, now)
    report = enforce_retention(tmp_path, max_bytes=2_500_000, max_age_s=None, now=now)
    assert sorted(p.name[-9:] for p in (tmp_path / "cam0").iterdir()) == [
        "clip0.jpg",
        "clip0.mp4",
        "clip1.jpg",
        "clip1.mp4",
    ]
    assert [p.stem[-5:] for p in report.deleted] == ["clip4", "clip4", "clip3", "clip3", "clip2", "clip2"]  # oldest
    assert report.kept_bytes == 2_000_000


def test_retention_deletes_what_is_older_than_the_age_limit(tmp_path):
    now = time.time()
    for k, days in enumerate((0.5, 2.0, 10.0)):
        make_evidence(tmp_path, f"clip{k}", 1000, days * 86400.0, now)
    enforce_retention(tmp_path, max_bytes=None, max_age_s=1.5 * 86400.0, now=now)
    assert sorted(p.name[-9:] for p in tmp_path.iterdir()) == ["clip0.jpg", "clip0.mp4"]


def test_retention_spares_clips_being_written_other_files_and_everything_outside(tmp_path):
    now = time.time()
    root, outside = tmp_path / "evidence", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    kept = make_evidence(outside, "theirs", 1000, 1e7, now)  # old evidence-like files outside the folder ...
    (root / "link.mp4").symlink_to(kept[0])  # ... reached through a link to a file
    (root / "linked").symlink_to(outside, target_is_directory=True)  # ... and to a folder
    theirs = [root / "notes.txt", root / "holiday.mp4", root / "cam0_20260501T120000.000Z_.mp4"]  # not ours
    for path in theirs:
        path.write_bytes(b"\0" * 1000)
        os.utime(path, (now - 1e7, now - 1e7))
    protected = make_evidence(root, "writing", 1000, 1e7, now)
    partial = root / ".cam0_20260501T120000.000Z_fight.partial.mp4"  # being written by another process now
    partial.write_bytes(b"\0" * 1000)
    stale = root / ".cam0_20260501T120000.000Z_clap.partial.mp4"  # left by a crash a day ago
    stale.write_bytes(b"\0")
    os.utime(stale, (now - 86400.0, now - 86400.0))
    old = make_evidence(root, "old", 1000, 1e7, now)
    report = enforce_retention(root, max_bytes=1, max_age_s=60.0, protected={protected[0]}, now=now)
    assert sorted(report.deleted) == sorted([*old, stale])
    assert all(p.exists() for p in (*kept, *protected, *theirs, partial, root / "link.mp4", root / "linked"))
    assert report.kept_bytes == 1000  # the protected clip and snapshot; other files do not count


def test_the_recorder_applies_retention_after_each_clip_but_never_to_the_clip_being_written(tmp_path, frames):
    (tmp_path / "cam0").mkdir()
    old = make_evidence(tmp_path / "cam0", "old", 1_150_000, 3600.0, time.time())  # within 1.2 MB at start
    config = EvidenceConfig(pre_s=0.5, post_s=0.2, max_mb=1.2, max_age_days=None, queue_frames=10_000)
    with EvidenceRecorder(tmp_path, config) as recorder:
        assert all(p.exists() for p in old)
        events = {30: [event("action_started", 30)], 45: [event("action_ended", 45)]}
        events[90] = [event("action_started", 90, label="clap")]
        written = play(recorder, frames, 0, 150, events)
        done, open_clip = tmp_path / written[30]["clip"], tmp_path / written[90]["clip"]
        wait_for(done)
        wait_for(open_clip.with_name(f".{open_clip.stem}.partial.mp4"))
        deadline = time.monotonic() + 5.0
        while any(p.exists() for p in old) and time.monotonic() < deadline:  # retention runs after the rename
            time.sleep(0.02)
        assert not any(p.exists() for p in old)  # the oldest went to make room for the new clip
        assert done.exists() and (tmp_path / written[30]["snapshot"]).exists()
        assert open_clip.with_name(f".{open_clip.stem}.partial.mp4").exists()  # the clip being written stays
    assert open_clip.exists()


def test_preroll_keeps_whole_gops_back_to_the_keyframe_before_its_start():
    preroll = PreRoll(keep_s=3.0)
    for index in range(300):  # 10 s at 30 fps, a keyframe every second
        t = index / 30
        preroll.add(EncodedPacket(b"x" * 100, index, index, index % 30 == 0, t))
    packets = preroll.since(299 / 30 - 3.0)
    assert packets[0].key and packets[0].t == 6.0 and packets[-1].t == 299 / 30
    assert len(preroll) == 120 and preroll.bytes == 12_000  # 4 GOPs at most: the cost stays bounded
    assert preroll.since(None)[0].t == 6.0


def test_timeline_keeps_time_increasing_when_pts_jumps_or_goes_back():
    timeline = Timeline(max_gap_s=2.0)
    times = [timeline.map(pts) for pts in (10.0, 10.1, 10.2, 0.0, 0.1, 50.0, 50.1)]
    assert times[0] == 0.0
    assert np.allclose(np.diff(times), 0.1)


def test_bad_settings_fail_with_the_setting_named(tmp_path):
    for bad in ({"pre_s": -1.0}, {"max_s": 0.0}, {"max_mb": 0.0}, {"codec": "vp9"}, {"crf": 60}, {"gop_s": 0.0}):
        with pytest.raises(ConfigError, match=next(iter(bad))):
            EvidenceConfig(**bad)
    (tmp_path / "file").write_text("")
    with pytest.raises(EvidenceError, match="cannot create"):
        EvidenceRecorder(tmp_path / "file" / "evidence")


def test_frames_must_be_rgb_uint8(tmp_path):
    with EvidenceRecorder(tmp_path) as recorder, pytest.raises(ValueError, match=r"HxWx3 uint8"):
        recorder.frame("cam0", np.zeros((48, 64), np.float32), 0.0)


def test_two_actions_in_a_row_give_two_complete_clips_and_report_each_file(tmp_path, frames):
    written_files: list[str] = []
    config = EvidenceConfig(pre_s=1.0, post_s=2.0, **NO_LIMITS)
    with EvidenceRecorder(tmp_path, config, on_written=written_files.append) as recorder:
        events = {60: [event("action_started", 60)]}
        events[90] = [event("action_ended", 90), event("action_started", 90, label="clap")]  # one took over
        events[120] = [event("action_ended", 120, label="clap")]
        written = play(recorder, frames, 0, 240, events)
    first, second = decode(tmp_path / written[60]["clip"])[0], decode(tmp_path / written[90]["clip"])[0]
    assert first[0] <= 29 and first[-1] >= 89 + 60  # its post-roll runs on while the next action is recorded
    assert second[0] <= 59 and second[-1] >= 119 + 60
    names = {written[60]["clip"], written[60]["snapshot"], written[90]["clip"], written[90]["snapshot"]}
    assert sorted(written_files) == sorted(names)


def test_max_fps_encodes_fewer_frames_at_their_own_times(tmp_path, frames):
    config = EvidenceConfig(pre_s=1.0, post_s=1.0, max_fps=10.0, **NO_LIMITS)
    with EvidenceRecorder(tmp_path, config) as recorder:
        written = play(recorder, frames, 0, 150, {60: [event("action_started", 60)], 90: [event("action_ended", 90)]})
    stats = recorder.stats()["cam0"]  # after close: the workers are done
    indices, times = decode(tmp_path / written[60]["clip"])
    assert indices == list(range(indices[0], indices[-1] + 1, 3))  # every third frame of a 30 fps stream
    assert np.allclose(np.diff(times), 0.1, atol=1e-3)
    assert stats.frames == 150 and stats.skipped == 100 and stats.encoded == 50


@pytest.mark.slow
def test_clips_of_the_pipelines_own_events_on_the_synthetic_stream_cover_each_action(tmp_path):
    from dcrn.engine.pipeline import Pipeline, PipelineConfig

    config = EvidenceConfig(pre_s=3.0, post_s=2.0, gop_s=1.0, max_mb=None, max_age_days=None)
    records: list[dict] = []
    pipeline = Pipeline(
        PipelineConfig(
            sources=["synthetic:?seed=2&fps=30"],
            model="default",
            max_frames=420,
            threads=1,
            evidence_dir=str(tmp_path / "evidence"),
            evidence=config,
        ),
        on_record=records.append,  # what the sinks get: action events name their clip and snapshot
    )
    pipeline.run()
    assert pipeline.evidence is not None and pipeline.evidence.closed
    last_pts = max(r["pts"] for r in records if r["type"] == "prediction")
    started = [r for r in records if r.get("event") == "action_started"]
    ended = {r["clip"]: r for r in records if r.get("event") == "action_ended" and "clip" in r}
    assert started and all("clip" in r and "snapshot" in r for r in started)
    checked = 0
    for start in started:
        end = ended[start["clip"]]
        clip, snapshot = tmp_path / "evidence" / start["clip"], tmp_path / "evidence" / start["snapshot"]
        assert cv2.imread(str(snapshot)).shape == (240, 320, 3)
        _, times = decode(clip)
        if start["pts"] < 3.5 or end["pts"] + 2.0 > last_pts:
            continue  # the stream began too late for a whole pre-roll, or ended inside the post-roll
        wanted = (end["pts"] - start["pts"]) + 3.0 + 2.0  # pre-roll, the action, post-roll
        assert wanted - 0.3 <= times[-1] <= wanted + 1.0 + 0.3, (start, end, times[-1])  # + one GOP at most
        checked += 1
    assert checked >= 1


@pytest.mark.rtsp
def test_clip_of_an_action_on_the_rtsp_test_camera_covers_the_preroll_and_the_action(tmp_path, rtsp_server):
    """Frames as the RTSP test camera sends them (live, its own timestamps); the action from 3 s to 4 s."""
    pre_s, post_s, start_at, end_at = 2.0, 1.0, 3.0, 4.0
    config = EvidenceConfig(pre_s=pre_s, post_s=post_s, gop_s=1.0, max_mb=None, max_age_days=None)
    source = open_source(rtsp_server.url, options=SourceOptions(timeout_s=10))
    started = ended = None
    first = None
    try:
        with EvidenceRecorder(tmp_path / "evidence", config) as recorder:
            for index in range(int(rtsp_server.fps * (end_at + post_s + 3))):  # bounded: about 8 s of frames
                image, pts, _ = source.read()
                first = pts if first is None else first
                t = pts - first
                record = {"type": "event", "stream": "gate", "frame": index, "pts": pts, "wall": time.time()}
                if started is None and t >= start_at:
                    started = recorder.event(record | {"event": "action_started", "label": "wave", "score": 0.9})
                if started is not None and ended is None and t >= end_at:
                    ended = recorder.event(record | {"event": "action_ended", "label": "wave", "score": 0.2})
                recorder.frame("gate", image, pts, time.time())
                if t >= end_at + post_s + 0.5:
                    break
    finally:
        source.close()
    assert started is not None and ended is not None
    clip, snapshot = tmp_path / "evidence" / started["clip"], tmp_path / "evidence" / started["snapshot"]
    with av.open(str(clip)) as container:
        times = [float(f.time) for f in container.decode(container.streams.video[0])]
    wanted = (end_at - start_at) + pre_s + post_s  # the pre-roll, the whole action, the post-roll
    assert wanted - 0.3 <= times[-1] - times[0] <= wanted + config.gop_s + 0.3, times[-1] - times[0]
    assert len(times) >= rtsp_server.fps * wanted * 0.8  # a live camera's frames, not a few
    assert cv2.imread(str(snapshot)).shape == (rtsp_server.height, rtsp_server.width, 3)
