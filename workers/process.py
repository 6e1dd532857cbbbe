"""One supervised ffmpeg: spawn, read its fMP4 pipe into the hub, restart with backoff, kill when it stalls.

The restart loop and backoff are workers/supervise.py's; the process group and PR_SET_PDEATHSIG (neither
a clean exit nor a SIGKILL of the server leaves ffmpeg behind) are workers/child.py's. Its stderr (with
level prefixes) tells us the input codecs, which decide between copying and transcoding, and the last
error, which GetSrc reports.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from workers.child import Child
from workers.credentials import redact
from workers.ffmpeg import MSE_AUDIO, MSE_VIDEO, Plan, build_command
from workers.fmp4 import InitInfo, Splitter, TimingRepair, parse_fragment, parse_init, retime_fragment
from workers.hub import StreamHub
from workers.rtsp.client import RtspError
from workers.rtsp_source import RtspIngest, Unsupported
from workers.supervise import Backoff, RunState, Stalled, Supervisor, Watchdog
from workers.timeline import SourceTimeline, TrackTimeline

log = logging.getLogger("h5gate.process")

MSE_VIDEO_CODECS = ("avc1", "avc3", "hev1", "hvc1")  # as they appear in an init segment
ONLINE_WINDOW = 3.0  # seconds without media after which a source is reported offline
STREAM_RE = re.compile(r"Stream #0:\d+.*?: (Video|Audio): (\w+)")
ERROR_HINTS = (
    ("401 Unauthorized", "authentication failed (401 Unauthorized)"),
    ("403 Forbidden", "access denied (403 Forbidden)"),
    ("404 Not Found", "stream not found (404 Not Found)"),
    ("Connection refused", "connection refused"),
    ("Connection timed out", "connection timed out"),
    ("No route to host", "no route to host"),
    ("Name or service not known", "unknown host"),
    ("Temporary failure in name resolution", "unknown host"),
    ("No such file or directory", "file not found"),
    ("Invalid data found", "invalid data from source"),
    ("Connection reset", "connection reset by source"),
)


@dataclass
class State(RunState):
    """RunState plus what GetSrc tells about an ffmpeg run: the transport it uses and the input codecs."""

    transport: str = ""
    video_codec: str = ""
    audio_codec: str = ""
    bytes_in: int = 0


class FfmpegProcess:
    """Keeps one ffmpeg running for one stream and feeds its output into a StreamHub."""

    def __init__(
        self,
        name: str,
        binary: str,
        hub: StreamHub,
        plan_for: Callable[[], Awaitable[Plan]],
        *,
        rtsp_type: str = "H5_RTSP_AUTO",
        stall_timeout: float = 10.0,
        restart_min: float = 0.5,
        restart_max: float = 30.0,
        secrets: tuple[str, ...] = (),
        own_rtsp: bool = True,
    ) -> None:
        self.name = name
        self.binary = binary
        self.hub = hub
        self.plan_for = plan_for
        self.rtsp_type = rtsp_type
        self.stall_timeout = stall_timeout
        self.secrets = secrets
        self.state = State()
        self.video_mode = "copy"
        self.audio_mode = "copy"
        self._transport = "udp" if rtsp_type == "H5_RTSP_UDP" else "tcp"
        self._ffmpeg_only = not own_rtsp  # also set once a camera turns out to send what only ffmpeg carries
        self.ingest: RtspIngest | None = None
        self.child = Child(self.state)
        self.supervisor = Supervisor(
            f"{name}: ffmpeg",
            self._run_once,
            state=self.state,
            backoff=Backoff(restart_min, restart_max),
            halt=self.child.stop,
            on_end=self._ended,
            logger=log,
        )
        # Outlives every ffmpeg run: consumers see one timeline across restarts; ffmpeg's tracks share a clock.
        self.timeline = SourceTimeline(name, common_clock=True)

    @property
    def online(self) -> bool:
        """Running and delivering: media arrived within the last few seconds."""
        return self.state.online and time.monotonic() - self.hub.last_arrival < ONLINE_WINDOW

    def start(self) -> None:
        self.supervisor.start()

    async def stop(self) -> None:
        await self.supervisor.stop()

    def _ended(self, healthy: bool) -> None:
        """With H5_RTSP_AUTO, a run that failed is retried over the other transport (not a codec restart)."""
        sup = self.supervisor
        if self.rtsp_type == "H5_RTSP_AUTO" and not healthy and not sup.stopping and not sup.restart_pending:
            self._transport = "udp" if self._transport == "tcp" else "tcp"

    async def _run_once(self) -> bool:
        """One ffmpeg run; True if it delivered media for a while (so the backoff resets)."""
        try:
            plan = await self.plan_for()
        except Exception as e:  # e.g. an ONVIF device that cannot tell its stream URI right now
            self.state.last_error = str(e) or e.__class__.__name__
            log.warning("%s: cannot start: %s", self.name, self.state.last_error)
            return False
        plan.transport = self._transport
        plan.video_mode = self.video_mode
        plan.audio_mode = self.audio_mode
        if plan.url.lower().startswith("rtsp://") and not self._ffmpeg_only:
            return await self._run_native(plan)
        argv = build_command(self.binary, plan)
        log.info(
            "%s: starting ffmpeg (%s, video %s, audio %s)",
            self.name,
            plan.transport if plan.url.startswith("rtsp") else plan.url.split(":", 1)[0],
            self.video_mode,
            self.audio_mode if plan.audio else "off",
        )
        proc = await self.child.spawn(*argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        st = self.state
        st.transport = plan.transport if plan.url.startswith("rtsp") else ""
        st.video_codec = st.audio_codec = ""  # input lines come first; re-learned on every run
        first_media = 0.0
        stderr_task = asyncio.create_task(self._read_stderr(proc, plan))
        try:
            first_media = await self._read_stdout(proc)
        finally:
            await self.child.reap()
            await asyncio.gather(stderr_task, return_exceptions=True)
        if not first_media and not st.last_error:
            st.last_error = self._cause("", plan)
        if proc.returncode not in (0, None) and not st.last_error:
            st.last_error = f"ffmpeg exited with code {proc.returncode}"
        return bool(first_media) and time.monotonic() - first_media > 5.0

    async def _run_native(self, plan: Plan) -> bool:
        """One run of the zero-lookahead path (our RTSP client); codecs it cannot carry go to ffmpeg."""
        st = self.state
        st.started_at, st.transport, st.pid = time.monotonic(), plan.transport, None
        st.video_codec = st.audio_codec = ""

        def online() -> None:
            st.online, st.last_error = True, ""
            log.info("%s: online", self.name)

        def codecs(video: str, audio: str) -> None:
            st.video_codec, st.audio_codec = video, audio

        log.info("%s: connecting (own RTSP client, %s)", self.name, plan.transport)
        self.ingest = ingest = RtspIngest(
            self.name,
            plan.url,
            self.hub,
            transport=plan.transport,
            timeout=plan.timeout_s,
            stall_timeout=self.stall_timeout,
            audio=plan.audio,
            ffmpeg=self.binary,
            on_media=online,
            on_codecs=codecs,
            timeline=self.timeline,
        )
        first_media = 0.0
        try:
            first_media = await ingest.run()
        except Unsupported as e:
            log.info("%s: the camera sends %s: using ffmpeg for this source", self.name, e)
            self._ffmpeg_only = True
            self.supervisor.restart_now()
            return False
        except RtspError as e:
            st.last_error = redact(str(e), *self.secrets)
            first_media = ingest.first_media
            if "stalled" in st.last_error:
                log.warning("%s: watchdog: %s, reconnecting", self.name, st.last_error)
            else:
                log.warning("%s: camera: %s", self.name, st.last_error)
        finally:
            st.online = False
            st.bytes_in += ingest.client.bytes_in if ingest.client is not None else 0
        return bool(first_media) and time.monotonic() - first_media > 5.0

    async def _read_stdout(self, proc: asyncio.subprocess.Process) -> float:
        assert proc.stdout is not None
        splitter = Splitter()
        repair = TimingRepair()
        tracks: dict[int, TrackTimeline] = {}
        first_media = 0.0
        hub = self.hub
        watchdog = Watchdog(self.stall_timeout)
        while True:
            try:
                chunk = await watchdog.within(proc.stdout.read(256 * 1024))
            except Stalled:
                self.state.online = False
                self.state.last_error = f"no data from source for {self.stall_timeout:.0f}s (stalled)"
                log.warning("%s: watchdog: %s, killing ffmpeg", self.name, self.state.last_error)
                self.child.kill()  # it is hung: no point asking it to exit
                return first_media
            if not chunk:
                return first_media
            self.state.bytes_in += len(chunk)
            for kind, data in splitter.feed(chunk):
                if kind == "init":
                    init = parse_init(data)
                    if self._unplayable(init):  # ffmpeg wrote before its stream lines were read
                        self._restart_now()
                        return first_media
                    hub.set_init(data, init)
                    tracks = self._timelines(init)
                    log.info("%s: stream %s", self.name, init.mime)
                    continue
                arrival = time.monotonic()
                for fixed, info in repair.push(data, parse_fragment(data)):
                    tl = tracks.get(info.track_id)
                    if tl is not None:  # the decode time consumers see is ours, not the camera's
                        fixed, info = retime_fragment(fixed, info, tl.map(info.tfdt, arrival), tl.duration)
                    frag = hub.publish(fixed, info)
                    if frag is not None and not first_media:
                        first_media = time.monotonic()
                        self.state.online = True
                        self.state.last_error = ""
                        log.info("%s: online", self.name)

    def _timelines(self, init: InitInfo) -> dict[int, TrackTimeline]:
        """A new ffmpeg run: its decode times start over, the owned timeline carries on."""
        self.timeline.new_run()
        kinds = {"vide": "video", "soun": "audio"}
        return {
            t.track_id: self.timeline.track(kinds[t.handler], t.timescale)
            for t in init.tracks.values()
            if t.handler in kinds
        }

    async def _read_stderr(self, proc: asyncio.subprocess.Process, plan: Plan) -> None:
        assert proc.stderr is not None
        first_error = ""
        while True:
            raw = await proc.stderr.readline()
            if not raw:
                return
            line = redact(raw.decode("utf-8", "replace").rstrip(), *self.secrets)
            m = STREAM_RE.search(line)
            if m and " -> " not in line:
                self._learn(m.group(1), m.group(2), plan)
                continue
            if "[error]" in line or "[fatal]" in line:
                if not first_error:  # the first error of a run is the cause; later ones are consequences
                    first_error = self.state.last_error = self._cause(self._explain(line), plan)
                log.warning("%s: ffmpeg: %s", self.name, line)
            elif "[warning]" in line:
                log.debug("%s: ffmpeg: %s", self.name, line)

    def _learn(self, kind: str, codec: str, plan: Plan) -> None:
        """Input codec seen: decide copy vs transcode; a wrong guess restarts ffmpeg at once."""
        st = self.state
        if kind == "Video" and not st.video_codec:
            st.video_codec = codec
            # a transcoding profile's run encodes whatever comes in: nothing to learn, no restart
            want = "h264" if plan.encode is not None else "copy" if codec in MSE_VIDEO else "h264"
            if want != self.video_mode:
                log.info("%s: input video is %s: encoding to H.264", self.name, codec)
                self.video_mode = want
                self._restart_now()
        elif kind == "Audio" and not st.audio_codec and plan.audio:
            st.audio_codec = codec
            want = "copy" if codec in MSE_AUDIO else "aac"
            if want != self.audio_mode:
                log.info("%s: input audio is %s: transcoding to AAC", self.name, codec)
                self.audio_mode = want
                self._restart_now()

    def _unplayable(self, init: InitInfo) -> bool:
        """Whether a run's init holds codecs a browser's MSE cannot play; if so, switch to transcoding.

        The init is the last word: it can come out before ffmpeg's stream lines have been read, and a
        run that copies MJPEG or G.711 must never reach the hub and its viewers.
        """
        unplayable = False
        for track in init.tracks.values():
            if track.handler == "vide" and track.codec[:4] not in MSE_VIDEO_CODECS:
                self.video_mode, unplayable = "h264", True
            elif track.handler == "soun" and not track.codec.startswith("mp4a"):
                self.audio_mode, unplayable = "aac", True
        if unplayable:
            log.info("%s: %s cannot go to browsers: transcoding", self.name, init.mime)
        return unplayable

    def _restart_now(self) -> None:
        """Codecs learned: end this run at once and start the next without backoff, with the right modes."""
        self.supervisor.restart_now()
        self.child.kill()

    def _cause(self, error: str, plan: Plan) -> str:
        """ffmpeg says only "Invalid data" (or nothing) when a camera accepts the connection and never
        answers: a run without media that lasted the whole timeout is reported as the timeout it was."""
        silent = not self.state.online and time.monotonic() - self.state.started_at >= plan.timeout_s * 0.9
        if silent and error in ("", "invalid data from source"):
            return f"source did not answer within {plan.timeout_s:.0f}s (timed out)"
        return error

    @staticmethod
    def _explain(line: str) -> str:
        for needle, message in ERROR_HINTS:
            if needle in line:
                return message
        text = re.sub(r"^\[[^\]]*\]\s*(\[[^\]]*\]\s*)*", "", line)
        return text[:200]
