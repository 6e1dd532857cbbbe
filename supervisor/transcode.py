"""Transcoding profiles and the shared transcodes made from them.

A profile (AddTransProfile; "default" is the one GetTransProfileDefault shows) says how big, how fast and
how many bits. A viewer asking for `profile=<token>` gets the source scaled and re-encoded to H.264 by ONE
ffmpeg per (source, profile), shared by all its viewers: it starts with the first and stops 30 s after
the last (the registry's idle rule for non-main streams). That ffmpeg reads the source's own hub over a
loopback HTTP feed (api/transcoding.py serves it with a per-run key), never the camera: the camera keeps
its one connection. An H.265 source goes to a player that cannot take it (hevc=false) through the
default profile.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from supervisor.conf_store import ConfStore
from supervisor.db import Database
from supervisor.errors import BadValue, Conflict, NotFound
from supervisor.registry import SourceRuntime, Stream
from workers.ffmpeg import Encode, Plan
from workers.hub import StreamHub
from workers.process import FfmpegProcess

log = logging.getLogger("h5gate.transcode")

DEFAULT = "default"
TOKEN_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
FPS_TYPES = ("H5_FPS_AUTO", "H5_FPS_FIXED", "H5_FPS_DYNAMIC")
SCALE_TYPES = ("H5_SCALE_AUTO", "H5_SCALE_FIXED", "H5_SCALE_DYNAMIC")
ENGINES = ("H5_SW_ONLY", "H5_HW_FIRST", "H5_GPU_INTEL", "H5_GPU_NVIDIA")  # h5gate encodes in software


@dataclass
class TransProfile:
    token: str
    name: str
    fps_type: str = "H5_FPS_AUTO"
    fps: int = 25
    scale_type: str = "H5_SCALE_FIXED"
    width: int = 640
    height: int = 480
    bitrate: int = 1024  # kbit/s
    engine: str = "H5_SW_ONLY"

    def check(self) -> TransProfile:
        if not TOKEN_RE.match(self.token):
            raise BadValue("invalid token: use 1-64 letters, digits, '_', '-' or '.'")
        if not self.name or len(self.name) > 128 or any(ord(c) < 32 for c in self.name):
            raise BadValue("invalid name: 1-128 printable characters")
        if self.fps_type not in FPS_TYPES:
            raise BadValue(f"invalid fpstype: use one of {', '.join(FPS_TYPES)}")
        if self.scale_type not in SCALE_TYPES:
            raise BadValue(f"invalid scaletype: use one of {', '.join(SCALE_TYPES)}")
        if self.engine not in ENGINES:
            raise BadValue(f"invalid engine: use one of {', '.join(ENGINES)}")
        if not 1 <= self.fps <= 60:
            raise BadValue("fps out of range (1 to 60)")
        if not (16 <= self.width <= 4096 and 16 <= self.height <= 4096):
            raise BadValue("width and height out of range (16 to 4096)")
        if not 64 <= self.bitrate <= 50_000:
            raise BadValue("bitrate out of range (64 to 50000 kbit/s)")
        return self

    def encode(self) -> Encode:
        """The encoder settings: AUTO keeps the input's size / rate; DYNAMIC scale keeps the aspect ratio."""
        width = 0 if self.scale_type == "H5_SCALE_AUTO" else self.width
        height = self.height if self.scale_type == "H5_SCALE_FIXED" else 0
        fps = 0 if self.fps_type == "H5_FPS_AUTO" else self.fps
        return Encode(width=width - width % 2, height=height - height % 2, fps=fps, bitrate_k=self.bitrate)

    def describe(self) -> dict[str, Any]:
        """GetTransProfile's item, as the consoles' transcoding pages read it."""
        return {
            "strName": self.name,
            "strToken": self.token,
            "nCodec": "H5_CODEC_H264",
            "nEngine": self.engine,
            "nBitrate": self.bitrate,
            "nFPSType": self.fps_type,
            "nFPS": self.fps,
            "nScaleType": self.scale_type,
            "nWidth": self.width,
            "nHeight": self.height,
        }


FeedUrl = Callable[[str, str], str]  # (source token, key) -> the loopback URL of that source's hub feed


