"""MP4 box reading and rewriting: split ffmpeg's fragmented MP4 pipe, read what the hub needs, patch timing.

Python never decodes video on the live path; it only walks box headers: the codec strings a browser needs
for `addSourceBuffer`, each fragment's track, decode time (tfdt), duration and keyframe flag, and an AAC
track's decoder config. Every rewrite of fragment bytes lives here too (a viewer's tfdt shift, ffmpeg's
timing repair, playback's retiming and duration scaling), so one module knows where each field sits.
"""

from __future__ import annotations

import dataclasses
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

CONTAINERS = {b"moov", b"trak", b"mdia", b"minf", b"stbl", b"moof", b"traf", b"mvex", b"edts", b"dinf"}
# Fixed fields of a sample entry before its child boxes (avcC, esds): ISO/IEC 14496-12 8.5.2 and 12.1.3/12.2.3
VISUAL_ENTRY_FIELDS = 78
AUDIO_ENTRY_FIELDS = 28

Buffer = bytes | bytearray | memoryview


def boxes(buf: Buffer, start: int = 0, end: int | None = None) -> Iterator[tuple[bytes, int, int, int]]:
    """Yield (type, box offset, header length, box size) for each complete box in buf[start:end]."""
    end = len(buf) if end is None else end
    pos = start
    while pos + 8 <= end:
        size, kind = struct.unpack_from(">I4s", buf, pos)
        header = 8
        if size == 1:
            if pos + 16 > end:
                return
            size = struct.unpack_from(">Q", buf, pos + 8)[0]
            header = 16
        elif size == 0:
            size = end - pos
        if size < header or pos + size > end:
            return
        yield kind, pos, header, size
        pos += size


def find(buf: Buffer, path: list[bytes], start: int = 0, end: int | None = None) -> Iterator[tuple[int, int, int]]:
    """Yield (offset, header, size) of every box reached by the type path below buf[start:end]."""
    for kind, pos, header, size in boxes(buf, start, end):
        if kind != path[0]:
            continue
        if len(path) == 1:
            yield pos, header, size
        else:
            yield from find(buf, path[1:], pos + header, pos + size)


@dataclass
class Track:
    track_id: int
    handler: str  # "vide" or "soun"
    timescale: int
    codec: str  # RFC 6381 string, e.g. avc1.640029 or mp4a.40.2
    width: int = 0
    height: int = 0
    channels: int = 0  # audio: the sample entry's channel count


@dataclass
class InitInfo:
    data: bytes
    tracks: dict[int, Track] = field(default_factory=dict)

    @property
    def video(self) -> Track | None:
        return next((t for t in self.tracks.values() if t.handler == "vide"), None)

    @property
    def mime(self) -> str:
        """Full MIME type with codecs, as the vendor player passes it to addSourceBuffer."""
        codecs = [t.codec for t in sorted(self.tracks.values(), key=lambda t: t.handler != "vide") if t.codec]
        kind = "video" if self.video else "audio"
        return f'{kind}/mp4; codecs="{", ".join(codecs)}"'


def _hvcc_codec(entry: str, c: bytes) -> str:
    """hev1/hvc1 codec string from an hvcC record (ISO/IEC 14496-15 Annex E)."""
    space = "ABC"[(c[1] >> 6) - 1] if c[1] >> 6 else ""
    tier = "H" if c[1] & 0x20 else "L"
    profile = c[1] & 0x1F
    compat = int.from_bytes(c[2:6], "big")
    compat_rev = int(f"{compat:032b}"[::-1], 2)
    constraints = list(c[6:12])
    while constraints and constraints[-1] == 0:
        constraints.pop()
    parts = [entry, f"{space}{profile}", f"{compat_rev:X}", f"{tier}{c[12]}"]
    parts += [f"{b:X}" for b in constraints]
    return ".".join(parts)


def _descriptor(esds: bytes, pos: int) -> tuple[int, int, int]:
    """(tag, body offset, body length) of the MPEG-4 descriptor at esds[pos]; IndexError if it is cut short."""
    tag = esds[pos]
    pos += 1
    length = 0
    for _ in range(4):
        b = esds[pos]
        pos += 1
        length = (length << 7) | (b & 0x7F)
        if not b & 0x80:
            break
    return tag, pos, length


