"""A pushed source: an encoder publishes over RTMP, and its FLV tags become the hub's init and fragments.

Where an RTSP camera is pulled by a supervised worker, a push source waits: `PushInput` stands where an
FfmpegProcess stands for pulled sources (the registry starts and stops it, GetSrc reads its state) and
takes at most one publisher at a time. No ffmpeg runs: an FLV AVC sequence header is already the avcC
record an MP4 sample entry holds, its NAL units are already length-prefixed, and AAC frames are raw, so
each tag is one fMP4 fragment (workers/mp4mux.py) written the moment it arrives.

Time: RTMP gives one millisecond clock for audio and video, 32 bits wide. It is unwrapped here and fed to
the source's owned timeline (workers/timeline.py, one clock for both tracks), which only goes forward: a
new publish (an encoder stopped and started again, its clock back at zero) is a new run that continues
after the real pause, and a jump of the encoder's clock is re-anchored on arrival time and counted.
AAC frames are 1024 samples, but millisecond timestamps are rounded: an audio timestamp within a frame
of where the previous frame ended is taken to be exactly there, so the audio track has no holes.

A browser (h5srtcpushapi) sends at a variable frame rate: its encoder drops frames on a busy machine and a
shared screen sends only when something changes. A frame's duration is then unknowable until the next
frame arrives, and the last interval is a poor guess (frames overlap or leave holes). Such a session
(`exact_durations`) holds each frame until its successor's time is known, one frame of latency, and gives
it exactly the gap to it: every frame ends where the next begins. A frame whose successor is late (a still
screen, a stalled encoder) goes out after HOLD_MIN (or three frame intervals) lasting as long as it waited;
the next frame then starts where it ended, so the output runs that much earlier than the input from then on
(no hole either way; `shift` keeps the difference). With audio beside it, the video then comes back to the
timeline by stretching its frames by at most an eighth, so the two stay in step. A new publish starts no
earlier than the last frame's end.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from workers.flv import CODEC_AVC, SOUND_AAC, SOUND_FORMATS, VIDEO_CODECS, FlvError, avcc_sps, parse_audio, parse_video
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
)
from workers.process import State
from workers.rtmp.server import Refused
from workers.rtp.aac import asc_info
from workers.rtp.h264 import sps_size
from workers.timeline import SourceTimeline

log = logging.getLogger("h5gate.push")

ONLINE_WINDOW = 3.0  # seconds without media after which a source is reported offline
VIDEO_RATE = 90000
AAC_SAMPLES = 1024
HOLD_MIN = 0.3  # seconds the newest frame of an exact-durations session waits for its successor, at least


@dataclass
class _Held:
    """A video frame waiting for its successor's decode time, which sets its duration."""

    dts: int
    arrival: float
    keyframe: bool
    cts: int
    data: bytes


def _signed32(value: int) -> int:
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value >= 0x80000000 else value


