"""Browser push (h5srtcpushapi): a browser publishes its camera or screen over WebRTC into a push source.

`h5srtcpushapi?token&session[&type=media|sharing][&audio=true|false]`, as the vendor's `H5sRTCPush` opens
it: the browser sends `open`, the server answers `iceserver`, the browser makes the offer, the sidecar
(workers/webrtc/push.py) answers and passes the H.264 it receives back as FLV video tags, which go into the
source through the same PushSession an RTMP encoder uses. So the token names an `H5_RTMP_PUSH` source
(AddRTMPPush): a source like any other while the browser publishes (viewers, recording, snapshots, online
state), one publisher at a time whichever way it arrives. The session stands for the RTMP key: the user
must be an Operator or Administrator whose role sees the camera. Browser audio (Opus) arrives as AAC
(workers/webrtc/push_audio.py) where the source keeps audio and the publisher says audio=true. A
browser's frame rate varies: the session holds each frame for its successor's time, so durations are
exact (workers/push_source.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import Any

from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from supervisor.api.common import (
    CLOSE_BAD_REQUEST,
    CLOSE_UNAUTHORIZED,
    CLOSE_UNKNOWN,
    CLOSE_UNSUPPORTED,
    TOKEN_RE,
    ApiError,
    Chapter,
    cross_site,
    param_bool,
    services,
    session_of,
)
from supervisor.api.streams import _close
from supervisor.api.webrtc import SIDECAR_WAIT, SignalError, parse_signal
from supervisor.webrtc import Session, WebRTCService
from workers.push_source import PushInput
from workers.rtmp.server import Refused

log = logging.getLogger("h5gate.webrtc")

CLOSE_BUSY = 4409


async def _refuse(ws: WebSocket, code: int, reason: str) -> None:
    """Accept, say why as the API's answers do ({"bStatus": false, "strCode": ...}; the vendor's H5sRTCPush
    hands unknown messages to its callback), then close with a code and that reason."""
    with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError):  # OSError: uvicorn's ClientDisconnected
        await ws.accept()
        await ws.send_json({"type": "error", "bStatus": False, "strCode": reason})
    await _close(ws, code, reason)


async def h5srtcpushapi(ws: WebSocket) -> None:
    client = ws.client.host if ws.client else "?"
    token = ws.query_params.get("token", "")
    checked = await _check(ws, token)
    if isinstance(checked, Refusal):
        log.info("%s: browser publisher %s refused: %s", token[:64] or "-", client, checked.reason)
        return await _refuse(ws, checked.code, checked.reason)
    source, service = checked
    kicked = asyncio.Event()
    try:
        publish = source.begin(f"webrtc {client}", kicked.set, exact_durations=True)
    except Refused as e:
        log.info("%s: browser publisher %s refused: %s", token, client, e)
        return await _refuse(ws, CLOSE_BUSY, str(e))
    audio = source.audio and param_bool(ws, "audio", True)

    def on_push(kind: int, ms: int, body: bytes) -> None:
        if kind == 9:
            publish.on_video(ms, body)
        elif kind == 8:
            publish.on_audio(ms, body)

    session = service.open_push(token, on_push, audio)
    log.info("%s: browser publisher %s (%s) opening", token, client, ws.query_params.get("type", "media")[:16])
    result: tuple[int, str] | None = None
    try:
        await ws.accept()
        result = await _relay(ws, service, session, kicked)
    except (WebSocketDisconnect, RuntimeError, OSError):  # OSError: uvicorn's ClientDisconnected
        pass
    finally:
        service.close(session)
        publish.end("browser publisher left")
        late = publish.late
        log.info("%s: browser publisher %s closed (%d frames went out before their successor)", token, client, late)
    if result is not None:
        await _close(ws, *result)  # the browser may have gone at the same moment: that is no error


@dataclass
class Refusal:
    code: int  # the close code
    reason: str


async def _check(ws: WebSocket, token: str) -> Refusal | tuple[PushInput, WebRTCService]:
    """Why this socket may not publish to `token`, or where it publishes."""
    svc = services(ws)
    if cross_site(ws):
        return Refusal(CLOSE_UNAUTHORIZED, "refused: publishing from another site's page")
    user = await svc.auth.check(session_of(ws))
    if user is None:
        return Refusal(CLOSE_UNAUTHORIZED, "session is missing, invalid or expired")
    if not svc.auth.may(user, "Operator"):
        return Refusal(CLOSE_UNAUTHORIZED, "publishing needs an Operator or Administrator")
    if ws.query_params.get("type", "media") not in ("media", "sharing"):
        return Refusal(CLOSE_BAD_REQUEST, "type must be media or sharing")
    try:
        param_bool(ws, "audio", True)
    except ApiError as e:
        return Refusal(CLOSE_BAD_REQUEST, str(e))
    runtime = svc.registry.get(token) if TOKEN_RE.match(token) and svc.auth.sees(user, token) else None
    if runtime is None:
        return Refusal(CLOSE_UNKNOWN, f"unknown token: {token[:64]}")
    source = runtime.main.process
    if runtime.config.kind != "H5_RTMP_PUSH" or not isinstance(source, PushInput):
        return Refusal(CLOSE_UNSUPPORTED, "browser push goes to a push source (AddRTMPPush)")
    service = svc.webrtc
    if service is None:
        return Refusal(CLOSE_UNSUPPORTED, "WebRTC is turned off on this server")
    if not await service.wait_ready(SIDECAR_WAIT):
        return Refusal(1013, "WebRTC service is not running, try again")
    return source, service


async def _relay(
    ws: WebSocket, service: WebRTCService, session: Session, kicked: asyncio.Event
) -> tuple[int, str] | None:
    tasks: set[asyncio.Future[Any]] = {
        asyncio.create_task(_from_browser(ws, service, session)),
        asyncio.create_task(_to_browser(ws, session)),
        asyncio.create_task(_kicked(kicked)),
    }
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        result: tuple[int, str] | None = next(iter(done)).result()
        return result
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _kicked(kicked: asyncio.Event) -> tuple[int, str]:
    await kicked.wait()
    return 1000, "source stopped"


async def _from_browser(ws: WebSocket, service: WebRTCService, session: Session) -> tuple[int, str] | None:
    while True:
        message = await ws.receive()
        if message["type"] == "websocket.disconnect":
            return None
        try:
            text = message.get("text")
            if text is None:
                raise SignalError("binary messages are not part of WebRTC signalling")
            signal = parse_signal(text)
            kind = signal.get("type")
            if kind == "open" and not session.opened:
                session.opened = True
                await ws.send_json(service.iceserver_message())  # the vendor player offers on this
            elif kind == "offer":
                if not isinstance(signal.get("sdp"), str) or session.offer_sent:
                    raise SignalError("one offer with an sdp string")
                session.offer_sent = True
                service.signal(session, {"type": "offer", "sdp": signal["sdp"]})
            elif kind == "remoteice" or (kind is None and "candidate" in signal):
                if not isinstance(signal.get("candidate"), str):
                    raise SignalError("remoteice needs a candidate string")
                service.signal(
                    session, {"candidate": signal["candidate"], "sdpMLineIndex": signal.get("sdpMLineIndex")}
                )
            elif kind in ("open", "keepalive", "message"):
                pass  # "message" is the vendor's app message to other users: not relayed here
            else:
                raise SignalError(f"unknown message type: {str(kind)[:40]}")
        except SignalError as e:
            await ws.send_json({"type": "error", "bStatus": False, "strCode": str(e)})
            return CLOSE_BAD_REQUEST, str(e)[:120]


async def _to_browser(ws: WebSocket, session: Session) -> tuple[int, str]:
    while True:
        message = await session.inbox.get()
        op = message["op"]
        if op == "answer":
            await ws.send_json({"type": "answer", "sdp": str(message["sdp"])})
        elif op == "connected":
            session.connected = True
        elif op == "closed":
            reason = str(message.get("reason", "closed"))
            if message.get("error"):
                await ws.send_json({"type": "error", "bStatus": False, "strCode": reason})
            return int(message.get("code", 1000)), reason[:120]


routes = [WebSocketRoute("/api/v1/h5srtcpushapi", h5srtcpushapi)]
chapter = Chapter("rtc_push", routes)
