"""One WebRTC viewer in the sidecar: the server offers, the browser answers, media flows from a Feed.

Every peer works through its own inbox in its own task, so a slow or broken browser only ever stalls or
ends its own peer. Bad signalling (an answer nobody asked for, SDP aiortc cannot parse, a malformed
candidate) ends the peer with a message saying why; nothing a browser sends can end the sidecar.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from aiortc import (
    RTCConfiguration,
    RTCIceCandidate,
    RTCPeerConnection,
    RTCRtpCodecCapability,
    RTCRtpSender,
    RTCSessionDescription,
)
from aiortc.codecs import CODECS
from aiortc.exceptions import InvalidAccessError, InvalidStateError, OperationError
from aiortc.rtcconfiguration import RTCBundlePolicy
from aiortc.rtcrtpparameters import RTCRtcpFeedback, RTCRtpCodecParameters
from aiortc.sdp import candidate_from_sdp

from workers.webrtc.feed import Feed
from workers.webrtc.ice import advertise_public_ip
from workers.webrtc.tracks import AudioTrack, VideoTrack

log = logging.getLogger("h5gate.webrtc")

CONNECT_TIMEOUT = 20.0  # from the offer to a connected peer
MAX_CANDIDATES = 64
# H.264 profile_idc -> profile-level-id offered; aiortc itself only knows Constrained Baseline.
PROFILES = {66: "42e01f", 77: "4d001f", 100: "64001f"}
BASELINE = ("42e01f", "42001f")

CLOSE_NORMAL = 1000
CLOSE_FAILED = 1011
CLOSE_BAD_SIGNALLING = 4400


class SignallingError(Exception):
    """The browser sent something this peer cannot act on; the message goes back to it."""


def register_h264_profiles() -> None:
    """Let aiortc offer Main and High: passed-through video keeps the profile the camera chose."""
    video = CODECS["video"]
    known = {c.parameters.get("profile-level-id") for c in video if c.mimeType == "video/H264"}
    payload_type = max(c.payloadType or 0 for codecs in CODECS.values() for c in codecs) + 1
    for profile_level_id in PROFILES.values():
        if profile_level_id in known:
            continue
        video.append(
            RTCRtpCodecParameters(
                mimeType="video/H264",
                clockRate=90000,
                payloadType=payload_type,
                rtcpFeedback=[
                    RTCRtcpFeedback(type="nack"),
                    RTCRtcpFeedback(type="nack", parameter="pli"),
                    RTCRtcpFeedback(type="goog-remb"),
                ],
                parameters={
                    "level-asymmetry-allowed": "1",
                    "packetization-mode": "1",
                    "profile-level-id": profile_level_id,
                },
            )
        )
        video.append(
            RTCRtpCodecParameters(
                mimeType="video/rtx", clockRate=90000, payloadType=payload_type + 1, parameters={"apt": payload_type}
            )
        )
        payload_type += 2


def h264_preferences(codec: str) -> list[RTCRtpCodecCapability]:
    """The source's own profile first, Constrained Baseline after it (what every WebRTC browser takes)."""
    try:
        profile_idc = int(codec.split(".")[1][:2], 16)
    except (IndexError, ValueError):
        profile_idc = 66
    wanted = [PROFILES.get(profile_idc, PROFILES[100]), *BASELINE]
    caps = RTCRtpSender.getCapabilities("video").codecs
    chosen = [
        c
        for plid in dict.fromkeys(wanted)
        for c in caps
        if c.mimeType == "video/H264" and c.parameters.get("profile-level-id") == plid
    ]
    return chosen + [c for c in caps if c.mimeType == "video/rtx"]


def parse_candidate(message: dict[str, Any]) -> RTCIceCandidate | None:
    """A browser candidate (`remoteice`, with or without `type`); None for the empty end-of-candidates."""
    text = message.get("candidate")
    if not isinstance(text, str) or len(text) > 1024:
        raise SignallingError("remoteice needs a candidate string (at most 1024 characters)")
    text = text.strip()
    if not text:
        return None
    if text.startswith("candidate:"):
        text = text[len("candidate:") :]
    try:
        candidate = candidate_from_sdp(text)
    except (AssertionError, ValueError, IndexError):
        raise SignallingError("invalid ICE candidate") from None
    candidate.sdpMLineIndex = 0  # one bundled transport: every candidate belongs to the first m-line
    return candidate