def _skip_es_fields(esds: bytes, pos: int) -> int:
    """Past an ES_Descriptor's ES_ID, flags and optional fields, to its nested descriptors."""
    flags = esds[pos + 2]
    pos += 3
    if flags & 0x80:
        pos += 2
    if flags & 0x40:
        pos += 1 + esds[pos]
    if flags & 0x20:
        pos += 2
    return pos


def _esds_codec(esds: bytes) -> str:
    """mp4a.<objectType>.<audioObjectType> from an esds box payload."""
    tag, pos, _ = _descriptor(esds, 4)  # after version + flags
    if tag != 3:
        return "mp4a.40.2"
    pos = _skip_es_fields(esds, pos)
    tag, pos, _ = _descriptor(esds, pos)
    if tag != 4:
        return "mp4a.40.2"
    oti = esds[pos]
    pos += 13
    tag, pos, length = _descriptor(esds, pos)
    if tag == 5 and length:
        aot = esds[pos] >> 3
        if aot == 31:
            aot = 32 + (((esds[pos] & 7) << 3) | (esds[pos + 1] >> 5))
        return f"mp4a.{oti:x}.{aot}"
    return f"mp4a.{oti:x}"


def audio_specific_config(esds: bytes) -> bytes:
    """The DecoderSpecificInfo (tag 5) of an esds payload: what an AAC decoder needs as extradata."""
    pos = 4  # version + flags
    while pos < len(esds):
        try:
            tag, pos, length = _descriptor(esds, pos)
        except IndexError:
            return b""
        if tag == 5:
            return esds[pos : pos + length]
        if tag == 3:  # ES_Descriptor: ES_ID, flags, optional fields, then nested descriptors
            pos = _skip_es_fields(esds, pos)
        elif tag == 4:  # DecoderConfigDescriptor: 13 fixed bytes, then DecoderSpecificInfo
            pos += 13
        else:
            pos += length
    return b""


def sample_entry_child(data: bytes, trak: tuple[int, int, int], entry_fields: int, child: bytes) -> bytes:
    """Payload of a box inside the first sample entry of a track (avcC, esds); b"" if absent.

    `trak` is (offset, header, size) as find() yields it; `entry_fields` is VISUAL_ENTRY_FIELDS or
    AUDIO_ENTRY_FIELDS, the fixed part of the entry before its child boxes.
    """
    tpos, thead, tsize = trak
    for spos, shead, ssize in find(data, [b"mdia", b"minf", b"stbl", b"stsd"], tpos + thead, tpos + tsize):
        for _, epos, ehead, esize in boxes(data, spos + shead + 8, spos + ssize):
            for kind, cpos, chead, csize in boxes(data, epos + ehead + entry_fields, epos + esize):
                if kind == child:
                    return data[cpos + chead : cpos + csize]
            return b""
    return b""


def _sample_entry_codec(buf: bytes, stsd_pos: int, stsd_header: int, stsd_size: int) -> tuple[str, int, int]:
    first = stsd_pos + stsd_header + 8  # skip version/flags + entry count
    for kind, pos, header, size in boxes(buf, first, stsd_pos + stsd_size):
        entry = kind.decode("latin-1")
        if kind in (b"avc1", b"avc3", b"hev1", b"hvc1"):
            width, height = struct.unpack_from(">HH", buf, pos + header + 24)
            inner = pos + header + VISUAL_ENTRY_FIELDS
            for ckind, cpos, chead, _ in boxes(buf, inner, pos + size):
                payload = buf[cpos + chead : cpos + chead + 16]
                if ckind == b"avcC":
                    return f"{entry}.{payload[1]:02x}{payload[2]:02x}{payload[3]:02x}", width, height
                if ckind == b"hvcC":
                    return _hvcc_codec(entry, buf[cpos + chead : cpos + chead + 13]), width, height
            return entry, width, height
        if kind == b"mp4a":
            inner = pos + header + AUDIO_ENTRY_FIELDS
            for ckind, cpos, chead, csize in boxes(buf, inner, pos + size):
                if ckind == b"esds":
                    return _esds_codec(buf[cpos + chead : cpos + csize]), 0, 0
            return "mp4a.40.2", 0, 0
        return {"Opus": "opus", "fLaC": "flac"}.get(entry, entry), 0, 0
    return "", 0, 0


