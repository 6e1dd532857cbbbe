"""Browser push (h5srtcpushapi): a browser publishes its camera or screen, the sidecar answers and
hands the supervisor the H.264 it receives, as FLV video tags, without decoding it.

The vendor's `H5sRTCPush` is the offerer: it sends `offer` after the server's `iceserver`, and takes an
`answer`. aiortc would decode every received frame in its decoder thread; here that thread is replaced by
one that passes H.264 access units on as they were reassembled from RTP (Annex B, 90 kHz clock), so
the video reaches the hub byte for byte. Each access unit becomes one FLV tag (an AVC sequence header
when SPS/PPS appear or change), so the supervisor feeds it to the same push-source code RTMP uses.
The browser's audio (Opus) becomes AAC in the same thread (workers/webrtc/push_audio.py), as FLV audio
tags; its sequence header goes out when the track is negotiated, before any video, so the source's first
init segment already has both tracks.

A/V: aiortc counts each track's RTP time from that track's first packet (RTCP sender reports, which would
tie the two clocks, are not exposed), so each track is placed by the arrival of its first frame relative to
the publish's first media, plus its RTP time from there: in step within the network's jitter.

A WebRTC sender makes a keyframe at the start and then only when asked: the hub's GOP cache (everything
since the newest keyframe, which a new viewer is sent) would grow without bound. So the sidecar asks for
one every KEYFRAME_EVERY seconds with an RTCP PLI, as a camera's GOP would bring one.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import struct
import threading
import time
from collections.abc import Callable
from typing import Any

import aiortc.rtcrtpreceiver
import av
from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpReceiver, RTCSessionDescription
from aiortc.exceptions import InvalidAccessError, InvalidStateError, OperationError

from workers.rtp.h264 import avcc
from workers.webrtc.ice import advertise_public_ip
from workers.webrtc.peer import (
    CLOSE_BAD_SIGNALLING,
    CLOSE_FAILED,
    CLOSE_NORMAL,
    CONNECT_TIMEOUT,
    MAX_CANDIDATES,
    SignallingError,
    parse_candidate,
)
from workers.webrtc.push_audio import AAC_CONFIG, RATE, AacFrame, OpusToAac

log = logging.getLogger("h5gate.webrtc")

KEYFRAME_EVERY = 2.0  # seconds between the keyframes asked of the browser (RTCP PLI)
BIAS_MS = 1000  # added to every time sent, so a track that starts a little before the other stays positive
VIDEO_TAG, AUDIO_TAG = 9, 8  # FLV tag types, the byte after the time in a PUSH frame


def _pass_media(
    loop: asyncio.AbstractEventLoop,
    input_q: queue.Queue[Any],
    output_q: asyncio.Queue[Any],
    decode_error: threading.Event,
) -> None:
    """aiortc's decoder thread, for browser push: H.264 access units passed on undecoded, as
    (RTP time, Annex B); Opus transcoded to AacFrames."""
    opus: OpusToAac | None = None
    while True:
        task = input_q.get()
        if task is None:
            asyncio.run_coroutine_threadsafe(output_q.put(None), loop)
            return
        codec, frame = task
        if codec.name == "H264":
            asyncio.run_coroutine_threadsafe(output_q.put((frame.timestamp, bytes(frame.data))), loop)
        elif codec.name.lower() == "opus":
            try:
                opus = opus or OpusToAac(codec)
                for aac in opus.feed(frame):
                    asyncio.run_coroutine_threadsafe(output_q.put(aac), loop)
            except (av.FFmpegError, ValueError) as e:
                log.warning("browser push: an Opus frame not transcoded: %s", e)


def receive_undecoded() -> None:
    """Make aiortc's receivers hand media on as `_pass_media` does: the sidecar's viewers only send, and what it
    receives is browser push, whose video must stay encoded. Called once by the sidecar process at start, not
    at import, so a process that merely imports this module (a test does) keeps aiortc's own decoder."""
    aiortc.rtcrtpreceiver.decoder_worker = _pass_media


def split_annexb(data: bytes) -> list[bytes]:
    """NAL units of an Annex B access unit (3- or 4-byte start codes)."""
    out: list[bytes] = []
    for chunk in data.split(b"\x00\x00\x01"):
        chunk = chunk.rstrip(b"\x00") if chunk else chunk
        if chunk:
            out.append(chunk)
    return out


