"""Procedural synthetic actions: classes that differ only in motion and temporal order.

One actor (a random polygon with a random two-colour fill) does one thing per segment: stands still,
moves left / right / up / down, grows, shrinks, rotates clockwise / anticlockwise, or blinks. Everything
that should not matter is random: background colour field and texture, static clutter, small wandering
distractors, the actor's shape, colours, size, position and speed, camera jitter, slow lighting drift
and sensor noise. Any single frame could belong to most classes; only the change between frames tells
them apart, and time-reversing a clip turns each directional class into its opposite
(``render_clip(OPPOSITE[c], s, T) == render_clip(c, s, T)[::-1]``, exactly).

Two forms share one renderer:

* :func:`render_clip` — one clip of one class from a fresh scene, deterministic for a seed.
* :class:`SyntheticActionStream` — an endless stream in which segments of random classes follow each
  other with the actor carrying its state across the change; ``read()`` gives each frame and its label.

The actor is large (12-30% of the frame's shorter side, with a rim that the smaller clutter lacks) and
stays in view: a clip starts it where its whole path fits in the central box of the frame, and a stream
passes over an action that would soon carry it out (or past its size range) and ends one that reaches
the edge. Only a path longer than the box (a very long clip) wraps around the frame edges.
Frames are (H, W, 3) uint8 RGB; rendering a 240x320 frame takes well under a millisecond.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

CLASSES: tuple[str, ...] = (
    "still",
    "move_left",
    "move_right",
    "move_up",
    "move_down",
    "grow",
    "shrink",
    "rotate_cw",
    "rotate_ccw",
    "blink",
)
# Time reversal maps each class to this one (still and blink map to themselves).
OPPOSITE: dict[str, str] = {
    "still": "still",
    "move_left": "move_right",
    "move_right": "move_left",
    "move_up": "move_down",
    "move_down": "move_up",
    "grow": "shrink",
    "shrink": "grow",
    "rotate_cw": "rotate_ccw",
    "rotate_ccw": "rotate_cw",
    "blink": "blink",
}
# A horizontal mirror maps each class to this one (the flip map for augmentation).
HFLIP: dict[str, str] = {
    **{name: name for name in CLASSES},
    "move_left": "move_right",
    "move_right": "move_left",
    "rotate_cw": "rotate_ccw",
    "rotate_ccw": "rotate_cw",
}
# Of each time-reversal pair, the member whose motion is simulated; the other plays it backwards.
_CANONICAL = ("move_left", "move_up", "grow", "rotate_cw")

_SHIFT = 4  # sub-pixel bits for cv2 drawing: slow motion moves smoothly, not in whole-pixel jumps
_JITTER = 4  # camera-jitter margin in pixels (the background is rendered this much larger)
_NOISE_BANK = 4  # pre-rendered noise images, picked per frame with a random offset
_RADIUS = (0.12, 0.3)  # the actor's radius, as a fraction of the frame's shorter side
_CLUTTER_RADIUS = (0.025, 0.07)  # static clutter, the same kind of shapes as the actor but smaller
_FLOATER_RADIUS = (0.012, 0.03)  # small wandering distractors
_BOX = (0.1, 0.9)  # the actor's centre stays in this part of the frame while it moves (fractions)
_MIN_ROOM_S = 0.5  # in a stream, an action that would leave the box within this long is not chosen


@dataclass
class _Pose:
    """The actor's state in one frame (positions in output pixels, y down)."""

    x: float
    y: float
    log_r: float  # log of the actor's radius in pixels
    angle: float  # radians; increasing angle turns clockwise on screen
    visible: bool = True


@dataclass
class _Motion:
    """What the actor does in a segment, as rates per second."""

    vx: float = 0.0
    vy: float = 0.0
    growth: float = 0.0  # d log_r / dt
    spin: float = 0.0  # d angle / dt
    blink_period: float = 0.0  # seconds; 0: no blinking
    blink_phase: float = 0.0  # in [0, 1): position in the blink cycle at the segment's first frame


