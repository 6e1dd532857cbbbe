"""Manual §5.6, cloud: the edge link's socket, GetServerList, GetCloudDevice(Src), Get/SetCloudClientInfo,
and the forwarding of calls that target an edge (CloudForward, an ASGI middleware).

A call in supervisor/cloud/calls.py is forwarded when it carries `servertoken` (manual: "servertoken on
AddSrc*/OnvifSearch/OnvifProbe targets a registered edge") or names with `token` a source of an edge. The
centre checks the session, the role the call needs and the camera right itself, then the edge carries
the call out and its answer comes back as the edge gave it, with the edge's tokens shown as the centre's.
An unknown servertoken or an offline edge answers bStatus false with the reason.

The link: an edge opens a WebSocket here and says hello with a user and MD5 password, checked as Login
checks them (lockout included); the user must be an Administrator here, since an edge's sources join
this server's list. The vendor consoles read GetCloudDevice as {dev: [{strToken, strName, strIp}]} and
GetCloudDeviceSrc?token=<edge> as {src: [GetSrc entries]} (h5sweb views/Clouds.vue, public/device.js).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from supervisor import errors
from supervisor.api.common import (
    TOKEN_RE,
    ApiError,
    Chapter,
    answer,
    check_action,
    endpoint,
    fail,
    ok,
    param,
    param_bool,
    param_number,
    param_token,
    require_camera,
    require_user,
    services,
    session_of,
    vendor_status,
)
from supervisor.api.playback_sinks import PlaybackServer
from supervisor.api.sources import describe
from supervisor.api.users import MD5_RE
from supervisor.auth import User
from supervisor.cloud.calls import FORWARDED
from supervisor.cloud.centre import Edge
from supervisor.cloud.link import Channel, ChannelClosed, Link, LinkDown
from supervisor.cloud.protocol import LINK_PATH, ProtocolError, control, parse_control
from supervisor.cloud.service import CloudService
from supervisor.cloud.settings import CloudConf
from supervisor.services import Services
from workers.playback import PlaybackSink
from workers.relay_source import split_message

log = logging.getLogger("h5gate.cloud")

HELLO_TIMEOUT = 10.0
CLOUD_STORE = "/cloudstore"  # an edge's files, as /cloudstore/<kind>/<centre token>/<the rest of its strPath>
LISTS_SOURCES = frozenset({"Search", "GetRecordStatus"})  # answers whose strToken names a source of the edge
CLOSE_REFUSED = 4401


def _cloud(conn: Any) -> CloudService:
    cloud = services(conn).cloud
    if cloud is None:
        raise errors.Unavailable("cloud is not running")
    return cloud


# -- the edge's side: its registration -----------------------------------------------------------------
@endpoint(role="Administrator")
async def get_cloud_client_info(request: Request, user: User) -> Any:
    cloud = _cloud(request)
    form = cloud.conf.form()
    form["strPasswd"] = "******" if form["strPasswd"] else ""
    # h5gate's additions: why it is not online, and how often it connected
    edge = cloud.edge
    return {**form, "bOnline": edge.online, "strLastError": edge.last_error, "nConnects": edge.connects}


def _host(request: Request, name: str) -> str:
    value = param(request, name, required=False, maxlen=253)
    if value and not all(c.isalnum() or c in ".-:[]_" for c in value):
        raise ApiError(f"invalid {name}: a host name or IP address")
    return value.strip("[]")


@endpoint(role="Administrator")
async def set_cloud_info(request: Request, user: User) -> Any:
    cloud = _cloud(request)
    current = cloud.conf
    password = param(request, "password", required=False, maxlen=64)
    if password and password != "******" and not MD5_RE.match(password):
        raise ApiError("invalid password: the centre user's password as 32 hex digits (MD5), as Login takes it")
    server_token = param(request, "servertoken", required=False, maxlen=64)
    if server_token and not TOKEN_RE.match(server_token):
        raise ApiError("invalid servertoken: use 1-64 letters, digits, '_', '-' or '.'")
    conf = CloudConf(
        enable=param_bool(request, "enable", False),
        server_name=param(request, "servername", required=False, maxlen=128),
        server_token=server_token,
        cloud_ip=_host(request, "cloudip"),
        cloud_port=int(param_number(request, "cloudport", default=8080, low=1, high=65535, integer=True)),
        ssl=param_bool(request, "ssl", False),
        user=param(request, "user", required=False, maxlen=64),
        password=current.password if password in ("", "******") else password.lower(),
        keepalive=int(param_number(request, "keepalivetime", default=3, low=1, high=3600, integer=True)),
        edge_transcoding=param_bool(request, "edgetranscoding", False),
    )
    if conf.enable and conf.usable:
        raise ApiError(f"cannot enable cloud: {conf.usable}")
    await cloud.set_conf(conf)
    log.info("cloud: registration set by %s (enable=%s, centre %s)", user.name, conf.enable, conf.url)
    return ok("Set cloud info successfully")


# -- the centre's side: its edges ------------------------------------------------------------------------
@endpoint(role="Administrator")
async def get_server_list(request: Request, user: User) -> Any:
    edges = sorted(_cloud(request).centre.edges.values(), key=lambda e: e.token)
    return {
        "server": [
            {
                "strServerToken": e.token,
                "strServerName": e.name,
                "strServerIp": e.ip,
                "bOnline": e.online,
                "nSources": len(e.sources),
            }
            for e in edges
        ]  # fmt: skip
    }


@endpoint(role="Administrator")
async def get_cloud_device(request: Request, user: User) -> Any:
    edges = sorted(_cloud(request).centre.edges.values(), key=lambda e: e.token)
    return {
        "dev": [
            {
                "strToken": e.token,
                "strName": e.name or e.token,
                "strIp": e.ip,
                "bOnline": e.online,
                "nType": "H5_CLOUD",
                "nSrcCount": len(e.sources),
            }
            for e in edges
        ]  # fmt: skip
    }


@endpoint()
async def get_cloud_device_src(request: Request, user: User) -> Any:
    svc = services(request)
    token = param_token(request)
    edge = _cloud(request).centre.edges.get(token)
    if edge is None:
        raise errors.NotFound(f"unknown cloud device: no edge {token} is registered with this server")
    reveal = svc.auth.may(user, "Administrator")
    src = []
    for original in sorted(edge.sources):
        runtime = svc.registry.get(edge.tokens[original])
        if runtime is not None and svc.auth.sees(user, runtime.config.token):
            src.append(describe(runtime, svc.host_id, reveal))
    return {"src": src}


# -- the link --------------------------------------------------------------------------------------------
async def link_socket(ws: WebSocket) -> None:
    """An edge's link: hello (user, MD5 password, servertoken), then calls, channels and keepalives."""
    svc = services(ws)
    cloud = svc.cloud
    await ws.accept()
    ip = ws.client.host if ws.client else "?"
    if cloud is None:
        return await _refuse(ws, "cloud is not running on this server")
    try:
        hello = parse_control(await asyncio.wait_for(ws.receive_text(), HELLO_TIMEOUT))
    except (TimeoutError, ProtocolError, KeyError, WebSocketDisconnect, RuntimeError) as e:
        log.info("cloud: a link from %s sent no proper hello (%s)", ip, type(e).__name__)
        return await _refuse(ws, "expected a hello")
    token, name = str(hello.get("servertoken", "")), str(hello.get("servername", ""))[:128]
    if hello.get("t") != "hello" or not TOKEN_RE.match(token):
        return await _refuse(ws, "the hello needs a servertoken of 1-64 letters, digits, '_', '-' or '.'")
    user_name, password = str(hello.get("user", ""))[:64], str(hello.get("password", ""))[:128]
    session, _ = await svc.auth.login(user_name, password, ip)
    if session is None:
        log.warning("cloud: edge %s from %s refused: wrong user or password", token, ip)
        return await _refuse(ws, "wrong user or password (or the user is locked)")
    await svc.auth.logout(session)  # the link itself is the credential from here on
    account = await svc.auth.user(user_name)
    if account is None or not svc.auth.may(account, "Administrator"):
        return await _refuse(ws, f"user {user_name} is not an Administrator here")
    keepalive = hello.get("keepalive")
    every = float(keepalive) if isinstance(keepalive, int) and 1 <= keepalive <= 3600 else 3.0

    link = Link(token, _sender(ws))
    centre = cloud.centre
    edge = await centre.attach(token, name, ip, link)
    link.on_control = lambda msg: _control(centre, edge, link, msg)
    await link.send(control("welcome"))
    reason = "the edge closed the link"
    try:
        while True:
            async with asyncio.timeout(3 * every + 2):
                message = await ws.receive()
            if message["type"] == "websocket.disconnect":
                break
            data = message.get("bytes")
            await link.dispatch(data if data is not None else message.get("text", ""))
    except TimeoutError:
        reason = f"no keepalive for {3 * every + 2:.0f}s"
        with contextlib.suppress(Exception):
            await ws.close(1001, "keepalive timeout")
    except ProtocolError as e:
        reason = f"protocol error: {e}"
        with contextlib.suppress(Exception):
            await ws.close(1002, str(e)[:120])
    except (WebSocketDisconnect, RuntimeError, OSError, LinkDown) as e:
        reason = f"the link broke ({type(e).__name__})"
    finally:
        centre.detach(edge, link, reason)


