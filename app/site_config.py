"""The site config: one YAML file for a box's cameras, sinks, evidence and engine (``dcrn run --config``).

    cameras:
      - name: door
        source: rtsp://10.0.0.5/stream1
        model: default
        thresholds: {fight: 0.8}
        roi: [0.5, 0.0, 0.5, 1.0]        # x, y, w, h: fractions of the picture, or whole pixels
        evidence: on
    sinks: [stdout, "jsonl:/var/log/dcrn/events.jsonl?max_mb=100"]
    evidence: {dir: /var/lib/dcrn/evidence, pre_s: 3, post_s: 2, max_mb: 5000, max_age_days: 30}
    backend: auto
    device: auto
    threads: 2

:func:`load_site_config` reads and checks all of it before anything starts: an unknown key, a value of
the wrong type, a number that is not finite or out of range, a duplicate camera, an unknown sink or a
path that cannot be used is one :class:`SiteConfigError` line naming the file, the line and the key.
No torch here: ``dcrn config check`` and ``--help`` stay fast. docs/DEPLOY.md has a full example.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from dcrn.app.argtypes import check_writable
from dcrn.models.errors import ConfigError

MAX_BYTES = 1_000_000  # a site config larger than this is a mistake (or not a config)
MAX_CAMERAS = 256
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")  # also a file-name part of evidence clips
DEVICE = re.compile(r"^(auto|cpu|cuda(:\d{1,2})?)$")
BACKENDS = ("auto", "torch", "onnxruntime", "openvino", "tensorrt")
MAX_PIXELS = 100_000
MAX_ROLL_S = 600.0  # pre- and post-roll of evidence clips, seconds

TOP_KEYS = ("cameras", "sinks", "evidence", "model", "backend", "device", "threads", "people")
CAMERA_KEYS = ("name", "source", "model", "thresholds", "roi", "evidence", "people")
EVIDENCE_KEYS = ("dir", "pre_s", "post_s", "max_mb", "max_age_days")


class SiteConfigError(ConfigError):
    """A site config that cannot be used; the message is one line: ``FILE, line N: KEY: what is wrong``."""


@dataclass
class Camera:
    name: str  # stream name in every record (unique in the file)
    source: str  # camera index, rtsp:// / http(s):// URL, video file or synthetic:
    model: str | None = None  # checkpoint path or shipped name (None: the file's model, else --model)
    thresholds: dict[str, float] = field(default_factory=dict)  # start threshold per class, as --class-threshold
    roi: tuple[float, float, float, float] | None = None  # x, y, w, h: the part of the picture the model sees
    roi_pixels: bool = False  # roi in whole pixels (else fractions of the picture)
    evidence: bool = True  # clips and snapshots of this camera's actions (when an evidence dir is set)
    people: int | None = None  # body models: people followed on this camera (None: the file's, else --people)
    line: int = 0  # where the camera starts in the file


@dataclass
class EvidenceSettings:
    dir: str | None = None  # clips and snapshots go here (None: no evidence unless --evidence)
    pre_s: float | None = None  # pre-roll, seconds (None: the engine's default, 3)
    post_s: float | None = None  # post-roll, seconds (None: 2)
    max_mb: float | None = None  # retention by total size, MB (None: 5000)
    max_age_days: float | None = None  # retention by age, days (None: 30)


@dataclass
class SiteConfig:
    path: str
    cameras: list[Camera]
    sinks: list[str] = field(default_factory=list)  # sink specs as --sink takes them (empty: stdout)
    evidence: EvidenceSettings = field(default_factory=EvidenceSettings)
    model: str | None = None  # every camera's model unless it names its own
    backend: str | None = None  # None: --backend (default auto)
    device: str | None = None  # None: --device (default auto)
    threads: int | None = None  # None: --threads (default 1)
    people: int | None = None  # every camera's people followed unless it says; None: --people (default 1)

    def summary(self) -> list[str]:
        """Human-readable lines: what ``dcrn config check`` prints."""
        lines = [f"{self.path}: {len(self.cameras)} camera(s)"]
        for cam in self.cameras:
            roi = "" if cam.roi is None else f", roi {list(cam.roi)}{' px' if cam.roi_pixels else ''}"
            thresholds = f", thresholds {cam.thresholds}" if cam.thresholds else ""
            people = cam.people or self.people
            followed = f", up to {people} people" if people and people > 1 else ""
            lines.append(
                f"  {cam.name}: {_shown(cam.source)}, model {cam.model or self.model or 'default'}"
                f"{thresholds}{roi}{followed}, evidence {'on' if cam.evidence and self.evidence.dir else 'off'}"
            )
        lines.append(f"  sinks: {', '.join(_shown(s) for s in self.sinks) or 'stdout'}")
        ev = self.evidence
        if ev.dir:
            lines.append(
                f"  evidence: {ev.dir} (pre {ev.pre_s if ev.pre_s is not None else 3} s, "
                f"post {ev.post_s if ev.post_s is not None else 2} s)"
            )
        lines.append(
            f"  backend {self.backend or 'auto'}, device {self.device or 'auto'}, "
            f"threads {self.threads if self.threads is not None else 1}"
        )
        return lines


def _shown(text: str) -> str:
    from dcrn.engine.redact import redact

    return redact(text)


# -- reading: YAML with the line of every key -------------------------------------------------------------


class _Map(dict):
    """A YAML mapping that remembers its own line and each key's line."""

    line = 0
    lines: dict


