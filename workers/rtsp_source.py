"""The zero-lookahead live path for RTSP cameras: our RTSP client, RTP depacketizers and fMP4 writer
feeding a StreamHub, one fragment per frame, written the moment the frame's last RTP packet arrives.

H.264 and H.265 video, AAC audio go straight through; G.711 audio goes to AAC through an ffmpeg child
fed from this same camera connection (raw A-law/mu-law on its stdin, ADTS on its stdout). Anything
else (MJPEG, other audio codecs) raises Unsupported, and the caller runs the source through ffmpeg.
"""

from __future__ import annotations

import asyncio
import binascii
import logging
import time
from collections.abc import Callable
from typing import Any

from workers.child import Child
from workers.fmp4 import FragInfo, InitInfo, parse_init
from workers.hub import StreamHub
from workers.mp4mux import (
    AUDIO_TRACK,
    DURATION_POS,
    TFDT_POS,
    VIDEO_TRACK,
    AudioSpec,
    VideoSpec,
    fragment,
    init_segment,
    length_prefixed,
)
from workers.rtp import h264, h265
from workers.rtp.aac import AacDepacketizer, AdtsReader, AudioFrame, asc_info, make_asc
from workers.rtp.packet import AccessUnit, FrameAssembler, UnsupportedPacketization, parse_rtp
from workers.rtsp.client import RtspClient, RtspError
from workers.rtsp.sdp import Media, Sdp
from workers.supervise import RunState, Watchdog
from workers.timeline import SourceTimeline, TrackTimeline

log = logging.getLogger("h5gate.rtsp")

VIDEO_CODECS = {"H264": "h264", "H265": "hevc"}  # SDP encoding -> the name GetSrc reports (ffmpeg's)
AUDIO_CODECS = {"MPEG4-GENERIC": "aac", "PCMA": "pcm_alaw", "PCMU": "pcm_mulaw"}
FFMPEG_NAMES = {"JPEG": "mjpeg", "MP4V-ES": "mpeg4", "MP4A-LATM": "aac_latm", "OPUS": "opus", "MPA": "mp3"}
DEFAULT_INTERVAL = 0.040  # seconds: a frame interval to assume before two frames have been seen
INPUT_BIAS = 1  # seconds added to every track's input time (see _input)
AUDIO_WAIT = 2.0  # seconds the first video waits for the audio track to start before going out alone


class Unsupported(Exception):
    """The camera sends a codec this path does not carry: run the source through ffmpeg instead."""

    def __init__(self, video: str, audio: str) -> None:
        super().__init__(f"video {video or '-'}, audio {audio or '-'}")
        self.video, self.audio = video, audio


def codec_name(media: Media | None) -> str:
    if media is None:
        return ""
    enc = media.encoding
    return VIDEO_CODECS.get(enc) or AUDIO_CODECS.get(enc) or FFMPEG_NAMES.get(enc, enc.lower())


