"""One source profile inside the sidecar: its media from the supervisor, fanned out to every viewer's track.

The supervisor sends the hub's init segments and fragments; a Feed turns them into H.264 access units on
one continuous 90 kHz timeline (also across source restarts) and keeps those since the newest keyframe, so
a new viewer's first picture is sent at once. Each access unit is converted once and its RTP packet
object is shared by all viewers that are in step, so a viewer costs packetising and SRTP, nothing more.
"""

from __future__ import annotations

import fractions
import logging
from dataclasses import dataclass, field
from typing import Protocol

import av
from av.stream import Stream

from workers.webrtc.audio import OpusTranscoder
from workers.webrtc.media import (
    RTP_VIDEO_CLOCK,
    AvcConfig,
    InitConfig,
    fragment_samples,
    parse_avcc,
    parse_init_config,
    to_annexb,
)

log = logging.getLogger("h5gate.webrtc")

VIDEO_TIME_BASE = fractions.Fraction(1, RTP_VIDEO_CLOCK)
GOP_MAX_UNITS = 1500  # a minute at 25 fps: a longer GOP is not cached (viewers wait for a keyframe)
GOP_MAX_BYTES = 32 * 1024 * 1024


@dataclass(eq=False)
class AccessUnit:
    data: bytes  # Annex B, SPS/PPS in front of every keyframe
    dts: int  # 90 kHz, continuous for the life of the feed
    keyframe: bool
    _packet: av.Packet[Stream] | None = field(default=None, repr=False)

    def packet(self, pts: int | None = None) -> av.Packet[Stream]:
        """The RTP sender's input; at the feed's own timestamp one shared object serves every viewer."""
        if pts is None or pts == self.dts:
            if self._packet is None:
                self._packet = _video_packet(self.data, self.dts)
            return self._packet
        return _video_packet(self.data, pts)


def _video_packet(data: bytes, pts: int) -> av.Packet[Stream]:
    packet = av.Packet(data)
    packet.pts = packet.dts = pts
    packet.time_base = VIDEO_TIME_BASE
    return packet


class FeedEnded(Exception):
    """The source changed into something WebRTC cannot pass through (its viewers must be told)."""


class Sink(Protocol):
    def push(self, item: object) -> None: ...


class Feed:
    """Media of one (token, profile), as long as some peer of the sidecar uses it."""

    def __init__(self, feed_id: int, token: str, profile: str, live: bool = True) -> None:
        self.id = feed_id
        self.token = token
        self.profile = profile
        self.live = live  # False: one viewer's recording, paced by the player, not to be caught up on
        self.name = token if profile in ("", "main") else f"{token}/{profile}"
        self.peers = 0
        self.gop: list[AccessUnit] = []
        self.video_sinks: set[Sink] = set()
        self.audio_sinks: set[Sink] = set()
        self.units_in = 0
        self.ended = False
        self._init: InitConfig | None = None
        self._avc: AvcConfig | None = None
        self._gop_bytes = 0
        self._offset: int | None = None  # 90 kHz shift that makes the timeline continuous
        self._last_dts = 0
        self._last_duration = 0
        self._transcoder: OpusTranscoder | None = None
        self._opus_pts = 0
        self._reorders = False  # B-frames seen (warned once)

    # -- input from the supervisor --------------------------------------------------------------------
    def on_init(self, data: bytes) -> None:
        """A (re)started source: new track ids, timescales, parameter sets, maybe a new audio config."""
        init = parse_init_config(data)
        if init.video is None or init.video.codec[:4] not in ("avc1", "avc3") or not init.video.config:
            raise FeedEnded(
                f"the source is now {init.video.codec if init.video else 'audio only'}, WebRTC plays H.264 only"
            )
        self._init = init
        self._avc = parse_avcc(init.video.config)
        if self._transcoder is not None:
            self._opus_pts = self._transcoder.pts
        if self.audio_sinks:
            self._transcoder = self._new_transcoder()
        log.info(
            "%s: feed init, video %s, audio %s", self.name, init.video.codec, init.audio.codec if init.audio else "none"
        )

    def on_fragment(self, data: bytes) -> None:
        init = self._init
        if init is None:
            return
        track_id, samples = fragment_samples(data)
        if init.video is not None and track_id == init.video.track_id and self._avc is not None:
            for sample in samples:
                if sample.cts and not self._reorders:
                    self._reorders = True
                    log.warning(
                        "%s: the source uses B-frames, which browsers' WebRTC decoders do not take: "
                        "expect stutter; turn B-frames off in the camera or watch over WebSocket",
                        self.name,
                    )
                self._on_video(sample.data, sample.dts, sample.duration, sample.sync, init.video.timescale)
        elif init.audio is not None and track_id == init.audio.track_id and self._transcoder is not None:
            for sample in samples:
                for packet in self._transcoder.transcode(sample.data):
                    for sink in list(self.audio_sinks):
                        sink.push(packet)

    def _on_video(self, sample: bytes, dts: int, duration: int, sync: bool, timescale: int) -> None:
        assert self._avc is not None
        raw = dts * RTP_VIDEO_CLOCK // timescale
        if self._offset is None:
            self._offset = -raw
        if raw + self._offset <= self._last_dts and self.units_in:  # restart or loop: keep going forward
            self._offset = self._last_dts + max(self._last_duration, 1) - raw
        dts90 = raw + self._offset
        self._last_dts = dts90
        self._last_duration = duration * RTP_VIDEO_CLOCK // timescale
        data, has_sps = to_annexb(sample, self._avc.length_size)
        if sync and not has_sps:
            data = self._avc.parameter_sets + data
        au = AccessUnit(data, dts90, sync)
        self.units_in += 1
        if sync:
            self.gop = [au]
            self._gop_bytes = len(data)
        elif self.gop:
            self.gop.append(au)
            self._gop_bytes += len(data)
            if len(self.gop) > GOP_MAX_UNITS or self._gop_bytes > GOP_MAX_BYTES:
                self.gop, self._gop_bytes = [], 0
        for sink in list(self.video_sinks):
            sink.push(au)

    def end(self) -> None:
        """The source is gone for good: every track ends."""
        self.ended = True
        for sink in list(self.video_sinks | self.audio_sinks):
            sink.push(None)
        self.video_sinks.clear()
        self.audio_sinks.clear()
        self._transcoder = None

    # -- tracks ---------------------------------------------------------------------------------------
    def attach_video(self, sink: Sink) -> list[AccessUnit]:
        """Start sending to a track; returns the cached GOP it should send first."""
        self.video_sinks.add(sink)
        return list(self.gop)

    def attach_audio(self, sink: Sink) -> None:
        if self._transcoder is None:
            self._transcoder = self._new_transcoder()
        self.audio_sinks.add(sink)

    def detach(self, sink: Sink) -> None:
        self.video_sinks.discard(sink)
        self.audio_sinks.discard(sink)
        if not self.audio_sinks and self._transcoder is not None:
            self._opus_pts = self._transcoder.pts
            self._transcoder = None
            log.info("%s: no viewer with audio, Opus transcoding stopped", self.name)

    def _new_transcoder(self) -> OpusTranscoder | None:
        audio = self._init.audio if self._init is not None else None
        if audio is None or not audio.config or not audio.codec.startswith("mp4a"):
            return None
        log.info("%s: transcoding %s to Opus for WebRTC viewers", self.name, audio.codec)
        return OpusTranscoder(self.name, audio.config, self._opus_pts)