def _audio_channels(buf: bytes, stsd_pos: int, stsd_header: int, stsd_size: int) -> int:
    """channelcount of the first (audio) sample entry: after 6 reserved, data_reference_index, 8 reserved."""
    for _, pos, header, size in boxes(buf, stsd_pos + stsd_header + 8, stsd_pos + stsd_size):
        if size >= header + 18:
            return int(struct.unpack_from(">H", buf, pos + header + 16)[0])
        return 0
    return 0


def parse_init(data: bytes) -> InitInfo:
    """Tracks of an init segment (ftyp+moov): id, handler, timescale and codec string."""
    info = InitInfo(data)
    for tpos, thead, tsize in find(data, [b"moov", b"trak"]):
        body, end = tpos + thead, tpos + tsize
        tkhd = next(find(data, [b"tkhd"], body, end))
        version = data[tkhd[0] + tkhd[1]]
        track_id = struct.unpack_from(">I", data, tkhd[0] + tkhd[1] + (20 if version else 12))[0]
        mdhd = next(find(data, [b"mdia", b"mdhd"], body, end))
        mver = data[mdhd[0] + mdhd[1]]
        timescale = struct.unpack_from(">I", data, mdhd[0] + mdhd[1] + (20 if mver else 12))[0]
        hdlr = next(find(data, [b"mdia", b"hdlr"], body, end))
        handler = data[hdlr[0] + hdlr[1] + 8 : hdlr[0] + hdlr[1] + 12].decode("latin-1")
        codec, width, height, channels = "", 0, 0, 0
        for spos, shead, ssize in find(data, [b"mdia", b"minf", b"stbl", b"stsd"], body, end):
            codec, width, height = _sample_entry_codec(data, spos, shead, ssize)
            if handler == "soun":
                channels = _audio_channels(data, spos, shead, ssize)
        if handler in ("vide", "soun"):
            info.tracks[track_id] = Track(track_id, handler, timescale, codec, width, height, channels)
    return info


@dataclass
class FragInfo:
    track_id: int
    tfdt: int  # base media decode time, in the track's timescale
    tfdt_pos: int  # offset of the tfdt value inside the fragment, for per-viewer rebasing
    tfdt_size: int  # 4 or 8 bytes
    duration: int  # sum of sample durations, in the track's timescale
    keyframe: bool
    samples: int
    dur_pos: int = -1  # offset of the first sample's duration (trun, else tfhd default), -1 if implicit


@dataclass
class TrafSample:
    """One sample of a fragment, as its trun (or the tfhd defaults) describe it."""

    offset: int  # where its data starts in the fragment (moof-relative, as written by ffmpeg)
    size: int
    duration: int
    flags: int
    cts: int  # composition offset: not 0 where the stream has B-frames

    @property
    def sync(self) -> bool:
        return not (self.flags >> 16) & 1


@dataclass
class Traf:
    track_id: int
    tfdt: int
    tfdt_pos: int
    tfdt_size: int
    dur_pos: int
    samples: list[TrafSample]