class RtspIngest:
    """One run: connect, stream into the hub until the camera fails; raises RtspError or Unsupported."""

    def __init__(
        self,
        name: str,
        url: str,
        hub: StreamHub,
        *,
        transport: str = "tcp",
        timeout: float = 5.0,
        stall_timeout: float = 10.0,
        audio: bool = True,
        ffmpeg: str = "ffmpeg",
        on_media: Callable[[], None] | None = None,
        on_codecs: Callable[[str, str], None] | None = None,
        timeline: SourceTimeline | None = None,
    ) -> None:
        self.name = name
        self.url = url
        self.hub = hub
        self.transport = transport
        self.timeout = timeout
        self.stall_timeout = stall_timeout
        self.want_audio = audio
        self.ffmpeg = ffmpeg
        self.on_media = on_media
        self.on_codecs = on_codecs
        self.client: RtspClient | None = None
        self.video_media: Media | None = None
        self.audio_media: Media | None = None
        self.depack: FrameAssembler | None = None
        self.hevc = False
        self.aac: AacDepacketizer | None = None
        self.transcoder: G711Transcoder | None = None
        self.audio_spec: AudioSpec | None = None
        self.params: dict[int, bytes] = {}  # newest parameter set of each NAL type
        self.init_params: dict[int, bytes] | None = None
        self.init: InitInfo | None = None
        self._pending_init: tuple[bytes, InitInfo] | None = None
        self._held: list[tuple[bytes, FragInfo]] | None = None  # video waiting for the audio to start
        self._hold_until = 0.0
        self._audio_started = False
        self.seq = 0
        # Decode times come from the source's timeline (it outlives this run): our input to it is each
        # track's RTP time since the instant PLAY started (RTP-Info), one clock for audio and video.
        self.timeline = timeline if timeline is not None else SourceTimeline(name, common_clock=True)
        self.video_track: TrackTimeline | None = None
        self.audio_track: TrackTimeline | None = None
        self._refs: dict[int, int] = {}  # stream index -> RTP time of the common instant
        self._first_arrival: float | None = None
        self._video_end = 0  # where the last video sample written ends: the next never overlaps it
        self._audio_end = 0
        self.interval = 0  # last frame interval, in 90 kHz ticks
        self.last_video_ts: int | None = None
        self.watchdog = Watchdog(stall_timeout)  # fed by every packet
        self.first_media = 0.0
        self.error: RtspError | Unsupported | None = None

    # -- the run --------------------------------------------------------------------------------------
    async def run(self) -> float:
        """Stream until the camera fails or goes silent; returns when media first arrived (0 if never)."""
        self.client = client = RtspClient(self.url, self._packet, transport=self.transport, timeout=self.timeout)
        try:
            await client.start(self._choose)
            self.timeline.new_run()
            self.watchdog.feed()
            await self._watch(client)
        finally:
            await client.close()
            if self.transcoder is not None:
                await self.transcoder.stop()
        return self.first_media

    async def _watch(self, client: RtspClient) -> None:
        """Until the connection ends or no media arrives for the stall timeout (a silent camera)."""
        waiters: set[asyncio.Future[Any]] = {client.closed}
        if self.transcoder is not None:
            waiters.add(self.transcoder.ended)
        while True:
            done, _ = await asyncio.wait(waiters, timeout=0.5, return_when=asyncio.FIRST_COMPLETED)
            if self.error is not None:
                raise self.error
            if client.closed in done:
                raise client.closed.result()
            if self.transcoder is not None and self.transcoder.ended in done:
                raise RtspError(f"audio transcoder ended: {self.transcoder.ended.result()}")
            if not self.first_media and self.watchdog.idle > self.timeout:
                what = "UDP" if self.transport == "udp" else "the camera"
                raise RtspError(f"no media from {what} within {self.timeout:.0f}s (timed out)")
            if self.watchdog.expired:
                raise RtspError(f"no data from source for {self.stall_timeout:.0f}s (stalled)")

    def _choose(self, sdp: Sdp) -> list[Media]:
        video = sdp.first("video")
        audio = sdp.first("audio") if self.want_audio else None
        video_ok = video is not None and video.encoding in VIDEO_CODECS
        audio_ok = audio is None or audio.encoding in AUDIO_CODECS
        if audio is not None and audio.encoding == "MPEG4-GENERIC":
            audio_ok = self._aac_config(audio)
        if self.on_codecs is not None:
            self.on_codecs(codec_name(video), codec_name(audio))
        if not video_ok or not audio_ok:
            raise Unsupported(codec_name(video), codec_name(audio))
        assert video is not None
        self.video_media, self.audio_media = video, audio
        self.hevc = video.encoding == "H265"
        self.depack = h265.H265Depacketizer() if self.hevc else h264.H264Depacketizer()
        if self.hevc:
            sets = video.param_sets("sprop-vps", "sprop-sps", "sprop-pps")
        else:
            sets = video.param_sets("sprop-parameter-sets")
        for nal in sets:
            t = h265.nal_type(nal) if self.hevc else nal[0] & 0x1F
            self.params.setdefault(t, nal)
        if audio is not None and audio.encoding in ("PCMA", "PCMU"):
            self.transcoder = G711Transcoder(self.name, self.ffmpeg, audio, self._transcoded)
            self.transcoder.start()  # while SETUP and PLAY go on: ffmpeg takes a while to come up
            self.audio_spec = AudioSpec(make_asc(2, audio.clock_rate, audio.channels), audio.clock_rate, audio.channels)
        return [video] if audio is None else [video, audio]

    def _aac_config(self, audio: Media) -> bool:
        mode = audio.fmtp.get("mode", "").lower()
        try:
            config = binascii.unhexlify(audio.fmtp.get("config", ""))
            aot, rate, channels = asc_info(config)
        except (binascii.Error, ValueError, IndexError):
            return False
        if mode not in ("aac-hbr", "aac-lbr") or not rate or aot not in (1, 2, 3, 4, 5, 29):
            return False
        self.aac = AacDepacketizer(audio.fmtp)
        self.audio_spec = AudioSpec(config, rate, channels or audio.channels)
        return True

    # -- packets --------------------------------------------------------------------------------------
    def _packet(self, index: int, data: bytes, arrived: float) -> None:
        self.watchdog.last = arrived
        pkt = parse_rtp(data, arrived)
        if pkt is None:
            return
        try:
            if index == 0:
                assert self.depack is not None
                for au in self.depack.push(pkt):
                    self._video(au)
            elif self.aac is not None:
                for frame in self.aac.push(pkt):
                    self._audio(frame.timestamp, frame.data, frame.arrived)
            elif self.transcoder is not None:
                self.transcoder.feed(pkt.timestamp, pkt.payload, arrived)
        except UnsupportedPacketization as e:  # ffmpeg's depacketizers know more formats
            if self.error is None:
                self.error = Unsupported(f"{codec_name(self.video_media)} ({e})", codec_name(self.audio_media))
        except (ValueError, IndexError) as e:  # a parameter set we cannot read: say so, restart
            if self.error is None:
                self.error = RtspError(f"invalid data from source: {e}")

    def _input(self, index: int, ts: int, rate: int, arrived: float) -> int:
        """A packet's RTP time as the timeline's input: ticks since the run's common instant (plus a
        second, so packets from just before it stay positive), wrapping at 32 bits as RTP does.

        The common instant is PLAY's start, where the camera gave every stream's RTP time there (RTP-Info);
        otherwise each stream is placed by its first packet's arrival, relative to the run's first packet.
        """
        ref = self._refs.get(index)
        if ref is None:
            info = self.client.rtp_info if self.client is not None else {}
            if len(info) >= 1 + (self.audio_media is not None) and index in info:
                ref = info[index]
            else:
                if self._first_arrival is None:
                    self._first_arrival = arrived
                ref = (ts - round((arrived - self._first_arrival) * rate)) & 0xFFFFFFFF
            self._refs[index] = ref
        return (ts - ref + rate * INPUT_BIAS) & 0xFFFFFFFF

    def _video(self, au: AccessUnit) -> None:
        for nal in au.params:
            t = h265.nal_type(nal) if self.hevc else nal[0] & 0x1F
            self.params[t] = nal
        if au.keyframe and self.params != self.init_params:
            if not self._write_init():
                return
        if self.init is None and self._held is None:
            return
        if self.video_track is None:
            self.video_track = self.timeline.track("video", 90000, wrap_bits=32)
        if self.last_video_ts is not None:
            step = (au.timestamp - self.last_video_ts) & 0xFFFFFFFF
            if 0 < step < 90000:  # a sane interval; jumps are the clock's business, not a duration
                self.interval = step
        self.last_video_ts = au.timestamp
        tl = self.video_track
        dts = max(tl.map(self._input(0, au.timestamp, 90000, au.arrived), au.arrived), self._video_end)
        duration = self._duration(tl)
        self._video_end = dts + duration
        self.seq += 1
        data = fragment(self.seq, VIDEO_TRACK, dts, duration, length_prefixed(au.nals), au.keyframe)
        info = FragInfo(VIDEO_TRACK, dts, TFDT_POS, 8, duration, au.keyframe, 1, DURATION_POS)
        if self._held is not None:
            if time.monotonic() < self._hold_until:
                self._held.append((data, info))
                return
            self._release()
        self._publish_video(data, info)

    def _publish_video(self, data: bytes, info: FragInfo) -> None:
        if self.hub.publish(data, info) is not None and not self.first_media:
            self.first_media = time.monotonic()
            if self.on_media is not None:
                self.on_media()

    def _release(self) -> None:
        """The stream starts: its init, then the video held while the audio track got going."""
        assert self._pending_init is not None and self._held is not None
        held, self._held = self._held, None
        self._set_init(*self._pending_init)
        for data, info in held:
            self._publish_video(data, info)

    def _duration(self, tl: TrackTimeline) -> int:
        """The frame interval seen last (the next frame's time is not known yet); where that step spans
        a lost frame or a jump, the timeline's smoothed interval; before two frames, the SDP's rate."""
        if not self.interval:
            return self._nominal_interval()
        if abs(self.interval - tl.interval) <= tl.interval / 4:
            return self.interval
        return max(1, round(tl.interval))

    def _nominal_interval(self) -> int:
        rate = self.video_media.framerate if self.video_media is not None else 0.0
        return round(90000 / rate) if rate > 0 else round(90000 * DEFAULT_INTERVAL)

    def _write_init(self) -> bool:
        """An init segment from the parameter sets in hand; False if some are still missing."""
        p = self.params
        try:
            if self.hevc:
                if not (h265.VPS in p and h265.SPS in p and h265.PPS in p):
                    return False
                width, height = h265.sps_size(p[h265.SPS])
                spec = VideoSpec(b"hev1", h265.hvcc([p[h265.VPS]], [p[h265.SPS]], [p[h265.PPS]]), width, height)
            else:
                if not (h264.SPS in p and h264.PPS in p):
                    return False
                width, height = h264.sps_size(p[h264.SPS])
                spec = VideoSpec(b"avc1", h264.avcc(p[h264.SPS], [p[h264.PPS]]), width, height)
        except (ValueError, IndexError) as e:
            raise ValueError(f"unreadable parameter set ({e})") from None
        data = init_segment(spec, self.audio_spec)
        self.init_params = dict(p)
        if self.init is None and self.audio_spec is not None and not self._audio_started:
            # A player plays where both tracks have media: going out before the audio (G.711 comes
            # through a transcoder that takes a while to start) would only show viewers a stalled start.
            self._pending_init = (data, parse_init(data))
            self._held = []
            self._hold_until = time.monotonic() + AUDIO_WAIT
        else:
            self._set_init(data, parse_init(data))
        return True

    def _set_init(self, data: bytes, info: InitInfo) -> None:
        self.init = self.hub.set_init(data, info)
        log.info("%s: stream %s (own RTSP client, %s)", self.name, info.mime, self.transport)

    def _audio(self, ts: int, data: bytes, arrived: float) -> None:
        if self.audio_spec is None:
            return
        self._audio_started = True
        if self._held is not None:
            self._release()
        if self.init is None:
            return
        rate = self.audio_spec.rate
        if self.audio_track is None:
            self.audio_track = self.timeline.track("audio", rate, wrap_bits=32)
        dts = max(self.audio_track.map(self._input(1, ts, rate, arrived), arrived), self._audio_end)
        self._audio_end = dts + 1024
        self.seq += 1
        info = FragInfo(AUDIO_TRACK, dts, TFDT_POS, 8, 1024, True, 1, DURATION_POS)
        self.hub.publish(fragment(self.seq, AUDIO_TRACK, dts, 1024, data, True), info)

    def _transcoded(self, ts: int, data: bytes, arrived: float) -> None:
        self._audio(ts, data, arrived)


