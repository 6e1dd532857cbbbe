"""RTP packetizers, the mirror of the depacketizers: whole frames in, RTP packets (bytes) out.

H.264 (RFC 6184): a NAL unit that fits is sent as it is, a larger one as FU-A fragments (packetization
mode 1). H.265 (RFC 7798): single NAL units and FU fragments, no DONL. AAC (RFC 3640 mpeg4-generic,
AAC-hbr): one access unit a packet behind a 16-bit AU header (13-bit size, 3-bit index), split over
packets when it is too large for one. The marker bit ends a video frame (its last packet) and an audio
access unit.

Packets are built once per frame and shared by every client of a stream (workers/rtsp/feed.py), so these
classes only count sequence numbers; timestamps are the caller's.
"""

from __future__ import annotations

import struct

MAX_PAYLOAD = 1200  # fits a UDP datagram on any usual path MTU, with room for IP/UDP/RTP headers
_HEADER = struct.Struct(">BBHII")


class Packetizer:
    """One RTP stream's sequence numbers and header fields."""

    def __init__(self, payload_type: int, ssrc: int, seq: int = 0, max_payload: int = MAX_PAYLOAD) -> None:
        self.payload_type = payload_type
        self.ssrc = ssrc
        self.seq = seq & 0xFFFF
        self.max_payload = max_payload
        self.packets = 0
        self.octets = 0

    def packet(self, payload: bytes, timestamp: int, marker: bool) -> bytes:
        header = _HEADER.pack(
            0x80, (0x80 if marker else 0) | self.payload_type, self.seq, timestamp & 0xFFFFFFFF, self.ssrc
        )
        self.seq = (self.seq + 1) & 0xFFFF
        self.packets += 1
        self.octets += len(payload)
        return header + payload


class H264Packetizer(Packetizer):
    def frame(self, nals: list[bytes], timestamp: int) -> list[bytes]:
        """The packets of one access unit (its NAL units without start codes or lengths)."""
        out: list[bytes] = []
        limit = self.max_payload
        last = len(nals) - 1
        for i, nal in enumerate(nals):
            if not nal:
                continue
            if len(nal) <= limit:
                out.append(self.packet(nal, timestamp, i == last))
                continue
            indicator = bytes([(nal[0] & 0xE0) | 28])
            kind = nal[0] & 0x1F
            body = memoryview(nal)[1:]
            step = limit - 2
            for pos in range(0, len(body), step):
                start, end = pos == 0, pos + step >= len(body)
                header = bytes([(0x80 if start else 0) | (0x40 if end else 0) | kind])
                out.append(self.packet(indicator + header + body[pos : pos + step], timestamp, end and i == last))
        return out


class H265Packetizer(Packetizer):
    def frame(self, nals: list[bytes], timestamp: int) -> list[bytes]:
        out: list[bytes] = []
        limit = self.max_payload
        last = len(nals) - 1
        for i, nal in enumerate(nals):
            if len(nal) < 3:
                continue
            if len(nal) <= limit:
                out.append(self.packet(nal, timestamp, i == last))
                continue
            kind = (nal[0] >> 1) & 0x3F
            payload_header = bytes([(nal[0] & 0x81) | (49 << 1), nal[1]])
            body = memoryview(nal)[2:]
            step = limit - 3
            for pos in range(0, len(body), step):
                start, end = pos == 0, pos + step >= len(body)
                header = bytes([(0x80 if start else 0) | (0x40 if end else 0) | kind])
                out.append(self.packet(payload_header + header + body[pos : pos + step], timestamp, end and i == last))
        return out


class AacPacketizer(Packetizer):
    """mpeg4-generic AAC-hbr: sizelength=13, indexlength=3, indexdeltalength=3 (what the SDP says)."""

    MAX_AU = (1 << 13) - 1

    def frame(self, au: bytes, timestamp: int) -> list[bytes]:
        if not au or len(au) > self.MAX_AU:
            return []
        header = b"\x00\x10" + (len(au) << 3).to_bytes(2, "big")  # 16 bits of AU headers: size, index 0
        step = self.max_payload - 4
        if len(au) <= step:
            return [self.packet(header + au, timestamp, True)]
        return [
            self.packet(header + au[pos : pos + step], timestamp, pos + step >= len(au))
            for pos in range(0, len(au), step)
        ]
