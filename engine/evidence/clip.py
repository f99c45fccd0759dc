"""One evidence clip: encoded packets remuxed into an mp4 under a temporary name, renamed when complete.

The clip starts at a keyframe (packets before the first keyframe are skipped), takes every packet until
its stop time (``end(stop_at)``: the post-roll after ``action_ended``) or its maximum length, and is then
closed and renamed from ``.NAME.partial.mp4`` to ``NAME.mp4`` in the same folder (an atomic rename): a
reader never sees half a clip under its final name. ``finish()`` closes it early and complete (the run
stops, the stream is lost); ``abort()`` removes what was written.

The mp4's only stream is made from the clip's first keyframe: its bare bitstream (headers included) is
opened with FFmpeg's raw demuxer and used as a template, so packets are copied as they are.
"""

from __future__ import annotations

import io
import logging
import os
from pathlib import Path

from dcrn.engine.evidence.config import EvidenceError
from dcrn.engine.evidence.encoder import CodecChoice, EncodedPacket

log = logging.getLogger(__name__)


class ClipFile:
    """Packets in, a complete mp4 out (see the module notes)."""

    def __init__(self, final: Path, temp: Path, choice: CodecChoice, *, max_s: float) -> None:
        self.final = final
        self.temp = temp
        self.choice = choice
        self.max_s = max_s
        self.stop_at: float | None = None  # stream time after which the clip is complete
        self.frames = 0
        self.first_t: float | None = None
        self.last_t: float | None = None
        self.done = False
        self._container = None
        self._stream = None
        self._base = 0  # the first packet's dts: the clip's time starts at 0

    @property
    def duration_s(self) -> float:
        if self.first_t is None or self.last_t is None:
            return 0.0
        return self.last_t - self.first_t

    def end(self, stop_at: float) -> None:
        """Complete the clip with the first packet at or after ``stop_at`` (stream time, seconds)."""
        self.stop_at = stop_at if self.stop_at is None else min(self.stop_at, stop_at)

    def add(self, packet: EncodedPacket) -> bool:
        """Mux one packet; True when the clip is now complete (and closed under its final name)."""
        if self.done:
            return True
        if self._container is None:
            if not packet.key:
                return False  # a clip starts on a keyframe
            self._open(packet)
        elif packet.t - self.first_t >= self.max_s:  # type: ignore[operator]
            log.info("evidence: %s reached its maximum length of %.0f s", self.final.name, self.max_s)
            self.finish()
            return True
        self._mux(packet)
        if self.stop_at is not None and packet.t >= self.stop_at:
            self.finish()
            return True
        return False

    def finish(self) -> Path | None:
        """Close the clip now, complete, under its final name; None when it holds no frame."""
        if self.done:
            return self.final if self.frames else None
        self.done = True
        container, self._container = self._container, None
        if container is None:
            log.warning("evidence: %s got no frame before it closed; nothing written", self.final.name)
            return None
        try:
            container.close()
            os.replace(self.temp, self.final)
        except (OSError, ValueError) as exc:
            self._remove_temp()
            raise EvidenceError(f"evidence: cannot write {self.final}: {exc}") from exc
        return self.final

    def abort(self) -> None:
        """Stop and remove what was written (an error while writing)."""
        self.done = True
        container, self._container = self._container, None
        if container is not None:
            try:
                container.close()
            except Exception:  # already failing: the file is removed anyway
                log.debug("closing %s while aborting", self.temp, exc_info=True)
        self._remove_temp()

    def _open(self, first: EncodedPacket) -> None:
        import av

        try:
            template_input = av.open(io.BytesIO(first.data), format=self.choice.raw_format)
        except av.FFmpegError as exc:
            raise EvidenceError(f"evidence: cannot read the stream headers for {self.final.name}: {exc}") from exc
        try:
            template = template_input.streams.video[0]
            container = av.open(str(self.temp), "w", format="mp4", options={"movflags": "+faststart"})
            try:
                stream = container.add_stream_from_template(template)
                stream.time_base = self.choice.time_base
            except Exception:
                container.close()
                raise
        except (OSError, av.FFmpegError, IndexError) as exc:
            self._remove_temp()
            raise EvidenceError(f"evidence: cannot create {self.temp}: {exc}") from exc
        finally:
            template_input.close()
        self._container, self._stream = container, stream
        self._base = first.dts
        self.first_t = first.t

    def _mux(self, packet: EncodedPacket) -> None:
        import av

        out = av.Packet(packet.data)
        out.pts = packet.pts - self._base
        out.dts = packet.dts - self._base
        out.time_base = self.choice.time_base
        out.is_keyframe = packet.key
        out.stream = self._stream
        try:
            self._container.mux(out)  # type: ignore[union-attr]
        except (OSError, av.FFmpegError) as exc:
            raise EvidenceError(f"evidence: cannot write {self.temp}: {exc}") from exc
        self.frames += 1
        self.last_t = packet.t

    def _remove_temp(self) -> None:
        try:
            self.temp.unlink(missing_ok=True)
        except OSError:
            log.warning("evidence: cannot remove %s", self.temp)
