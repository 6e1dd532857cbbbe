"""token -> source runtime: validates and persists sources, starts and stops their ffmpeg and hubs.

A source has a main and optionally a sub stream. Each stream is one FfmpegProcess feeding one StreamHub.
`H5_ALWAYS` main streams run from start-up; sub streams and `H5_ONDEMAND` sources start with their first
consumer and stop a while after the last one leaves, so an idle camera is not held open.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit

from supervisor.api.common import TOKEN_RE
from supervisor.config import Settings
from supervisor.db import Database
from supervisor.errors import BadValue, Conflict, NotFound
from supervisor.secretbox import SecretBox
from workers.credentials import query_secrets, redact_url, with_credentials
from workers.ffmpeg import STREAM_SCHEMES, Plan
from workers.hub import StreamHub
from workers.process import FfmpegProcess
from workers.push_source import PushInput
from workers.relay_source import RelayInput

log = logging.getLogger("h5gate.registry")

KINDS = ("H5_STREAM", "H5_FILE", "H5_ONVIF", "H5_RTMP_PUSH")
RTSP_TYPES = ("H5_RTSP_AUTO", "H5_RTSP_TCP", "H5_RTSP_UDP")
CONNECT_TYPES = ("H5_AUTO", "H5_ONDEMAND", "H5_ALWAYS")
IDLE_STOP_SECONDS = 30.0
MEDIA_DIR = Path(__file__).resolve().parent.parent / "media"


@dataclass
class SourceConfig:
    token: str
    name: str
    kind: str
    url: str
    user: str = ""
    password: str = ""  # the camera's; for H5_RTMP_PUSH the publish key, kept where camera secrets are kept
    audio: bool = True
    rtsp_type: str = "H5_RTSP_AUTO"
    connect_type: str = "H5_ALWAYS"
    url_sub: str = ""
    ip: str = ""
    port: str = ""
    onvif_addr: str = ""
    profile_main: str = ""
    profile_sub: str = ""
    profile_auto: bool = True
    snapshot_url: str = ""
    record: bool = False  # continuous recording on (GetSrc bRec)
    server_token: str = ""  # a cloud edge's source: the edge (strServerToken) ...
    original_token: str = ""  # ... and the source's token there (strOriginalToken)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> SourceConfig:
        data = json.loads(text)
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


def check_stream_url(url: str) -> str:
    """A camera/encoder URL that is safe to hand to ffmpeg as the one argument after -i."""
    if len(url) > 2048 or any(ord(c) <= 32 or ord(c) == 127 for c in url):
        raise BadValue("invalid url: too long or contains spaces/control characters")
    parts = urlsplit(url)
    if parts.scheme.lower() not in STREAM_SCHEMES:
        raise BadValue(f"unsupported url scheme: use one of {', '.join(STREAM_SCHEMES)}")
    if not parts.hostname:
        raise BadValue("invalid url: no host")
    return url


def check_file_path(path: str, roots: list[Path]) -> Path:
    """A media file under one of the configured roots (symlinks resolved: no escaping them)."""
    if path.startswith("file://"):
        path = path[7:]
    elif path.startswith("file:"):
        path = path[5:]
    if not path or len(path) > 1024 or any(ord(c) < 32 for c in path):
        raise BadValue("invalid file path")
    candidates = [Path(path)] if Path(path).is_absolute() else [r / path for r in roots]
    for candidate in candidates:
        real = candidate.resolve()
        if any(real.is_relative_to(r.resolve()) for r in roots):
            if not real.is_file():
                raise BadValue("file not found under the media roots")
            return real
    raise BadValue("file is outside the configured media roots")


StreamInput = FfmpegProcess | PushInput | RelayInput  # what feeds a stream's hub: the same start/stop/state/online


class Placement(Protocol):
    """Where each source is pulled (the cluster's ownership): here, or by another node that this one relays from."""

    def local(self, token: str) -> bool: ...

    def remote_input(self, runtime: SourceRuntime, profile: str, hub: StreamHub) -> StreamInput: ...


class SharedSources(Protocol):
    """The cluster's source list, written before the local one: a change that cannot be shared is not made.

    Each raises errors.Conflict (add: the token exists in the cluster) or errors.Unavailable (Redis is away).
    """

    async def add(self, cfg: SourceConfig) -> None: ...

    async def put(self, cfg: SourceConfig) -> None: ...

    async def delete(self, token: str) -> None: ...


class Stream:
    """One profile of a source: its input (ffmpeg, a PushInput, a relay) and its hub, with a count of who uses it."""

    def __init__(
        self, runtime: SourceRuntime, profile: str, hub: StreamHub, process: StreamInput, always: bool
    ) -> None:
        self.runtime = runtime
        self.profile = profile
        self.hub = hub
        self.process = process
        self.always = always
        self.users = 0
        self.running = False
        self.idle_seconds = IDLE_STOP_SECONDS  # an on-demand stream stops this long after its last consumer
        self._idle_task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if not self.running:
            self.running = True
            self.process.start()

    def acquire(self) -> StreamHub:
        """A consumer arrives: make sure the stream runs."""
        self.users += 1
        if self._idle_task is not None:
            self._idle_task.cancel()
            self._idle_task = None
        self.start()
        return self.hub

    def release(self) -> None:
        self.users = max(0, self.users - 1)
        if self.users == 0 and not self.always and self.running and self._idle_task is None:
            self._idle_task = asyncio.create_task(self._stop_when_idle())

    async def _stop_when_idle(self) -> None:
        await asyncio.sleep(self.idle_seconds)
        self._idle_task = None
        if self.users == 0 and not self.always:
            log.info(
                "%s/%s: no consumers for %.0fs, stopping", self.runtime.config.token, self.profile, self.idle_seconds
            )
            await self.stop()

    async def stop(self) -> None:
        if self._idle_task is not None:
            self._idle_task.cancel()
            self._idle_task = None
        self.running = False
        await self.process.stop()


class SourceRuntime:
    def __init__(self, config: SourceConfig) -> None:
        self.config = config
        self.streams: dict[str, Stream] = {}
        self.created = time.time()
        self.remote_record = False  # a cloud edge's source: the edge records it (this server does not)
        self.attached = False  # made elsewhere, not stored (a cloud edge's source): never in the cluster's list
        self.local = True  # pulled here; False: another cluster node pulls it and this one relays on demand
        self.owner = ""  # in a cluster, the node that pulls it ("" = none known yet, or no cluster)
        self.remote_online: bool | None = None  # the owner's bOnline, as it last told the cluster

    @property
    def main(self) -> Stream:
        return self.streams["main"]

    @property
    def online(self) -> bool:
        if self.local or self.main.process.online or self.remote_online is None:
            return self.main.process.online
        return self.remote_online

    def stream(self, profile: str) -> Stream | None:
        """The stream for a WS `profile=`: main, sub (falls back to main where there is no sub)."""
        return self.streams.get(profile) or (self.streams["main"] if profile in ("", "main", "sub") else None)


UrlResolver = Callable[[SourceConfig, str], Awaitable[str]]
SnapshotFallback = Callable[[SourceConfig], Awaitable[bytes | None]]


@dataclass
class PortCheck:
    """Get/SetIpPortCheck: before each ffmpeg start, the camera's host:port must accept a TCP connection;
    one that did not is left alone for `period` seconds (the vendor's detention period) before the next try."""

    enabled: bool = False
    period: float = 30.0
    blocked_until: dict[str, float] = field(default_factory=dict)

    async def check(self, token: str, url: str) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if self.blocked_until.get(token, 0.0) > now:
            wait = self.blocked_until[token] - now
            raise OSError(f"camera port did not answer; next check in {wait:.0f}s (IP port check)")
        parts = urlsplit(url)
        default = {"rtsp": 554, "rtsps": 322, "rtmp": 1935, "rtmps": 443, "http": 80, "https": 443}
        host, port = parts.hostname, parts.port or default.get(parts.scheme.lower(), 0)
        if not host or not port:
            return
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 3.0)
            writer.close()
            self.blocked_until.pop(token, None)
        except (OSError, TimeoutError):
            self.blocked_until[token] = now + self.period
            raise OSError(f"camera port {host}:{port} did not answer (IP port check)") from None


