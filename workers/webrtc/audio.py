"""AAC to Opus, once per source: browsers' WebRTC stacks take Opus, never AAC.

The hub's audio is always AAC (the source's ffmpeg already turned G.711 and the rest into AAC), so this is
the only decode/encode in the sidecar. It runs only while at least one viewer receives audio, once per
source however many of them do, and every viewer's sender gets the same Opus packets.
"""

from __future__ import annotations

import fractions
import logging

import av
from av.stream import Stream

log = logging.getLogger("h5gate.webrtc")

OPUS_RATE = 48_000
OPUS_FRAME = 960  # 20 ms, what browsers expect
OPUS_TIME_BASE = fractions.Fraction(1, OPUS_RATE)


class OpusTranscoder:
    """Decode AAC samples (raw, with their AudioSpecificConfig) and encode 20 ms Opus packets."""

    def __init__(self, name: str, asc: bytes, start_pts: int = 0) -> None:
        self.name = name
        self._decoder = av.CodecContext.create("aac", "r")
        self._decoder.extradata = asc
        self._resampler = av.AudioResampler(format="s16", layout="stereo", rate=OPUS_RATE, frame_size=OPUS_FRAME)
        self._encoder = av.CodecContext.create("libopus", "w")
        self._encoder.bit_rate = 64_000
        self._encoder.format = "s16"
        self._encoder.layout = "stereo"
        self._encoder.sample_rate = OPUS_RATE
        self._encoder.time_base = OPUS_TIME_BASE
        self._in_pts = 0
        self.pts = start_pts  # where the next packet goes: a continuous timeline across source restarts
        self.errors = 0

    def transcode(self, sample: bytes) -> list[av.Packet[Stream]]:
        out: list[av.Packet[Stream]] = []
        try:
            frames = self._decoder.decode(av.Packet(sample))
        except av.FFmpegError as e:
            self.errors += 1
            if self.errors == 1:
                log.warning("%s: AAC frame not decodable (%s); skipping such frames", self.name, e)
            return out
        for frame in frames:
            frame.pts = None
            for chunk in self._resampler.resample(frame):
                chunk.pts = self._in_pts
                self._in_pts += chunk.samples
                for packet in self._encoder.encode(chunk):
                    packet.pts = self.pts
                    packet.time_base = OPUS_TIME_BASE
                    self.pts += OPUS_FRAME
                    out.append(packet)
        return out