class _Seq(list):
    """A YAML sequence that remembers its own line and each item's line."""

    line = 0
    lines: list


def _loader():
    import yaml

    class Loader(yaml.SafeLoader):  # safe: plain data only, no Python objects
        pass

    def mapping(loader: Loader, node) -> _Map:
        if not isinstance(node, yaml.MappingNode):
            raise SiteConfigError(f"line {node.start_mark.line + 1}: expected a mapping")
        loader.flatten_mapping(node)
        out = _Map()
        out.line, out.lines = node.start_mark.line + 1, {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if not isinstance(key, str | int | float | bool) or key is None:
                raise SiteConfigError(f"line {line}: a key must be a plain word")
            if key in out:
                raise SiteConfigError(f"line {line}: {key}: given twice")
            out[key] = loader.construct_object(value_node, deep=True)
            out.lines[key] = line
        return out

    def sequence(loader: Loader, node) -> _Seq:
        out = _Seq(loader.construct_object(child, deep=True) for child in node.value)
        out.line, out.lines = node.start_mark.line + 1, [child.start_mark.line + 1 for child in node.value]
        return out

    Loader.add_constructor("tag:yaml.org,2002:map", mapping)
    Loader.add_constructor("tag:yaml.org,2002:seq", sequence)
    return Loader


def read_yaml(path: Path) -> object:
    """The file's one YAML document, mappings and lists with their lines; one-line errors."""
    import yaml

    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise SiteConfigError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise SiteConfigError(f"{path}: is a folder, not a config file") from None
    except OSError as exc:
        raise SiteConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if len(data) > MAX_BYTES:
        raise SiteConfigError(f"{path}: {len(data)} bytes, larger than a site config can be ({MAX_BYTES})")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise SiteConfigError(f"{path}: not a text file (UTF-8 YAML expected)") from None
    try:
        return yaml.load(text, Loader=_loader())  # a SafeLoader subclass: plain data only
    except SiteConfigError as exc:
        raise SiteConfigError(f"{path}, {exc}") from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f", line {mark.line + 1}" if mark is not None else ""
        raise SiteConfigError(f"{path}{where}: not valid YAML: {exc.problem or exc.context}") from None
    except yaml.YAMLError as exc:
        raise SiteConfigError(f"{path}: not valid YAML: {str(exc).splitlines()[0]}") from None


# -- checking ---------------------------------------------------------------------------------------------


class _Checker:
    def __init__(self, path: Path) -> None:
        self.path = path

    def fail(self, line: int, key: str, problem: str) -> SiteConfigError:
        return SiteConfigError(f"{self.path}, line {line}: {key}: {problem}")

    def mapping(self, value: object, line: int, key: str, allowed: tuple[str, ...]) -> _Map:
        if not isinstance(value, _Map):
            raise self.fail(line, key, f"expected a mapping of {', '.join(allowed)}, got {_kind(value)}")
        for name in value:
            if name not in allowed:
                where = f"{key}." if key != "file" else ""
                raise self.fail(value.lines[name], f"{where}{name}", f"unknown key (known: {', '.join(allowed)})")
        return value

    def text(self, value: object, line: int, key: str) -> str:
        if isinstance(value, bool) or not isinstance(value, str | int) or not str(value).strip():
            raise self.fail(line, key, f"expected a non-empty text, got {_kind(value)}")
        return str(value).strip()

    def number(
        self, value: object, line: int, key: str, low: float, high: float, *, low_open: bool = False, whole=False
    ) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.fail(line, key, f"expected a number, got {_kind(value)}")
        if not math.isfinite(value):
            raise self.fail(line, key, f"expected a finite number, got {value}")
        if whole and value != int(value):
            raise self.fail(line, key, f"expected a whole number, got {value}")
        if (value <= low if low_open else value < low) or value > high:
            interval = f"{'(' if low_open else '['}{low:g}, {high:g}]"
            raise self.fail(line, key, f"expected a number in {interval}, got {value:g}")
        return int(value) if whole else float(value)


def _kind(value: object) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return f"{type(value).__name__} {value!r}"[:80]


def load_site_config(path: str | Path, *, check_paths: bool = True) -> SiteConfig:
    """Read and check a site config; :class:`SiteConfigError` (one line) on the first problem.

    ``check_paths``: also check that model files exist, file sources exist and the evidence folder can
    be written (``dcrn config check`` and ``dcrn run`` both do).
    """
    path = Path(path).expanduser()
    data = read_yaml(path)
    check = _Checker(path)
    if data is None:
        raise check.fail(1, "file", "empty: a mapping with cameras: is needed")
    top = check.mapping(data, 1, "file", TOP_KEYS)
    if "cameras" not in top:
        raise check.fail(top.line, "cameras", "missing: list the cameras (name, source) to run")
    site = SiteConfig(path=str(path), cameras=[])
    for key in ("model", "backend", "device"):
        if key in top:
            setattr(site, key, check.text(top[key], top.lines[key], key))
    if site.backend is not None and site.backend not in BACKENDS:
        raise check.fail(
            top.lines["backend"], "backend", f"expected one of {', '.join(BACKENDS)}, got {site.backend!r}"
        )
    if site.device is not None and not DEVICE.match(site.device):
        raise check.fail(top.lines["device"], "device", f"expected auto, cpu or cuda[:N], got {site.device!r}")
    if "threads" in top:
        site.threads = int(check.number(top["threads"], top.lines["threads"], "threads", 0, 1024, whole=True))
    if "people" in top:
        site.people = _people(check, top, "people")
    if site.model is not None and check_paths:
        _check_model(check, site.model, top.lines["model"], "model")
    site.sinks = _sinks(check, top)
    site.evidence = _evidence(check, top, check_paths=check_paths)
    site.cameras = _cameras(check, top, check_paths=check_paths)
    return site


def _sinks(check: _Checker, top: _Map) -> list[str]:
    from dcrn.engine.errors import SinkError
    from dcrn.engine.sinks.factory import parse_sink  # no torch: parses the spec, opens nothing

    if "sinks" not in top:
        return []
    value, line = top["sinks"], top.lines["sinks"]
    if isinstance(value, str):
        value = _Seq([value])
        value.line, value.lines = line, [line]
    if not isinstance(value, _Seq) or not value:
        raise check.fail(line, "sinks", f"expected a list of sink specs, got {_kind(value)}")
    specs = []
    for index, (item, item_line) in enumerate(zip(value, value.lines, strict=True)):
        spec = check.text(item, item_line, f"sinks[{index}]")
        try:
            parse_sink(spec)
        except SinkError as exc:
            raise check.fail(item_line, f"sinks[{index}]", str(exc)) from None
        specs.append(spec)
    return specs


def _evidence(check: _Checker, top: _Map, *, check_paths: bool) -> EvidenceSettings:
    settings = EvidenceSettings()
    if "evidence" not in top:
        return settings
    ev = check.mapping(top["evidence"], top.lines["evidence"], "evidence", EVIDENCE_KEYS)
    if "dir" in ev:
        settings.dir = check.text(ev["dir"], ev.lines["dir"], "evidence.dir")
        if check_paths:
            try:
                check_writable(settings.dir, folder=True)
            except ValueError as exc:
                raise check.fail(ev.lines["dir"], "evidence.dir", str(exc)) from None
    limits = {"pre_s": (0.0, MAX_ROLL_S, False), "post_s": (0.0, MAX_ROLL_S, False)}
    limits |= {"max_mb": (0.0, 1e7, True), "max_age_days": (0.0, 36500.0, True)}
    for key, (low, high, low_open) in limits.items():
        if key in ev:
            value = check.number(ev[key], ev.lines[key], f"evidence.{key}", low, high, low_open=low_open)
            setattr(settings, key, value)
    return settings


def _cameras(check: _Checker, top: _Map, *, check_paths: bool) -> list[Camera]:
    value, line = top["cameras"], top.lines["cameras"]
    if not isinstance(value, _Seq) or not value:
        raise check.fail(line, "cameras", f"expected a list of cameras (name, source, ...), got {_kind(value)}")
    if len(value) > MAX_CAMERAS:
        raise check.fail(line, "cameras", f"at most {MAX_CAMERAS} cameras, got {len(value)}")
    cameras: list[Camera] = []
    names: dict[str, int] = {}
    for index, (item, item_line) in enumerate(zip(value, value.lines, strict=True)):
        key = f"cameras[{index}]"
        cam = check.mapping(item, item_line, key, CAMERA_KEYS)
        for required in ("name", "source"):
            if required not in cam:
                raise check.fail(cam.line, f"{key}.{required}", "missing")
        name = check.text(cam["name"], cam.lines["name"], f"{key}.name")
        if not NAME.match(name):
            raise check.fail(
                cam.lines["name"], f"{key}.name", f"use letters, digits, '_', '.', '-' (at most 64), got {name!r}"
            )
        if name in names:
            raise check.fail(cam.lines["name"], f"{key}.name", f"{name!r} is already the name of line {names[name]}")
        names[name] = cam.lines["name"]
        key = f"cameras.{name}"
        camera = Camera(
            name=name, source=check.text(cam["source"], cam.lines["source"], f"{key}.source"), line=cam.line
        )
        if check_paths:
            _check_source(check, camera.source, cam.lines["source"], f"{key}.source")
        if "model" in cam:
            camera.model = check.text(cam["model"], cam.lines["model"], f"{key}.model")
            if check_paths:
                _check_model(check, camera.model, cam.lines["model"], f"{key}.model")
        if "thresholds" in cam:
            camera.thresholds = _thresholds(check, cam["thresholds"], cam.lines["thresholds"], f"{key}.thresholds")
        if "roi" in cam:
            camera.roi, camera.roi_pixels = _roi(check, cam["roi"], cam.lines["roi"], f"{key}.roi")
        if "people" in cam:
            camera.people = _people(check, cam, f"{key}.people")
        if "evidence" in cam:
            if not isinstance(cam["evidence"], bool):
                raise check.fail(
                    cam.lines["evidence"], f"{key}.evidence", f"expected on or off, got {_kind(cam['evidence'])}"
                )
            camera.evidence = cam["evidence"]
        cameras.append(camera)
    return cameras


def _people(check: _Checker, where: _Map, key: str) -> int:
    from dcrn.engine.run.config import MAX_PEOPLE

    return int(check.number(where["people"], where.lines["people"], key, 1, MAX_PEOPLE, whole=True))


def _thresholds(check: _Checker, value: object, line: int, key: str) -> dict[str, float]:
    if not isinstance(value, _Map):
        raise check.fail(line, key, f"expected a mapping of LABEL: PROBABILITY, got {_kind(value)}")
    out = {}
    for label, probability in value.items():
        where = value.lines[label]
        label = check.text(label, where, f"{key}")
        out[label] = check.number(probability, where, f"{key}.{label}", 0.0, 1.0)
    return out


def _roi(check: _Checker, value: object, line: int, key: str) -> tuple[tuple[float, float, float, float], bool]:
    if not isinstance(value, _Seq) or len(value) != 4:
        raise check.fail(line, key, f"expected [x, y, w, h], got {_kind(value)}")
    numbers = [check.number(v, line, key, 0.0, MAX_PIXELS) for v in value]
    x, y, w, h = numbers
    if w <= 0 or h <= 0:
        raise check.fail(line, key, f"width and height must be > 0, got {w:g} x {h:g}")
    if all(v <= 1.0 for v in numbers):  # fractions of the picture
        if x + w > 1.0 + 1e-9 or y + h > 1.0 + 1e-9:
            raise check.fail(
                line, key, f"the region must lie inside the picture (x + w <= 1, y + h <= 1), got {numbers}"
            )
        return (x, y, w, h), False
    if any(v != int(v) for v in numbers):
        raise check.fail(line, key, f"fractions must lie in 0..1 (or give whole pixels), got {numbers}")
    return (x, y, w, h), True


def _check_model(check: _Checker, model: str, line: int, key: str) -> None:
    """A model that looks like a file must be one; a bare name is a shipped model (checked when it loads)."""
    looks_like_file = "/" in model or "\\" in model or model.endswith((".pt", ".pth", ".ckpt"))
    if looks_like_file and not Path(model).expanduser().is_file():
        raise check.fail(line, key, f"no checkpoint file {model}")


def _check_source(check: _Checker, source: str, line: int, key: str) -> None:
    """A source that is neither a camera index, a URL nor synthetic: is a file, and must exist."""
    if source.isdigit() or source.startswith(("synthetic:", "/dev/video")) or re.match(r"^[A-Za-z][\w+.-]+://", source):
        return
    if not Path(source).expanduser().is_file():
        raise check.fail(line, key, f"no such file {source}")
