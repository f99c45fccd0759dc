"""The pre-roll: the last few seconds of one stream as encoded packets, whole GOPs.

:class:`PreRoll` keeps GOPs (a keyframe and the packets after it) back to the keyframe at or before
``now - keep_s``, so a clip that starts now can begin ``keep_s`` (at most ``keep_s + gop_s``) earlier,
on a keyframe. At VGA and libx264 ``ultrafast`` that is a few hundred KB to 2 MB a stream, instead of
90 raw frames (83 MB). Adding a packet costs the same however long the stream runs.

:class:`Timeline` maps a stream's presentation times to a strictly increasing encoder clock: a pts that
goes back (a file loops, a camera restarts) or jumps forward by more than ``max_gap_s`` continues the clock
one frame later instead, so clips never hold a hole or a step backwards.
"""

from __future__ import annotations

from collections import deque

from dcrn.engine.evidence.encoder import EncodedPacket

MIN_STEP_S = 1e-4  # pts closer than this to the previous frame's count as a repeat (a step back)


class Timeline:
    """``map(pts) -> t``: stream pts (seconds) -> a strictly increasing clock (seconds)."""

    def __init__(self, max_gap_s: float = 2.0, default_step_s: float = 1 / 30) -> None:
        self.max_gap_s = max_gap_s
        self._step = default_step_s  # the last regular frame interval
        self._offset = 0.0
        self._last_pts: float | None = None
        self.last: float | None = None  # the last mapped time
        self.rebased = 0  # how often the clock continued over a gap or a step back

    def map(self, pts: float) -> float:
        last_pts = self._last_pts
        if last_pts is None:
            self._offset = -pts  # the clock starts at 0
        else:
            step = pts - last_pts
            if MIN_STEP_S <= step <= self.max_gap_s:
                self._step = step
            else:
                self._offset = self.last + self._step - pts  # type: ignore[operator]
                self.rebased += 1
        self._last_pts = pts
        self.last = pts + self._offset
        return self.last


class PreRoll:
    """Whole GOPs reaching back ``keep_s`` seconds before the newest packet."""

    def __init__(self, keep_s: float) -> None:
        self.keep_s = keep_s
        self._gops: deque[list[EncodedPacket]] = deque()
        self.bytes = 0

    def add(self, packet: EncodedPacket) -> None:
        if packet.key:
            self._gops.append([packet])
        elif self._gops:
            self._gops[-1].append(packet)
        else:
            return  # nothing can be decoded before the first keyframe
        self.bytes += len(packet.data)
        horizon = packet.t - self.keep_s
        gops = self._gops
        while len(gops) >= 2 and gops[1][0].t <= horizon:  # the next GOP alone still covers the pre-roll
            self.bytes -= sum(len(p.data) for p in gops.popleft())

    def since(self, begin: float | None) -> list[EncodedPacket]:
        """The packets from the last keyframe at or before ``begin`` (None or too early: from the oldest)."""
        gops = list(self._gops)
        start = 0
        if begin is not None:
            for index in range(len(gops) - 1, -1, -1):
                if gops[index][0].t <= begin:
                    start = index
                    break
        return [packet for gop in gops[start:] for packet in gop]

    def clear(self) -> None:
        self._gops.clear()
        self.bytes = 0

    @property
    def seconds(self) -> float:
        """Stream time from the oldest kept packet to the newest."""
        if not self._gops:
            return 0.0
        return self._gops[-1][-1].t - self._gops[0][0].t

    def __len__(self) -> int:
        return sum(len(gop) for gop in self._gops)
