"""aiortc tracks that hand the RTP sender ready-made packets, so nothing is re-encoded.

aiortc's RTCRtpSender calls `track.recv()`; when that returns an `av.Packet` instead of a frame it calls the
codec's `pack()` (H.264: split the Annex B stream into NAL units, FU-A/STAP-A them), never `encode()`
(aiortc/rtcrtpsender.py `_next_encoded_frame`, aiortc/codecs/h264.py `H264Encoder.pack`).

A video track starts when the peer's DTLS is up, with the feed's cached GOP: those frames go out at once
with timestamps 1 ms apart ending at the newest one, so the browser decodes up to the live picture in a
blink and then plays at the live edge instead of replaying the GOP in real time behind it. "At once" is
paced at BURST_RATE: a GOP of a few hundred kB sent in one go overflows socket buffers on the way.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable

import av
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av.stream import Stream

from workers.webrtc.feed import AccessUnit, Feed

log = logging.getLogger("h5gate.webrtc")

BURST_STEP = 90  # 1 ms at 90 kHz between the cached frames sent on start
BURST_RATE = 2_500_000  # bytes per second for those frames (20 Mbit/s: a 2 s GOP at 4 Mbit/s in 0.4 s)
MAX_QUEUE = 250  # units waiting for one sender; more means it is stuck: drop to the next keyframe


class _FeedTrack(MediaStreamTrack):
    """A track the feed pushes into (None: the source has ended); it attaches on the sender's first recv."""

    def __init__(self, feed: Feed) -> None:
        super().__init__()
        self.feed = feed
        self._queue: asyncio.Queue[object] = asyncio.Queue()
        self._attached = False

    async def _next(self) -> object:
        item = await self._queue.get()
        if item is None:
            self.stop()
            raise MediaStreamError
        return item

    def push(self, item: object) -> None:
        """Called by the feed for each unit it has for this track (None: the source has ended)."""
        raise NotImplementedError

    def stop(self) -> None:
        if self.readyState == "live":
            self.feed.detach(self)
        super().stop()


class VideoTrack(_FeedTrack):
    kind = "video"

    def __init__(self, feed: Feed, on_first: Callable[[], None]) -> None:
        super().__init__(feed)
        self._burst: deque[tuple[AccessUnit, int]] = deque()
        self._burst_start = 0.0
        self._burst_bytes = 0
        self._need_key = True
        self._on_first: Callable[[], None] | None = on_first

    def push(self, item: object) -> None:
        if self._queue.qsize() >= MAX_QUEUE:
            while not self._queue.empty():
                self._queue.get_nowait()
            self._need_key = True
            log.info("%s: a WebRTC sender fell behind, skipping to the next keyframe", self.feed.name)
        self._queue.put_nowait(item)

    async def recv(self) -> av.Packet[Stream]:
        if self.readyState != "live":
            raise MediaStreamError
        if not self._attached:
            self._attached = True
            gop = self.feed.attach_video(self)
            if gop:
                newest = gop[-1].dts
                if self.feed.live:
                    self._burst.extend((au, newest - (len(gop) - 1 - i) * BURST_STEP) for i, au in enumerate(gop))
                else:  # a recording sent ahead of the clock: the browser buffers it and plays it in time
                    self._burst.extend((au, au.dts) for au in gop)
                self._burst_start = asyncio.get_running_loop().time()
                self._need_key = False
        if self._burst:
            au, pts = self._burst.popleft()
            due = self._burst_start + self._burst_bytes / BURST_RATE
            self._burst_bytes += len(au.data)
            delay = due - asyncio.get_running_loop().time()
            if delay > 0:
                await asyncio.sleep(delay)
            packet = au.packet(pts)
        else:
            while True:
                unit = await self._next()
                assert isinstance(unit, AccessUnit)
                if not self._need_key or unit.keyframe:
                    break
            self._need_key = False
            packet = unit.packet()
        if self._on_first is not None:
            self._on_first()
            self._on_first = None
        return packet


class AudioTrack(_FeedTrack):
    """Opus packets of the feed's shared transcoder; it runs while at least one such track is attached."""

    kind = "audio"

    def push(self, item: object) -> None:
        if self._queue.qsize() >= MAX_QUEUE:  # a stuck sender: drop the oldest audio
            self._queue.get_nowait()
        self._queue.put_nowait(item)

    async def recv(self) -> av.Packet[Stream]:
        if self.readyState != "live":
            raise MediaStreamError
        if not self._attached:
            self._attached = True
            self.feed.attach_audio(self)
        packet = await self._next()
        assert isinstance(packet, av.Packet)
        return packet