def read_traf(data: bytes, default_duration: int = 0) -> Traf:
    """The first traf of a moof+mdat pair: track, decode time (and where it sits), and every sample."""
    moof = next(find(data, [b"moof"]))
    traf = next(find(data, [b"traf"], moof[0] + moof[1], moof[0] + moof[2]))
    body, end = traf[0] + traf[1], traf[0] + traf[2]
    tfhd = next(find(data, [b"tfhd"], body, end))
    p = tfhd[0] + tfhd[1]
    tf_flags = int.from_bytes(data[p + 1 : p + 4], "big")
    track_id = struct.unpack_from(">I", data, p + 4)[0]
    p += 8
    base = moof[0]
    if tf_flags & 0x1:
        base = struct.unpack_from(">Q", data, p)[0]
        p += 8
    if tf_flags & 0x2:
        p += 4
    dflt_dur, dur_pos = default_duration, -1
    if tf_flags & 0x8:
        dflt_dur, dur_pos = struct.unpack_from(">I", data, p)[0], p
        p += 4
    dflt_size = 0
    if tf_flags & 0x10:
        dflt_size = struct.unpack_from(">I", data, p)[0]
        p += 4
    dflt_flags = struct.unpack_from(">I", data, p)[0] if tf_flags & 0x20 else 0
    tfdt_val, tfdt_pos, tfdt_size = 0, -1, 0
    for pos, head, _ in find(data, [b"tfdt"], body, end):
        tfdt_size = 8 if data[pos + head] == 1 else 4
        tfdt_pos = pos + head + 4
        tfdt_val = int.from_bytes(data[tfdt_pos : tfdt_pos + tfdt_size], "big")
    samples: list[TrafSample] = []
    offset = base
    for pos, head, _ in find(data, [b"trun"], body, end):
        p = pos + head
        tr_flags = int.from_bytes(data[p + 1 : p + 4], "big")
        count = struct.unpack_from(">I", data, p + 4)[0]
        p += 8
        if tr_flags & 0x1:
            offset = base + struct.unpack_from(">i", data, p)[0]
            p += 4
        first_flags = None
        if tr_flags & 0x4:
            first_flags = struct.unpack_from(">I", data, p)[0]
            p += 4
        for i in range(count):
            dur, size, flags, cts = dflt_dur, dflt_size, dflt_flags, 0
            if tr_flags & 0x100:
                if not samples:
                    dur_pos = p
                dur = struct.unpack_from(">I", data, p)[0]
                p += 4
            if tr_flags & 0x200:
                size = struct.unpack_from(">I", data, p)[0]
                p += 4
            if tr_flags & 0x400:
                flags = struct.unpack_from(">I", data, p)[0]
                p += 4
            if tr_flags & 0x800:
                cts = struct.unpack_from(">i", data, p)[0]
                p += 4
            if i == 0 and first_flags is not None:
                flags = first_flags
            samples.append(TrafSample(offset, size, dur, flags, cts))
            offset += size
    return Traf(track_id, tfdt_val, tfdt_pos, tfdt_size, dur_pos, samples)


def parse_fragment(data: bytes, default_duration: int = 0) -> FragInfo:
    """What the hub needs of a moof+mdat pair: track, decode time, duration, keyframe flag."""
    t = read_traf(data, default_duration)
    keyframe = bool(t.samples) and t.samples[0].sync
    return FragInfo(
        t.track_id,
        t.tfdt,
        t.tfdt_pos,
        t.tfdt_size,
        sum(x.duration for x in t.samples),
        keyframe,
        len(t.samples),
        t.dur_pos,
    )


def _patch(data: bytes, pos: int, size: int, value: int) -> bytes:
    return data[:pos] + value.to_bytes(size, "big") + data[pos + size :]


def shift_decode_time(data: bytes, info: FragInfo, ticks: int) -> bytes:
    """A fragment's bytes with its decode time moved back by `ticks` (never below zero), as a new copy.

    A viewer's timeline starts at zero where it joined; the value wraps to the field's width as a 32-bit
    tfdt would. `info` must describe `data` (parse_fragment) and have a tfdt (tfdt_pos >= 0).
    """
    value = max(0, info.tfdt - ticks)
    value &= (1 << (8 * info.tfdt_size)) - 1
    return _patch(data, info.tfdt_pos, info.tfdt_size, value)


