"""The keypoint graphs: MediaPipe's Apache-2.0 ``.tflite`` models, where they live and how to obtain them again.

The graphs come from the ``mediapipe==0.10.14`` wheel on PyPI (a zip: the files sit under
``mediapipe/modules/``). The ``mediapipe`` package itself is never imported or installed: it pins
protobuf < 5, which Ray and ONNX outgrew, and nothing of it but these files is needed.

**Shipped.** The four graphs the encoders use (12.8 MiB together) are in ``models/shipped/keypoints/``
with the Apache-2.0 licence text, a README that says where they came from, and ``manifest.json`` (each
file's sha256 and its path in the wheel). Shipping them keeps tests, CI and a fresh install independent of
the registry: nothing is downloaded at set-up or run time.

**Fetched.** The larger variants (``palm_detection_full``, ``hand_landmark_full``), or the shipped ones on
an install that left them out, are obtained by a set-up step, never at run time::

    python -m dcrn.engine.keypoints.model_files fetch [--all] [--wheel PATH] [--out DIR]

It runs ``pip download --no-deps mediapipe==0.10.14`` (or reads a wheel already at hand), checks each
file's sha256, and writes the files, ``LICENSE`` and ``manifest.json`` to ``cache_root()/keypoints/``.

:func:`graph_path` looks in the shipped folder, then in the cache, and checks the sha256 before a graph is
used, so a truncated or altered file is refused with a message that says how to restore it.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.resources
import json
import logging
import subprocess
import sys
import tempfile
import threading
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from dcrn.models.errors import DcrnError
from dcrn.models.files import atomic_write, cache_root

log = logging.getLogger(__name__)

MEDIAPIPE_VERSION = "0.10.14"
LICENSE_MEMBER = f"mediapipe-{MEDIAPIPE_VERSION}.dist-info/LICENSE"
MANIFEST = "manifest.json"


class KeypointGraphMissing(DcrnError, FileNotFoundError):
    """A keypoint graph is neither shipped nor fetched."""


class KeypointGraphCorrupt(DcrnError, ValueError):
    """A keypoint graph file does not have the sha256 it was recorded with."""


@dataclass(frozen=True)
class GraphFile:
    name: str  # file name, e.g. "pose_detection.tflite"
    member: str  # path inside the mediapipe wheel
    sha256: str  # of the file as it is in mediapipe 0.10.14
    size: int  # bytes
    shipped: bool  # in models/shipped/keypoints/ (else only fetched)


_MODULES = "mediapipe/modules"
GRAPHS: dict[str, GraphFile] = {
    g.name: g
    for g in (
        GraphFile(
            "pose_detection.tflite",
            f"{_MODULES}/pose_detection/pose_detection.tflite",
            "9ba9dd3d42efaaba86b4ff0122b06f29c4122e756b329d89dca1e297fd8f866c",
            2959046,
            True,
        ),
        GraphFile(
            "pose_landmark_full.tflite",
            f"{_MODULES}/pose_landmark/pose_landmark_full.tflite",
            "e9a5c5cb17f736fafd4c2ec1da3b3d331d6edbe8a0d32395855aeb2cdfd64b9f",
            6440512,
            True,
        ),
        GraphFile(
            "palm_detection_lite.tflite",
            f"{_MODULES}/palm_detection/palm_detection_lite.tflite",
            "e9a4aaddf90dda56a87235303cf00e4c2d3fb28725f68fd88772997dac905c18",
            1985440,
            True,
        ),
        GraphFile(
            "hand_landmark_lite.tflite",
            f"{_MODULES}/hand_landmark/hand_landmark_lite.tflite",
            "048edd3645c9bf7397d19a9f6e3a42957d6e414c9bea6598030a2e9b624156e6",
            2071597,
            True,
        ),
        GraphFile(
            "palm_detection_full.tflite",
            f"{_MODULES}/palm_detection/palm_detection_full.tflite",
            "1b14e9422c6ad006cde6581a46c8b90dd573c07ab7f3934b5589e7cea3f89a54",
            2339846,
            False,
        ),
        GraphFile(
            "hand_landmark_full.tflite",
            f"{_MODULES}/hand_landmark/hand_landmark_full.tflite",
            "11c272b891e1a99ab034208e23937a8008388cf11ed2a9d776ed3d01d0ba00e3",
            5478917,
            False,
        ),
    )
}

_verified: set[tuple[str, int, int]] = set()  # (path, size, mtime_ns) whose sha256 was checked in this process
_verified_lock = threading.Lock()


def shipped_dir() -> Path:
    """``models/shipped/keypoints/`` of the installed package."""
    return Path(str(importlib.resources.files("dcrn.models"))) / "shipped" / "keypoints"


def fetched_dir(cache_dir: str | Path | None = None) -> Path:
    """Where ``fetch`` writes graphs: ``cache_root()/keypoints``."""
    return cache_root(cache_dir) / "keypoints"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def graph_path(name: str, *, cache_dir: str | Path | None = None) -> Path:
    """The checked path of the graph ``name`` (e.g. ``"pose_detection.tflite"``): shipped, else fetched.

    Raises :class:`KeypointGraphMissing` when neither folder has it and :class:`KeypointGraphCorrupt`
    when the file found does not have its recorded sha256."""
    graph = GRAPHS.get(name)
    if graph is None:
        raise KeypointGraphMissing(f"no keypoint graph named {name!r}; known: {', '.join(sorted(GRAPHS))}")
    for folder in (shipped_dir(), fetched_dir(cache_dir)):
        path = folder / name
        if path.is_file():
            _check(path, graph)
            return path
    raise KeypointGraphMissing(
        f"keypoint graph {name} is neither in {shipped_dir()} nor in {fetched_dir(cache_dir)}; obtain it with "
        f"`python -m dcrn.engine.keypoints.model_files fetch{' --all' if not graph.shipped else ''}`"
    )


def _check(path: Path, graph: GraphFile) -> None:
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    with _verified_lock:
        if key in _verified:
            return
    actual = sha256_of(path)
    if actual != graph.sha256:
        raise KeypointGraphCorrupt(
            f"{path} has sha256 {actual[:16]}..., expected {graph.sha256[:16]}... (mediapipe {MEDIAPIPE_VERSION}); "
            "restore it with `python -m dcrn.engine.keypoints.model_files fetch`"
        )
    with _verified_lock:
        _verified.add(key)


def extract(wheel: Path, out: Path, names: Iterable[str]) -> dict:
    """Read the graphs ``names`` out of the mediapipe wheel into ``out`` (with its LICENSE and a manifest);
    returns the manifest. Each file is checked against its recorded sha256 before it is written."""
    names = list(names)
    entries = []
    with zipfile.ZipFile(wheel) as archive:
        for name in names:
            graph = GRAPHS[name]
            data = archive.read(graph.member)
            actual = hashlib.sha256(data).hexdigest()
            if actual != graph.sha256:
                message = f"{graph.member} in {wheel.name} has sha256 {actual}, expected {graph.sha256}"
                raise KeypointGraphCorrupt(message)
            atomic_write(out / name, data)
            entries.append(asdict(graph))
            log.info("wrote %s (%.1f MiB)", out / name, len(data) / 2**20)
        licence = archive.read(LICENSE_MEMBER).decode("utf-8")
    atomic_write(out / "LICENSE", licence)
    manifest = {
        "source": f"PyPI mediapipe=={MEDIAPIPE_VERSION}",
        "wheel": wheel.name,
        "wheel_sha256": sha256_of(wheel),
        "licence": "Apache-2.0 (LICENSE, read from the wheel's dist-info)",
        "files": entries,
    }
    atomic_write(out / MANIFEST, json.dumps(manifest, indent=2) + "\n")
    return manifest


def download_wheel(folder: Path) -> Path:
    """``pip download --no-deps mediapipe==0.10.14`` into ``folder`` (a set-up step: the registry is needed)."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
    cmd += [f"mediapipe=={MEDIAPIPE_VERSION}", "-d", str(folder)]
    log.info("running %s", " ".join(cmd))
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    wheels = sorted(folder.glob(f"mediapipe-{MEDIAPIPE_VERSION}-*.whl"))
    if not wheels:
        raise KeypointGraphMissing(f"pip download left no mediapipe {MEDIAPIPE_VERSION} wheel in {folder}")
    return wheels[0]


