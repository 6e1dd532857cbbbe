"""Fragmented MP4 writing for the live path: the init segment (ftyp+moov) and one moof+mdat per frame,
in exactly the shape ffmpeg's `frag_every_frame` pipe gives the hub (tfdt, trun with duration, size and
flags per sample, default-base-is-moof), so every consumer reads both the same way.

A fragment is written the moment its frame is complete: its duration is the frame interval seen last
(the next frame's time is not known yet, and waiting for it is the latency this path exists to remove).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

VIDEO_TRACK, AUDIO_TRACK = 1, 2
KEY_FLAGS = 0x02000000  # sample_depends_on = 2 (an I picture)
DELTA_FLAGS = 0x01010000  # sample_depends_on = 1, sample_is_non_sync_sample
MATRIX = struct.pack(">9I", 0x10000, 0, 0, 0, 0x10000, 0, 0, 0, 0x40000000)


def box(kind: bytes, *parts: bytes) -> bytes:
    body = b"".join(parts)
    return struct.pack(">I4s", 8 + len(body), kind) + body


def full_box(kind: bytes, version: int, flags: int, *parts: bytes) -> bytes:
    return box(kind, struct.pack(">I", (version << 24) | flags), *parts)


@dataclass
class VideoSpec:
    entry: bytes  # b"avc1" or b"hev1"
    config: bytes  # the avcC or hvcC record
    width: int
    height: int
    timescale: int = 90000

    @property
    def config_box(self) -> bytes:
        return box(b"avcC" if self.entry == b"avc1" else b"hvcC", self.config)


@dataclass
class AudioSpec:
    config: bytes  # AudioSpecificConfig
    rate: int
    channels: int

    @property
    def timescale(self) -> int:
        return self.rate


def _descriptor(tag: int, body: bytes) -> bytes:
    n = len(body)
    size = bytes([0x80 | (n >> 21) & 0x7F, 0x80 | (n >> 14) & 0x7F, 0x80 | (n >> 7) & 0x7F, n & 0x7F])
    return bytes([tag]) + size + body


def esds(config: bytes) -> bytes:
    decoder_specific = _descriptor(5, config)
    decoder_config = _descriptor(4, bytes([0x40, 0x15]) + b"\x00\x00\x00" + struct.pack(">II", 0, 0) + decoder_specific)
    es = _descriptor(3, b"\x00\x00\x00" + decoder_config + _descriptor(6, b"\x02"))
    return full_box(b"esds", 0, 0, es)


def _sample_entry(spec: VideoSpec | AudioSpec) -> bytes:
    if isinstance(spec, VideoSpec):
        return box(
            spec.entry,
            b"\x00" * 6 + struct.pack(">H", 1),
            b"\x00" * 16,
            struct.pack(">HHIIIH", spec.width, spec.height, 0x480000, 0x480000, 0, 1),
            b"\x00" * 32,
            struct.pack(">Hh", 0x18, -1),
            spec.config_box,
        )
    rate = spec.rate if spec.rate < 0x10000 else 0
    return box(
        b"mp4a",
        b"\x00" * 6 + struct.pack(">H", 1),
        b"\x00" * 8,
        struct.pack(">HHHHI", spec.channels, 16, 0, 0, rate << 16),
        esds(spec.config),
    )


def _trak(track_id: int, spec: VideoSpec | AudioSpec) -> bytes:
    video = isinstance(spec, VideoSpec)
    width, height = (spec.width, spec.height) if isinstance(spec, VideoSpec) else (0, 0)
    tkhd = full_box(
        b"tkhd",
        0,
        3,
        struct.pack(">IIIII", 0, 0, track_id, 0, 0),
        b"\x00" * 8,
        struct.pack(">hhhH", 0, 0, 0 if video else 0x100, 0),
        MATRIX,
        struct.pack(">II", width << 16, height << 16),
    )
    mdhd = full_box(b"mdhd", 0, 0, struct.pack(">IIIIHH", 0, 0, spec.timescale, 0, 0x55C4, 0))
    handler, name = (b"vide", b"VideoHandler\x00") if video else (b"soun", b"SoundHandler\x00")
    hdlr = full_box(b"hdlr", 0, 0, b"\x00" * 4, handler, b"\x00" * 12, name)
    media_header = full_box(b"vmhd", 0, 1, b"\x00" * 8) if video else full_box(b"smhd", 0, 0, b"\x00" * 4)
    dinf = box(b"dinf", full_box(b"dref", 0, 0, struct.pack(">I", 1), full_box(b"url ", 0, 1)))
    stbl = box(
        b"stbl",
        full_box(b"stsd", 0, 0, struct.pack(">I", 1), _sample_entry(spec)),
        full_box(b"stts", 0, 0, b"\x00" * 4),
        full_box(b"stsc", 0, 0, b"\x00" * 4),
        full_box(b"stsz", 0, 0, b"\x00" * 8),
        full_box(b"stco", 0, 0, b"\x00" * 4),
    )
    return box(b"trak", tkhd, box(b"mdia", mdhd, hdlr, box(b"minf", media_header, dinf, stbl)))


def init_segment(video: VideoSpec | None, audio: AudioSpec | None) -> bytes:
    """ftyp+moov with the video as track 1 and the audio as track 2 (as ffmpeg numbers them)."""
    tracks: list[tuple[int, VideoSpec | AudioSpec]] = []
    if video is not None:
        tracks.append((VIDEO_TRACK, video))
    if audio is not None:
        tracks.append((AUDIO_TRACK, audio))
    ftyp = box(b"ftyp", b"iso5", struct.pack(">I", 512), b"iso5iso6mp41")
    mvhd = full_box(
        b"mvhd",
        0,
        0,
        struct.pack(">IIIIIH", 0, 0, 1000, 0, 0x10000, 0x100),
        b"\x00" * 10,
        MATRIX,
        b"\x00" * 24,
        struct.pack(">I", max((t for t, _ in tracks), default=0) + 1),
    )
    trex = [full_box(b"trex", 0, 0, struct.pack(">IIIII", t, 1, 0, 0, 0)) for t, _ in tracks]
    moov = box(b"moov", mvhd, *(_trak(t, s) for t, s in tracks), box(b"mvex", *trex))
    return ftyp + moov


# moof = mfhd (16) + traf (8 + tfhd 16 + tfdt 20 + trun 32) = 8 + 16 + 76
MOOF_SIZE = 100
TRAF_SIZE = 76
TFDT_POS = 60  # where the 64-bit decode time sits in a fragment (for FragInfo without re-parsing)
DURATION_POS = 88  # where the sample duration sits


def fragment(seq: int, track_id: int, tfdt: int, duration: int, data: bytes, keyframe: bool, cts: int = 0) -> bytes:
    """One moof+mdat holding one sample; `cts` is its composition offset (B-frames), in the track's clock.

    Without a composition offset the layout is the one TFDT_POS and DURATION_POS describe; with one the
    trun (version 1, signed offsets) is 4 bytes longer, and those positions still hold.
    """
    flags = KEY_FLAGS if keyframe else DELTA_FLAGS
    if cts:
        head = struct.pack(
            ">I4s" "I4sII" "I4s" "I4sII" "I4sIQ" "I4sIIiIIIi" "I4s",
            MOOF_SIZE + 4, b"moof",
            16, b"mfhd", 0, seq & 0xFFFFFFFF,
            TRAF_SIZE + 4, b"traf",
            16, b"tfhd", 0x020000, track_id,
            20, b"tfdt", 0x01000000, tfdt,
            36, b"trun", 0x01000F01, 1, MOOF_SIZE + 12, duration, len(data), flags, cts,
            8 + len(data), b"mdat",
        )  # fmt: skip
        return head + data
    head = struct.pack(
        ">I4s" "I4sII" "I4s" "I4sII" "I4sIQ" "I4sIIiIII" "I4s",
        MOOF_SIZE, b"moof",
        16, b"mfhd", 0, seq & 0xFFFFFFFF,
        TRAF_SIZE, b"traf",
        16, b"tfhd", 0x020000, track_id,
        20, b"tfdt", 0x01000000, tfdt,
        32, b"trun", 0x000701, 1, MOOF_SIZE + 8, duration, len(data), flags,
        8 + len(data), b"mdat",
    )  # fmt: skip
    return head + data


def length_prefixed(nals: list[bytes]) -> bytes:
    """NAL units as an MP4 sample: each with a 4-byte big-endian length instead of a start code."""
    return b"".join(len(n).to_bytes(4, "big") + n for n in nals)