def _sender(ws: WebSocket) -> Any:
    async def send(message: str | bytes) -> None:
        if isinstance(message, bytes):
            await ws.send_bytes(message)
        else:
            await ws.send_text(message)

    return send


async def _control(centre: Any, edge: Edge, link: Link, message: dict[str, Any]) -> None:
    kind = message["t"]
    if kind == "ping":
        await link.send(control("pong"))
    elif kind == "sources":
        await centre.update_sources(edge, message.get("src"))


async def _refuse(ws: WebSocket, reason: str) -> None:
    with contextlib.suppress(Exception):
        await ws.send_text(control("refused", reason=reason))
        await ws.close(CLOSE_REFUSED, reason[:120])


# -- forwarding --------------------------------------------------------------------------------------------
class CloudForward:
    """ASGI middleware: a call for an edge (servertoken, or the token of an edge's source) goes over its link."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or not path.startswith("/api/v1/") or path[8:].strip("/") not in FORWARDED:
            return await self.app(scope, receive, send)
        request = Request(scope, receive)
        svc: Services = request.app.state.services
        if svc.cloud is None:
            return await self.app(scope, receive, send)
        q = request.query_params
        server_token, token = q.get("servertoken", ""), q.get("token", "")
        mapped = svc.cloud.centre.source_of(token) if token else None
        if not server_token and mapped is None:
            return await self.app(scope, receive, send)
        try:
            response = await _forward(request, svc, path[8:].strip("/"), server_token, mapped)
        except ApiError as e:
            response = fail(e.code, e.status)
        except errors.DomainError as e:
            response = answer(e)
        except Exception:
            log.exception("forwarding %s failed", path)
            response = fail("internal error", 500)
        await vendor_status(request, response)(scope, receive, send)


async def _forward(
    request: Request, svc: Services, name: str, server_token: str, mapped: tuple[Edge, str] | None
) -> Response:
    assert svc.cloud is not None
    centre = svc.cloud.centre
    role = FORWARDED[name]
    if name == "GetImage":  # as the local GetImage: live view without a session when anonymous view is on
        user = await svc.auth.viewer(session_of(request))
        if user is None:
            raise ApiError("session is missing, invalid or expired", 401)
    else:
        check_action(request)
        user = await require_user(request, role)
    if server_token:
        if not TOKEN_RE.match(server_token):
            raise ApiError("invalid servertoken: use 1-64 letters, digits, '_', '-' or '.'")
        edge = centre.edges.get(server_token)
        if edge is None:
            raise errors.NotFound(f"unknown servertoken: no edge {server_token} is registered with this server")
        if mapped is not None and mapped[0] is not edge:
            raise ApiError(f"source {request.query_params['token']} is not on edge {server_token}")
    else:
        assert mapped is not None
        edge = mapped[0]
    token = request.query_params.get("token", "")
    if mapped is not None:
        require_camera(request, user, token)
    elif token in edge.tokens:  # the edge's own token of a camera: the rights are those of its token here
        require_camera(request, user, edge.tokens[token])
    elif not svc.auth.may(user, "Administrator"):  # a call for no camera of the edge this user may see
        raise errors.Forbidden(f"{name} on edge {edge.token} without a camera token needs the Administrator role")
    if not edge.online:
        raise errors.Unavailable(f"cloud edge {edge.token} is offline")
    query = [(k, v) for k, v in request.query_params.multi_items() if k not in ("session", "servertoken")]
    if mapped is not None:
        query = [(k, mapped[1] if k == "token" else v) for k, v in query]
    reply = await centre.call(edge, name, query)
    log.info("cloud: %s forwarded to edge %s for %s: %d", name, edge.token, user.name, reply.status)
    if not reply.content_type.startswith("application/json"):
        return Response(reply.body, reply.status, media_type=reply.content_type or None)
    try:
        body = reply.json()
    except ValueError:
        return Response(reply.body, reply.status, media_type=reply.content_type)
    if name in LISTS_SOURCES:
        body = _as_centre(body, edge)
    if name.startswith("AddSrc") and isinstance(body, dict) and body.get("bStatus"):
        original = request.query_params.get("token", "")
        if original in edge.tokens:  # the edge sent its new list before its answer
            body.update(strToken=edge.tokens[original], strOriginalToken=original, strServerToken=edge.token)
    return JSONResponse(body, reply.status)


def _as_centre(value: Any, edge: Edge) -> Any:
    """The edge's answer with its source tokens (strToken) shown as this server's tokens for them."""
    if isinstance(value, list):
        return [_as_centre(v, edge) for v in value]
    if not isinstance(value, dict):
        return value
    out = {k: _as_centre(v, edge) for k, v in value.items()}
    parts = out["strPath"].split("/", 4) if isinstance(out.get("strPath"), str) else []
    if len(parts) == 5 and parts[1] == "mediastore" and parts[3] in edge.tokens:  # /mediastore/kind/token/rest
        out["strPath"] = f"{CLOUD_STORE}/{parts[2]}/{edge.tokens[parts[3]]}/{parts[4]}"
    original = out.get("strToken")
    if isinstance(original, str) and original in edge.tokens:
        out["strToken"] = edge.tokens[original]
        out.setdefault("strOriginalToken", original)
        out.setdefault("strServerToken", edge.token)
    return out


# -- files of an edge (recordings, snapshots), by the strPath Search gave --------------------------------------
async def cloud_file(request: Request) -> Response:
    """/cloudstore/<kind>/<centre token>/<rest>: the edge's /mediastore/<kind>/<its token>/<rest>, streamed."""
    svc = services(request)
    user = await svc.auth.check(session_of(request))
    if user is None:
        return fail("session is missing, invalid or expired", 401)
    kind, token, rest = request.path_params["kind"], request.path_params["token"], request.path_params["rest"]
    if ".." in rest.split("/") or rest.startswith("/") or any(ord(c) < 32 for c in rest):
        return fail("invalid path", 400)
    mapped = svc.cloud.centre.source_of(token) if svc.cloud is not None else None
    if mapped is None or not svc.auth.sees(user, token) or kind not in ("record", "snapshot", "archive"):
        return fail("file not found", 404)
    edge, original = mapped
    link = edge.link
    if link is None or link.down is not None:
        return fail(f"cloud edge {edge.token} is offline", 503)
    try:
        channel = await link.open(f"/mediastore/{kind}/{original}/{rest}", [])
        head = await asyncio.wait_for(channel.receive(), 30)
    except (LinkDown, TimeoutError):
        return fail(f"cloud edge {edge.token} did not answer", 503)
    try:
        assert isinstance(head, str)
        info = json.loads(head)
        status = int(info["status"])
    except (AssertionError, ValueError, KeyError, TypeError):
        await channel.close()
        reason = head.reason if isinstance(head, ChannelClosed) else "no proper answer"
        return fail(f"cloud edge {edge.token}: {reason}", 502)

    async def body() -> AsyncIterator[bytes]:
        try:
            while True:
                chunk = await channel.receive()
                if isinstance(chunk, ChannelClosed):
                    return
                if isinstance(chunk, bytes):
                    yield chunk
        finally:
            await channel.close()

    headers = {"Cache-Control": "no-cache"}
    if str(info.get("length", "")).isdigit():
        headers["Content-Length"] = str(info["length"])
    return StreamingResponse(body(), status, headers, media_type=str(info.get("type") or "") or None)