def fetch(
    *, wheel: Path | None = None, out: Path | None = None, all_graphs: bool = False, cache_dir: str | Path | None = None
) -> dict:
    """Obtain the graphs (the shipped four, or all six) from a wheel at hand or from PyPI into ``out``
    (default ``cache_root()/keypoints``); returns the manifest written there."""
    names = [g.name for g in GRAPHS.values() if all_graphs or g.shipped]
    out = out or fetched_dir(cache_dir)
    if wheel is not None:
        return extract(wheel, out, names)
    with tempfile.TemporaryDirectory(prefix="dcrn-mediapipe-") as tmp:
        return extract(download_wheel(Path(tmp)), out, names)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m dcrn.engine.keypoints.model_files", description="Obtain or check the keypoint graphs."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    get = sub.add_parser("fetch", help=f"obtain the graphs from the mediapipe {MEDIAPIPE_VERSION} wheel")
    get.add_argument("--wheel", type=Path, help="a mediapipe wheel already downloaded (else pip downloads one)")
    get.add_argument("--out", type=Path, help="destination folder (default: the cache root's keypoints/)")
    get.add_argument("--all", action="store_true", help="also the full palm and hand models (not shipped)")
    sub.add_parser("verify", help="check every graph found (shipped or fetched) against its sha256")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.command == "fetch":
        manifest = fetch(wheel=args.wheel, out=args.out, all_graphs=args.all)
        log.info("%d graphs from %s", len(manifest["files"]), manifest["wheel"])
        return 0
    failed = 0
    for name in GRAPHS:
        try:
            log.info("ok      %s", graph_path(name))
        except KeypointGraphMissing:
            log.info("absent  %s", name)
        except KeypointGraphCorrupt as exc:
            failed += 1
            log.error("CORRUPT %s", exc)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
