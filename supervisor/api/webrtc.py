"""WebRTC out: H5Stream's signalling socket (h5srtcapi), its Status, and the aiortc sidecar behind them.

The sidecar (workers/webrtc) does the WebRTC work in its own process, so SRTP, ICE and packetising never
stall this event loop. This module starts it and restarts it when it dies or stops answering pings,
authenticates browsers, relays their signalling (the server makes the offer) and feeds the sidecar the
hub's media over one Unix socket: one feed per source profile, however many viewers watch it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import socket
import sys
import time
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

import workers
from supervisor.api.common import endpoint, session_of
from supervisor.api.playback_sinks import PlaybackServer, WebRTCSink
from supervisor.api.streams import CLOSE_UNAUTHORIZED, CLOSE_UNSUPPORTED, READY_TIMEOUT, _reject, open_live
from supervisor.auth import User
from supervisor.config import Settings
from supervisor.registry import Registry
from workers.hub import HubClosed
from workers.process import set_pdeathsig, stop_group
from workers.webrtc import wire

log = logging.getLogger("h5gate.webrtc")

CLOSE_BAD_SIGNALLING = 4400
MAX_SIGNAL = 64 * 1024  # an answer SDP is a few kB; anything this big is not signalling
SIDECAR_WAIT = 10.0  # how long a new viewer waits for a (re)starting sidecar
RESTART_MIN, RESTART_MAX = 0.5, 10.0
HEALTHY_SECONDS = 10.0  # a sidecar that lived this long restarts without backoff
PING_INTERVAL, PING_TIMEOUT = 2.0, 10.0
STARTUP_TIMEOUT = 60.0  # importing aiortc on a busy machine can take a while
ICE_SCHEMES = ("stun:", "stuns:", "turn:", "turns:")
PACKAGE_ROOT = str(Path(workers.__file__).resolve().parent.parent)  # where `-m workers.webrtc` is found
PRIVATE_FEEDS = 1 << 30  # feed ids from here on are the supervisor's (playback), below the sidecar's
CODECS_RE = re.compile(r'codecs="([^"]*)"')


class SignalError(Exception):
    """A browser message that is not H5Stream WebRTC signalling; it gets an error message and a close."""


def parse_ice_servers(text: str) -> list[dict[str, Any]]:
    """webrtc_ice_servers: a JSON list of RTCIceServer objects, or plain comma-separated STUN/TURN URLs."""
    text = text.strip()
    if not text:
        return []
    if text.startswith("["):
        try:
            servers = json.loads(text)
        except ValueError as e:
            raise ValueError(f"webrtc_ice_servers is not valid JSON: {e}") from None
    else:
        servers = [{"urls": url.strip()} for url in text.split(",") if url.strip()]
    for server in servers:
        urls = server.get("urls") if isinstance(server, dict) else None
        urls = [urls] if isinstance(urls, str) else urls
        if not urls or not all(isinstance(u, str) and u.startswith(ICE_SCHEMES) for u in urls):
            raise ValueError(f"webrtc_ice_servers: each server needs urls starting with {', '.join(ICE_SCHEMES)}")
        extra = set(server) - {"urls", "username", "credential"}
        if extra or not all(isinstance(server.get(k, ""), str) for k in ("username", "credential")):
            raise ValueError("webrtc_ice_servers: only urls, username and credential (strings) are allowed")
    return servers


class Session:
    """One browser's signalling socket, from accept to close."""

    def __init__(self, peer_id: int, name: str) -> None:
        self.id = peer_id
        self.name = name
        self.inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()  # what the sidecar says about it
        self.send_lock = asyncio.Lock()
        self.opened = False  # the player sent "open"
        self.offer = ""
        self.offer_sent = False
        self.connected = False
        self.playback: WebRTCSink | None = None  # where its H5_* commands go, for recordings


