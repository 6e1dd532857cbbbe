"""Talk-back: browser microphone PCM to a camera's speaker over the ONVIF audio back-channel.

ONVIF (Streaming Specification, "back channel connection") has the client ask for the back-channel with
`Require: www.onvif.org/ver20/backchannel` on DESCRIBE, SETUP and PLAY; the camera's SDP then lists an
audio stream marked `a=sendonly` (the camera only receives on it) in G.711. We SETUP only that stream,
interleaved on the RTSP connection, PLAY, and write RTP packets of 20 ms to it. The microphone's PCM
comes at the browser's rate (48 kHz, sometimes 44.1 kHz) and is resampled to 8 kHz by libswresample (PyAV).
"""

from __future__ import annotations

import logging
import os
import struct

import av

from workers import g711
from workers.rtsp.client import RtspClient, RtspError
from workers.rtsp.sdp import Media, Sdp

log = logging.getLogger("h5gate.talkback")

ONVIF_BACKCHANNEL = "www.onvif.org/ver20/backchannel"
PACKET_SAMPLES = 160  # 20 ms at 8 kHz, what cameras send and expect
RATE = 8000


def backchannel_media(sdp: Sdp) -> list[Media]:
    """The camera's back-channel: an audio stream it receives (sendonly from its side) in G.711."""
    for media in sdp.media:
        if media.kind == "audio" and media.direction == "sendonly" and media.encoding in g711.ENCODINGS:
            return [media]
    return []


class Talkback:
    """One talk-back session with one camera: `await open()`, then `feed(pcm)` as audio arrives, `close()`."""

    def __init__(self, url: str, input_rate: int, *, timeout: float = 5.0) -> None:
        self.url = url
        self.input_rate = input_rate
        self.timeout = timeout
        self.client: RtspClient | None = None
        self.encoding = "PCMU"
        self.payload = 0
        self.seq = int.from_bytes(os.urandom(2), "big")
        self.timestamp = int.from_bytes(os.urandom(4), "big")
        self.ssrc = int.from_bytes(os.urandom(4), "big")
        self.resampler = av.AudioResampler(format="s16", layout="mono", rate=RATE)
        self.pending = b""  # G.711 bytes not yet a whole packet
        self.packets = 0
        self.dropped = 0

    async def open(self) -> None:
        """The RTSP session with the back-channel set up and playing; RtspError says why not."""
        client = RtspClient(self.url, lambda *_: None, transport="tcp", timeout=self.timeout, require=ONVIF_BACKCHANNEL)
        self.client = client
        try:
            await client.start(backchannel_media)
        except RtspError as e:
            await client.close()
            if e.status == 551:  # RFC 2326: "Option not supported", the Require header was not understood
                raise RtspError("the camera has no ONVIF audio back-channel (551 Option not supported)", 551) from None
            if "no usable stream" in str(e):
                raise RtspError("the camera has no ONVIF audio back-channel in G.711") from None
            raise
        media = client.chosen[0]
        self.encoding, self.payload = media.encoding, media.payload

    @property
    def closed(self) -> bool:
        return self.client is None or self.client.closed.done()

    def feed(self, pcm: bytes) -> None:
        """Signed 16-bit little-endian mono PCM at the input rate; whole 20 ms packets go out at once."""
        n = len(pcm) // 2
        if n == 0 or self.client is None:
            return
        frame = av.AudioFrame(format="s16", layout="mono", samples=n)
        plane = frame.planes[0]
        plane.update(pcm[: 2 * n].ljust(plane.buffer_size, b"\0"))
        frame.sample_rate = self.input_rate
        for out in self.resampler.resample(frame):
            self.pending += g711.encode(bytes(out.planes[0])[: 2 * out.samples], self.encoding)
        while len(self.pending) >= PACKET_SAMPLES:
            payload, self.pending = self.pending[:PACKET_SAMPLES], self.pending[PACKET_SAMPLES:]
            self._send(payload)

    def _send(self, payload: bytes) -> None:
        assert self.client is not None
        marker = 0x80 if self.packets == 0 else 0  # the first packet of a talk spurt (RFC 3551 §4.1)
        header = struct.pack(
            ">BBHII", 0x80, marker | self.payload, self.seq & 0xFFFF, self.timestamp & 0xFFFFFFFF, self.ssrc
        )
        if self.client.send_interleaved(0, header + payload):
            self.packets += 1
        else:
            self.dropped += 1
        self.seq += 1
        self.timestamp += len(payload)

    async def close(self) -> None:
        if self.client is not None:
            await self.client.close()
