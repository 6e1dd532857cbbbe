"""AAC over RTP, mpeg4-generic (RFC 3640, AAC-hbr/AAC-lbr): AU headers, then the access units; and ADTS
(what the transcoder for G.711 writes). Either way: raw AAC frames, 1024 samples each, and the
AudioSpecificConfig for the esds box."""

from __future__ import annotations

from dataclasses import dataclass

from workers.rtp.bits import BitReader
from workers.rtp.packet import RtpPacket

SAMPLE_RATES = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350)


@dataclass(slots=True)
class AudioFrame:
    timestamp: int  # in the stream's clock (the sample rate)
    data: bytes
    arrived: float


def asc_info(config: bytes) -> tuple[int, int, int]:
    """(audio object type, sample rate, channels) of an AudioSpecificConfig."""
    r = BitReader(config)
    aot = r.u(5)
    if aot == 31:
        aot = 32 + r.u(6)
    index = r.u(4)
    rate = r.u(24) if index == 15 else SAMPLE_RATES[index] if index < len(SAMPLE_RATES) else 0
    channels = r.u(4)
    return aot, rate, channels


def make_asc(aot: int, rate: int, channels: int) -> bytes:
    """A two-byte AudioSpecificConfig for AAC-LC-style object types at a standard rate."""
    index = SAMPLE_RATES.index(rate)
    value = (aot << 11) | (index << 7) | (channels << 3)
    return value.to_bytes(2, "big")


class AacDepacketizer:
    """mpeg4-generic with the fmtp's sizelength/indexlength/indexdeltalength (13/3/3 for AAC-hbr)."""

    def __init__(self, fmtp: dict[str, str], frame_samples: int = 1024) -> None:
        self.size_bits = int(fmtp.get("sizelength", "13") or 13)
        self.index_bits = int(fmtp.get("indexlength", "3") or 3)
        self.delta_bits = int(fmtp.get("indexdeltalength", "3") or 3)
        self.frame_samples = frame_samples
        self._frag = bytearray()
        self._frag_size = 0

    def push(self, pkt: RtpPacket) -> list[AudioFrame]:
        p = pkt.payload
        if len(p) < 2:
            return []
        header_bits = (p[0] << 8) | p[1]
        header_bytes = (header_bits + 7) // 8
        r = BitReader(p[2 : 2 + header_bytes])
        sizes: list[int] = []
        try:
            while r.pos + self.size_bits <= header_bits:
                sizes.append(r.u(self.size_bits))
                r.skip(self.index_bits if len(sizes) == 1 else self.delta_bits)
        except ValueError:
            return []
        pos = 2 + header_bytes
        if len(sizes) == 1 and sizes[0] > len(p) - pos:  # one AU fragmented over packets
            if not self._frag:
                self._frag_size = sizes[0]
            self._frag += p[pos:]
            if len(self._frag) >= self._frag_size or pkt.marker:
                data, self._frag = bytes(self._frag[: self._frag_size]), bytearray()
                return [AudioFrame(pkt.timestamp, data, pkt.arrived)]
            return []
        self._frag = bytearray()
        out: list[AudioFrame] = []
        for i, size in enumerate(sizes):
            if pos + size > len(p):
                break
            ts = (pkt.timestamp + i * self.frame_samples) & 0xFFFFFFFF
            out.append(AudioFrame(ts, p[pos : pos + size], pkt.arrived))
            pos += size
        return out


class AdtsReader:
    """Cuts an ADTS byte stream into raw AAC frames; remembers the stream's AudioSpecificConfig."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self.config = b""
        self.rate = 0

    def feed(self, chunk: bytes) -> list[bytes]:
        self._buf += chunk
        buf = self._buf
        out: list[bytes] = []
        pos = 0
        while len(buf) - pos >= 7:
            if buf[pos] != 0xFF or buf[pos + 1] & 0xF6 != 0xF0:
                pos += 1  # resync on the 12-bit syncword
                continue
            length = ((buf[pos + 3] & 3) << 11) | (buf[pos + 4] << 3) | (buf[pos + 5] >> 5)
            header = 7 if buf[pos + 1] & 1 else 9
            if length < header:
                pos += 1
                continue
            if len(buf) - pos < length:
                break
            if not self.config:
                aot = (buf[pos + 2] >> 6) + 1
                index = (buf[pos + 2] >> 2) & 0xF
                channels = ((buf[pos + 2] & 1) << 2) | (buf[pos + 3] >> 6)
                self.rate = SAMPLE_RATES[index] if index < len(SAMPLE_RATES) else 0
                self.config = make_asc(aot, self.rate, channels)
            out.append(bytes(buf[pos + header : pos + length]))
            pos += length
        del buf[:pos]
        return out
