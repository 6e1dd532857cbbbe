"""G.711 (ITU-T G.711) μ-law and A-law: the only audio most camera speakers take over RTSP.

16-bit linear PCM is companded to 8-bit codes by segment (a power of two) and 4 bits of mantissa.
Encoding goes through a table of all 65,536 sample values, built once; talk-back moves 8,000 samples a
second per speaker, which a table lookup does without numpy.
"""

from __future__ import annotations

import struct

_ULAW_ENDS = (0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF)
_ALAW_ENDS = (0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF)


def _segment(value: int, ends: tuple[int, ...]) -> int:
    for i, end in enumerate(ends):
        if value <= end:
            return i
    return len(ends)


def ulaw_byte(sample: int) -> int:
    """One 16-bit sample as a μ-law code (14-bit magnitude, bias 33, bits inverted on the wire)."""
    pcm = sample >> 2
    mask = 0xFF
    if pcm < 0:
        pcm, mask = -pcm, 0x7F
    pcm = min(pcm, 8159) + 0x21
    seg = _segment(pcm, _ULAW_ENDS)
    if seg >= 8:
        return 0x7F ^ mask
    return ((seg << 4) | ((pcm >> (seg + 1)) & 0x0F)) ^ mask


def alaw_byte(sample: int) -> int:
    """One 16-bit sample as an A-law code (13-bit magnitude, even bits inverted on the wire)."""
    pcm = sample >> 3
    mask = 0xD5
    if pcm < 0:
        pcm, mask = -pcm - 1, 0x55
    seg = _segment(pcm, _ALAW_ENDS)
    if seg >= 8:
        return 0x7F ^ mask
    mantissa = (pcm >> 1) if seg < 2 else (pcm >> seg)
    return ((seg << 4) | (mantissa & 0x0F)) ^ mask


def ulaw_sample(code: int) -> int:
    code = ~code & 0xFF
    t = (((code & 0x0F) << 3) + 0x84) << ((code & 0x70) >> 4)
    return 0x84 - t if code & 0x80 else t - 0x84


def alaw_sample(code: int) -> int:
    code ^= 0x55
    t = (code & 0x0F) << 4
    seg = (code & 0x70) >> 4
    if seg == 0:
        t += 8
    else:
        t = (t + 0x108) << (seg - 1)
    return t if code & 0x80 else -t


# index = the sample's 16 bits as unsigned (what struct's "H" gives for little-endian s16 bytes)
_ULAW = bytes(ulaw_byte(v - 0x10000 if v & 0x8000 else v) for v in range(0x10000))
_ALAW = bytes(alaw_byte(v - 0x10000 if v & 0x8000 else v) for v in range(0x10000))
ENCODINGS = ("PCMU", "PCMA")


def encode(pcm: bytes, encoding: str) -> bytes:
    """Signed 16-bit little-endian PCM as G.711 bytes, one per sample; encoding is "PCMU" or "PCMA"."""
    table = _ULAW if encoding == "PCMU" else _ALAW
    n = len(pcm) // 2
    return bytes(table[v] for v in struct.unpack(f"<{n}H", pcm[: 2 * n]))


def decode(data: bytes, encoding: str) -> list[int]:
    """G.711 bytes back to 16-bit samples (tests check what a camera's speaker received)."""
    expand = ulaw_sample if encoding == "PCMU" else alaw_sample
    return [expand(b) for b in data]