class Registry:
    def __init__(self, settings: Settings, db: Database, ffmpeg: str) -> None:
        self.settings = settings
        self.db = db
        self.ffmpeg = ffmpeg
        self.sources: dict[str, SourceRuntime] = {}
        self.url_resolvers: dict[str, UrlResolver] = {}
        self.snapshot_fallbacks: dict[str, SnapshotFallback] = {}
        self.on_delete: list[Callable[[str], Awaitable[None]]] = []
        self.port_check = PortCheck()  # told each deleted token (roles, regions)
        self.shared: SharedSources | None = None  # the cluster's list, while this node is in one
        self.placement: Placement | None = None  # the cluster's ownership, while this node is in one
        self._lock = asyncio.Lock()
        self._box: SecretBox | None = None

    @property
    def box(self) -> SecretBox:
        """Encrypts camera secrets in the stored configs (key made on first use, in the data dir)."""
        if self._box is None:
            self._box = SecretBox(self.settings.data_dir / "secret.key")
        return self._box

    def stored(self, cfg: SourceConfig) -> str:
        """The config as the database keeps it: secrets encrypted."""
        return self.box.seal_config(cfg.to_json())

    @property
    def media_roots(self) -> list[Path]:
        return [MEDIA_DIR, *(Path(r).expanduser() for r in self.settings.media_roots)]

    def get(self, token: str) -> SourceRuntime | None:
        return self.sources.get(token)

    async def load(self) -> None:
        """Bring back every persisted source; add the demo on the very first start."""
        rows = await self.db.fetchall("SELECT config FROM sources ORDER BY created")
        for row in rows:
            try:
                text, plain = self.box.open_config(row["config"])
                cfg = SourceConfig.from_json(text)
            except (ValueError, TypeError) as e:
                log.error("skipping an unreadable source row: %s", e)
                continue
            if plain:  # a row from before encryption at rest: store it sealed now
                await self.db.execute("UPDATE sources SET config = ? WHERE token = ?", (self.stored(cfg), cfg.token))
                log.info("%s: camera secrets now encrypted at rest", cfg.token)
            self._start(cfg)
        if self.db.created and self.settings.demo_source and "demo" not in self.sources:
            await self.add(SourceConfig("demo", "Demo clip", "H5_FILE", f"file:{MEDIA_DIR / 'demo.mp4'}"))
        log.info("%d sources loaded", len(self.sources))

    def validate(self, cfg: SourceConfig) -> None:
        if not TOKEN_RE.match(cfg.token) or cfg.token in (".", ".."):
            raise BadValue("invalid token: use 1-64 letters, digits, '_', '-' or '.'")
        if not cfg.name or len(cfg.name) > 128 or any(ord(c) < 32 for c in cfg.name):
            raise BadValue("invalid name: 1-128 printable characters")
        if cfg.kind not in KINDS:
            raise BadValue("invalid source type")
        if cfg.rtsp_type not in RTSP_TYPES:
            raise BadValue(f"invalid rtsp type: use one of {', '.join(RTSP_TYPES)}")
        if cfg.connect_type not in CONNECT_TYPES:
            raise BadValue(f"invalid connect type: use one of {', '.join(CONNECT_TYPES)}")
        if cfg.kind == "H5_STREAM":
            check_stream_url(cfg.url)
            if cfg.url_sub:
                check_stream_url(cfg.url_sub)
        elif cfg.kind == "H5_FILE":
            check_file_path(cfg.url, self.media_roots)
        elif cfg.kind == "H5_RTMP_PUSH" and len(cfg.password) < 16:
            raise BadValue("an RTMP push source needs its publish key")

    async def add(self, cfg: SourceConfig, *, announce: bool = True) -> SourceRuntime:
        """A new source; `announce=False` for one that comes from the cluster's list (not written back to it)."""
        self.validate(cfg)
        async with self._lock:
            if cfg.token in self.sources:
                raise Conflict(f"token already exists: {cfg.token}")
            if announce and self.shared is not None:
                await self.shared.add(cfg)
            row = (cfg.token, self.stored(cfg), time.time())
            await self.db.execute("INSERT INTO sources (token, config, created) VALUES (?, ?, ?)", row)
            runtime = self._start(cfg)
        log.info("%s: source added (%s %s)", cfg.token, cfg.kind, redact_url(cfg.url))
        return runtime

    async def update(self, token: str, *, announce: bool = True, **changes: object) -> SourceConfig:
        """Change and persist config fields that need no ffmpeg restart (such as `record`), in place."""
        names = {f.name for f in dataclasses.fields(SourceConfig)} - {"token"}
        unknown = set(changes) - names
        if unknown:
            raise ValueError(f"unknown source fields: {', '.join(sorted(unknown))}")
        async with self._lock:
            runtime = self.sources.get(token)
            if runtime is None:
                raise NotFound(f"no such source: {token}")
            # Names were checked above; mypy cannot match dynamic keyword names to field types.
            cfg = dataclasses.replace(runtime.config, **changes)  # type: ignore[arg-type]
            if announce and self.shared is not None:
                await self.shared.put(cfg)
            await self.db.execute("UPDATE sources SET config = ? WHERE token = ?", (self.stored(cfg), token))
            for name, value in changes.items():
                setattr(runtime.config, name, value)
        log.info("%s: source updated (%s)", token, ", ".join(f"{k}={v}" for k, v in changes.items()))
        return runtime.config

    async def replace(self, cfg: SourceConfig, *, announce: bool = True) -> SourceRuntime:
        """Edit a source: the same token and kind with new settings, persisted, its ffmpeg started afresh.

        Done here, under the lock, rather than as DelSrc + AddSrc from a client, so nothing can take the
        token in between and a refused setting leaves the old source running untouched. Viewers of the old
        hubs see them close and reconnect; recordings and the index are keyed by token and carry on.
        """
        self.validate(cfg)
        async with self._lock:
            old = self.sources.get(cfg.token)
            if old is None:
                raise NotFound(f"no such source: {cfg.token}")
            if old.config.kind != cfg.kind:
                raise BadValue(f"source {cfg.token} is of type {old.config.kind}; delete it and add it anew")
            if announce and self.shared is not None:
                await self.shared.put(cfg)
            await self.db.execute("UPDATE sources SET config = ? WHERE token = ?", (self.stored(cfg), cfg.token))
            del self.sources[cfg.token]
            await self._stop_runtime(old)
            runtime = self._start(cfg)
            runtime.created = old.created
        log.info("%s: source edited (%s %s)", cfg.token, cfg.kind, redact_url(cfg.url))
        return runtime

    async def delete(self, token: str, *, announce: bool = True) -> None:
        async with self._lock:
            if token not in self.sources:
                raise NotFound(f"no such source: {token}")
            if announce and self.shared is not None:
                await self.shared.delete(token)
            runtime = self.sources.pop(token)
            await self.db.execute("DELETE FROM sources WHERE token = ?", (token,))
        await self._stop_runtime(runtime)
        for forget in self.on_delete:
            await forget(token)
        log.info("%s: source deleted", token)

    def attach(self, runtime: SourceRuntime) -> None:
        """A source whose runtime is made elsewhere and not stored here (a cloud edge's, supervisor/cloud/)."""
        if runtime.config.token in self.sources:
            raise Conflict(f"token already exists: {runtime.config.token}")
        runtime.attached = True
        self.sources[runtime.config.token] = runtime
        for stream in runtime.streams.values():
            if stream.always:
                stream.start()
        log.info("%s: source attached (%s)", runtime.config.token, runtime.config.kind)

    async def detach(self, token: str) -> None:
        """An attached source goes away: its streams stop, its viewers are told, roles forget it."""
        runtime = self.sources.pop(token, None)
        if runtime is None:
            return
        await self._stop_runtime(runtime)
        for forget in self.on_delete:
            await forget(token)
        log.info("%s: source detached", token)

    async def stop_all(self) -> None:
        await asyncio.gather(*(self._stop_runtime(r) for r in self.sources.values()))

    async def _stop_runtime(self, runtime: SourceRuntime) -> None:
        for stream in runtime.streams.values():
            await stream.stop()
            stream.hub.close()

    async def reseat(self, token: str, local: bool) -> bool:
        """Pull a source here (local) or relay it from the node that does, keeping its hubs and their viewers.

        The cluster calls this when ownership moves. Each stream's input is stopped and replaced; a stream
        that runs (it is always on here, or someone watches it) starts its new input at once, so viewers
        and recorders stay attached to the same hub and see the stream carry on. True if anything changed.
        """
        async with self._lock:
            runtime = self.sources.get(token)
            if runtime is None or runtime.local == local:
                return False
            runtime.local = local
            for profile, stream in runtime.streams.items():
                await stream.process.stop()
                stream.running = False
                stream.process = self._input(runtime, profile, stream.hub)
                stream.always = self._always(runtime, profile)
                if stream.always or stream.users > 0:
                    stream.start()
                elif stream.users == 0 and stream._idle_task is not None:
                    stream._idle_task.cancel()
                    stream._idle_task = None
        log.info("%s: %s", token, "pulled here now" if local else f"pulled by node {runtime.owner or '?'}, relayed")
        return True

    def _always(self, runtime: SourceRuntime, profile: str) -> bool:
        """Whether a stream runs with no consumer: a local main stream, unless on demand; a relay never."""
        if not runtime.local or profile != "main":
            return False
        return runtime.config.kind == "H5_RTMP_PUSH" or runtime.config.connect_type != "H5_ONDEMAND"

    def _input(self, runtime: SourceRuntime, profile: str, hub: StreamHub) -> StreamInput:
        cfg = runtime.config
        if not runtime.local and self.placement is not None:
            return self.placement.remote_input(runtime, profile, hub)
        if cfg.kind == "H5_RTMP_PUSH":  # nothing to pull: it waits for an encoder (supervisor/rtmp_push.py)
            return PushInput(f"{cfg.token}/{profile}", hub, audio=cfg.audio)
        return FfmpegProcess(
            f"{cfg.token}/{profile}",
            self.ffmpeg,
            hub,
            self._planner(cfg, profile),
            rtsp_type=cfg.rtsp_type,
            stall_timeout=self.settings.stall_timeout,
            restart_min=self.settings.restart_min,
            restart_max=self.settings.restart_max,
            secrets=tuple(
                s for s in (cfg.password, *query_secrets(cfg.url), *query_secrets(cfg.url_sub)) if len(s) >= 3
            ),
            own_rtsp=self.settings.rtsp_client != "ffmpeg",
        )

    def _start(self, cfg: SourceConfig) -> SourceRuntime:
        runtime = SourceRuntime(cfg)
        runtime.local = self.placement is None or self.placement.local(cfg.token)
        if cfg.kind == "H5_RTMP_PUSH":
            profiles: tuple[str, ...] = ("main",)
        else:
            has_sub = bool(cfg.url_sub) or (cfg.kind == "H5_ONVIF" and (cfg.profile_sub or cfg.profile_auto))
            profiles = ("main", "sub") if has_sub else ("main",)
        for profile in profiles:
            hub = StreamHub(f"{cfg.token}/{profile}", self.settings.ring_seconds)
            process = self._input(runtime, profile, hub)
            runtime.streams[profile] = Stream(runtime, profile, hub, process, self._always(runtime, profile))
        self.sources[cfg.token] = runtime
        if runtime.main.always:
            runtime.main.start()
        return runtime

    def _planner(self, cfg: SourceConfig, profile: str) -> Callable[[], Awaitable[Plan]]:
        settings = self.settings

        async def plan() -> Plan:
            if cfg.kind == "H5_FILE":
                path = check_file_path(cfg.url, self.media_roots)
                url, is_file = f"file:{path}", True
            elif cfg.kind in self.url_resolvers:
                url, is_file = await self.url_resolvers[cfg.kind](cfg, profile), False
            else:
                raw = cfg.url_sub if profile == "sub" and cfg.url_sub else cfg.url
                await self.port_check.check(cfg.token, raw)
                url, is_file = with_credentials(raw, cfg.user, cfg.password), False
            return Plan(
                url=url,
                is_file=is_file,
                audio=cfg.audio,
                timeout_s=settings.rtsp_timeout,
                token=cfg.token,
            )

        return plan
