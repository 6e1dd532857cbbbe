"""RtpFeed: one hub's fragments as RTP packets, made once and shared by every RTSP client of that hub.

Every client of a stream gets the same packets: one SSRC, one sequence numbering and one RTP timeline per
track, so a fragment is cut into packets once however many clients watch (what the WebSocket path does
with its frame bytes). A client's PLAY answer names, in RTP-Info, the sequence number and timestamp of the
first packet it will get; it starts at the newest keyframe of the GOP cache, so its first picture comes
at once. Fragments are packetized strictly in ring order (a client asking for a later one first makes
the feed catch up), so sequence numbers always follow the stream's own order.

RTP timestamps come from the fragments' decode time plus composition offset (90 kHz video, the sample
rate for AAC), on the feed's own timeline: a restart of the source's ffmpeg continues it where it stopped
instead of jumping back, and a change of codec (H.264 to H.265, another AAC config) marks the feed broken,
since the SDP every client holds no longer describes it: its clients are disconnected and reconnect.
"""

from __future__ import annotations

import base64
import logging
import random
import struct
import time
from collections import deque
from dataclasses import dataclass, field

from workers.fmp4 import (
    AUDIO_ENTRY_FIELDS,
    VISUAL_ENTRY_FIELDS,
    InitInfo,
    audio_specific_config,
    find,
    read_traf,
    sample_entry_child,
)
from workers.hub import Fragment, StreamHub
from workers.rtp.aac import asc_info
from workers.rtp.packetize import AacPacketizer, H264Packetizer, H265Packetizer

log = logging.getLogger("h5gate.rtsp.serve")

VIDEO, AUDIO = 0, 1  # SDP track index (a=control:trackID=N)
VIDEO_PT, AUDIO_PT = 96, 97
NTP_EPOCH = 2208988800  # seconds from 1900 (NTP) to 1970 (Unix)


class Unsupported(Exception):
    """The stream has nothing RTSP can carry here (no H.264/H.265 video)."""


@dataclass
class VideoDesc:
    encoding: str  # "H264" or "H265"
    length_size: int  # bytes of each NAL unit's length prefix in the samples
    params: list[bytes]  # VPS/SPS/PPS (H.265) or SPS/PPS (H.264), in that order
    fmtp: str


@dataclass
class AudioDesc:
    config: bytes  # AudioSpecificConfig
    rate: int
    channels: int

    @property
    def fmtp(self) -> str:
        return (
            "streamtype=5;profile-level-id=1;mode=AAC-hbr;sizelength=13;indexlength=3;indexdeltalength=3;"
            f"config={self.config.hex()}"
        )


@dataclass
class StreamDesc:
    """What the SDP says about a stream, per track id of the init segment it came from."""

    video: VideoDesc
    audio: AudioDesc | None
    track_ids: dict[int, int]  # init segment track id -> VIDEO / AUDIO


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _avcc_params(c: bytes) -> tuple[int, list[bytes]]:
    """(NAL length size, [SPS..., PPS...]) of an AVCDecoderConfigurationRecord."""
    length_size = (c[4] & 3) + 1
    pos = 6
    out: list[bytes] = []
    for count_pos_is_sps in (True, False):
        count = c[pos - 1] & (0x1F if count_pos_is_sps else 0xFF)
        for _ in range(count):
            size = struct.unpack_from(">H", c, pos)[0]
            out.append(c[pos + 2 : pos + 2 + size])
            pos += 2 + size
        pos += 1  # to the byte after the count of the next array
    return length_size, out


def _hvcc_params(c: bytes) -> tuple[int, dict[int, list[bytes]]]:
    """(NAL length size, {NAL type: units}) of an HEVCDecoderConfigurationRecord."""
    length_size = (c[21] & 3) + 1
    arrays = c[22]
    pos = 23
    out: dict[int, list[bytes]] = {}
    for _ in range(arrays):
        kind = c[pos] & 0x3F
        count = struct.unpack_from(">H", c, pos + 1)[0]
        pos += 3
        for _ in range(count):
            size = struct.unpack_from(">H", c, pos)[0]
            out.setdefault(kind, []).append(c[pos + 2 : pos + 2 + size])
            pos += 2 + size
    return length_size, out