# -- playback of an edge's recordings: the player's socket is tunnelled to the edge ------------------------
def _cloud_playback(svc: Services, local: Any) -> Any:
    async def playback(ws: WebSocket, user: User) -> None:
        cloud = svc.cloud
        token = ws.query_params.get("token", "")
        mapped = cloud.centre.source_of(token) if cloud is not None and TOKEN_RE.match(token) else None
        if mapped is None:
            return await local(ws, user)
        await ws.accept()
        edge, original = mapped
        if not svc.auth.sees(user, token):
            return await _close(ws, 4404, "unknown token")
        link = edge.link
        if link is None or link.down is not None:
            return await _close(ws, 1013, f"source offline: cloud edge {edge.token} is offline")
        query = [(k, original if k == "token" else v) for k, v in ws.query_params.multi_items() if k != "session"]
        try:
            channel = await link.open("/api/v1/h5swsapi", query)
        except (LinkDown, TimeoutError) as e:
            return await _close(ws, 1013, f"source offline: {str(e) or 'the edge did not answer'}")
        await tunnel(ws, channel)

    return playback


def _cloud_playback_sink(svc: Services, local: PlaybackServer) -> PlaybackServer:
    """Playback into any sink (WebRTC's) of an edge camera: the edge plays it, its messages feed the sink here."""

    async def play(sink: PlaybackSink, q: Mapping[str, str], user: User) -> None:
        cloud = svc.cloud
        token = q.get("token", "")
        mapped = cloud.centre.source_of(token) if cloud is not None and TOKEN_RE.match(token) else None
        if mapped is None:
            return await local(sink, q, user)
        edge, original = mapped
        link = edge.link
        if link is None or link.down is not None:
            return await sink.close(1013, f"source offline: cloud edge {edge.token} is offline")
        query = [(k, original if k == "token" else v) for k, v in q.items() if k != "session"]
        query.append(("playback", "true"))
        try:
            channel = await link.open("/api/v1/h5swsapi", list(dict(query).items()))
        except (LinkDown, TimeoutError) as e:
            return await sink.close(1013, f"source offline: {str(e) or 'the edge did not answer'}")

        async def commands() -> None:
            while (command := await sink.receive_command()) is not None:
                await channel.send(json.dumps(command))
            await channel.close(1000, "the viewer left")

        upward = asyncio.create_task(commands())
        try:
            mime_sent = False
            while not isinstance(message := await channel.receive(), ChannelClosed):
                if isinstance(message, str):
                    with contextlib.suppress(ValueError):
                        await sink.send_event(json.loads(message))
                elif not mime_sent:
                    await sink.send_mime(message.decode("ascii", "replace"))
                    mime_sent = True
                elif message[4:8] == b"ftyp":
                    await sink.send_init(message)
                else:
                    kind, pieces = split_message(message)  # the edge may send several moof+mdat in one
                    for piece in pieces if kind == "fragments" else []:
                        await sink.send_fragment(piece)
            await sink.close(message.code, message.reason)
        finally:
            upward.cancel()
            await asyncio.gather(upward, return_exceptions=True)
            await channel.close(1000, "")

    return play


