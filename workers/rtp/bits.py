"""Bit reading for parameter sets (SPS): exp-Golomb codes over the RBSP (emulation bytes removed)."""

from __future__ import annotations


def unescape(nal: bytes) -> bytes:
    """The RBSP of a NAL unit: every 00 00 03 becomes 00 00 (the 03 only prevents a false start code)."""
    if b"\x00\x00\x03" not in nal:
        return nal
    out = bytearray()
    zeros = 0
    for b in nal:
        if zeros >= 2 and b == 3:
            zeros = 0
            continue
        out.append(b)
        zeros = zeros + 1 if b == 0 else 0
    return bytes(out)


class BitReader:
    """MSB-first reader; reading past the end raises ValueError (a truncated or foreign parameter set)."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0  # in bits

    def u(self, n: int) -> int:
        value = 0
        for _ in range(n):
            byte = self.pos >> 3
            if byte >= len(self.data):
                raise ValueError("parameter set ends early")
            value = (value << 1) | ((self.data[byte] >> (7 - (self.pos & 7))) & 1)
            self.pos += 1
        return value

    def skip(self, n: int) -> None:
        self.pos += n
        if self.pos > len(self.data) * 8:
            raise ValueError("parameter set ends early")

    def ue(self) -> int:
        zeros = 0
        while self.u(1) == 0:
            zeros += 1
            if zeros > 31:
                raise ValueError("bad exp-Golomb code")
        return (1 << zeros) - 1 + self.u(zeros)

    def se(self) -> int:
        k = self.ue()
        return (k + 1) // 2 if k & 1 else -(k // 2)