class PushSession:
    """One publish: FLV tags in, fMP4 init and fragments out into the source's hub."""

    def __init__(
        self, source: PushInput, peer: str, kick: Callable[[], None], *, exact_durations: bool = False
    ) -> None:
        self.source = source
        self.name = source.name
        self.peer = peer
        self.kick = kick
        self.hub = source.hub
        self.avcc: bytes | None = None
        self.asc: bytes | None = None
        self.video_spec: VideoSpec | None = None
        self.audio_spec: AudioSpec | None = None
        self.init: InitInfo | None = None
        self.init_dirty = True  # a config changed: the next keyframe starts a new init
        self.framerate = 0.0
        self.interval = 0  # last video frame interval, 90 kHz ticks
        self.last_video_dts = -1
        self.next_audio = -1  # where the next AAC frame is due, in the input's audio clock
        self._last_ms: int | None = None
        self._ext_ms = 0  # the encoder's clock, unwrapped past 2^32 ms
        self.seq = 0
        self.warned: set[str] = set()
        self.ended = False
        self.exact = exact_durations  # hold each frame for its successor (see the module docstring)
        self.shift = 0  # exact durations: output decode time = timeline's - shift
        self.late = 0  # frames that went out before their successor came (waited too long)
        self._held: _Held | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._sent = False  # has this session published a video frame yet?

    # -- Publisher ------------------------------------------------------------------------------------------
    def on_metadata(self, meta: dict[str, Any]) -> None:
        rate = meta.get("framerate") or meta.get("videoframerate")
        if isinstance(rate, float) and 0 < rate <= 240:
            self.framerate = rate

    def on_bytes(self, count: int) -> None:
        self.source.state.bytes_in += count

    def on_video(self, timestamp: int, body: bytes) -> None:
        try:
            tag = parse_video(body)
        except FlvError as e:
            return self._warn("video", f"unreadable video tag: {e}")
        if tag.codec_id != CODEC_AVC:
            codec = tag.fourcc or VIDEO_CODECS.get(tag.codec_id, f"codec id {tag.codec_id}")
            self.source.state.video_codec = codec
            self.source.state.last_error = f"video is {codec}: publish H.264"
            return self._warn("video", f"video is {codec}: only H.264 is taken, publish H.264")
        self.source.state.video_codec = "h264"
        if tag.packet_type == 0:
            self._video_config(tag.data)
        elif tag.packet_type == 1 and tag.data:
            self._video_frame(timestamp, tag.keyframe, tag.cts, tag.data)

    def on_audio(self, timestamp: int, body: bytes) -> None:
        if not self.source.audio:
            return
        try:
            tag = parse_audio(body)
        except FlvError as e:
            return self._warn("audio", f"unreadable audio tag: {e}")
        if tag.sound_format != SOUND_AAC:
            codec = SOUND_FORMATS.get(tag.sound_format, f"format {tag.sound_format}")
            self.source.state.audio_codec = codec
            return self._warn("audio", f"audio is {codec}: only AAC is taken, the stream goes on without sound")
        self.source.state.audio_codec = "aac"
        if tag.packet_type == 0:
            self._audio_config(tag.data)
        elif tag.packet_type == 1 and tag.data:
            self._audio_frame(timestamp, tag.data)

    def end(self, why: str) -> None:
        if self.ended:
            return
        self.ended = True
        self._cancel_timer()
        held, self._held = self._held, None
        if held is not None:  # no successor will come: the frame lasts one frame interval
            interval = self.source.timeline.track("video", VIDEO_RATE).interval
            self._send_video(held, max(1, round(interval)))
        self.source._ended(self, why)

    # -- media --------------------------------------------------------------------------------------------
    def _warn(self, key: str, message: str) -> None:
        if key not in self.warned:
            self.warned.add(key)
            log.warning("%s: %s", self.name, message)

    def _video_config(self, avcc: bytes) -> None:
        try:
            width, height = sps_size(avcc_sps(avcc))
        except (FlvError, ValueError, IndexError) as e:
            self.source.state.last_error = f"unreadable H.264 sequence header: {e}"
            return self._warn("avcc", self.source.state.last_error)
        if avcc != self.avcc:
            self.avcc = avcc
            self.video_spec = VideoSpec(b"avc1", avcc, width, height)
            self.init_dirty = True

    def _audio_config(self, asc: bytes) -> None:
        try:
            aot, rate, channels = asc_info(asc)
        except (ValueError, IndexError):
            rate = 0
        if not rate:
            return self._warn("asc", "unreadable AAC sequence header: the stream goes on without sound")
        if asc != self.asc:
            self.asc = asc
            self.audio_spec = AudioSpec(asc, rate, channels or 2)
            self.next_audio = -1
            self.init_dirty = True

    def _ms(self, timestamp: int) -> int:
        """The encoder's timestamp, unwrapped (32-bit milliseconds wrap after 49.7 days)."""
        if self._last_ms is None:
            self._ext_ms = timestamp
        else:
            self._ext_ms += _signed32(timestamp - self._last_ms)
        self._last_ms = timestamp
        return self._ext_ms

    def _write_init(self) -> None:
        data = init_segment(self.video_spec, self.audio_spec)
        self.init = self.hub.set_init(data, parse_init(data))
        self.init_dirty = False
        log.info("%s: stream %s (RTMP push from %s)", self.name, self.init.mime, self.peer)

    def _video_frame(self, timestamp: int, keyframe: bool, cts: int, data: bytes) -> None:
        if self.video_spec is None:
            return self._warn("noconfig", "video before its sequence header: waiting for one")
        if self.init_dirty and not keyframe:
            return
        track = self.source.timeline.track("video", VIDEO_RATE)
        now = time.monotonic()
        dts = track.map(self._ms(timestamp) * (VIDEO_RATE // 1000), now)
        if self.exact:
            dts = self._place(dts)  # the held frame goes out first, on the init it was encoded with
        if self.init_dirty:
            self._write_init()
        if self.exact:
            self._held = _Held(dts, now, keyframe, cts, data)
            wait = max(HOLD_MIN, 3 * track.interval / VIDEO_RATE)
            self._timer = asyncio.get_running_loop().call_later(wait, self._successor_late)
            return
        if self.last_video_dts >= 0:
            self.interval = dts - self.last_video_dts
        self.last_video_dts = dts
        duration = track.duration(self.interval or round(VIDEO_RATE / (self.framerate or 25.0)))
        self._send_video(_Held(dts, now, keyframe, cts, data), duration)

    def _place(self, mapped: int) -> int:
        """Exact durations: the output decode time of a new frame whose timeline time is `mapped`; the
        held frame goes out now, ending exactly there."""
        self._cancel_timer()
        held, self._held = self._held, None
        if held is not None:
            if self.shift and self._has_audio():
                # Audio follows the timeline: video put early (or late) by a late frame comes back beside it,
                # each frame stretched (or shortened) by at most an eighth.
                step = mapped - (held.dts + self.shift)
                adjust = min(abs(self.shift), step // 8)
                self.shift -= adjust if self.shift > 0 else -adjust
            out = mapped - self.shift
            self._send_video(held, out - held.dts)  # > 0: the timeline's times strictly increase
            return out
        end = self.source.video_end
        if end is None:
            out = mapped
        elif self._sent:
            out = end  # the previous frame went out alone, lasting until now: continue where it ended
        else:
            out = max(mapped, end)  # a new publish: after the previous publish's last frame, never over it
        self.shift = mapped - out
        return out

    def _has_audio(self) -> bool:
        return self.init is not None and AUDIO_TRACK in self.init.tracks

    def _successor_late(self) -> None:
        """The held frame waited long enough (a still screen, a stalled encoder): out, lasting until now."""
        self._timer = None
        held, self._held = self._held, None
        if held is not None and not self.ended:
            self.late += 1
            self._send_video(held, max(1, round((time.monotonic() - held.arrival) * VIDEO_RATE)))

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _send_video(self, frame: _Held, duration: int) -> None:
        self.seq += 1
        cts = frame.cts * (VIDEO_RATE // 1000)
        frag = fragment(self.seq, VIDEO_TRACK, frame.dts, duration, frame.data, frame.keyframe, cts)
        info = FragInfo(VIDEO_TRACK, frame.dts, TFDT_POS, 8, duration, frame.keyframe, 1, DURATION_POS)
        self.source.video_end = frame.dts + duration
        self._sent = True
        if self.hub.publish(frag, info) is not None:
            self.source._media()

    def _audio_frame(self, timestamp: int, data: bytes) -> None:
        spec = self.audio_spec
        if self.init is None or spec is None or self.init_dirty or AUDIO_TRACK not in self.init.tracks:
            return  # a config changed (or came after this init): audio joins with the next keyframe's init
        given = self._ms(timestamp) * spec.rate // 1000
        if self.next_audio >= 0 and abs(given - self.next_audio) < AAC_SAMPLES:
            given = self.next_audio  # millisecond timestamps jitter by up to 48 samples: the count is exact
        self.next_audio = given + AAC_SAMPLES
        dts = self.source.timeline.track("audio", spec.rate).map(given, time.monotonic())
        self.seq += 1
        info = FragInfo(AUDIO_TRACK, dts, TFDT_POS, 8, AAC_SAMPLES, True, 1, DURATION_POS)
        self.hub.publish(fragment(self.seq, AUDIO_TRACK, dts, AAC_SAMPLES, data, True), info)


class PushInput:
    """A push source's input: stands where an FfmpegProcess stands, fed by at most one publisher at a time."""

    def __init__(self, name: str, hub: StreamHub, *, audio: bool = True) -> None:
        self.name = name
        self.hub = hub
        self.audio = audio
        self.state = State(transport="rtmp", last_error="waiting for an encoder to publish")
        self.timeline = SourceTimeline(name, common_clock=True)  # lives as long as the source, across publishes
        self.session: PushSession | None = None
        self.video_end: int | None = None  # where the last video frame published ends (output decode time)
        self.accepting = False
        self.sessions = 0

    @property
    def online(self) -> bool:
        return self.state.online and time.monotonic() - self.hub.last_arrival < ONLINE_WINDOW

    def start(self) -> None:
        self.accepting = True

    async def stop(self) -> None:
        self.accepting = False
        if self.session is not None:
            self.session.kick()
        self.state.online = False

    def begin(self, peer: str, kick: Callable[[], None], *, exact_durations: bool = False) -> PushSession:
        """A publisher arrives; Refused while another one is live or the source is not running.

        `exact_durations` for a variable frame rate (a browser): frames wait for their successor."""
        if not self.accepting:
            raise Refused("source is stopped")
        if self.session is not None:
            raise Refused(f"already published by {self.session.peer}")
        if self.sessions:
            self.state.restarts += 1
        self.sessions += 1
        self.timeline.new_run()
        self.state.started_at = time.monotonic()
        self.state.video_codec = self.state.audio_codec = ""
        self.session = PushSession(self, peer, kick, exact_durations=exact_durations)
        return self.session

    def _media(self) -> None:
        if not self.state.online:
            self.state.online = True
            self.state.last_error = ""
            log.info("%s: online", self.name)

    def _ended(self, session: PushSession, why: str) -> None:
        if session is not self.session:
            return
        self.session = None
        self.state.online = False
        self.state.last_error = why