class G711Transcoder:
    """ffmpeg turning this camera's G.711 into AAC: RTP payloads in on stdin, ADTS out on stdout.

    Output frame n (1024 samples each) started at input sample n*1024 - 1024 (the AAC encoder's priming
    frame), so each AAC frame gets the RTP timestamp of the samples it holds. Lost packets are filled
    with silence so the count stays true.
    """

    SILENCE = {"PCMA": 0xD5, "PCMU": 0xFF}

    def __init__(self, name: str, binary: str, media: Media, on_frame: Callable[[int, bytes, float], None]) -> None:
        self.name = name
        self.binary = binary
        self.media = media
        self.on_frame = on_frame
        self.proc: asyncio.subprocess.Process | None = None
        self.child = Child(RunState())  # the same child-process rules as every ffmpeg (group, PDEATHSIG)
        self.ended: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._reader: asyncio.Task[None] | None = None
        self._first_ts: int | None = None
        self._first_arrival = 0.0
        self._next_ts = 0
        self._frames = 0
        self._early = bytearray()

    def start(self) -> None:
        self._reader = asyncio.create_task(self._run(), name=f"g711:{self.name}")

    async def _spawn(self) -> None:
        fmt = "alaw" if self.media.encoding == "PCMA" else "mulaw"
        argv = [
            self.binary, "-hide_banner", "-nostats", "-loglevel", "error",
            "-probesize", "32", "-analyzeduration", "0", "-fflags", "+nobuffer",
            "-f", fmt, "-ar", str(self.media.clock_rate), "-ac", str(self.media.channels), "-i", "pipe:0",
            "-c:a", "aac", "-b:a", "64k", "-f", "adts", "-flush_packets", "1", "pipe:1",
        ]  # fmt: skip
        self.proc = await self.child.spawn(
            *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL
        )
        log.info("%s: input audio is %s: transcoding to AAC (ffmpeg pid %d)", self.name, self.codec, self.proc.pid)
        assert self.proc.stdin is not None
        self.proc.stdin.write(bytes(self._early))  # what came while ffmpeg was starting
        self._early = bytearray()

    @property
    def codec(self) -> str:
        return "pcm_alaw" if self.media.encoding == "PCMA" else "pcm_mulaw"

    def _write(self, data: bytes) -> None:
        proc = self.proc
        if proc is None:
            if len(self._early) < 64 * 1024:
                self._early += data
            return
        if proc.stdin is not None and not proc.stdin.is_closing():
            proc.stdin.write(data)

    def feed(self, ts: int, payload: bytes, arrived: float) -> None:
        if self._first_ts is None:
            self._first_ts = self._next_ts = ts
            self._first_arrival = arrived
        gap = (ts - self._next_ts) & 0xFFFFFFFF
        if 0 < gap < self.media.clock_rate:  # lost packets: silence keeps the sample count true
            self._write(bytes([self.SILENCE[self.media.encoding]]) * (gap * self.media.channels))
        elif gap >= 0x80000000:
            return  # late or duplicate
        self._next_ts = (ts + len(payload) // max(1, self.media.channels)) & 0xFFFFFFFF
        self._write(payload)

    async def _run(self) -> None:
        try:
            await self._spawn()
        except OSError as e:
            if not self.ended.done():
                self.ended.set_result(f"cannot start ffmpeg: {e}")
            return
        assert self.proc is not None and self.proc.stdout is not None
        adts = AdtsReader()
        scale = self.media.clock_rate
        try:
            while True:
                chunk = await self.proc.stdout.read(65536)
                if not chunk:
                    break
                for frame in adts.feed(chunk):
                    if self._first_ts is None:
                        continue
                    if self._frames == 0:  # the encoder's priming frame: it comes before the first sample
                        self._frames = 1
                        continue
                    # AAC at the same rate as the G.711 in: output ticks are input samples
                    offset = (self._frames - 1) * 1024 * scale // (adts.rate or scale)
                    self._frames += 1
                    # stamped as if it had arrived with its first G.711 sample: the encoder's delay is
                    # not the camera's, and audio must stay in step with video
                    self.on_frame((self._first_ts + offset) & 0xFFFFFFFF, frame, self._first_arrival + offset / scale)
        finally:
            rc = await self.proc.wait()
            if not self.ended.done():
                self.ended.set_result(f"exit code {rc}")

    async def stop(self) -> None:
        if self.proc is None and self._reader is not None:
            self._reader.cancel()  # still starting
        if self.proc is not None:
            if self.proc.stdin is not None and not self.proc.stdin.is_closing():
                self.proc.stdin.close()
            await self.child.stop(grace=1.0)
        if self._reader is not None:
            await asyncio.gather(self._reader, return_exceptions=True)
        if not self.ended.done():
            self.ended.set_result("stopped")


__all__ = ["AudioFrame", "RtspIngest", "Unsupported", "RtspError"]
