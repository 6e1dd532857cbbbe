"""Audio only, for a listen button: a hub's audio track as its own fMP4 stream, or as the vendor's raw PCM.

The vendor player's listen socket (`H5sPlayerAudio`) plays each binary message as signed 16-bit mono PCM
at 8000 Hz, the moment it arrives; a page of our own may prefer MSE, which needs an init segment with
only the audio track and then the audio fragments. Both come from the hub's AAC fragments, so listening
opens no second camera connection. Only the PCM form decodes (audio, a few kB/s): the fMP4 form moves bytes.
"""

from __future__ import annotations

from fractions import Fraction

import av

from workers.fmp4 import (
    AUDIO_ENTRY_FIELDS,
    FragInfo,
    InitInfo,
    Track,
    audio_specific_config,
    find,
    read_traf,
    sample_entry_child,
    set_track_id,
)
from workers.mp4mux import AUDIO_TRACK, AudioSpec, init_segment

PCM_RATE = 8000  # what H5sPlayerAudio's AudioBuffer is built for


def audio_track(init: InitInfo) -> Track | None:
    return next((t for t in init.tracks.values() if t.handler == "soun"), None)


def audio_config(init: InitInfo, track: Track) -> bytes:
    """The AudioSpecificConfig of an AAC track of an init segment (b"" if there is none)."""
    data = init.data
    for trak in find(data, [b"moov", b"trak"]):
        tpos, thead, tsize = trak
        for pos, head, _ in find(data, [b"tkhd"], tpos + thead, tpos + tsize):
            version = data[pos + head]
            track_id = int.from_bytes(data[pos + head + (20 if version else 12) :][:4], "big")
            if track_id == track.track_id:
                esds = sample_entry_child(data, trak, AUDIO_ENTRY_FIELDS, b"esds")
                return audio_specific_config(esds) if esds else b""
    return b""


class AudioOnly:
    """The audio track of one init segment (one run of the source) as a stream of its own."""

    def __init__(self, init: InitInfo) -> None:
        track = audio_track(init)
        if track is None:
            raise ValueError("the source has no audio")
        self.track = track
        self.config = audio_config(init, track) if track.codec.startswith("mp4a") else b""
        self.mime = f'audio/mp4; codecs="{track.codec}"'

    def init_segment(self) -> bytes:
        """ftyp+moov with the audio alone, as track AUDIO_TRACK; ValueError where the codec is not AAC."""
        if not self.config:
            raise ValueError(f"audio is {self.track.codec or 'unknown'}, not AAC")
        spec = AudioSpec(self.config, self.track.timescale, self.track.channels or 1)
        return init_segment(None, spec)

    def fragment(self, data: bytes, info: FragInfo) -> bytes:
        """A hub audio fragment as the audio-only init numbers its track."""
        return data if info.track_id == AUDIO_TRACK else set_track_id(data, AUDIO_TRACK)


class PcmDecoder:
    """AAC fragments in, signed 16-bit little-endian mono PCM at 8000 Hz out (the vendor's listen format)."""

    def __init__(self, audio: AudioOnly) -> None:
        if not audio.config:
            raise ValueError(f"audio is {audio.track.codec or 'unknown'}, not AAC")
        self.codec = av.CodecContext.create("aac", "r")
        self.codec.extradata = audio.config
        self.timescale = audio.track.timescale
        self.resampler = av.AudioResampler(format="s16", layout="mono", rate=PCM_RATE)

    def decode(self, data: bytes) -> bytes:
        """The PCM of every sample in one moof+mdat; b"" when the decoder needs more first."""
        out: list[bytes] = []
        traf = read_traf(data)
        tfdt = traf.tfdt
        for sample in traf.samples:
            packet = av.Packet(data[sample.offset : sample.offset + sample.size])
            packet.pts = packet.dts = tfdt
            packet.time_base = Fraction(1, self.timescale)
            tfdt += sample.duration
            try:
                frames = self.codec.decode(packet)
            except av.error.FFmpegError:  # one damaged frame: skip it, the next decodes
                continue
            for frame in frames:
                for pcm in self.resampler.resample(frame):
                    out.append(bytes(pcm.planes[0])[: pcm.samples * 2])
        return b"".join(out)
