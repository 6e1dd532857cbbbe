"""StreamHub: the one place a source's media lives in memory, fanned out to every consumer.

The hub keeps the init segment, the codec string and a ring of fragments that always reaches back to the
newest keyframe (the GOP cache). A new viewer starts at that keyframe, so its first picture comes at once.
Each consumer holds a Cursor into the shared ring: the producer never waits and makes no per-viewer copy,
and a consumer that falls behind the ring is moved to the newest keyframe (and that skip is counted).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import dataclass, field

from workers.fmp4 import FragInfo, InitInfo, parse_fragment, parse_init, shift_decode_time

log = logging.getLogger("h5gate.hub")

# Rebased copies kept per fragment: viewers that joined at the same keyframe share one; more copies
# would multiply the ring's memory for long-lived viewers who all joined at different times.
REBASED_COPIES = 8


class HubClosed(Exception):
    """The source was deleted or stopped for good; consumers should close."""


class HubInterrupted(HubClosed):
    """The source went away for now (a cloud edge went offline): consumers close with the offline reason.

    A HubClosed, so every consumer ends as it would for a closed hub; a viewer tells its player to come
    back later (1013) rather than that the source is gone, and the hub itself stays usable.
    """


@dataclass(eq=False)
class Fragment:
    """One moof+mdat (one frame of one track), with what consumers need to know about it."""

    seq: int
    gen: int  # which init segment (ffmpeg run) it belongs to
    data: bytes
    info: FragInfo
    timescale: int
    video: bool
    arrived: float  # time.monotonic() when the hub got it
    _rebased: dict[int, bytes] = field(default_factory=dict)

    @property
    def keyframe(self) -> bool:
        return self.video and self.info.keyframe

    @property
    def dts(self) -> float:
        return self.info.tfdt / self.timescale

    @property
    def end(self) -> float:
        return (self.info.tfdt + self.info.duration) / self.timescale

    def rebased(self, shift_us: int) -> bytes:
        """These bytes with the decode time moved back by shift_us microseconds (never below zero).

        Viewers that share a shift share the bytes: those that joined at the same keyframe of a run
        get one copy between them, computed once.
        """
        if shift_us == 0 or self.info.tfdt_pos < 0:
            return self.data
        cached = self._rebased.get(shift_us)
        if cached is None:
            ticks = -(-shift_us * self.timescale // 1_000_000)  # round up: a keyframe's own shift gives 0
            cached = shift_decode_time(self.data, self.info, ticks)
            if len(self._rebased) < REBASED_COPIES:
                self._rebased[shift_us] = cached
        return cached


class StreamHub:
    """Init, GOP cache and ring of one stream (one source profile)."""

    def __init__(self, name: str, ring_seconds: float = 6.0, max_bytes: int = 96 * 1024 * 1024) -> None:
        self.name = name
        self.ring_seconds = ring_seconds
        self.max_bytes = max_bytes
        self.init: InitInfo | None = None
        self.gen = 0
        self.inits: dict[int, InitInfo] = {}
        self.ring: deque[Fragment] = deque()
        self.first_seq = 0  # seq of ring[0]
        self.next_seq = 0
        self.keyframe_seq: int | None = None  # newest video keyframe in the ring
        self.ring_bytes = 0
        self.closed = False
        self.skips = 0  # consumers moved forward because they fell behind
        self.fragments_in = 0
        self.bytes_in = 0
        self.last_arrival = 0.0
        self.interrupts = 0  # how many times interrupt() was called; cursors made before one raise
        self.interrupt_reason = ""
        self._event = asyncio.Event()

    # -- producer side --------------------------------------------------------------------------------
    def set_init(self, data: bytes, info: InitInfo | None = None) -> InitInfo:
        """A new ffmpeg run starts: a new generation, whose fragments need this init segment."""
        info = info or parse_init(data)
        self.gen += 1
        self.init = info
        self.inits[self.gen] = info
        for old in [g for g in self.inits if g < self.gen - 2]:
            del self.inits[old]
        self.keyframe_seq = None
        self._wake()
        return info

    def publish(self, data: bytes, info: FragInfo | None = None) -> Fragment | None:
        """Add one fragment; fragments before the first video keyframe of a run are useless and dropped."""
        if self.init is None:
            return None
        if info is None:
            info = parse_fragment(data)
        track = self.init.tracks.get(info.track_id)
        if track is None:
            return None
        video = track.handler == "vide"
        if self.keyframe_seq is None and not (video and info.keyframe):
            return None
        now = time.monotonic()
        frag = Fragment(self.next_seq, self.gen, data, info, track.timescale, video, now)
        self.ring.append(frag)
        self.next_seq += 1
        self.ring_bytes += len(data)
        self.fragments_in += 1
        self.bytes_in += len(data)
        self.last_arrival = now
        if frag.keyframe:
            self.keyframe_seq = frag.seq
        self._trim()
        self._wake()
        return frag

    def _trim(self) -> None:
        """Drop old fragments, but never the GOP that starts at the newest keyframe."""
        newest = self.ring[-1].arrived
        keep_from = self.keyframe_seq if self.keyframe_seq is not None else self.next_seq
        while (
            self.ring
            and self.ring[0].seq < keep_from
            and (newest - self.ring[0].arrived > self.ring_seconds or self.ring_bytes > self.max_bytes)
        ):
            old = self.ring.popleft()
            self.ring_bytes -= len(old.data)
            self.first_seq = old.seq + 1
        if not self.ring:
            self.first_seq = self.next_seq

    def close(self) -> None:
        self.closed = True
        self._wake()

    def interrupt(self, reason: str) -> None:
        """Its input is gone for now: every current consumer gets HubInterrupted(reason), and the hub is not
        ready (no keyframe) until new media comes, so a new viewer waits for it instead of a stale picture."""
        self.interrupts += 1
        self.interrupt_reason = reason
        self.keyframe_seq = None
        self._wake()

    def _wake(self) -> None:
        event, self._event = self._event, asyncio.Event()
        event.set()

    # -- consumer side --------------------------------------------------------------------------------
    async def wait_change(self, timeout: float | None = None) -> None:
        """Sleep until something is published (or the timeout passes)."""
        try:
            async with asyncio.timeout(timeout):
                await self._event.wait()
        except TimeoutError:
            pass

    async def wait_ready(self, timeout: float) -> bool:
        """Wait until the hub has an init segment and a keyframe; False if the source stays offline."""
        deadline = time.monotonic() + timeout
        while not self.ready:
            if self.closed:
                raise HubClosed(self.name)
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            await self.wait_change(left)
        return True

    @property
    def ready(self) -> bool:
        return self.init is not None and self.keyframe_seq is not None

    def get(self, seq: int) -> Fragment | None:
        if seq < self.first_seq or seq >= self.next_seq:
            return None
        return self.ring[seq - self.first_seq]

    def gop(self) -> list[Fragment]:
        """The fragments from the newest keyframe on."""
        if self.keyframe_seq is None:
            return []
        return list(self.ring)[self.keyframe_seq - self.first_seq :]

    def since(self, seconds: float) -> list[Fragment]:
        """Fragments of the current run from the newest keyframe at least `seconds` old (pre-record)."""
        if not self.ring or self.keyframe_seq is None:
            return []
        newest = self.ring[-1].dts
        start = self.keyframe_seq
        for frag in self.ring:
            if frag.gen == self.gen and frag.keyframe and newest - frag.dts <= seconds:
                start = frag.seq
                break
        return list(self.ring)[start - self.first_seq :]

    def latest_keyframe(self) -> tuple[InitInfo, Fragment] | None:
        frag = self.get(self.keyframe_seq) if self.keyframe_seq is not None else None
        if frag is None or frag.gen not in self.inits:
            return None
        return self.inits[frag.gen], frag

    def cursor(self) -> Cursor:
        return Cursor(self)


class Cursor:
    """A consumer's position in the ring. It never blocks the producer; it may be moved forward."""

    def __init__(self, hub: StreamHub, slow_seconds: float = 4.0) -> None:
        self.hub = hub
        self.slow_seconds = slow_seconds
        self.seq = hub.keyframe_seq if hub.keyframe_seq is not None else hub.next_seq
        self.skips = 0
        self.interrupts = hub.interrupts

    def _skip_to_keyframe(self) -> None:
        hub = self.hub
        target = hub.keyframe_seq if hub.keyframe_seq is not None else hub.next_seq
        if target > self.seq:
            self.seq = target
            self.skips += 1
            hub.skips += 1
            log.info("%s: consumer behind, skipped to keyframe %d", hub.name, target)

    def next_nowait(self) -> Fragment | None:
        """The next fragment if the ring already has it, else None; raises HubClosed."""
        hub = self.hub
        if hub.closed:
            raise HubClosed(hub.name)
        if hub.interrupts != self.interrupts:
            raise HubInterrupted(hub.interrupt_reason)
        if self.seq < hub.first_seq:
            self._skip_to_keyframe()
        frag = hub.get(self.seq)
        if frag is None:
            if self.seq > hub.next_seq:
                self.seq = hub.next_seq
            return None
        newest = hub.ring[-1]
        if (
            newest.gen == frag.gen
            and newest.dts - frag.dts > self.slow_seconds
            and hub.keyframe_seq is not None
            and hub.keyframe_seq > self.seq
        ):
            self._skip_to_keyframe()
            frag = hub.get(self.seq)
            if frag is None:
                return None
        self.seq += 1
        return frag

    async def next(self, timeout: float | None = None) -> Fragment | None:
        """The next fragment, or None if nothing came within the timeout; raises HubClosed."""
        hub = self.hub
        while True:
            frag = self.next_nowait()
            if frag is not None:
                return frag
            if timeout is None:
                await hub._event.wait()
                continue
            try:
                async with asyncio.timeout(timeout):
                    await hub._event.wait()
            except TimeoutError:
                return None
