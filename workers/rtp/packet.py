"""RTP packet header (RFC 3550 §5.1) and the frame assembly every video depacketizer shares."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field


@dataclass(slots=True)
class RtpPacket:
    marker: bool
    payload_type: int
    seq: int
    timestamp: int
    ssrc: int
    payload: bytes
    arrived: float = 0.0


def parse_rtp(data: bytes, arrived: float = 0.0) -> RtpPacket | None:
    """The header fields and the payload (CSRCs, extension and padding removed); None if not RTP v2."""
    if len(data) < 12 or data[0] >> 6 != 2:
        return None
    b0, b1, seq, ts, ssrc = struct.unpack_from(">BBHII", data)
    pos = 12 + 4 * (b0 & 0x0F)
    end = len(data)
    if b0 & 0x10:  # header extension
        if end < pos + 4:
            return None
        pos += 4 + 4 * struct.unpack_from(">H", data, pos + 2)[0]
    if b0 & 0x20:  # padding: the last byte says how much
        end -= data[-1]
    if pos > end:
        return None
    return RtpPacket(bool(b1 & 0x80), b1 & 0x7F, seq, ts, ssrc, data[pos:end], arrived)


class UnsupportedPacketization(ValueError):
    """A payload format we do not depacketize (STAP-B, MTAP, DONL, ...): the source needs ffmpeg."""


@dataclass(slots=True)
class AccessUnit:
    """One whole video frame: its NAL units (without start codes), in decode order."""

    timestamp: int  # RTP timestamp (90 kHz)
    nals: list[bytes]
    keyframe: bool
    arrived: float  # when its last packet arrived (time.monotonic())
    params: list[bytes] = field(default_factory=list)  # parameter sets it carried (VPS/SPS/PPS)


class FrameAssembler:
    """Collects a frame's NAL units by RTP timestamp; the marker bit (or, failing that, a new timestamp)
    ends it. A lost packet spoils the frame and every frame after it until the next keyframe, which is
    better than handing a decoder half a picture to smear over the rest of the GOP."""

    PARAM_TYPES: tuple[int, ...] = ()
    AUD_TYPE = -1
    KEY_TYPES: tuple[int, ...] = ()

    def __init__(self) -> None:
        self._ts: int | None = None
        self._nals: list[bytes] = []
        self._fu: bytearray | None = None
        self._seq: int | None = None
        self._broken = False
        self._need_key = True  # until the first keyframe, frames cannot be decoded anyway
        self.lost_packets = 0
        self.dropped_frames = 0

    @staticmethod
    def nal_type(nal: bytes) -> int:
        raise NotImplementedError

    def unpack(self, payload: bytes) -> None:
        """Append the NAL units in one RTP payload (or continue a fragmented one)."""
        raise NotImplementedError

    def push(self, pkt: RtpPacket) -> list[AccessUnit]:
        out: list[AccessUnit] = []
        lost = False
        if self._seq is not None and pkt.seq != (self._seq + 1) & 0xFFFF:
            gap = (pkt.seq - self._seq - 1) & 0xFFFF
            if gap >= 0x8000:
                return out  # late or duplicate: its frame has been handed on already
            self.lost_packets += gap
            lost = self._broken = True  # the pending frame may have lost its tail ...
            self._fu = None
        if self._ts is not None and pkt.timestamp != self._ts:
            au = self._finish(pkt.arrived)  # the marker bit was missing: a new timestamp ends the frame
            if au is not None:
                out.append(au)
            self._broken = lost  # ... and this one its head
        self._seq = pkt.seq
        self._ts = pkt.timestamp
        if pkt.payload:
            try:
                self.unpack(pkt.payload)
            except UnsupportedPacketization:
                raise
            except (IndexError, ValueError):
                self._broken = True
        if pkt.marker:
            au = self._finish(pkt.arrived)
            if au is not None:
                out.append(au)
        return out

    def _finish(self, arrived: float) -> AccessUnit | None:
        ts, nals, broken = self._ts, self._nals, self._broken or self._fu is not None
        self._ts, self._nals, self._fu, self._broken = None, [], None, False
        if ts is None or (not nals and not broken):
            return None
        seen: set[bytes] = set()
        kept: list[bytes] = []
        params: list[bytes] = []
        key = False
        aud = False
        for nal in nals:
            t = self.nal_type(nal)
            if t in self.PARAM_TYPES:
                if nal in seen:
                    continue  # repeated before each slice of a keyframe: once per frame is enough
                seen.add(nal)
                params.append(nal)
            elif t == self.AUD_TYPE:
                if aud or kept:
                    continue  # an access unit delimiter belongs first, once
                aud = True
            elif t in self.KEY_TYPES:
                key = True
            kept.append(nal)
        if broken or (self._need_key and not key):
            self._need_key = True
            self.dropped_frames += 1
            return None
        self._need_key = False
        return AccessUnit(ts, kept, key, arrived, params)