def retime(data: bytes, tfdt: int, speed: float = 1.0) -> bytes:
    """A fragment with its decode time set to `tfdt` and, at another speed, its durations divided."""
    buf = bytearray(data)
    moof = next(find(buf, [b"moof"]))
    for tpos, thead, tsize in find(buf, [b"traf"], moof[0] + moof[1], moof[0] + moof[2]):
        body, end = tpos + thead, tpos + tsize
        for pos, head, _ in find(buf, [b"tfdt"], body, end):
            if buf[pos + head] == 1:
                struct.pack_into(">Q", buf, pos + head + 4, tfdt & (2**64 - 1))
            else:
                struct.pack_into(">I", buf, pos + head + 4, tfdt & 0xFFFFFFFF)
        if speed == 1.0:
            continue
        for pos, head, _ in find(buf, [b"tfhd"], body, end):
            p = pos + head
            flags = int.from_bytes(buf[p + 1 : p + 4], "big")
            p += 8 + (8 if flags & 0x1 else 0) + (4 if flags & 0x2 else 0)
            if flags & 0x8:
                _scale(buf, p, speed)
        for pos, head, _ in find(buf, [b"trun"], body, end):
            p = pos + head
            version, flags = buf[p], int.from_bytes(buf[p + 1 : p + 4], "big")
            count = struct.unpack_from(">I", buf, p + 4)[0]
            p += 8 + (4 if flags & 0x1 else 0) + (4 if flags & 0x4 else 0)
            for _ in range(count):
                if flags & 0x100:
                    _scale(buf, p, speed)
                    p += 4
                p += (4 if flags & 0x200 else 0) + (4 if flags & 0x400 else 0)
                if flags & 0x800:
                    _scale(buf, p, speed, signed=version == 1)
                    p += 4
    return bytes(buf)


def _scale(buf: bytearray, pos: int, speed: float, signed: bool = False) -> None:
    """Divide one duration (or composition offset) field by `speed`; a real duration stays at least 1 tick."""
    fmt = ">i" if signed else ">I"
    value = struct.unpack_from(fmt, buf, pos)[0]
    scaled = round(value / speed)
    struct.pack_into(fmt, buf, pos, max(1, scaled) if value > 0 and not signed else scaled)


class TimingRepair:
    """Mend the sample timing that ffmpeg's frag_every_frame gets wrong with more than one track.

    When a packet of one track flushes the fragment, the pending sample of the other track is written
    with duration 0, and that track's next fragment repeats its decode time: in a browser one of the two
    samples is lost (audio stutters). Such a fragment is held until the next one of its track arrives,
    whose decode time or duration tells the real one; then both are patched in place.
    """

    def __init__(self) -> None:
        self._held: dict[int, tuple[bytes, FragInfo]] = {}
        self._end: dict[int, int] = {}  # where each track's timeline has got to
        self._last_duration: dict[int, int] = {}

    def push(self, data: bytes, info: FragInfo) -> list[tuple[bytes, FragInfo]]:
        out: list[tuple[bytes, FragInfo]] = []
        track = info.track_id
        held = self._held.pop(track, None)
        if held is not None:
            hdata, hinfo = held
            duration = (
                info.tfdt - hinfo.tfdt
                if info.tfdt > hinfo.tfdt
                else (info.duration or self._last_duration.get(track, 0))
            )
            if duration > 0 and hinfo.dur_pos >= 0:
                hdata = _patch(hdata, hinfo.dur_pos, 4, duration)
                hinfo = dataclasses.replace(hinfo, duration=duration)
            out.append((hdata, hinfo))
            self._end[track] = hinfo.tfdt + hinfo.duration
        end = self._end.get(track)
        if end is not None and info.tfdt < end and info.tfdt_pos >= 0:
            data = _patch(data, info.tfdt_pos, info.tfdt_size, end)
            info = dataclasses.replace(info, tfdt=end)
        if info.duration == 0 and info.samples == 1:
            self._held[track] = (data, info)
        else:
            self._last_duration[track] = info.duration // max(1, info.samples)
            self._end[track] = info.tfdt + info.duration
            out.append((data, info))
        return out