class Transcoder:
    def __init__(self, db: Database, conf: ConfStore, ffmpeg: str, settings: Any) -> None:
        self.db = db
        self.conf = conf
        self.ffmpeg = ffmpeg
        self.settings = settings
        self.profiles: dict[str, TransProfile] = {}
        self.key = secrets.token_urlsafe(24)  # what the feed asks of its only client, our own ffmpeg
        self.feed_url: FeedUrl | None = None  # set by the API chapter, which serves the feed

    async def load(self) -> None:
        self.profiles = {}
        for row in await self.db.fetchall("SELECT token, config FROM trans_profiles ORDER BY created"):
            try:
                self.profiles[row["token"]] = TransProfile(**json.loads(row["config"]))
            except (TypeError, ValueError):
                log.error("skipping an unreadable transcoding profile %s", row["token"])

    @property
    def default(self) -> TransProfile:
        stored = self.conf.get("trans_default")
        if isinstance(stored, dict):
            try:
                return TransProfile(**{**stored, "token": DEFAULT, "name": "Default"})
            except TypeError:
                pass
        return TransProfile(DEFAULT, "Default")

    def profile(self, token: str) -> TransProfile | None:
        return self.default if token == DEFAULT else self.profiles.get(token)

    async def add(self, profile: TransProfile) -> None:
        profile.check()
        if profile.token == DEFAULT or profile.token in ("main", "sub"):
            raise Conflict(f"{profile.token} is reserved")
        if profile.token in self.profiles:
            raise Conflict(f"profile already exists: {profile.token}")
        await self.db.execute(
            "INSERT INTO trans_profiles (token, config, created) VALUES (?, ?, ?)",
            (profile.token, json.dumps(asdict(profile)), time.time()),
        )
        self.profiles[profile.token] = profile
        log.info(
            "transcoding profile %s added (%dx%d %d kbit/s)",
            profile.token,
            profile.width,
            profile.height,
            profile.bitrate,
        )

    async def delete(self, token: str, runtimes: list[SourceRuntime]) -> None:
        if token not in self.profiles:
            raise NotFound(f"no such profile: {token}")
        await self.db.execute("DELETE FROM trans_profiles WHERE token = ?", (token,))
        del self.profiles[token]
        for runtime in runtimes:  # its running transcodes end (their viewers see the close)
            stream = runtime.streams.pop(token, None)
            if stream is not None:
                await stream.stop()
                stream.hub.close()
        log.info("transcoding profile %s deleted", token)

    async def set_default(self, profile: TransProfile) -> None:
        profile.check()
        values = asdict(profile)
        values.pop("token")
        values.pop("name")
        await self.conf.set("trans_default", values)
        log.info("default transcoding profile set (%dx%d %d kbit/s)", profile.width, profile.height, profile.bitrate)

    def stream(self, runtime: SourceRuntime, token: str) -> Stream | None:
        """The shared transcode of `runtime` by profile `token`, made on first use; None for no such profile."""
        existing = runtime.streams.get(token)
        if existing is not None:
            return existing
        profile = self.profile(token)
        if profile is None or self.feed_url is None:
            return None
        cfg = runtime.config
        name = f"{cfg.token}/{token}"
        hub = StreamHub(name, self.settings.ring_seconds)
        url = self.feed_url(cfg.token, self.key)
        settings = self.settings

        async def plan() -> Plan:
            return Plan(
                url=url,
                is_file=False,
                audio=cfg.audio,
                timeout_s=max(settings.rtsp_timeout, 8.0),
                token=cfg.token,
                encode=(self.profile(token) or profile).encode(),  # the default may have changed since
            )

        process = FfmpegProcess(
            name,
            self.ffmpeg,
            hub,
            plan,
            stall_timeout=settings.stall_timeout,
            restart_min=settings.restart_min,
            restart_max=settings.restart_max,
        )
        process.video_mode = "h264"  # what comes out is H.264 whatever goes in: no relearning restart
        stream = runtime.streams[token] = Stream(runtime, token, hub, process, always=False)
        log.info("%s: transcode %s made (%s)", cfg.token, token, profile.encode())
        return stream