class RtpClock:
    """RTP's 90 kHz timestamps as FLV's 32-bit milliseconds, which wrap as FLV's do (after 49.7 days).

    aiortc hands timestamps unwrapped from 0, but takes any step back for a wrap (adding 2^32): steps are
    taken here modulo 2^32 as signed values, which undoes that and any real wrap alike."""

    def __init__(self) -> None:
        self._last: int | None = None
        self._ticks = 0

    def ms(self, timestamp: int) -> int:
        if self._last is not None:
            step = (timestamp - self._last) & 0xFFFFFFFF
            self._ticks += step - (1 << 32) if step >= 1 << 31 else step
        self._last = timestamp
        return (self._ticks // 90) & 0xFFFFFFFF


class H264ToFlv:
    """Access units in, FLV video tag bodies out: sequence header on new SPS/PPS, then NALU tags."""

    def __init__(self) -> None:
        self.sps = b""
        self.pps = b""
        self.config_sent = b""

    def feed(self, annexb: bytes) -> list[bytes]:
        tags: list[bytes] = []
        nals = split_annexb(annexb)
        frame: list[bytes] = []
        keyframe = False
        for nal in nals:
            kind = nal[0] & 0x1F
            if kind == 7:
                self.sps = nal
            elif kind == 8:
                self.pps = nal
            elif kind == 9:
                continue  # access unit delimiter: MP4 samples go without
            else:
                keyframe = keyframe or kind == 5
                frame.append(nal)
        if self.sps and self.pps:
            config = avcc(self.sps, [self.pps])
            if config != self.config_sent:
                self.config_sent = config
                tags.append(b"\x17\x00\x00\x00\x00" + config)
        if frame and self.config_sent:
            body = b"".join(len(n).to_bytes(4, "big") + n for n in frame)
            tags.append(bytes([0x17 if keyframe else 0x27, 1, 0, 0, 0]) + body)
        return tags


class PushPeer:
    """One browser publishing: answer its offer, then every received access unit goes to `media`."""

    def __init__(
        self,
        peer_id: int,
        token: str,
        public_ip: str,
        emit: Callable[..., None],
        media: Callable[[bytes], None],
        audio: bool = True,
    ) -> None:
        self.id = peer_id
        self.token = token
        self.public_ip = public_ip
        self.emit = emit
        self.media = media  # one PUSH frame payload (4-byte ms time, FLV tag type, FLV tag body)
        self.audio = audio  # keep the browser's audio (the publisher's audio=true)
        self._origin: float | None = None  # arrival of the publish's first media frame (monotonic)
        self.audio_frames = 0
        self.inbox: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self.closed = False
        self.pc: RTCPeerConnection | None = None
        self._pending: list[Any] = []
        self._candidates = 0
        self._started = time.monotonic()
        self._connected = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self.frames = 0

    @property
    def name(self) -> str:
        return f"{self.token}: webrtc publisher {self.id}"

    async def run(self) -> None:
        deadline = asyncio.create_task(self._connect_deadline())
        try:
            while not self.closed:
                message = await self.inbox.get()
                if message is None:
                    break
                await self._handle(message)
        except SignallingError as e:
            log.info("%s: bad signalling: %s", self.name, e)
            self.close(CLOSE_BAD_SIGNALLING, str(e), error=True)
        except Exception as e:
            log.exception("%s: failed", self.name)
            self.close(CLOSE_FAILED, f"WebRTC error: {type(e).__name__}", error=True)
        finally:
            deadline.cancel()
            self.close(CLOSE_NORMAL, "closed")
            for task in self._tasks:
                task.cancel()
            if self.pc is not None:
                await self.pc.close()

    async def _handle(self, message: dict[str, Any]) -> None:
        if message.get("type") == "offer":
            await self._answer(message)
            return
        candidate = parse_candidate(message)
        if candidate is None:
            return
        self._candidates += 1
        if self._candidates > MAX_CANDIDATES:
            raise SignallingError(f"too many ICE candidates (more than {MAX_CANDIDATES})")
        if self.pc is None or self.pc.remoteDescription is None:
            self._pending.append(candidate)
        else:
            await self.pc.addIceCandidate(candidate)

    async def _answer(self, message: dict[str, Any]) -> None:
        if self.pc is not None:
            raise SignallingError("a second offer: one publish per socket")
        sdp = message.get("sdp")
        if not isinstance(sdp, str) or not sdp.startswith("v=0"):
            raise SignallingError("offer without a valid SDP")
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.pc = pc
        pc.on("connectionstatechange", self._on_state)
        pc.on("track", self._on_track)
        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
        except (ValueError, KeyError, IndexError, AssertionError, InvalidAccessError, InvalidStateError) as e:
            raise SignallingError(f"offer SDP not accepted: {e}"[:200]) from None
        capabilities = RTCRtpReceiver.getCapabilities("video")
        h264 = [
            c
            for c in (capabilities.codecs if capabilities is not None else [])
            if c.mimeType == "video/H264" and c.parameters.get("packetization-mode") == "1"
        ]
        video = [t for t in pc.getTransceivers() if t.kind == "video"]
        if not video:
            raise SignallingError("the offer has no video")
        for transceiver in video:
            transceiver.setCodecPreferences(h264)
        if not self.audio:  # audio=false, or the source keeps none: the browser need not send it
            for transceiver in pc.getTransceivers():
                if transceiver.kind == "audio":
                    transceiver.direction = "inactive"
        try:
            await pc.setLocalDescription(await pc.createAnswer())
        except (ValueError, OperationError, InvalidStateError) as e:
            raise SignallingError(f"cannot answer: {e} (the browser must offer H.264)"[:200]) from None
        pending, self._pending = self._pending, []
        for queued in pending:
            await pc.addIceCandidate(queued)
        self.emit("answer", sdp=advertise_public_ip(pc.localDescription.sdp, self.public_ip))

    def _on_track(self, track: Any) -> None:
        if track.kind == "audio":
            if not self.audio:
                return  # not asked for: the answer made it inactive (see _answer)
            self._send(AUDIO_TAG, 0, b"\xaf\x00" + AAC_CONFIG)  # AAC sequence header, before any video
            works = [self._read_audio(track)]
        else:
            works = [self._read_video(track), self._ask_keyframes()]
        for work in works:
            task = asyncio.create_task(work)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _send(self, kind: int, ms: int, body: bytes) -> None:
        self.media(struct.pack(">IB", (ms + BIAS_MS) & 0xFFFFFFFF, kind) + body)

    def _since_origin(self, arrival: float) -> int:
        """Milliseconds from the publish's first media frame (of either track) to `arrival`."""
        if self._origin is None:
            self._origin = arrival
        return round((arrival - self._origin) * 1000)

    async def _ask_keyframes(self) -> None:
        """An RTCP PLI to every video sender every KEYFRAME_EVERY seconds (see the module docstring)."""
        while not self.closed and self.pc is not None:
            await asyncio.sleep(KEYFRAME_EVERY)
            for receiver in self.pc.getReceivers():
                if receiver.track is not None and receiver.track.kind == "video":
                    for ssrc in receiver.getSynchronizationSources():
                        await receiver._send_rtcp_pli(ssrc.source)

    async def _read_video(self, track: Any) -> None:
        flv = H264ToFlv()
        clock = RtpClock()
        base: int | None = None
        while not self.closed:
            try:
                timestamp, annexb = await track.recv()
            except aiortc.mediastreams.MediaStreamError:
                return
            if base is None:
                base = self._since_origin(time.monotonic())
            ms = base + clock.ms(timestamp)
            for tag in flv.feed(annexb):
                self._send(VIDEO_TAG, ms, tag)
            if self.frames == 0:
                log.info(
                    "%s: first frame %.0f ms after the offer", self.name, (time.monotonic() - self._started) * 1000
                )
            self.frames += 1

    async def _read_audio(self, track: Any) -> None:
        base: int | None = None
        while not self.closed:
            try:
                aac: AacFrame = await track.recv()
            except aiortc.mediastreams.MediaStreamError:
                return
            if base is None:
                base = self._since_origin(aac.first_arrival) - aac.first_pts * 1000 // RATE
            self._send(AUDIO_TAG, base + aac.pts * 1000 // RATE, b"\xaf\x01" + aac.data)
            self.audio_frames += 1

    def _on_state(self) -> None:
        pc = self.pc
        if pc is None or self.closed:
            return
        state = pc.connectionState
        if state == "connected" and not self._connected.is_set():
            self._connected.set()
            log.info("%s: connected in %.0f ms", self.name, (time.monotonic() - self._started) * 1000)
            self.emit("connected")
        elif state in ("closed", "failed"):
            self.close(CLOSE_NORMAL if state == "closed" else CLOSE_FAILED, f"WebRTC connection {state}")

    async def _connect_deadline(self) -> None:
        try:
            await asyncio.wait_for(self._connected.wait(), CONNECT_TIMEOUT)
        except TimeoutError:
            self.close(CLOSE_FAILED, f"WebRTC connection not established within {CONNECT_TIMEOUT:.0f}s")

    def close(self, code: int, reason: str, error: bool = False) -> None:
        if self.closed:
            return
        self.closed = True
        self.inbox.put_nowait(None)
        self.emit("closed", code=code, reason=reason, error=error)
