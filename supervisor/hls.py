"""On-demand HLS per source: started by the first request for a source's playlist, stopped when unfetched.

A source nobody fetches HLS from has no packager, no extra ffmpeg and writes nothing. While one runs it
holds the source's main stream (as a viewer does), so an on-demand camera stays connected for HLS clients
that never open the H5Stream keep-alive socket (ffmpeg, VLC, Safari).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from supervisor.config import Settings
from supervisor.errors import NotFound, Unavailable
from supervisor.registry import Registry, Stream
from workers.hls import FragmentedHls, TsHls, feed_fmp4

log = logging.getLogger("h5gate.hls")

READY_TIMEOUT = 8.0  # how long a first request waits for a (re)connecting source


class HlsUnavailable(Unavailable):
    """The source cannot give HLS right now (offline, or it has no segment yet); the message says why."""


@dataclass(eq=False)
class _Running:
    token: str
    version: str
    stream: Stream
    maker: Any  # FragmentedHls or TsHls
    task: asyncio.Task[None] | None = None
    last_used: float = field(default_factory=time.monotonic)


class HlsService:
    """token -> the HLS being made for it, per flavour; one reaper stops what nobody fetches any more."""

    def __init__(self, settings: Settings, registry: Registry, ffmpeg: str) -> None:
        self.settings = settings
        self.registry = registry
        self.ffmpeg = ffmpeg
        self.kinds = tuple(k for k in settings.hls.replace(" ", "").split(",") if k in ("v1", "v2"))
        self._running: dict[tuple[str, str], _Running] = {}
        self._reaper: asyncio.Task[None] | None = None

    def running(self, token: str, version: str) -> _Running | None:
        return self._running.get((token, version))

    async def fmp4(self, token: str) -> FragmentedHls:
        """The token's fMP4 packager, started if need be, with at least one segment (or HlsUnavailable)."""
        run = await self._get(token, "v2")
        hls: FragmentedHls = run.maker
        wait = READY_TIMEOUT + 3 * self.settings.hls_duration
        if not hls.ready and not await hls.wait_for(lambda: hls.ready, wait):
            raise HlsUnavailable(self._why_not(run))
        return hls

    async def ts(self, token: str) -> TsHls:
        """The token's MPEG-TS maker, started if need be, once its playlist lists a segment."""
        run = await self._get(token, "v1")
        ts: TsHls = run.maker
        deadline = time.monotonic() + READY_TIMEOUT + 3 * self.settings.hls_duration
        while not await asyncio.to_thread(_lists_a_segment, ts.playlist):
            if time.monotonic() > deadline or ts.done.is_set():
                raise HlsUnavailable(self._why_not(run))
            await asyncio.sleep(0.2)
        return ts

    def touch(self, token: str, version: str) -> _Running | None:
        run = self._running.get((token, version))
        if run is not None:
            run.last_used = time.monotonic()
        return run

    async def _get(self, token: str, version: str) -> _Running:
        if version not in self.kinds:
            raise NotFound(f"HLS {version} is turned off on this server")
        runtime = self.registry.get(token)
        if runtime is None:
            raise NotFound(f"no such source: {token}")
        run = self._running.get((token, version))
        if run is not None and (run.stream is not runtime.main or (run.task is not None and run.task.done())):
            await self._stop(run)  # the source was replaced, or its hub closed
            run = None
        if run is None:
            run = self._start(token, version, runtime.main)
        run.last_used = time.monotonic()
        hub = run.stream.hub
        if not hub.ready:
            try:
                ready = await hub.wait_ready(READY_TIMEOUT)
            except Exception:
                ready = False
            if not ready:
                raise HlsUnavailable(self._why_not(run))
        return run

    def _start(self, token: str, version: str, stream: Stream) -> _Running:
        """Begin making HLS (no await between the check and the insert: one maker per source and flavour)."""
        settings = self.settings
        hub = stream.acquire()
        if version == "v2":
            hls = FragmentedHls(token, settings.hls_duration, settings.hls_segment_num, settings.hls_part_seconds)
            run = _Running(token, version, stream, hls)
            run.task = asyncio.create_task(self._feed_when_ready(run, hls), name=f"hls-v2:{token}")
        else:
            # a folder per run: a run being stopped (and emptied) never touches its successor's files
            folder = settings.hls_dir / "v1" / token / secrets.token_hex(4)
            ts = TsHls(token, self.ffmpeg, hub, folder, settings.hls_duration, settings.hls_segment_num)
            run = _Running(token, version, stream, ts)
            run.task = asyncio.create_task(self._ts_when_ready(run, ts), name=f"hls-v1:{token}")
        self._running[(token, version)] = run
        log.info("%s: HLS %s started", token, version)
        if self._reaper is None or self._reaper.done():
            self._reaper = asyncio.create_task(self._reap())
        return run

    async def _feed_when_ready(self, run: _Running, hls: FragmentedHls) -> None:
        hub = run.stream.hub
        while not await hub.wait_ready(60.0):
            pass
        await feed_fmp4(hub, hls)

    async def _ts_when_ready(self, run: _Running, ts: TsHls) -> None:
        hub = run.stream.hub
        while not await hub.wait_ready(60.0):
            pass
        ts.start()
        await ts.done.wait()

    def _why_not(self, run: _Running) -> str:
        process = run.stream.process
        if not process.online:
            return f"source offline: {process.state.last_error or 'no data yet'}"
        return "no HLS segment yet"

    async def _reap(self) -> None:
        """Stop what nobody fetched for hls_idle_seconds, and what lost its source."""
        while self._running:
            await asyncio.sleep(1.0)
            now = time.monotonic()
            for run in list(self._running.values()):
                idle = now - run.last_used
                if idle > self.settings.hls_idle_seconds or (run.task is not None and run.task.done()):
                    log.info("%s: HLS %s stopped (not fetched for %.0fs)", run.token, run.version, idle)
                    await self._stop(run)

    async def _stop(self, run: _Running) -> None:
        if self._running.get((run.token, run.version)) is run:
            del self._running[(run.token, run.version)]
        if run.task is not None:
            run.task.cancel()
            await asyncio.gather(run.task, return_exceptions=True)
        if isinstance(run.maker, TsHls):
            await run.maker.stop()
        else:
            run.maker.close()
        run.stream.release()

    async def stop_all(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
        for run in list(self._running.values()):
            await self._stop(run)


def _lists_a_segment(playlist: Path) -> bool:
    try:
        return "#EXTINF" in playlist.read_text()
    except (FileNotFoundError, UnicodeDecodeError):
        return False