def describe(init: InitInfo) -> StreamDesc:
    """The tracks of an init segment as RTSP will carry them; Unsupported if there is no usable video."""
    data = init.data
    video: VideoDesc | None = None
    audio: AudioDesc | None = None
    ids: dict[int, int] = {}
    for trak in find(data, [b"moov", b"trak"]):
        tkhd = next(find(data, [b"tkhd"], trak[0] + trak[1], trak[0] + trak[2]), None)
        if tkhd is None:
            continue
        version = data[tkhd[0] + tkhd[1]]
        track_id = struct.unpack_from(">I", data, tkhd[0] + tkhd[1] + (20 if version else 12))[0]
        track = init.tracks.get(track_id)
        if track is None:
            continue
        family = track.codec[:4]
        try:
            if video is None and family in ("avc1", "avc3"):
                config = sample_entry_child(data, trak, VISUAL_ENTRY_FIELDS, b"avcC")
                size, params = _avcc_params(config)
                sps = [p for p in params if p and p[0] & 0x1F == 7]
                pps = [p for p in params if p and p[0] & 0x1F == 8]
                if not sps:
                    continue
                fmtp = (
                    f"packetization-mode=1;profile-level-id={sps[0][1:4].hex()};"
                    f"sprop-parameter-sets={','.join(_b64(p) for p in sps + pps)}"
                )
                video = VideoDesc("H264", size, sps + pps, fmtp)
                ids[track_id] = VIDEO
            elif video is None and family in ("hev1", "hvc1"):
                config = sample_entry_child(data, trak, VISUAL_ENTRY_FIELDS, b"hvcC")
                size, arrays = _hvcc_params(config)
                vps, sps, pps = arrays.get(32, []), arrays.get(33, []), arrays.get(34, [])
                if not (vps and sps and pps):
                    continue
                fmtp = (
                    f"sprop-vps={','.join(map(_b64, vps))};sprop-sps={','.join(map(_b64, sps))};"
                    f"sprop-pps={','.join(map(_b64, pps))}"
                )
                video = VideoDesc("H265", size, vps + sps + pps, fmtp)
                ids[track_id] = VIDEO
            elif audio is None and family == "mp4a":
                esds = sample_entry_child(data, trak, AUDIO_ENTRY_FIELDS, b"esds")
                config = audio_specific_config(esds)
                if not config:
                    continue
                _, rate, channels = asc_info(config)
                if rate <= 0:
                    continue
                audio = AudioDesc(bytes(config), rate, channels or 1)
                ids[track_id] = AUDIO
        except (IndexError, ValueError, struct.error):
            continue
    if video is None:
        raise Unsupported("no H.264 or H.265 video track")
    return StreamDesc(video, audio, ids)


def sdp(desc: StreamDesc, name: str, address: str = "0.0.0.0") -> str:
    """The session description a DESCRIBE answers with; tracks are controlled as trackID=0 (video) and 1."""
    session = random.getrandbits(31)
    family = "IP6" if ":" in address else "IP4"
    lines = [
        "v=0",
        f"o=- {session} 1 IN {family} {address}",
        f"s={name}",
        f"c=IN {family} {'::' if family == 'IP6' else '0.0.0.0'}",
        "t=0 0",
        "a=tool:h5gate",
        "a=range:npt=now-",
        "a=control:*",
        f"m=video 0 RTP/AVP {VIDEO_PT}",
        f"a=rtpmap:{VIDEO_PT} {desc.video.encoding}/90000",
        f"a=fmtp:{VIDEO_PT} {desc.video.fmtp}",
        f"a=control:trackID={VIDEO}",
    ]
    if desc.audio is not None:
        a = desc.audio
        lines += [
            f"m=audio 0 RTP/AVP {AUDIO_PT}",
            f"a=rtpmap:{AUDIO_PT} MPEG4-GENERIC/{a.rate}/{a.channels}",
            f"a=fmtp:{AUDIO_PT} {a.fmtp}",
            f"a=control:trackID={AUDIO}",
        ]
    return "\r\n".join(lines) + "\r\n"