class Splitter:
    """Cut a byte stream into ('init', ftyp+moov) and ('fragment', moof+mdat) pieces as boxes complete."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._pending = bytearray()  # ftyp or moof waiting for its partner box
        self._limit = 64 * 1024 * 1024

    def feed(self, chunk: bytes) -> list[tuple[str, bytes]]:
        self._buf += chunk
        out: list[tuple[str, bytes]] = []
        pos = 0
        for kind, bpos, _, size in boxes(self._buf):
            box = bytes(self._buf[bpos : bpos + size])
            pos = bpos + size
            if kind in (b"ftyp", b"moof"):
                self._pending = bytearray(box)
            elif kind == b"moov":
                out.append(("init", bytes(self._pending) + box))
                self._pending = bytearray()
            elif kind == b"mdat" and self._pending:
                out.append(("fragment", bytes(self._pending) + box))
                self._pending = bytearray()
        del self._buf[:pos]
        if len(self._buf) > self._limit:
            raise ValueError("MP4 box larger than 64 MiB: not a live stream")
        return out


def retime_fragment(
    data: bytes, info: FragInfo, tfdt: int, fix_duration: Callable[[int], int]
) -> tuple[bytes, FragInfo]:
    """This moof+mdat with its decode time set to `tfdt` and each sample duration passed through `fix_duration`.

    The owned timeline (workers/timeline.py) decides the decode time; the durations that ffmpeg derived
    from the camera's next timestamp are wrong exactly when those timestamps broke (1 tick after a clamp,
    an hour after a jump forward), so each goes through the timeline's plausibility check. Returns the
    input object unchanged when nothing moved (the common case costs no copy).
    """
    out: bytearray | None = None
    total = 0
    samples = 0
    moof = next(find(data, [b"moof"]), None)
    traf = next(find(data, [b"traf"], moof[0] + moof[1], moof[0] + moof[2]), None) if moof else None
    if traf is not None:
        body, end = traf[0] + traf[1], traf[0] + traf[2]
        tfhd = next(find(data, [b"tfhd"], body, end))
        p = tfhd[0] + tfhd[1]
        tf_flags = int.from_bytes(data[p + 1 : p + 4], "big")
        p += 8 + (8 if tf_flags & 0x1 else 0) + (4 if tf_flags & 0x2 else 0)
        default_duration, default_pos = 0, -1
        if tf_flags & 0x8:
            default_duration, default_pos = struct.unpack_from(">I", data, p)[0], p
        for pos, head, _ in find(data, [b"trun"], body, end):
            p = pos + head
            tr_flags = int.from_bytes(data[p + 1 : p + 4], "big")
            count = struct.unpack_from(">I", data, p + 4)[0]
            p += 8 + (4 if tr_flags & 0x1 else 0) + (4 if tr_flags & 0x4 else 0)
            stride = 4 * bin(tr_flags & 0xF00).count("1")
            for _ in range(count):
                samples += 1
                if tr_flags & 0x100:
                    dur = struct.unpack_from(">I", data, p)[0]
                    fixed = fix_duration(dur)
                    if fixed != dur:
                        out = out if out is not None else bytearray(data)
                        struct.pack_into(">I", out, p, fixed)
                    total += fixed
                else:
                    total += default_duration
                p += stride
            if not tr_flags & 0x100 and default_pos >= 0 and count:
                fixed = fix_duration(default_duration)
                if fixed != default_duration:
                    out = out if out is not None else bytearray(data)
                    struct.pack_into(">I", out, default_pos, fixed)
                    total += (fixed - default_duration) * count
    if tfdt != info.tfdt and info.tfdt_pos >= 0:
        out = out if out is not None else bytearray(data)
        out[info.tfdt_pos : info.tfdt_pos + info.tfdt_size] = (tfdt & ((1 << (8 * info.tfdt_size)) - 1)).to_bytes(
            info.tfdt_size, "big"
        )
    if out is None:
        return data, info
    return bytes(out), dataclasses.replace(info, tfdt=tfdt, duration=total if samples else info.duration)


def set_track_id(data: bytes, track_id: int) -> bytes:
    """A moof+mdat with every traf's tfhd numbering `track_id` (a track moved into an init of its own)."""
    buf = bytearray(data)
    for moof_pos, moof_head, moof_size in find(buf, [b"moof"]):
        for tpos, thead, tsize in find(buf, [b"traf"], moof_pos + moof_head, moof_pos + moof_size):
            for pos, head, _ in find(buf, [b"tfhd"], tpos + thead, tpos + tsize):
                struct.pack_into(">I", buf, pos + head + 4, track_id)
    return bytes(buf)
