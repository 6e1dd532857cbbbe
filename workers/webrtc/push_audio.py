"""A browser's Opus as AAC, for browser push: the hub, MSE players and MP4 recordings carry AAC, not Opus.

Runs in aiortc's decoder thread of the audio track (workers/webrtc/push.py), so the transcode never
blocks the sidecar's event loop. Opus frames (20 ms, 48 kHz) are decoded, re-chunked to AAC's 1024 samples
and encoded with FFmpeg's native AAC encoder (in PyAV's own FFmpeg, which the sidecar has anyway).
Time is counted in samples: a gap in the Opus timestamps (lost packets the jitter buffer gave up on) is
filled with silence, so the AAC frames stay on the browser's clock and back to back.
"""

from __future__ import annotations

import fractions
import logging
import time
from dataclasses import dataclass
from typing import Any

import av
from aiortc.codecs import get_decoder

log = logging.getLogger("h5gate.webrtc")

RATE = 48000  # Opus in WebRTC is always 48 kHz; AAC keeps it
AAC_SAMPLES = 1024
MAX_FILL = RATE  # a longer gap is not filled: the browser's clock jumped, the supervisor's timeline copes


def aac_encoder() -> Any:
    """FFmpeg's AAC-LC encoder, 48 kHz stereo (its extradata is the AudioSpecificConfig)."""
    enc = av.CodecContext.create("aac", "w")
    enc.sample_rate = RATE
    enc.layout = "stereo"
    enc.format = "fltp"
    enc.bit_rate = 96000
    enc.time_base = fractions.Fraction(1, RATE)
    enc.open()
    return enc


AAC_CONFIG: bytes = bytes(aac_encoder().extradata or b"")  # what every aac_encoder() says; sent at the start


@dataclass
class AacFrame:
    """One AAC frame; `pts` in samples on the browser's Opus clock (aiortc counts it from 0)."""

    pts: int
    data: bytes
    first_arrival: float  # time.monotonic() at which the track's first Opus frame was decoded
    first_pts: int  # that frame's Opus timestamp


class OpusToAac:
    """Opus frames in (aiortc's JitterFrame), AacFrames out."""

    def __init__(self, codec: Any) -> None:
        self.decoder = get_decoder(codec)
        self.encoder = aac_encoder()
        self.resampler = av.AudioResampler(format="fltp", layout="stereo", rate=RATE, frame_size=AAC_SAMPLES)
        self.next_pts: int | None = None  # the Opus timestamp the next decoded frame should have
        self.first_arrival = 0.0
        self.first_pts = 0
        self.out_pts = 0  # the next AAC frame's pts (samples)
        self.filled = 0  # samples of silence put in for lost packets

    def feed(self, frame: Any) -> list[AacFrame]:
        out: list[AacFrame] = []
        pcm: Any
        for pcm in self.decoder.decode(frame):
            pts = int(pcm.pts or 0)
            if self.next_pts is None:
                self.next_pts = self.out_pts = pts - AAC_SAMPLES  # the encoder primes one frame
                self.first_arrival, self.first_pts = time.monotonic(), pts
            gap = pts - self.next_pts
            if 0 < gap <= MAX_FILL:
                self.filled += gap
                out += self._encode(self._silence(gap))
            self.next_pts = pts + pcm.samples
            pcm.pts = None  # the resampler's FIFO counts samples itself
            out += self._encode(pcm)
        return out

    def _silence(self, samples: int) -> Any:
        silence = av.AudioFrame(format="s16", layout="stereo", samples=samples)
        for plane in silence.planes:
            plane.update(bytes(plane.buffer_size))
        silence.sample_rate = RATE
        return silence

    def _encode(self, pcm: Any) -> list[AacFrame]:
        out: list[AacFrame] = []
        for chunk in self.resampler.resample(pcm):
            chunk.pts = None
            for packet in self.encoder.encode(chunk):
                out.append(AacFrame(self.out_pts, bytes(packet), self.first_arrival, self.first_pts))
                self.out_pts += AAC_SAMPLES
        return out
