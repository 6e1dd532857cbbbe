"""fMP4 to what RTP needs: H.264 access units in Annex B, AAC frames with their decoder config.

The hub keeps ffmpeg's fragmented MP4 (length-prefixed NAL units, parameter sets in the init segment);
aiortc's H.264 packetiser wants Annex B with start codes and SPS/PPS in front of every IDR. Converting is
a byte copy: nothing here decodes a picture.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from workers.fmp4 import (
    AUDIO_ENTRY_FIELDS,
    VISUAL_ENTRY_FIELDS,
    audio_specific_config,
    find,
    parse_init,
    read_traf,
    sample_entry_child,
)

START_CODE = b"\x00\x00\x00\x01"
RTP_VIDEO_CLOCK = 90_000


@dataclass
class Sample:
    data: bytes
    dts: int  # in the track's timescale
    duration: int
    sync: bool
    cts: int = 0  # composition offset: not 0 where the stream has B-frames


@dataclass
class TrackConfig:
    """What the sidecar needs of one track of an init segment."""

    track_id: int
    timescale: int
    codec: str
    config: bytes  # avcC or the AAC AudioSpecificConfig; empty if absent


@dataclass
class InitConfig:
    video: TrackConfig | None
    audio: TrackConfig | None


def parse_init_config(data: bytes) -> InitConfig:
    """The first video and audio track of an init segment, with the avcC / AudioSpecificConfig."""
    info = parse_init(data)
    video = audio = None
    for trak in find(data, [b"moov", b"trak"]):
        tkhd = next(find(data, [b"tkhd"], trak[0] + trak[1], trak[0] + trak[2]))
        version = data[tkhd[0] + tkhd[1]]
        track_id = struct.unpack_from(">I", data, tkhd[0] + tkhd[1] + (20 if version else 12))[0]
        track = info.tracks.get(track_id)
        if track is None:
            continue
        if track.handler == "vide" and video is None:
            avcc = sample_entry_child(data, trak, VISUAL_ENTRY_FIELDS, b"avcC")
            video = TrackConfig(track_id, track.timescale, track.codec, avcc)
        elif track.handler == "soun" and audio is None:
            esds = sample_entry_child(data, trak, AUDIO_ENTRY_FIELDS, b"esds")
            audio = TrackConfig(track_id, track.timescale, track.codec, audio_specific_config(esds))
    return InitConfig(video, audio)


@dataclass
class AvcConfig:
    length_size: int
    parameter_sets: bytes  # SPS and PPS in Annex B


def parse_avcc(avcc: bytes) -> AvcConfig:
    """NAL length size and the SPS/PPS of an avcC record (ISO/IEC 14496-15 5.2.4.1)."""
    if len(avcc) < 7 or avcc[0] != 1:
        raise ValueError("not an avcC record")
    length_size = (avcc[4] & 3) + 1
    out = bytearray()
    pos = 5
    for count_mask in (0x1F, 0xFF):
        count = avcc[pos] & count_mask
        pos += 1
        for _ in range(count):
            size = struct.unpack_from(">H", avcc, pos)[0]
            out += START_CODE + avcc[pos + 2 : pos + 2 + size]
            pos += 2 + size
    return AvcConfig(length_size, bytes(out))


def to_annexb(sample: bytes, length_size: int) -> tuple[bytes, bool]:
    """Length-prefixed NAL units to Annex B; also whether the access unit carries its own SPS."""
    out = bytearray()
    pos, end = 0, len(sample)
    has_sps = False
    while pos + length_size <= end:
        size = int.from_bytes(sample[pos : pos + length_size], "big")
        pos += length_size
        if size == 0 or pos + size > end:
            break
        nal = sample[pos : pos + size]
        has_sps = has_sps or (nal[0] & 0x1F) == 7
        out += START_CODE + nal
        pos += size
    return bytes(out), has_sps


def fragment_samples(data: bytes) -> tuple[int, list[Sample]]:
    """(track id, samples) of the first traf of one moof+mdat."""
    traf = read_traf(data)
    samples: list[Sample] = []
    dts = traf.tfdt
    for x in traf.samples:
        if x.offset + x.size > len(data):
            raise ValueError("sample outside the fragment")
        samples.append(Sample(data[x.offset : x.offset + x.size], dts, x.duration, x.sync, x.cts))
        dts += x.duration
    return traf.track_id, samples
