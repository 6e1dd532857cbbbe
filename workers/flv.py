"""FLV, both ways: the audio/video tag bodies an RTMP publisher sends, and an FLV stream made from a hub.

In: a video tag is a frame type and codec id, then for AVC a packet type (0 = sequence header carrying
the avcC record, 1 = NAL units with 4-byte lengths, 2 = end of sequence) and a 24-bit signed composition
time offset; an audio tag is a format byte, then for AAC a packet type (0 = AudioSpecificConfig, 1 = a
raw frame). Those are exactly an MP4 sample entry's config and an MP4 sample, so no bytes are rewritten.

Out (HTTP-FLV for flv.js): the FLV header, an onMetaData script tag, the sequence headers made from the
hub's init segment (avcC, AudioSpecificConfig), then one tag per sample with its composition offset.
"""

from __future__ import annotations

import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass

from workers import fmp4
from workers.hub import Cursor, Fragment, StreamHub
from workers.rtmp import amf0

TAG_AUDIO, TAG_VIDEO, TAG_SCRIPT = 8, 9, 18
CODEC_AVC = 7
SOUND_AAC = 10
AAC_TAG_BYTE = 0xAF  # AAC, "44 kHz", 16 bit, stereo: what the format prescribes for AAC whatever the stream
VIDEO_CODECS = {2: "h263", 3: "screen", 4: "vp6", 5: "vp6a", 6: "screen2", 7: "h264", 12: "hevc"}
SOUND_FORMATS = {0: "pcm", 1: "adpcm", 2: "mp3", 3: "pcm", 4: "nellymoser", 5: "nellymoser", 6: "nellymoser"}
SOUND_FORMATS.update({7: "pcm_alaw", 8: "pcm_mulaw", 10: "aac", 11: "speex", 14: "mp3", 15: "device"})


class FlvError(ValueError):
    """A tag body too short or otherwise unreadable."""


@dataclass
class VideoTag:
    codec_id: int  # -1 for Enhanced RTMP's FourCC form (then `fourcc` names the codec)
    keyframe: bool
    packet_type: int  # AVC: 0 sequence header, 1 NAL units, 2 end of sequence
    cts: int  # composition time offset, milliseconds
    data: bytes  # the avcC record (packet 0) or the length-prefixed NAL units (packet 1)
    fourcc: str = ""


@dataclass
class AudioTag:
    sound_format: int
    packet_type: int  # AAC: 0 AudioSpecificConfig, 1 raw frame
    data: bytes


def parse_video(body: bytes) -> VideoTag:
    if len(body) < 1:
        raise FlvError("empty video tag")
    frame_type, codec = body[0] >> 4, body[0] & 0x0F
    if body[0] & 0x80:  # Enhanced RTMP (OBS 29+ for H.265/AV1): a FourCC instead of a codec id
        fourcc = body[1:5].decode("latin-1") if len(body) >= 5 else "?"
        return VideoTag(-1, (frame_type & 0x07) == 1, -1, 0, body[5:], fourcc)
    if codec != CODEC_AVC:
        return VideoTag(codec, frame_type == 1, -1, 0, body[1:])
    if len(body) < 5:
        raise FlvError("AVC video tag shorter than its header")
    cts = int.from_bytes(body[2:5], "big", signed=True)
    return VideoTag(codec, frame_type == 1, body[1], cts, body[5:])


def parse_audio(body: bytes) -> AudioTag:
    if len(body) < 1:
        raise FlvError("empty audio tag")
    fmt = body[0] >> 4
    if fmt != SOUND_AAC:
        return AudioTag(fmt, -1, body[1:])
    if len(body) < 2:
        raise FlvError("AAC audio tag shorter than its header")
    return AudioTag(fmt, body[1], body[2:])


def avcc_sps(avcc: bytes) -> bytes:
    """The first SPS of an avcC record (for the picture size)."""
    if len(avcc) < 8 or avcc[0] != 1 or not avcc[5] & 0x1F:
        raise FlvError("not an avcC record")
    n = struct.unpack(">H", avcc[6:8])[0]
    if len(avcc) < 8 + n:
        raise FlvError("avcC record cut short")
    return avcc[8 : 8 + n]


# -- out: an FLV stream ------------------------------------------------------------------------------------
def header(audio: bool, video: bool) -> bytes:
    """The FLV file header and the zero PreviousTagSize that follows it."""
    return b"FLV\x01" + bytes([(4 if audio else 0) | (1 if video else 0)]) + struct.pack(">II", 9, 0)


def tag(kind: int, timestamp_ms: int, body: bytes) -> bytes:
    ts = timestamp_ms & 0xFFFFFFFF
    head = struct.pack(">B", kind) + len(body).to_bytes(3, "big") + (ts & 0xFFFFFF).to_bytes(3, "big")
    head += bytes([ts >> 24]) + b"\x00\x00\x00"
    return head + body + struct.pack(">I", 11 + len(body))


def video_body(keyframe: bool, packet_type: int, cts_ms: int, data: bytes) -> bytes:
    first = ((1 if keyframe else 2) << 4) | CODEC_AVC
    return bytes([first, packet_type]) + (cts_ms & 0xFFFFFF).to_bytes(3, "big") + data


def audio_body(packet_type: int, data: bytes) -> bytes:
    return bytes([AAC_TAG_BYTE, packet_type]) + data


@dataclass
class TrackConfig:
    track_id: int
    video: bool
    config: bytes  # avcC record, or AudioSpecificConfig
    width: int = 0
    height: int = 0


class Unplayable(ValueError):
    """The stream holds a codec FLV (as flv.js reads it) cannot carry: H.265, for one."""


