"""Which tone is in a block of PCM: a Goertzel scan in pure Python (the test venv has no numpy)."""

from __future__ import annotations

import math
import struct


def samples_s16le(pcm: bytes) -> list[int]:
    return list(struct.unpack(f"<{len(pcm) // 2}h", pcm[: len(pcm) // 2 * 2]))


def power(samples: list[int] | list[float], rate: int, freq: float) -> float:
    """Goertzel: the signal's power at one frequency."""
    coeff = 2 * math.cos(2 * math.pi * freq / rate)
    s1 = s2 = 0.0
    for x in samples:
        s1, s2 = x + coeff * s1 - s2, s1
    return s1 * s1 + s2 * s2 - coeff * s1 * s2


def dominant(samples: list[int] | list[float], rate: int, low: int = 100, high: int = 3500, step: int = 10) -> float:
    """The frequency (to `step` Hz) with the most power between low and high."""
    return float(max(range(low, high + 1, step), key=lambda f: power(samples, rate, f)))


def rms(samples: list[int] | list[float]) -> float:
    return math.sqrt(sum(x * x for x in samples) / max(1, len(samples)))
