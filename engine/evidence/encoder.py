"""Frames -> encoded packets, one encoder per stream (PyAV: libx264, or FFmpeg's own mpeg4).

The caller converts each RGB frame to I420 (:func:`to_i420`, a quarter of the work of FFmpeg's swscale
here and the only copy of the frame that is kept); the stream's worker thread encodes it
(:class:`StreamEncoder`). PyAV lets go of the GIL while FFmpeg encodes, so encoders of several streams run
beside the model. There are no B-frames and no encoder delay (libx264 ``tune=zerolatency``, one thread):
each frame comes back as one packet at once, and a keyframe is forced every ``gop_s`` seconds of stream
time, so a clip can start at a keyframe at most ``gop_s`` before its pre-roll. Keyframes repeat the
stream headers (SPS/PPS), so every clip can be written from its first keyframe by remuxing, without
decoding or encoding anything again.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from fractions import Fraction

import cv2
import numpy as np

from dcrn.engine.evidence.config import EvidenceConfig, EvidenceError

log = logging.getLogger(__name__)

LONG_GOP = 600  # the encoder's own keyframe interval, frames; keyframes are forced by time well before


@dataclass(frozen=True)
class CodecChoice:
    """Which encoder writes the evidence, and how its packets are read back as a template stream."""

    encoder: str  # FFmpeg encoder name: libx264 or mpeg4
    raw_format: str  # FFmpeg demuxer of its bare bitstream: h264 or m4v
    time_base: Fraction  # of packet timestamps (MPEG-4 part 2 allows at most 65535 ticks a second)
    options: dict[str, str] = field(default_factory=dict)

    def describe(self) -> str:
        settings = " ".join(f"{k}={v}" for k, v in self.options.items())
        return f"{self.encoder} ({settings})" if settings else self.encoder


def available(encoder: str) -> bool:
    import av

    try:
        av.codec.Codec(encoder, "w")
    except (ValueError, av.FFmpegError):
        return False
    return True


def choose_codec(config: EvidenceConfig) -> CodecChoice:
    """The encoder ``config.codec`` asks for (auto: libx264 when this PyAV build has it, else mpeg4)."""
    name = config.codec
    if name == "auto":
        name = "libx264" if available("libx264") else "mpeg4"
        if name == "mpeg4":
            log.info("evidence: this PyAV build has no libx264; clips are MPEG-4 part 2 (larger files)")
    if not available(name):
        raise EvidenceError(f"evidence codec {name!r} is not in this PyAV build (try codec 'auto')")
    if name == "libx264":
        options = {"preset": config.preset, "tune": "zerolatency", "crf": str(config.crf), "forced-idr": "1"}
        return CodecChoice("libx264", "h264", Fraction(1, 90000), options)
    # A constant quantiser (FFmpeg's mpeg4 takes qmin/qmax, not qscale, as options): crf 23 -> 5, about
    # 2 Mbit/s for 640x480 CCTV at 30 fps, like libx264 ultrafast at crf 26.
    quantiser = str(max(2, min(31, round(2 + (config.crf - 18) * 0.6))))
    return CodecChoice("mpeg4", "m4v", Fraction(1, 30000), {"qmin": quantiser, "qmax": quantiser})


def even_size(image: np.ndarray) -> tuple[int, int]:
    """(width, height) of the part of ``image`` that is encoded: I420 needs even sides."""
    return image.shape[1] // 2 * 2, image.shape[0] // 2 * 2


def to_i420(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> (H*3/2, W) uint8 I420 of its even-sized part (a new array, the caller's to keep)."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"frame must be HxWx3 uint8 RGB, got {image.shape} {image.dtype}")
    width, height = even_size(image)
    if width < 2 or height < 2:
        raise ValueError(f"frame must be at least 2x2 pixels, got {image.shape}")
    if (width, height) != (image.shape[1], image.shape[0]):
        image = image[:height, :width]
    return cv2.cvtColor(image, cv2.COLOR_RGB2YUV_I420)


def i420_size(yuv: np.ndarray) -> tuple[int, int]:
    """(width, height) of an I420 array made by :func:`to_i420`."""
    return yuv.shape[1], yuv.shape[0] * 2 // 3


@dataclass(frozen=True)
class EncodedPacket:
    """One encoded frame, kept as bytes so that any number of clips can mux it."""

    data: bytes
    pts: int  # in the codec's time base
    dts: int
    key: bool  # a keyframe: a clip may start here
    t: float  # stream time in seconds (pts * time_base)


class StreamEncoder:
    """Encodes one stream's I420 frames of one size; ``encode(yuv, t) -> packets``, ``flush() -> packets``."""

    def __init__(self, choice: CodecChoice, width: int, height: int, *, gop_s: float = 1.0) -> None:
        import av

        self.choice = choice
        self.width, self.height = width, height
        self.gop_s = gop_s
        self.frames = 0
        context = av.CodecContext.create(choice.encoder, "w")
        context.width, context.height = width, height
        context.pix_fmt = "yuv420p"
        context.time_base = choice.time_base
        context.framerate = Fraction(30)  # a hint for rate control; the timestamps are the stream's own
        context.gop_size = LONG_GOP
        context.thread_count = 1  # one core per stream at most; several streams share the machine
        context.options = dict(choice.options)
        try:
            context.open()
        except av.FFmpegError as exc:
            size = f"{width}x{height}"
            raise EvidenceError(f"evidence: cannot open the {choice.encoder} encoder at {size}: {exc}") from exc
        self._context = context
        self._last_pts = -1
        self._next_key_t: float | None = None
        self._closed = False

    def encode(self, yuv: np.ndarray, t: float) -> list[EncodedPacket]:
        """Encode one frame (I420 of this encoder's size) at stream time ``t`` seconds."""
        import av
        from av.video.frame import PictureType

        frame = av.VideoFrame.from_ndarray(yuv, format="yuv420p")
        pts = max(round(t / self.choice.time_base), self._last_pts + 1)  # strictly increasing
        self._last_pts = pts
        frame.pts = pts
        frame.time_base = self.choice.time_base
        if self._next_key_t is None or t >= self._next_key_t:
            frame.pict_type = PictureType.I
            self._next_key_t = t + self.gop_s
        self.frames += 1
        return self._wrap(self._context.encode(frame))

    def flush(self) -> list[EncodedPacket]:
        """The packets still inside the encoder; the encoder takes no frame after this."""
        if self._closed:
            return []
        self._closed = True
        return self._wrap(self._context.encode(None))

    def _wrap(self, packets) -> list[EncodedPacket]:
        base = self.choice.time_base
        out = []
        for packet in packets:
            pts = int(packet.pts)
            dts = int(packet.dts) if packet.dts is not None else pts
            out.append(EncodedPacket(bytes(packet), pts, dts, bool(packet.is_keyframe), float(pts * base)))
        return out