class WebRTCService:
    """The sidecar process, its link, the feeds it asked for and the sessions it serves."""

    def __init__(self, settings: Settings, registry: Registry) -> None:
        self.settings = settings
        self.registry = registry
        self.ice_servers = parse_ice_servers(settings.webrtc_ice_servers)
        self.sessions: dict[int, Session] = {}
        self.total = 0
        self.restarts = 0
        self.pid: int | None = None
        self.ready = asyncio.Event()
        self._link: wire.Link | None = None
        self._feeds: dict[int, asyncio.Task[None]] = {}
        self._task: asyncio.Task[None] | None = None
        self._proc: asyncio.subprocess.Process | None = None
        self._stopping = False
        self._next_peer = 1
        self._next_private_feed = PRIVATE_FEEDS
        self._last_pong = 0.0

    # -- the sidecar process --------------------------------------------------------------------------
    def start(self) -> None:
        self._task = asyncio.create_task(self._supervise(), name="webrtc-sidecar")

    async def stop(self) -> None:
        self._stopping = True
        await self._kill()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self._down("WebRTC service stopped")

    async def _supervise(self) -> None:
        delay = RESTART_MIN
        while not self._stopping:
            started = time.monotonic()
            try:
                await self._run_once()
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug here must not end WebRTC for good
                log.exception("webrtc sidecar run failed")
            self._down("WebRTC service restarting, reconnect")
            if self._stopping:
                break
            if time.monotonic() - started > HEALTHY_SECONDS:
                delay = RESTART_MIN
            self.restarts += 1
            log.warning("webrtc sidecar ended; restart %d in %.1fs", self.restarts, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, RESTART_MAX)

    def _sidecar_config(self) -> dict[str, Any]:
        s = self.settings
        addresses = [a.strip() for a in s.webrtc_addresses.split(",") if a.strip()]
        return {
            "public_ip": s.webrtc_public_ip.strip(),
            "addresses": addresses,
            "port_min": s.webrtc_port_min,
            "port_max": s.webrtc_port_max,
        }

    async def _run_once(self) -> None:
        parent, child = socket.socketpair()
        path = os.pathsep.join(filter(None, [PACKAGE_ROOT, os.environ.get("PYTHONPATH")]))
        env = {**os.environ, "PYTHONPATH": path}
        try:
            self._proc = proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "workers.webrtc",
                "--fd",
                str(child.fileno()),
                "--config",
                json.dumps(self._sidecar_config()),
                "--log-level",
                self.settings.log_level,
                pass_fds=(child.fileno(),),
                stdin=asyncio.subprocess.DEVNULL,
                env=env,
                start_new_session=True,
                preexec_fn=set_pdeathsig,
            )
        except BaseException:
            parent.close()
            raise
        finally:
            child.close()
        self.pid = proc.pid
        reader, writer = await asyncio.open_unix_connection(sock=parent)
        link = wire.Link(writer)
        pinger = asyncio.create_task(self._ping(link))
        try:
            while True:
                kind, _, payload = await wire.read_frame(reader)
                if kind != wire.CONTROL:
                    raise wire.ProtocolError("the sidecar sent media")
                self._on_control(link, wire.decode_control(payload))
        except (asyncio.IncompleteReadError, ConnectionError, wire.ProtocolError) as e:
            if not self._stopping:
                log.warning("webrtc sidecar pid %d: link lost (%s)", proc.pid, type(e).__name__)
        finally:
            pinger.cancel()
            link.close()
            await self._kill()
            await proc.wait()
            log.info("webrtc sidecar pid %d exited with %s", proc.pid, proc.returncode)
            self._proc = None
            self.pid = None

    async def _kill(self) -> None:
        if self._proc is not None:
            await stop_group(self._proc)

    async def _ping(self, link: wire.Link) -> None:
        """A sidecar that does not start, or stops answering (hung, loop stalled), is killed and restarted."""
        try:
            await asyncio.wait_for(self.ready.wait(), STARTUP_TIMEOUT)
        except TimeoutError:
            log.warning("webrtc sidecar: not ready after %.0fs, killing it", STARTUP_TIMEOUT)
            await self._kill()
            return
        self._last_pong = time.monotonic()
        n = 0
        while True:
            await asyncio.sleep(PING_INTERVAL)
            if time.monotonic() - self._last_pong > PING_TIMEOUT:
                log.warning("webrtc sidecar: no answer for %.0fs, killing it", PING_TIMEOUT)
                await self._kill()
                return
            n += 1
            link.send("ping", n=n)

    def _down(self, reason: str) -> None:
        """The sidecar is gone: every session ends (players reconnect), every feed stops."""
        self.ready.clear()
        self._link = None
        for task in self._feeds.values():
            task.cancel()
        self._feeds.clear()
        for session in self.sessions.values():
            session.inbox.put_nowait({"op": "closed", "code": 1013, "reason": reason})

    def _on_control(self, link: wire.Link, message: dict[str, Any]) -> None:
        op = message["op"]
        if op == "pong":
            self._last_pong = time.monotonic()
        elif op == "ready":
            self._link = link
            self.ready.set()
            log.info("webrtc sidecar pid %s ready", self.pid)
        elif op == "subscribe":
            feed_id = int(message["feed"])
            self._feeds[feed_id] = asyncio.create_task(
                self._feed(link, feed_id, str(message["token"]), str(message["profile"]))
            )
        elif op == "unsubscribe":
            task = self._feeds.pop(int(message["feed"]), None)
            if task is not None:
                task.cancel()
        elif op in ("offer", "connected", "closed"):
            session = self.sessions.get(message.get("peer", -1))
            if session is not None:
                session.inbox.put_nowait(message)
        else:
            log.warning("webrtc sidecar sent an unknown op: %s", op[:40])

    async def _feed(self, link: wire.Link, feed_id: int, token: str, profile: str) -> None:
        """The hub's init segments and fragments for one (token, profile), from its GOP cache on."""
        runtime = self.registry.get(token)
        stream = runtime.stream(profile) if runtime is not None else None
        if stream is None:
            link.send("feed_end", feed=feed_id, reason=f"unknown source: {token}")
            return
        hub = stream.acquire()
        try:
            cursor = hub.cursor()
            cursor.slow_seconds = self.settings.slow_viewer_seconds
            gen = None
            while True:
                frag = await cursor.next(timeout=30.0)
                if frag is None:
                    continue
                if frag.gen != gen:
                    init = hub.inits.get(frag.gen)
                    if init is None:
                        continue
                    link.send_media(wire.INIT, feed_id, init.data)
                    gen = frag.gen
                link.send_media(wire.FRAGMENT, feed_id, frag.data)
                await link.drain()
        except HubClosed:
            link.send("feed_end", feed=feed_id, reason="source deleted")
        except ConnectionError:
            pass
        finally:
            stream.release()

    # -- sessions -------------------------------------------------------------------------------------
    async def wait_ready(self, timeout: float) -> bool:
        try:
            async with asyncio.timeout(timeout):
                await self.ready.wait()
        except TimeoutError:
            return False
        return self._link is not None

    def open(self, token: str, profile: str, codec: str, audio: bool, private_feed: int | None = None) -> Session:
        """Register a session (it counts from now on) and have the sidecar make its offer.

        A live session shares the sidecar's feed of (token, profile); a playback session gets a private
        feed, which the supervisor fills itself (send_media).
        """
        assert self._link is not None
        peer_id = self._next_peer
        self._next_peer += 1
        name = token if profile in ("", "main") else f"{token}/{profile}"
        session = Session(peer_id, name)
        self.sessions[peer_id] = session
        self.total += 1
        self._link.send("open", peer=peer_id, token=token, profile=profile, codec=codec, audio=audio, feed=private_feed)
        return session

    def private_feed(self) -> int:
        self._next_private_feed += 1
        return self._next_private_feed

    async def send_media(self, feed_id: int, kind: int, data: bytes) -> None:
        link = self._link
        if link is not None:
            link.send_media(kind, feed_id, data)
            await link.drain()

    def signal(self, session: Session, message: dict[str, Any]) -> None:
        if self._link is not None:
            self._link.send("signal", peer=session.id, msg=message)

    def close(self, session: Session) -> None:
        self.sessions.pop(session.id, None)
        if self._link is not None:
            self._link.send("close", peer=session.id)

    def iceserver_message(self) -> dict[str, Any]:
        return {
            "type": "iceserver",
            "iceServers": self.ice_servers,
            "iceTransportPolicy": "relay" if self.settings.webrtc_relay_only else "all",
        }