def track_configs(init: fmp4.InitInfo) -> dict[int, TrackConfig]:
    """Each track's decoder config, read from the init segment's sample entries."""
    out: dict[int, TrackConfig] = {}
    data = init.data
    for trak in fmp4.find(data, [b"moov", b"trak"]):
        tpos, thead, tsize = trak
        tkhd = next(fmp4.find(data, [b"tkhd"], tpos + thead, tpos + tsize))
        version = data[tkhd[0] + tkhd[1]]
        track_id = struct.unpack_from(">I", data, tkhd[0] + tkhd[1] + (20 if version else 12))[0]
        track = init.tracks.get(track_id)
        if track is None:
            continue
        if track.handler == "vide":
            if not track.codec.startswith(("avc1", "avc3")):
                raise Unplayable(f"video is {track.codec.split('.')[0]}: FLV carries H.264 only")
            avcc = fmp4.sample_entry_child(data, trak, fmp4.VISUAL_ENTRY_FIELDS, b"avcC")
            out[track_id] = TrackConfig(track_id, True, avcc, track.width, track.height)
        elif track.codec.startswith("mp4a"):
            esds = fmp4.sample_entry_child(data, trak, fmp4.AUDIO_ENTRY_FIELDS, b"esds")
            out[track_id] = TrackConfig(track_id, False, fmp4.audio_specific_config(esds))
        # other audio (Opus from a file) has no FLV form flv.js plays: that track is left out
    if not out:
        raise Unplayable("no H.264 video or AAC audio to carry")
    return out


def metadata(configs: dict[int, TrackConfig]) -> bytes:
    """The onMetaData script tag body: what players show before the first frame."""
    props: dict[str, float | bool] = {}
    video = next((c for c in configs.values() if c.video), None)
    audio = next((c for c in configs.values() if not c.video), None)
    props["hasVideo"] = video is not None
    props["hasAudio"] = audio is not None
    if video is not None:
        props.update(width=video.width, height=video.height, videocodecid=CODEC_AVC)
    if audio is not None:
        props["audiocodecid"] = SOUND_AAC
    return amf0.encode("onMetaData") + amf0.encode_ecma_array(props)


def sequence_headers(configs: dict[int, TrackConfig], timestamp_ms: int) -> bytes:
    """The AVC and AAC sequence header tags a decoder needs before the first sample."""
    out = []
    for c in sorted(configs.values(), key=lambda c: not c.video):
        if c.video:
            out.append(tag(TAG_VIDEO, timestamp_ms, video_body(True, 0, 0, c.config)))
        else:
            out.append(tag(TAG_AUDIO, timestamp_ms, audio_body(0, c.config)))
    return b"".join(out)


def fragment_tags(data: bytes, config: TrackConfig, timescale: int, shift: float) -> tuple[bytes, int]:
    """One hub fragment as FLV tags, one per sample; `shift` (seconds) is subtracted from every time.

    Returns the tags and the decode time (ms) of the last sample written.
    """
    traf = fmp4.read_traf(data)
    out = []
    dts = traf.tfdt
    ms = 0
    for s in traf.samples:
        sample = data[s.offset : s.offset + s.size]
        ms = max(0, round((dts / timescale - shift) * 1000))
        if config.video:
            cts = round(s.cts * 1000 / timescale)
            out.append(tag(TAG_VIDEO, ms, video_body(s.sync, 1, cts, sample)))
        else:
            out.append(tag(TAG_AUDIO, ms, audio_body(1, sample)))
        dts += s.duration
    return b"".join(out), ms


class FlvWriter:
    """One HTTP-FLV client's stream: hub fragments in, FLV bytes out, on a timeline that starts at zero.

    Fragments of a new run of the source (a new init) keep going from where the stream was, and get new
    sequence headers if the decoder config changed; a track FLV cannot carry (Opus) is left out.
    """

    def __init__(self, init: fmp4.InitInfo, gen: int) -> None:
        self.configs = track_configs(init)
        self.gen = gen
        self.shift: float | None = None
        self.last_ms = 0

    def start(self) -> bytes:
        video = any(c.video for c in self.configs.values())
        audio = any(not c.video for c in self.configs.values())
        return header(audio, video) + tag(TAG_SCRIPT, 0, metadata(self.configs)) + sequence_headers(self.configs, 0)

    def write(self, frag: Fragment, init: fmp4.InitInfo | None) -> bytes:
        """The tags of one hub fragment; `init` is the init segment of the fragment's run (hub.inits)."""
        data, track_id, gen, dts, timescale = frag.data, frag.info.track_id, frag.gen, frag.dts, frag.timescale
        out = b""
        if gen != self.gen:
            if init is None:
                return b""
            configs = track_configs(init)
            if self.shift is not None:
                self.shift = dts - (self.last_ms + 40) / 1000  # a new run's clock may start over: go on
            if configs != self.configs:
                out += sequence_headers(configs, self.last_ms)
                self.configs = configs
            self.gen = gen
        if self.shift is None:
            self.shift = dts
        config = self.configs.get(track_id)
        if config is None:
            return out
        tags, ms = fragment_tags(data, config, timescale, self.shift)
        self.last_ms = max(self.last_ms, ms)
        return out + tags


async def live(
    hub: StreamHub, writer: FlvWriter, cursor: Cursor, batch_bytes: int = 256 * 1024
) -> AsyncIterator[bytes]:
    """FLV bytes of a live hub from its newest keyframe on, what is ready sent together; ends on HubClosed."""
    yield writer.start()
    while True:
        frag = await cursor.next()
        assert frag is not None
        batch = writer.write(frag, hub.inits.get(frag.gen))
        while len(batch) < batch_bytes:
            more = cursor.next_nowait()
            if more is None:
                break
            batch += writer.write(more, hub.inits.get(more.gen))
        if batch:
            yield batch