async def tunnel(ws: WebSocket, channel: Channel) -> None:
    """Messages both ways between a viewer's socket and a channel, until either end closes."""

    async def down() -> None:
        while True:
            message = await channel.receive()
            if isinstance(message, ChannelClosed):
                await _close(ws, message.code, message.reason)
                return
            if isinstance(message, bytes):
                await ws.send_bytes(message)
            else:
                await ws.send_text(message)

    async def up() -> None:
        while True:
            message = await ws.receive()
            if message["type"] == "websocket.disconnect":
                await channel.close(1000, "the viewer left")
                return
            data = message.get("bytes")
            await channel.send(data if data is not None else message.get("text", ""))

    tasks = [asyncio.create_task(down()), asyncio.create_task(up())]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await channel.close(1000, "")


async def _close(ws: WebSocket, code: int, reason: str) -> None:
    with contextlib.suppress(Exception):
        await ws.close(code=code, reason=reason[:120])


# -- the chapter -----------------------------------------------------------------------------------------
async def start(svc: Services) -> None:
    svc.cloud = CloudService(svc)


async def started(svc: Services) -> None:
    assert svc.cloud is not None
    if svc.playback_ws is not None:
        svc.playback_ws = _cloud_playback(svc, svc.playback_ws)
    if svc.playback is not None:
        svc.playback = _cloud_playback_sink(svc, svc.playback)
    await svc.cloud.start()


async def stop(svc: Services) -> None:
    if svc.cloud is not None:
        await svc.cloud.stop()


routes = [
    WebSocketRoute(LINK_PATH, link_socket),
    Route("/api/v1/GetCloudClientInfo", get_cloud_client_info),
    Route("/api/v1/SetCloudInfo", set_cloud_info),
    Route("/api/v1/GetServerList", get_server_list),
    Route("/api/v1/GetCloudDevice", get_cloud_device),
    Route("/api/v1/GetCloudDeviceSrc", get_cloud_device_src),
    Route(CLOUD_STORE + "/{kind}/{token}/{rest:path}", cloud_file),
]
chapter = Chapter("cloud", routes, start=start, started=started, stop=stop)