# -- the browser side ---------------------------------------------------------------------------------
def parse_signal(text: str) -> dict[str, Any]:
    if len(text) > MAX_SIGNAL:
        raise SignalError(f"message too large ({len(text)} characters, at most {MAX_SIGNAL})")
    if text.strip() == "keepalive":  # the oldest players' plain-text keepalive
        return {"type": "keepalive"}
    try:
        message = json.loads(text)
    except ValueError:
        raise SignalError("message is not JSON") from None
    if not isinstance(message, dict):
        raise SignalError("message is not a JSON object")
    return message


async def _send(ws: WebSocket, session: Session, message: dict[str, Any]) -> None:
    async with session.send_lock:
        await ws.send_text(json.dumps(message))


async def _send_offer(ws: WebSocket, session: Session) -> None:
    """The offer goes out once both it exists and the player has said `open` (after `iceserver`)."""
    if session.opened and session.offer and not session.offer_sent:
        session.offer_sent = True
        await _send(ws, session, {"type": "offer", "sdp": session.offer})


async def _from_browser(ws: WebSocket, service: WebRTCService, session: Session) -> tuple[int, str] | None:
    """Validate and relay what the player sends; None when it has gone, else the close code and reason."""
    timeout = service.settings.webrtc_keepalive_timeout
    while True:
        try:
            message = await asyncio.wait_for(ws.receive(), timeout)
        except TimeoutError:
            log.info("%s: webrtc viewer %d sent nothing for %.0fs, closing", session.name, session.id, timeout)
            return 1001, f"no keepalive for {timeout:.0f}s"
        if message["type"] == "websocket.disconnect":
            return None
        try:
            text = message.get("text")
            if text is None:
                raise SignalError("binary messages are not part of WebRTC signalling")
            await _on_browser_message(ws, service, session, parse_signal(text))
        except SignalError as e:
            log.info("%s: webrtc viewer %d: bad signalling: %s", session.name, session.id, e)
            await _send(ws, session, {"type": "error", "bStatus": False, "strCode": str(e)})
            return CLOSE_BAD_SIGNALLING, str(e)[:120]


