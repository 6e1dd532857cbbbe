"""WebRTC out: H5Stream's signalling socket (h5srtcapi) and its Status.

This module authenticates browsers and relays their signalling (the server makes the offer) to the
aiortc sidecar; the sidecar itself, its restarts and the media it is fed are supervisor/webrtc.py's.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from typing import Any

from starlette.requests import Request
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from supervisor.api.common import (
    CLOSE_BAD_REQUEST,
    CLOSE_UNAUTHORIZED,
    CLOSE_UNSUPPORTED,
    Chapter,
    endpoint,
    services,
    session_of,
)
from supervisor.api.playback_sinks import PlaybackServer, WebRTCSink
from supervisor.api.streams import READY_TIMEOUT, _reject, open_live
from supervisor.auth import User
from supervisor.services import Services
from supervisor.webrtc import Session, WebRTCService

log = logging.getLogger("h5gate.webrtc")

CLOSE_BAD_SIGNALLING = CLOSE_BAD_REQUEST
MAX_SIGNAL = 64 * 1024  # an answer SDP is a few kB; anything this big is not signalling
SIDECAR_WAIT = 10.0  # how long a new viewer waits for a (re)starting sidecar
CODECS_RE = re.compile(r'codecs="([^"]*)"')


class SignalError(Exception):
    """A browser message that is not H5Stream WebRTC signalling; it gets an error message and a close."""


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
    svc = services(ws)
    playback = ws.query_params.get("playback", "").lower() == "true"
    user = await svc.auth.check(session_of(ws)) if playback else await svc.auth.viewer(session_of(ws))
    if user is None:
        return await _reject(ws, CLOSE_UNAUTHORIZED, "session is missing, invalid or expired")
    service = svc.webrtc
    if service is None:
        return await _reject(ws, CLOSE_UNSUPPORTED, "WebRTC is turned off on this server")
    if playback:
        handler = svc.playback
        if handler is None:
            return await _reject(ws, CLOSE_UNSUPPORTED, "playback is not available on this server")
        return await _playback(ws, service, handler, user)
    stream = await open_live(ws, user)
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
    except (WebSocketDisconnect, RuntimeError, OSError):  # OSError: uvicorn's ClientDisconnected
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
        started: set[asyncio.Future[Any]] = {pipe.mime, pipe.closed, player}
        await asyncio.wait(started, timeout=READY_TIMEOUT, return_when=asyncio.FIRST_COMPLETED)
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
    except (WebSocketDisconnect, RuntimeError, OSError):  # OSError: uvicorn's ClientDisconnected
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
    service = services(request).webrtc
    if service is None:
        return {"nConnectCount": 0, "bEnabled": False}
    return {
        "nConnectCount": len(service.sessions),
        "nTotalConnects": service.total,
        "nConnected": sum(s.connected for s in service.sessions.values()),
        "bEnabled": True,
        "bServiceRunning": service.ready.is_set(),
        "nServiceRestarts": service.state.restarts,
    }


async def start(svc: Services) -> None:
    if not svc.settings.webrtc:
        return
    svc.webrtc = WebRTCService(svc.settings, svc.registry)
    svc.webrtc.start()


async def stop(svc: Services) -> None:
    if svc.webrtc is not None:
        await svc.webrtc.stop()


routes = [
    WebSocketRoute("/api/v1/h5srtcapi", h5srtcapi),
    WebSocketRoute("/api/v1/h5srtcapi2", h5srtcapi),
    WebSocketRoute("/h5srtcapi", h5srtcapi),
    Route("/api/v1/h5srtcapi/Status", rtc_status),
]
chapter = Chapter("webrtc", routes, start=start, stop=stop)