def class_index(cls: int | str) -> int:
    if isinstance(cls, str):
        if cls not in CLASSES:
            raise ValueError(f"unknown synthetic class {cls!r}; known: {', '.join(CLASSES)}")
        return CLASSES.index(cls)
    if not 0 <= int(cls) < len(CLASSES):
        raise ValueError(f"synthetic class index must be in [0, {len(CLASSES)}), got {cls}")
    return int(cls)


class _Scene:
    """Static appearance (background, clutter, actor shape and colours, noise) and the renderer."""

    def __init__(self, rng: np.random.Generator, size: tuple[int, int]) -> None:
        self.height, self.width = size
        self.background = _background(rng, self.height + 2 * _JITTER, self.width + 2 * _JITTER)
        bg_mean = self.background.reshape(-1, 3).mean(axis=0)
        self.actor_shape = _polygon(rng)  # (N, 2) unit-radius vertices
        self.actor_color = _contrasting_color(rng, bg_mean)
        self.actor_accent = _contrasting_color(rng, self.actor_color)
        # A dark or light rim around the actor (whichever its fill contrasts with more) sets it apart
        # from the clutter, which is smaller and has no rim.
        self.actor_rim = (20, 20, 20) if sum(self.actor_color) > 3 * 110 else (235, 235, 235)
        # An off-centre accent patch makes rotation visible even for near-symmetric outlines.
        self.accent_shape = _polygon(rng, vertices=3) * 0.35 + rng.uniform(-0.3, 0.3, size=2) + (0.25, 0.0)
        self.r_min = math.log(_RADIUS[0] * min(size))
        self.r_max = math.log(_RADIUS[1] * min(size))
        self.floaters = [
            (_polygon(rng) * rng.uniform(*_FLOATER_RADIUS) * min(size), _random_color(rng))
            for _ in range(rng.integers(0, 3))
        ]
        sigma = rng.uniform(0.0, 4.0)
        shape = (self.height + 16, self.width + 16, 3)
        self.noise_pos = [np.clip(np.abs(rng.normal(0, sigma, shape)), 0, 255).astype(np.uint8) for _ in range(2)]
        self.noise_neg = [np.clip(np.abs(rng.normal(0, sigma, shape)), 0, 255).astype(np.uint8) for _ in range(2)]

    def render(
        self,
        pose: _Pose,
        jitter: tuple[float, float],
        floaters: np.ndarray,
        gain: float,
        noise: tuple[int, int, int],
    ) -> np.ndarray:
        jx, jy = round(jitter[0]), round(jitter[1])
        frame = self.background[_JITTER + jy : _JITTER + jy + self.height, _JITTER + jx : _JITTER + jx + self.width]
        frame = np.ascontiguousarray(frame)  # (H, W, 3) uint8
        for (shape, color), (fx, fy) in zip(self.floaters, floaters, strict=True):
            _fill(frame, shape, color, (fx - jx, fy - jy))
        if pose.visible:
            radius = math.exp(pose.log_r)
            rot = np.array(
                [[math.cos(pose.angle), -math.sin(pose.angle)], [math.sin(pose.angle), math.cos(pose.angle)]]
            )
            body = self.actor_shape @ rot.T * radius
            accent = self.accent_shape @ rot.T * radius
            # Draw the actor where it is and, near an edge, where it wraps around to (a torus).
            for dx in (-self.width, 0, self.width):
                for dy in (-self.height, 0, self.height):
                    cx, cy = pose.x - jx + dx, pose.y - jy + dy
                    if -2 * radius < cx < self.width + 2 * radius and -2 * radius < cy < self.height + 2 * radius:
                        _fill(frame, body * 1.15, self.actor_rim, (cx, cy))
                        _fill(frame, body, self.actor_color, (cx, cy))
                        _fill(frame, accent, self.actor_accent, (cx, cy))
        if gain != 1.0:
            frame = cv2.convertScaleAbs(frame, alpha=gain)
        which, ox, oy = noise
        cv2.add(frame, self.noise_pos[which % 2][oy : oy + self.height, ox : ox + self.width], dst=frame)
        cv2.subtract(frame, self.noise_neg[which // 2][oy : oy + self.height, ox : ox + self.width], dst=frame)
        return frame


class _World:
    """A scene plus the nuisance processes that run regardless of the action (jitter, light, floaters)."""

    def __init__(self, rng: np.random.Generator, size: tuple[int, int], fps: float) -> None:
        self.rng = rng
        self.fps = fps
        self.scene = _Scene(rng, size)
        h, w = size
        self.pose = _Pose(
            x=rng.uniform(_BOX[0] * w, _BOX[1] * w),
            y=rng.uniform(_BOX[0] * h, _BOX[1] * h),
            log_r=rng.uniform(self.scene.r_min, self.scene.r_max),
            angle=0.0,
        )
        self.pose.angle = rng.uniform(0, 2 * math.pi)
        self.jitter = np.zeros(2)
        self.jitter_scale = rng.uniform(0.0, 1.0)
        self.floater_pos = rng.uniform((0, 0), (w, h), size=(len(self.scene.floaters), 2))
        self.floater_vel = rng.normal(0, 8.0, size=(len(self.scene.floaters), 2))
        self.light_amp = rng.uniform(0.0, 0.15)
        self.light_period = rng.uniform(3.0, 8.0)
        self.light_phase = rng.uniform(0, 2 * math.pi)
        self.base_gain = rng.uniform(0.8, 1.15)
        self.t = 0

    def nuisance(self) -> tuple[tuple[float, float], np.ndarray, float, tuple[int, int, int]]:
        """Advance jitter, floaters and lighting by one frame; return this frame's values."""
        rng, dt = self.rng, 1.0 / self.fps
        self.jitter = np.clip(0.9 * self.jitter + rng.normal(0, self.jitter_scale * 0.3, 2), -_JITTER / 2, _JITTER / 2)
        self.floater_vel = 0.95 * self.floater_vel + rng.normal(0, 2.0, self.floater_vel.shape)
        self.floater_pos = self.floater_pos + self.floater_vel * dt
        gain = self.base_gain * (1 + self.light_amp * math.sin(2 * math.pi * self.t * dt / self.light_period))
        self.t += 1
        noise = (int(rng.integers(0, 4)), int(rng.integers(0, 16)), int(rng.integers(0, 16)))
        return (float(self.jitter[0]), float(self.jitter[1])), self.floater_pos.copy(), gain, noise

    def random_motion(self, cls: int, *, start_visible: bool = False) -> _Motion:
        """Rates for one segment of class ``cls`` (speeds scale with the frame size)."""
        rng, name = self.rng, CLASSES[cls]
        h, w = self.scene.height, self.scene.width
        motion = _Motion()
        if name in ("move_left", "move_right"):
            motion.vx = rng.uniform(0.3, 0.5) * w * (-1 if name == "move_left" else 1)
        elif name in ("move_up", "move_down"):
            motion.vy = rng.uniform(0.3, 0.5) * h * (-1 if name == "move_up" else 1)
        elif name in ("grow", "shrink"):
            motion.growth = rng.uniform(0.35, 0.6) * (1 if name == "grow" else -1)
        elif name in ("rotate_cw", "rotate_ccw"):
            motion.spin = math.radians(rng.uniform(120, 240)) * (1 if name == "rotate_cw" else -1)
        elif name == "blink":
            motion.blink_period = rng.uniform(0.25, 0.6)
            # In a stream the actor is visible when the segment starts; the first "off" comes soon.
            motion.blink_phase = rng.uniform(0.2, 0.5) if start_visible else rng.uniform(0.0, 1.0)
        return motion

    def _bounds(self, motion: _Motion) -> list[tuple[str, float, float, float]]:
        """(pose attribute, rate, low, high) for each pose value ``motion`` changes and the range it keeps to."""
        scene = self.scene
        axes = (
            ("x", motion.vx, _BOX[0] * scene.width, _BOX[1] * scene.width),
            ("y", motion.vy, _BOX[0] * scene.height, _BOX[1] * scene.height),
            ("log_r", motion.growth, scene.r_min, scene.r_max),
        )
        return [axis for axis in axes if axis[1]]

    def room(self, motion: _Motion) -> float:
        """Seconds ``motion`` can run from the current pose before the actor leaves the box or size range."""
        limits = [math.inf]
        for attr, rate, low, high in self._bounds(motion):
            value = getattr(self.pose, attr)
            limits.append(max(0.0, (high - value) / rate if rate > 0 else (low - value) / rate))
        return min(limits)

    def place_for(self, motion: _Motion, seconds: float) -> None:
        """Move the actor's start so that ``motion`` stays in the box (and size range) for ``seconds``.

        A path longer than the box starts at its far end and wraps around the frame edges.
        """
        for attr, rate, low, high in self._bounds(motion):
            travel = min(abs(rate) * seconds, high - low)
            start = self.rng.uniform(low, high - travel)
            setattr(self.pose, attr, start if rate > 0 else start + travel)

    def advance(self, motion: _Motion, frame_in_segment: int) -> _Pose:
        """The actor's pose for this frame of the segment, then move it on by one frame."""
        pose, dt = self.pose, 1.0 / self.fps
        scene = self.scene
        visible = True
        if motion.blink_period:
            cycle = (motion.blink_phase + frame_in_segment * dt / motion.blink_period) % 1.0
            visible = cycle < 0.5
        current = _Pose(pose.x, pose.y, pose.log_r, pose.angle, visible)
        pose.x = (pose.x + motion.vx * dt) % scene.width
        pose.y = (pose.y + motion.vy * dt) % scene.height
        span = scene.r_max - scene.r_min
        pose.log_r = scene.r_min + (pose.log_r - scene.r_min + motion.growth * dt) % span
        pose.angle = (pose.angle + motion.spin * dt) % (2 * math.pi)
        return current


def render_clip(
    cls: int | str,
    seed: int,
    num_frames: int,
    size: tuple[int, int] = (240, 320),
    fps: float = 30.0,
) -> np.ndarray:
    """One clip of class ``cls`` from a fresh scene: (T, H, W, 3) uint8 RGB, deterministic for a seed.

    The second class of each time-reversal pair is rendered as the first one played backwards, so
    ``render_clip("move_right", s, T)`` is exactly ``render_clip("move_left", s, T)[::-1]``.
    """
    world, steps = _simulate(cls, seed, num_frames, size, fps)
    frames = np.empty((num_frames, *size, 3), dtype=np.uint8)
    for t, (pose, jitter, floaters, gain, noise) in enumerate(steps):
        frames[t] = world.scene.render(pose, jitter, floaters, gain, noise)
    return frames


def clip_poses(
    cls: int | str, seed: int, num_frames: int, size: tuple[int, int] = (240, 320), fps: float = 30.0
) -> list[dict]:
    """The actor's pose in each frame of ``render_clip(cls, seed, ...)``: x, y, radius, angle, visible."""
    _, steps = _simulate(cls, seed, num_frames, size, fps)
    return [_pose_dict(pose) for pose, *_ in steps]


def _pose_dict(pose: _Pose) -> dict:
    return {"x": pose.x, "y": pose.y, "radius": math.exp(pose.log_r), "angle": pose.angle, "visible": pose.visible}


def _simulate(cls: int | str, seed: int, num_frames: int, size: tuple[int, int], fps: float):
    """A fresh world and per-frame (pose, jitter, floaters, gain, noise); the reversed pair member plays back."""
    index = class_index(cls)
    name = CLASSES[index]
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    reverse = name not in _CANONICAL and OPPOSITE[name] != name
    simulated = CLASSES.index(OPPOSITE[name]) if reverse else index
    world = _World(np.random.default_rng([seed, 7919]), size, fps)
    motion = world.random_motion(simulated)
    world.place_for(motion, (num_frames - 1) / fps)
    steps = [(world.advance(motion, t), *world.nuisance()) for t in range(num_frames)]
    if reverse:
        steps.reverse()
    return world, steps


class SyntheticActionStream:
    """An endless stream of actions in random segments: ``read() -> (frame, class index)``.

    The actor keeps its position, size and angle across a change of action, so the only sign of a new
    segment is the new motion. Now and then (``scene_change`` per segment) the scene is replaced by a
    new one at a segment change, like a cut in edited video. Deterministic for a seed.
    """

    def __init__(
        self,
        seed: int = 0,
        fps: float = 30.0,
        size: tuple[int, int] = (240, 320),
        segment_s: tuple[float, float] = (2.0, 5.0),
        *,
        scene_change: float = 0.15,
    ) -> None:
        if fps <= 0:
            raise ValueError(f"fps must be > 0, got {fps}")
        if not 0 < segment_s[0] <= segment_s[1]:
            raise ValueError(f"segment_s must be (min, max) seconds with 0 < min <= max, got {segment_s}")
        if len(size) != 2 or min(size) < 16:
            raise ValueError(f"size must be (height, width) of at least 16 pixels, got {size}")
        self.labels: tuple[str, ...] = CLASSES
        self.fps = float(fps)
        self.size = (int(size[0]), int(size[1]))
        self.segment_s = (float(segment_s[0]), float(segment_s[1]))
        self.scene_change = scene_change
        self._rng = np.random.default_rng([seed, 104729])
        self._world = _World(self._rng, self.size, self.fps)
        self._pose = self._world.pose
        self._label = 0
        self._motion = _Motion()
        self._left = 0  # frames left in the current segment
        self._t = 0  # frame within the current segment
        self.frame_index = 0

    def _new_segment(self) -> None:
        rng = self._rng
        if self.frame_index and rng.uniform() < self.scene_change:
            self._world = _World(rng, self.size, self.fps)
        # Never repeat the previous class: every segment boundary is a real change of action. A motion
        # that would carry the actor out of the box (or past its size range) before long is passed over,
        # and one that fits ends early when it reaches the edge: the actor stays in view.
        choices = [c for c in range(len(CLASSES)) if c != self._label or not self.frame_index]
        min_room = min(self.segment_s[0], _MIN_ROOM_S)
        for label in rng.permutation(choices):
            motion = self._world.random_motion(int(label), start_visible=True)
            room = self._world.room(motion)
            if room >= min_room:
                break
        self._label, self._motion = int(label), motion
        seconds = min(rng.uniform(*self.segment_s), room)
        self._left = max(1, round(seconds * self.fps))
        self._t = 0

    def read(self) -> tuple[np.ndarray, int]:
        """The next frame (H, W, 3) uint8 RGB and the class index of the action it shows."""
        if self._left <= 0:
            self._new_segment()
        pose = self._pose = self._world.advance(self._motion, self._t)
        frame = self._world.scene.render(pose, *self._world.nuisance())
        label = self._label
        self._left -= 1
        self._t += 1
        self.frame_index += 1
        return frame, label

    @property
    def actor(self) -> dict:
        """The actor's pose in the frame ``read()`` returned last: x, y, radius, angle, visible."""
        return _pose_dict(self._pose)

    def read_many(self, count: int) -> tuple[np.ndarray, np.ndarray]:
        """``count`` frames (T, H, W, 3) uint8 and their labels (T,) int64."""
        frames = np.empty((count, *self.size, 3), dtype=np.uint8)
        labels = np.empty(count, dtype=np.int64)
        for t in range(count):
            frames[t], labels[t] = self.read()
        return frames, labels


# --- drawing helpers -------------------------------------------------------------------------------


def _fill(frame: np.ndarray, points: np.ndarray, color: tuple[int, int, int], offset=(0.0, 0.0)) -> None:
    """Fill the polygon ``points + offset`` (N, 2) anti-aliased, with sub-pixel precision."""
    pts = np.round((points + np.asarray(offset)) * (1 << _SHIFT)).astype(np.int32)  # (N, 2) fixed point
    cv2.fillPoly(frame, [pts], color, lineType=cv2.LINE_AA, shift=_SHIFT)


def _polygon(rng: np.random.Generator, vertices: int | None = None) -> np.ndarray:
    """A random polygon around the origin, of radius about 1 (at most 1.06), irregular enough that rotation shows."""
    kind = rng.integers(0, 3) if vertices is None else 0
    if kind == 1:  # elongated rectangle
        aspect = rng.uniform(1.6, 3.0)
        half_w, half_h = 1.0, 1.0 / aspect
        return np.array([[-half_w, -half_h], [half_w, -half_h], [half_w, half_h], [-half_w, half_h]]) * 0.9
    if kind == 2:  # arrow-like isosceles triangle
        return np.array([[1.0, 0.0], [-0.7, 0.55], [-0.7, -0.55]])
    # Vertices go round the centre at roughly even angles (each within a quarter step of its place), so
    # for 4-7 vertices no gap exceeds 135 degrees: the centre is inside, the shape turns in place about it,
    # and it is never a needle. Fully random angles made some actors slivers orbiting a point off their body.
    n = int(vertices or rng.integers(4, 8))
    step = 2 * math.pi / n
    angles = rng.uniform(0, 2 * math.pi) + step * (np.arange(n) + rng.uniform(-0.25, 0.25, n))
    radii = rng.uniform(0.55, 1.0, n)
    return np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1)


def _random_color(rng: np.random.Generator) -> tuple[int, int, int]:
    return tuple(int(c) for c in rng.integers(0, 256, 3))


def _contrasting_color(rng: np.random.Generator, against: np.ndarray | tuple) -> tuple[int, int, int]:
    """A random colour at least a clear distance from ``against`` (so the actor never vanishes)."""
    against = np.asarray(against, dtype=np.float64)
    for _ in range(50):
        color = rng.integers(0, 256, 3)
        if np.linalg.norm(color - against) > 120:
            return tuple(int(c) for c in color)
    return tuple(int(c) for c in (255 - against).clip(0, 255))


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A low-frequency colour field with an optional texture and static clutter: (H, W, 3) uint8."""
    coarse = rng.uniform(0, 255, size=(int(rng.integers(2, 6)), int(rng.integers(2, 6)), 3)).astype(np.float32)
    field = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)  # (H, W, 3)
    kind = rng.integers(0, 3)
    if kind == 1:  # stripes at a random angle and period
        yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
        theta, period = rng.uniform(0, math.pi), rng.uniform(6, 30)
        stripes = np.sin((xx * math.cos(theta) + yy * math.sin(theta)) * (2 * math.pi / period))
        field += (stripes * rng.uniform(10, 40))[..., None]
    elif kind == 2:  # blurred speckle
        speckle = rng.normal(0, 1, size=(height, width)).astype(np.float32)
        speckle = cv2.GaussianBlur(speckle, (0, 0), rng.uniform(1.0, 3.0))
        field += (speckle / (speckle.std() + 1e-6) * rng.uniform(8, 25))[..., None]
    image = np.clip(field, 0, 255).astype(np.uint8)
    for _ in range(rng.integers(0, 6)):  # static clutter
        shape = _polygon(rng) * rng.uniform(*_CLUTTER_RADIUS) * min(height, width)
        center = rng.uniform((0, 0), (width, height))
        _fill(image, shape, _random_color(rng), center)
    return image