@dataclass(eq=False, slots=True)
class RtpFrame:
    """One fragment's RTP packets, for every client of the feed."""

    track: int  # VIDEO or AUDIO
    packets: list[bytes]
    timestamp: int  # RTP timestamp of its first packet
    media: float  # seconds on the feed's timeline (decode time), for SR and for a client's start
    keyframe: bool
    octets: int  # payload bytes (RTCP sender report)
    _framed: dict[int, bytes] = field(default_factory=dict)

    def interleaved(self, channel: int) -> bytes:
        """All packets, each behind its `$`, channel, length header (RFC 2326 §10.12); built once per channel."""
        data = self._framed.get(channel)
        if data is None:
            prefix = bytes([0x24, channel])
            data = b"".join(prefix + len(p).to_bytes(2, "big") + p for p in self.packets)
            self._framed[channel] = data
        return data

    @property
    def first_seq(self) -> int:
        return int.from_bytes(self.packets[0][2:4], "big")


class RtpFeed:
    """A hub's fragments as RTP frames, in ring order, cached as long as the ring holds the fragment."""

    def __init__(self, hub: StreamHub, init: InitInfo, gen: int) -> None:
        self.hub = hub
        self.desc = describe(init)
        self.gen = gen
        self.track_ids = dict(self.desc.track_ids)
        self.params = list(self.desc.video.params)  # sent before a keyframe that carries none
        self.length_size = self.desc.video.length_size
        video_cls = H264Packetizer if self.desc.video.encoding == "H264" else H265Packetizer
        self.video = video_cls(VIDEO_PT, random.getrandbits(32), random.getrandbits(16))
        self.audio = AacPacketizer(AUDIO_PT, random.getrandbits(32), random.getrandbits(16))
        self.ts_base = {VIDEO: random.getrandbits(32), AUDIO: random.getrandbits(32)}
        self.clock = {VIDEO: 90000, AUDIO: self.desc.audio.rate if self.desc.audio else 0}
        self.broken = False  # the source changed codec: the SDP clients hold is wrong
        self.users = 0
        self.frames: dict[int, RtpFrame | None] = {}
        self._order: deque[int] = deque()
        self.next_seq = hub.keyframe_seq if hub.keyframe_seq is not None else hub.next_seq
        self.shift = 0.0  # source seconds minus feed seconds, for the current generation
        self.end = 0.0  # where the feed's timeline has got to (seconds)
        self._started = False
        self.wall_anchor = time.time()  # NTP time of feed second 0 (RTCP sender reports)

    def frame(self, frag: Fragment) -> RtpFrame | None:
        """The RTP frame of a fragment (None for one RTSP does not carry), packetizing any before it first."""
        if frag.seq in self.frames:
            return self.frames[frag.seq]
        hub = self.hub
        if self.next_seq < hub.first_seq:
            self.next_seq = hub.first_seq
        while self.next_seq <= frag.seq and not self.broken:
            current = hub.get(self.next_seq)
            self.next_seq += 1
            if current is None:
                continue
            self.frames[current.seq] = self._packetize(current)
            self._order.append(current.seq)
        while self._order and self._order[0] < hub.first_seq:
            self.frames.pop(self._order.popleft(), None)
        return self.frames.get(frag.seq)

    def _new_generation(self, frag: Fragment) -> bool:
        init = self.hub.inits.get(frag.gen)
        if init is None:
            return False
        try:
            desc = describe(init)
        except Unsupported:
            desc = None
        old = self.desc
        if (
            desc is None
            or desc.video.encoding != old.video.encoding
            or (desc.audio is None) != (old.audio is None)
            or (desc.audio is not None and old.audio is not None and desc.audio.config != old.audio.config)
        ):
            log.info("%s: stream format changed, RTSP clients must reconnect", self.hub.name)
            self.broken = True
            return False
        self.gen = frag.gen
        self.track_ids = dict(desc.track_ids)
        self.params = list(desc.video.params)
        self.length_size = desc.video.length_size
        self.shift = frag.dts - self.end  # continue the timeline where the last run stopped
        return True

    def _packetize(self, frag: Fragment) -> RtpFrame | None:
        if frag.gen != self.gen:
            if not frag.keyframe or not self._new_generation(frag):
                return None
        if not self._started:
            self._started = True
            self.shift = frag.dts
            self.wall_anchor = time.time()
        track = self.track_ids.get(frag.info.track_id)
        if track is None:
            return None
        try:
            traf = read_traf(frag.data)
        except (StopIteration, IndexError, struct.error, ValueError):
            return None
        data = frag.data
        packets: list[bytes] = []
        clock = self.clock[track]
        base = self.ts_base[track]
        scale = frag.timescale
        dts = traf.tfdt
        first_ts: int | None = None
        key = False
        octets = 0
        for sample in traf.samples:
            media = dts / scale - self.shift
            sample_data = data[sample.offset : sample.offset + sample.size]
            dts += sample.duration
            if track == VIDEO:
                ts = (base + round((media + sample.cts / scale) * clock)) & 0xFFFFFFFF
                nals = self._nals(sample_data)
                if sample.sync:
                    key = True
                    nals = self._with_params(nals)
                made = self.video.frame(nals, ts)
            else:
                ts = (base + round(media * clock)) & 0xFFFFFFFF
                made = self.audio.frame(sample_data, ts)
            if first_ts is None:
                first_ts = ts
            packets += made
            octets += sum(len(p) - 12 for p in made)
        media_start = traf.tfdt / scale - self.shift
        self.end = max(self.end, dts / scale - self.shift)
        if not packets or first_ts is None:
            return None
        return RtpFrame(track, packets, first_ts, media_start, key, octets)

    def _nals(self, sample: bytes) -> list[bytes]:
        out: list[bytes] = []
        pos, size_len, end = 0, self.length_size, len(sample)
        while pos + size_len <= end:
            size = int.from_bytes(sample[pos : pos + size_len], "big")
            pos += size_len
            if size <= 0 or pos + size > end:
                break
            out.append(sample[pos : pos + size])
            pos += size
        return out

    def _with_params(self, nals: list[bytes]) -> list[bytes]:
        """A keyframe with its parameter sets in band, for a client that joins or a decoder that lost them."""
        if self.desc.video.encoding == "H264":
            has = any(n and n[0] & 0x1F == 7 for n in nals)
            aud = [n for n in nals[:1] if n and n[0] & 0x1F == 9]
        else:
            has = any(n and (n[0] >> 1) & 0x3F == 33 for n in nals)
            aud = [n for n in nals[:1] if n and (n[0] >> 1) & 0x3F == 35]
        if has:
            return nals
        return aud + self.params + nals[len(aud) :]

    def ntp_of(self, media: float) -> float:
        """The NTP-epoch wall time a feed second stands for (the same for both tracks: lip sync)."""
        return self.wall_anchor + media + NTP_EPOCH

    def ssrc(self, track: int) -> int:
        return self.video.ssrc if track == VIDEO else self.audio.ssrc

    def next_packet_seq(self, track: int) -> int:
        return self.video.seq if track == VIDEO else self.audio.seq


def sender_report(ssrc: int, ntp: float, rtp_ts: int, packets: int, octets: int) -> bytes:
    """RTCP SR (RFC 3550 §6.4.1) with no report blocks, and an SDES CNAME: a compound packet."""
    msw = int(ntp)
    lsw = int((ntp - msw) * (1 << 32)) & 0xFFFFFFFF
    sr = struct.pack(
        ">BBHIIIIII",
        0x80,
        200,
        6,
        ssrc,
        msw & 0xFFFFFFFF,
        lsw,
        rtp_ts & 0xFFFFFFFF,
        packets & 0xFFFFFFFF,
        octets & 0xFFFFFFFF,
    )
    cname = b"h5gate"
    chunk = struct.pack(">I", ssrc) + bytes([1, len(cname)]) + cname + b"\x00"
    chunk += b"\x00" * (-len(chunk) % 4)
    sdes = struct.pack(">BBH", 0x81, 202, len(chunk) // 4) + chunk
    return sr + sdes
