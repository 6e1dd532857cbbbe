"""Live video out: the vendor player's WebSocket (h5swsapi), its HLS keep-alive socket, Status (HLS: hls.py).

A WS viewer gets, as the vendor player expects: the MIME string with codecs as the first binary message,
the init segment, the cached GOP from the newest keyframe, then every live fragment as it arrives. Each
viewer's timeline starts at zero (a stock SourceBuffer plays it without seeking) and stays continuous
across a restart of the source's ffmpeg; viewers that joined at the same keyframe share the same bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter

from starlette.requests import Request
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from supervisor.api.common import (
    CLOSE_FORMAT_CHANGED,
    CLOSE_UNAUTHORIZED,
    CLOSE_UNKNOWN,
    CLOSE_UNSUPPORTED,
    TOKEN_RE,
    Chapter,
    endpoint,
    services,
    session_of,
)
from supervisor.auth import User
from supervisor.config import Settings
from supervisor.registry import Stream
from supervisor.transcode import DEFAULT as DEFAULT_PROFILE
from workers.fmp4 import InitInfo
from workers.hub import HubClosed, HubInterrupted, StreamHub

log = logging.getLogger("h5gate.ws")

READY_TIMEOUT = 8.0  # how long a new viewer waits for a source that is (re)connecting
TRANSCODE_READY_TIMEOUT = 20.0  # a transcode's first picture: ffmpeg start, its feed, the encoder's first GOP


class Viewers:
    """Counts for h5swsapi/Status, and one sweeper that disconnects viewers whose send is stuck.

    A timer around every send cost a fifth of the server's CPU at 200 viewers; one pass a second over
    the viewers that are mid-send costs nothing per fragment.
    """

    def __init__(self, send_timeout: float = 10.0) -> None:
        self.live = 0
        self.total = 0
        self.slow_disconnects = 0
        self.by_token: Counter[str] = Counter()  # live viewers per source (/metrics)
        self.send_timeout = send_timeout
        self._active: set[_Live] = set()
        self._sweeper: asyncio.Task[None] | None = None

    def watch(self, live: _Live) -> None:
        self._active.add(live)
        if self._sweeper is None or self._sweeper.done():
            self._sweeper = asyncio.create_task(self._sweep())

    def unwatch(self, live: _Live) -> None:
        self._active.discard(live)

    async def _sweep(self) -> None:
        while self._active:
            await asyncio.sleep(1.0)
            now = time.monotonic()
            for live in list(self._active):
                if live.sending_since and now - live.sending_since > self.send_timeout and live.task:
                    live.timed_out = True
                    live.task.cancel()  # it waits for the socket to drain: nothing half-written


class HlsViewers:
    """Who watches over HLS: distinct sessions that fetched a source's playlist within the last `window` s.

    HLS has no connection to count; a player re-reads the playlist every segment, so a session that stopped
    asking is gone. Two players sharing one session (two tabs of the console) count once.
    """

    def __init__(self, window: float = 15.0) -> None:
        self.window = window  # app.py: max(15, 2 x hls_duration x hls_segment_num), a few playlist reloads
        self._seen: dict[tuple[str, str], float] = {}

    def saw(self, token: str, session: str) -> None:
        self._seen[(token, session)] = time.monotonic()
        if len(self._seen) > 10_000:
            self._forget()

    def _forget(self) -> None:
        oldest = time.monotonic() - self.window
        for key in [k for k, t in self._seen.items() if t < oldest]:
            del self._seen[key]

    def by_token(self) -> Counter[str]:
        self._forget()
        return Counter(token for token, _ in self._seen)


async def _reject(ws: WebSocket, code: int, reason: str) -> None:
    """Accept then close with a code and reason the client can read (a bare HTTP 403 tells it nothing)."""
    await ws.accept()
    await _close(ws, code, reason)


async def _close(ws: WebSocket, code: int, reason: str) -> None:
    """Close with a code and reason; a client that already left is not an error (it just gets nothing)."""
    with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError):  # OSError: uvicorn's ClientDisconnected
        await ws.close(code=code, reason=reason[:120])


async def _read_commands(ws: WebSocket) -> None:
    """Drain what the player sends: keepalives in any of the three forms; return when it closes."""
    while True:
        message = await ws.receive()
        if message["type"] == "websocket.disconnect":
            return


async def h5swsapi(ws: WebSocket) -> None:
    svc = services(ws)
    playback = ws.query_params.get("playback", "").lower() == "true"
    # another cluster node relaying a camera this one pulls shows the cluster secret (supervisor/cluster/node.py)
    peer = svc.cluster.peer(ws.headers) if svc.cluster is not None and not playback else None
    # live video may be watched without a session when anonymous view is on; playback needs one
    if peer is not None:
        user: User | None = User(f"node:{peer}", "", "")
    else:
        user = await svc.auth.check(session_of(ws)) if playback else await svc.auth.viewer(session_of(ws))
    if user is None:
        return await _reject(ws, CLOSE_UNAUTHORIZED, "session is missing, invalid or expired")
    if playback:
        if svc.playback_ws is None:
            return await _reject(ws, CLOSE_UNSUPPORTED, "playback is not available on this server")
        return await svc.playback_ws(ws, user)
    stream = await open_live(ws, user, peer=peer is not None)
    if stream is None:
        return
    hub = stream.hub
    viewers = svc.viewers
    try:
        assert hub.init is not None
        hevc_ok = ws.query_params.get("hevc", "true").lower() != "false"
        video = hub.init.video
        if not hevc_ok and video is not None and video.codec[:4] in ("hev1", "hvc1"):
            reason = "source is H.265 and the player cannot play it"
            return await ws.close(code=CLOSE_UNSUPPORTED, reason=reason)
        token = stream.runtime.config.token
        viewers.live += 1
        viewers.total += 1
        viewers.by_token[token] += 1
        client = ws.client.host if ws.client else "?"
        log.info("%s: viewer %s connected (%s, %d live)", hub.name, client, hub.init.mime, viewers.live)
        live = _Live()
        reader = asyncio.create_task(_read_commands(ws))
        sender = live.task = asyncio.create_task(_send_live(ws, hub, svc.settings, live))
        viewers.watch(live)
        try:
            done, _ = await asyncio.wait({reader, sender}, return_when=asyncio.FIRST_COMPLETED)
            code, reason = None, ""
            if live.timed_out:
                viewers.slow_disconnects += 1
                log.info(
                    "%s: viewer %s stopped reading for %.0fs, disconnecting", hub.name, client, viewers.send_timeout
                )
                code, reason = 1008, "viewer too slow"
            elif sender in done:
                code, reason = sender.result()
            if code is not None:
                with contextlib.suppress(TimeoutError):  # a viewer that does not read gets no close frame
                    await asyncio.wait_for(ws.close(code=code, reason=reason), 2.0)
        finally:
            viewers.live -= 1
            viewers.by_token[token] -= 1
            if viewers.by_token[token] <= 0:
                del viewers.by_token[token]
            viewers.unwatch(live)
            await live.stop(sender)
            reader.cancel()
            await asyncio.gather(reader, sender, return_exceptions=True)
            log.info("%s: viewer %s left (%d live)", hub.name, client, viewers.live)
    except (WebSocketDisconnect, RuntimeError, OSError):  # OSError: uvicorn's ClientDisconnected
        pass
    finally:
        stream.release()


async def open_live(ws: WebSocket, user: User, *, peer: bool = False) -> Stream | None:
    """The live stream a viewer's query names, running and ready, with the socket accepted.

    None when it cannot be had: the socket has then been closed with the reason (unknown token or profile,
    a camera the user's role may not see, source deleted, source offline) and nothing is held. Otherwise
    the caller must `release()` the stream.
    """
    token = ws.query_params.get("token", "")
    svc = services(ws)
    visible = TOKEN_RE.match(token) and (peer or svc.auth.sees(user, token))
    runtime = svc.registry.get(token) if visible else None
    if runtime is None:
        await _reject(ws, CLOSE_UNKNOWN, f"unknown token: {token[:64]}")
        return None
    if peer and not runtime.local:  # a node relays only from the owner: never a relay of a relay, nor a loop
        await _reject(ws, 1013, f"{token[:64]} is not pulled by this node")
        return None
    profile = ws.query_params.get("profile", "main") or "main"
    transcoder = svc.transcoder
    # main/sub, else a transcoding profile: one shared ffmpeg per (source, profile), made by its first viewer
    stream = runtime.stream(profile) or (transcoder.stream(runtime, profile) if transcoder else None)
    if stream is None:
        await _reject(ws, CLOSE_UNKNOWN, f"unknown profile: {profile[:64]}")
        return None
    await ws.accept()
    stream = await _ready(ws, stream, READY_TIMEOUT if profile in ("main", "sub") else TRANSCODE_READY_TIMEOUT)
    if stream is None:
        return None
    init = stream.hub.init
    video = init.video if init is not None else None
    hevc_ok = ws.query_params.get("hevc", "true").lower() != "false"
    if not hevc_ok and transcoder and video is not None and video.codec[:4] in ("hev1", "hvc1"):
        # a player that cannot take H.265 gets this source through the default transcoding profile
        stream.release()
        fallback = transcoder.stream(runtime, DEFAULT_PROFILE)
        if fallback is None:
            await _close(ws, CLOSE_UNSUPPORTED, "source is H.265 and the player cannot play it")
            return None
        log.info("%s: H.265 to a player without it: through the default transcoding profile", token)
        return await _ready(ws, fallback, TRANSCODE_READY_TIMEOUT)
    return stream


async def _ready(ws: WebSocket, stream: Stream, timeout: float) -> Stream | None:
    """The stream acquired and delivering (the caller releases it), or None with the socket closed."""
    hub = stream.acquire()
    try:
        try:
            ready = await hub.wait_ready(timeout)
        except HubClosed:
            ready = None
        if not ready:
            why = stream.process.state.last_error or "no data yet"
            code, reason = (1000, "source deleted") if ready is None else (1013, f"source offline: {why}")
            await _close(ws, code, reason)
            stream.release()
            return None
    except BaseException:
        stream.release()
        raise
    return stream


def _families(init: InitInfo) -> list[str]:
    """Codec families of the tracks (avc1, hev1, mp4a...): a change between them needs a new SourceBuffer."""
    return sorted(t.codec[:4] for t in init.tracks.values())


class _Live:
    """One viewer's send loop: whether it is mid-send (and since when), and how to stop it.

    Cancelling a WebSocket send half-way leaves the protocol unable to answer the client's close
    frame (the client then waits its whole close timeout), so the loop is only cancelled while it waits
    for the hub or for a socket that stopped draining; otherwise it is told to stop and finishes its send.
    """

    def __init__(self) -> None:
        self.sending_since = 0.0  # time.monotonic() when the current send began; 0 when not sending
        self.stopping = False
        self.timed_out = False
        self.task: asyncio.Task[tuple[int, str]] | None = None

    async def stop(self, task: asyncio.Task[tuple[int, str]]) -> None:
        self.stopping = True
        if not self.sending_since:
            task.cancel()
        try:
            await asyncio.wait_for(asyncio.shield(task), 2.0)
        except (TimeoutError, asyncio.CancelledError, Exception):
            task.cancel()


BATCH_BYTES = 1 << 20  # what is already in the ring goes out in one message, up to this size
AUDIO_HOLD = 8  # audio fragments held at most while waiting for a video frame to ride with


async def _send_live(ws: WebSocket, hub: StreamHub, settings: Settings, live: _Live) -> tuple[int, str]:
    """The hot loop: one ring cursor; per message, the fragments that are ready. Returns close code, reason.

    Audio fragments ride along with the next video fragment (about 25 sends a second instead of 70 with
    AAC), and what the ring already holds (the GOP cache, a viewer catching up) goes out in one message;
    a stock SourceBuffer appends a run of moof+mdat pairs as readily as one.
    """
    cursor = hub.cursor()
    cursor.slow_seconds = settings.slow_viewer_seconds
    send = ws.send_bytes
    gen = None
    mime = ""
    shift_us = start_us = 0
    end_us = 0  # where this viewer's timeline has got to
    has_video = True
    batch: list[bytes] = []
    size = 0
    batch_has_video = False
    try:
        while True:
            frag = cursor.next_nowait()
            if frag is None:  # all sent but held audio: wait for the source
                frag = await cursor.next()  # no timer: closing the hub wakes it, stopping cancels it
                if live.stopping:
                    return 1000, ""
                if frag is None:
                    continue
            head: list[bytes] = []
            if frag.gen != gen:
                init = hub.inits.get(frag.gen)
                if init is None:
                    continue
                start_us = int(frag.dts * 1_000_000)  # a keyframe: runs and viewers start on one
                if gen is None:
                    mime = init.mime
                    head.append(mime.encode("ascii"))
                    shift_us = start_us
                elif init.mime != mime and _families(init) != _families(hub.inits.get(gen) or init):
                    return CLOSE_FORMAT_CHANGED, "stream format changed, reconnect"
                else:  # the source restarted: continue this viewer's timeline where it stopped
                    # (a new profile or level of the same codec plays on in the same SourceBuffer)
                    shift_us = start_us - end_us
                head.append(init.data)
                gen = frag.gen
                has_video = init.video is not None
                batch, size, batch_has_video = [], 0, False  # held audio of the old run cannot follow
            elif frag.dts * 1_000_000 < start_us - 1:
                continue  # audio from before this viewer's first keyframe: it would land before zero
            data = frag.rebased(shift_us)
            batch.append(data)
            size += len(data)
            end = int(frag.end * 1_000_000) - shift_us
            if end > end_us:
                end_us = end
            if frag.video:
                batch_has_video = True
            elif has_video and not batch_has_video and len(batch) < AUDIO_HOLD and not head:
                continue  # audio waits for the next video frame (never holds one back)
            if size < BATCH_BYTES and not head and cursor.hub.get(cursor.seq) is not None:
                continue  # more is ready already: one message for all of it
            live.sending_since = time.monotonic()
            try:
                for message in head:
                    await send(message)
                await send(batch[0] if len(batch) == 1 else b"".join(batch))
            finally:
                live.sending_since = 0.0
            batch, size, batch_has_video = [], 0, False
            if live.stopping:
                return 1000, ""
    except HubInterrupted as e:
        return 1013, str(e)[:120] or "source offline"
    except HubClosed:
        return 1000, "source deleted"


async def h5swscmnapi(ws: WebSocket) -> None:
    """HLS players hold this socket open to keep an on-demand source running; we ignore what they send."""
    svc = services(ws)
    user = await svc.auth.viewer(session_of(ws))
    if user is None:
        return await _reject(ws, CLOSE_UNAUTHORIZED, "session is missing, invalid or expired")
    token = ws.query_params.get("token", "")
    runtime = svc.registry.get(token) if TOKEN_RE.match(token) and svc.auth.sees(user, token) else None
    if runtime is None:
        return await _reject(ws, CLOSE_UNKNOWN, f"unknown token: {token[:64]}")
    stream = runtime.main
    stream.acquire()
    try:
        await ws.accept()
        await _read_commands(ws)
    except (WebSocketDisconnect, RuntimeError, OSError):  # OSError: uvicorn's ClientDisconnected
        pass
    finally:
        stream.release()


@endpoint()
async def ws_status(request: Request, user: User) -> dict[str, int]:
    svc = services(request)
    viewers = svc.viewers
    hubs = [s.hub for r in svc.registry.sources.values() for s in r.streams.values()]
    return {
        "nConnectCount": viewers.live,
        "nTotalConnects": viewers.total,
        "nSkips": sum(h.skips for h in hubs),
        "nSlowDisconnects": viewers.slow_disconnects,
    }


routes = [
    WebSocketRoute("/api/v1/h5swsapi", h5swsapi),
    WebSocketRoute("/h5swsapi", h5swsapi),
    WebSocketRoute("/api/v1/h5swscmnapi", h5swscmnapi),
    Route("/api/v1/h5swsapi/Status", ws_status),
]
chapter = Chapter("streams", routes)