class Peer:
    """RTCPeerConnection of one viewer, driven by messages the supervisor relays."""

    def __init__(
        self, peer_id: int, feed: Feed, codec: str, audio: bool, public_ip: str, emit: Callable[..., None]
    ) -> None:
        self.id = peer_id
        self.feed = feed
        self.codec = codec
        self.audio = audio
        self.public_ip = public_ip
        self.emit = emit  # emit(op, **fields) to the supervisor, already addressed to this peer
        self.inbox: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self.closed = False
        self.pc: RTCPeerConnection | None = None
        self._pending: list[RTCIceCandidate] = []
        self._candidates = 0
        self._started = time.monotonic()
        self._connected = asyncio.Event()

    @property
    def name(self) -> str:
        return f"{self.feed.name}: webrtc viewer {self.id}"

    async def run(self) -> None:
        """Offer, then act on each relayed message in order until the peer ends; then release it all."""
        deadline = asyncio.create_task(self._connect_deadline())
        try:
            await self._offer()
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
            if self.pc is not None:
                for sender in self.pc.getSenders():
                    if sender.track is not None:
                        sender.track.stop()
                await self.pc.close()

    async def _offer(self) -> None:
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[], bundlePolicy=RTCBundlePolicy.MAX_BUNDLE))
        self.pc = pc
        pc.on("connectionstatechange", self._on_state)
        video = VideoTrack(self.feed, self._on_first_frame)
        pc.addTransceiver(video, direction="sendonly").setCodecPreferences(h264_preferences(self.codec))
        if self.audio:
            opus = [c for c in RTCRtpSender.getCapabilities("audio").codecs if c.mimeType == "audio/opus"]
            pc.addTransceiver(AudioTrack(self.feed), direction="sendonly").setCodecPreferences(opus)
        await pc.setLocalDescription(await pc.createOffer())
        sdp = advertise_public_ip(pc.localDescription.sdp, self.public_ip)
        self.emit("offer", sdp=sdp)

    async def _handle(self, message: dict[str, Any]) -> None:
        assert self.pc is not None
        if message.get("type") == "answer":
            if self.pc.signalingState != "have-local-offer":
                raise SignallingError("unexpected answer: no offer is waiting for one")
            sdp = message.get("sdp")
            if not isinstance(sdp, str) or not sdp.startswith("v=0"):
                raise SignallingError("answer without a valid SDP")
            try:
                await self.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="answer"))
            except (
                ValueError,
                KeyError,
                IndexError,
                AssertionError,
                InvalidAccessError,
                InvalidStateError,
                OperationError,
            ) as e:  # what aiortc raises on SDP it cannot use
                raise SignallingError(f"answer SDP not accepted: {e}"[:200]) from None
            pending, self._pending = self._pending, []
            for queued in pending:
                await self.pc.addIceCandidate(queued)
            return
        candidate = parse_candidate(message)
        if candidate is None:
            return
        self._candidates += 1
        if self._candidates > MAX_CANDIDATES:
            raise SignallingError(f"too many ICE candidates (more than {MAX_CANDIDATES})")
        if self.pc.remoteDescription is None:
            self._pending.append(candidate)
        else:
            await self.pc.addIceCandidate(candidate)

    def _on_state(self) -> None:
        pc = self.pc
        if pc is None or self.closed:
            return
        state = pc.connectionState
        if state == "connected" and not self._connected.is_set():
            self._connected.set()
            log.info("%s: connected in %.0f ms", self.name, (time.monotonic() - self._started) * 1000)
            self.emit("connected")
        elif state == "closed":  # the viewer closed it (DTLS close_notify)
            log.info("%s: connection closed by the viewer", self.name)
            self.close(CLOSE_NORMAL, "WebRTC connection closed by the viewer")
        elif state == "failed":
            why = "lost (no ICE consent)" if self._connected.is_set() else "not established (ICE failed)"
            log.info("%s: connection %s", self.name, why)
            self.close(CLOSE_FAILED, f"WebRTC connection {why}")

    def _on_first_frame(self) -> None:
        log.info(
            "%s: first frame sent %.0f ms after the viewer opened", self.name, (time.monotonic() - self._started) * 1000
        )

    async def _connect_deadline(self) -> None:
        try:
            await asyncio.wait_for(self._connected.wait(), CONNECT_TIMEOUT)
        except TimeoutError:
            log.info("%s: not connected after %.0fs, closing", self.name, CONNECT_TIMEOUT)
            self.close(CLOSE_FAILED, f"WebRTC connection not established within {CONNECT_TIMEOUT:.0f}s")

    def close(self, code: int, reason: str, error: bool = False) -> None:
        """End the peer once and tell the supervisor why; run() then releases the connection."""
        if self.closed:
            return
        self.closed = True
        self.inbox.put_nowait(None)
        self.emit("closed", code=code, reason=reason, error=error)