async def _on_browser_message(ws: WebSocket, service: WebRTCService, session: Session, message: dict[str, Any]) -> None:
    kind = message.get("type")
    if kind == "open":
        if not session.opened:
            session.opened = True
            await _send(ws, session, service.iceserver_message())
            await _send_offer(ws, session)
    elif kind == "keepalive":
        pass
    elif kind == "answer":
        if not session.offer_sent:
            raise SignalError("answer before offer: the server makes the offer, wait for it")
        if not isinstance(message.get("sdp"), str):
            raise SignalError("answer without sdp")
        service.signal(session, {"type": "answer", "sdp": message["sdp"]})
    elif kind == "remoteice" or (kind is None and "candidate" in message):
        mline = message.get("sdpMLineIndex")
        if not isinstance(message.get("candidate"), str) or not (mline is None or isinstance(mline, int)):
            raise SignalError("remoteice needs a candidate string")
        service.signal(session, {"candidate": message["candidate"], "sdpMLineIndex": mline})
    elif kind is None and isinstance(message.get("cmd"), str):
        if session.playback is not None and message["cmd"] != "H5_KEEPALIVE":
            session.playback.command(message)  # a live stream has no use for playback commands
    elif kind == "offer":
        raise SignalError("the server makes the offer; send an answer")
    else:
        raise SignalError(f"unknown message type: {str(kind)[:40]}")


async def _to_browser(ws: WebSocket, session: Session) -> tuple[int, str]:
    """Relay what the sidecar says about this session; returns when it closes the session."""
    while True:
        message = await session.inbox.get()
        op = message["op"]
        if op == "offer":
            session.offer = str(message["sdp"])
            await _send_offer(ws, session)
        elif op == "connected":
            session.connected = True
        elif op == "closed":
            reason = str(message.get("reason", "closed"))
            if message.get("error"):
                await _send(ws, session, {"type": "error", "bStatus": False, "strCode": reason})
            return int(message.get("code", 1000)), reason[:120]


async def _relay(
    ws: WebSocket, service: WebRTCService, session: Session, ended: asyncio.Future[tuple[int, str]] | None = None
) -> tuple[int, str] | None:
    """Until the browser leaves (None), or the sidecar, a signalling error or `ended` closes the session."""
    tasks: set[asyncio.Future[Any]] = {
        asyncio.create_task(_from_browser(ws, service, session)),
        asyncio.create_task(_to_browser(ws, session)),
    }
    if ended is not None:
        tasks.add(ended)
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        return next(iter(done)).result()
    finally:
        for task in tasks:
            if task is not ended:
                task.cancel()
        await asyncio.gather(*(t for t in tasks if t is not ended), return_exceptions=True)


async def _serve(
    ws: WebSocket, service: WebRTCService, session: Session, ended: asyncio.Future[tuple[int, str]] | None = None
) -> None:
    log.info("%s: webrtc viewer %d open (%d now)", session.name, session.id, len(service.sessions))
    try:
        result = await _relay(ws, service, session, ended)
    finally:
        service.close(session)
        log.info("%s: webrtc viewer %d closed (%d now)", session.name, session.id, len(service.sessions))
    if result is not None:
        await ws.close(code=result[0], reason=result[1])


async def h5srtcapi(ws: WebSocket) -> None:
    state = ws.app.state
    user = state.auth.check(session_of(ws))
    if user is None:
        return await _reject(ws, CLOSE_UNAUTHORIZED, "session is missing, invalid or expired")
    service: WebRTCService | None = getattr(state, "webrtc", None)
    if service is None:
        return await _reject(ws, CLOSE_UNSUPPORTED, "WebRTC is turned off on this server")
    if ws.query_params.get("playback", "").lower() == "true":
        handler: PlaybackServer | None = getattr(state, "playback", None)
        if handler is None:
            return await _reject(ws, CLOSE_UNSUPPORTED, "playback is not available on this server")
        return await _playback(ws, service, handler, user)
    stream = await open_live(ws)
    if stream is None:
        return
    hub, profile = stream.hub, stream.profile
    try:
        assert hub.init is not None
        video = hub.init.video
        refusal = _refuse_codec(video.codec if video is not None else "")
        if refusal:
            return await ws.close(code=CLOSE_UNSUPPORTED, reason=refusal)
        assert video is not None
        if not await service.wait_ready(SIDECAR_WAIT):
            return await ws.close(code=1013, reason="WebRTC service is not running, try again")
        audio = ws.query_params.get("audio", "true").lower() != "false" and any(
            t.handler == "soun" for t in hub.init.tracks.values()
        )
        await _serve(ws, service, service.open(stream.runtime.config.token, profile, video.codec, audio))
    except (WebSocketDisconnect, RuntimeError, ConnectionError):
        pass
    finally:
        stream.release()


def _refuse_codec(codec: str) -> str:
    """Why a video codec cannot go out over WebRTC unchanged ("" if it can)."""
    if codec[:4] in ("avc1", "avc3"):
        return ""
    return f"WebRTC plays H.264 only; this source is {codec or 'audio only'}"


async def _playback(ws: WebSocket, service: WebRTCService, handler: PlaybackServer, user: User) -> None:
    """Recordings over WebRTC: the playback handler plays into a WebRTCSink that feeds this viewer's own
    sidecar feed.

    Same query and commands as playback over h5swsapi. Video only: the handler retimes media for
    H5_SPEED, which suits pictures but not an Opus stream.
    """
    await ws.accept()
    pipe = WebRTCSink()
    player = asyncio.create_task(handler(pipe, ws.query_params, user))
    try:
        await asyncio.wait({pipe.mime, pipe.closed, player}, timeout=READY_TIMEOUT, return_when=asyncio.FIRST_COMPLETED)
        if pipe.closed.done():
            code, reason = pipe.closed.result()
            return await ws.close(code=code, reason=reason[:120])
        if not pipe.mime.done():
            return await ws.close(code=1011, reason="playback did not start")
        match = CODECS_RE.search(pipe.mime.result())
        refusal = _refuse_codec(match.group(1).split(",")[0].strip() if match else "")
        if refusal:
            return await ws.close(code=CLOSE_UNSUPPORTED, reason=refusal)
        if not await service.wait_ready(SIDECAR_WAIT):
            return await ws.close(code=1013, reason="WebRTC service is not running, try again")
        token = ws.query_params.get("token", "")
        feed_id = service.private_feed()
        session = service.open(token, "playback", match.group(1) if match else "", False, feed_id)
        session.playback = pipe

        async def media(kind: int, data: bytes) -> None:
            await service.send_media(feed_id, kind, data)

        async def text(message: str) -> None:
            async with session.send_lock:
                await ws.send_text(message)

        await pipe.attach(media, text)
        await _serve(ws, service, session, pipe.closed)
    except (WebSocketDisconnect, RuntimeError, ConnectionError):
        pass
    finally:
        pipe.end()
        try:
            await asyncio.wait_for(player, 2.0)
        except TimeoutError:
            log.warning("%s: playback handler did not stop, cancelled", ws.query_params.get("token", "")[:64])
        except Exception:
            log.exception("%s: playback over WebRTC failed", ws.query_params.get("token", "")[:64])


@endpoint()
async def rtc_status(request: Request, user: User) -> Any:
    service: WebRTCService | None = getattr(request.app.state, "webrtc", None)
    if service is None:
        return {"nConnectCount": 0, "bEnabled": False}
    return {
        "nConnectCount": len(service.sessions),
        "nTotalConnects": service.total,
        "nConnected": sum(s.connected for s in service.sessions.values()),
        "bEnabled": True,
        "bServiceRunning": service.ready.is_set(),
        "nServiceRestarts": service.restarts,
    }


async def install(app: Starlette) -> None:
    settings: Settings = app.state.settings
    if not settings.webrtc:
        return
    service = WebRTCService(settings, app.state.registry)
    app.state.webrtc = service
    service.start()


async def uninstall(app: Starlette) -> None:
    service: WebRTCService | None = getattr(app.state, "webrtc", None)
    if service is not None:
        await service.stop()


routes = [
    WebSocketRoute("/api/v1/h5srtcapi", h5srtcapi),
    WebSocketRoute("/api/v1/h5srtcapi2", h5srtcapi),
    WebSocketRoute("/h5srtcapi", h5srtcapi),
    Route("/api/v1/h5srtcapi/Status", rtc_status),
]
