"""Manual §5.3, Sources: GetSrc, AddSrcFile, AddSrcRTSP, DelSrc, GetImage (PTZ and ONVIF live in onvif.py).

UpdateSrcRTSP and UpdateSrcFile (h5gate's own; H5Stream has no edit call) change a source in place: the
token stays, parameters that are not given keep their value, and the registry swaps the source atomically.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from supervisor.api.common import (
    ApiError,
    Chapter,
    endpoint,
    ok,
    param,
    param_bool,
    param_token,
    require_camera,
    services,
    session_of,
)
from supervisor.auth import User
from supervisor.errors import NotFound
from supervisor.registry import (
    MEDIA_DIR,
    RTSP_TYPES,
    SourceConfig,
    SourceRuntime,
    check_file_path,
)
from supervisor.rtmp_push import KIND as PUSH_KIND
from supervisor.rtmp_push import new_key, publish_url
from workers.credentials import redact_url, split_credentials
from workers.snapshot import SnapshotError

log = logging.getLogger("h5gate.api")

NAME_MAX = 128
RTSP_TYPE_ALIASES = {"auto": "H5_RTSP_AUTO", "tcp": "H5_RTSP_TCP", "udp": "H5_RTSP_UDP"}
CONNECT_ALIASES = {"always": "H5_ALWAYS", "ondemand": "H5_ONDEMAND", "auto": "H5_AUTO"}


def describe(
    runtime: SourceRuntime, host_id: str, reveal: bool = False, *, rtmp_host: str = "", rtmp_port: int = 0
) -> dict[str, Any]:
    """One source in GetSrc's shape; credentials are never part of it.

    A push source's strUrl is the URL its encoder publishes to, with the publish key only where `reveal`
    (an Administrator, who could make a new source and key anyway); it is empty while rtmp_port is 0.

    Userinfo is stored apart from the URL; secrets a camera needs in the query string (?password=) stay
    in it and only an Administrator (who could set them anyway) sees them: everyone else gets ***.
    """
    cfg = runtime.config
    url = cfg.url if reveal else redact_url(cfg.url)
    url_sub = cfg.url_sub if reveal or not cfg.url_sub else redact_url(cfg.url_sub)
    state = runtime.main.process.state
    if cfg.kind == PUSH_KIND:
        url = publish_url(rtmp_host, rtmp_port, cfg.token, cfg.password if reveal else None)
    parts = urlsplit(cfg.url) if cfg.kind not in ("H5_FILE", PUSH_KIND) else None
    try:
        port = str(parts.port or "") if parts else ""
    except ValueError:
        port = ""
    return {
        "nType": cfg.kind,
        "strName": cfg.name,
        "strToken": cfg.token,
        "strUrl": cfg.url.removeprefix("file:") if cfg.kind == "H5_FILE" else url,
        "strUser": cfg.user,
        "strPasswd": "*****",
        "bPasswdEncrypt": False,
        "bEnableAudio": cfg.audio,
        "nConnectType": cfg.connect_type,
        "nRTSPType": cfg.rtsp_type,
        "strSrcIpAddress": cfg.ip or (parts.hostname or "" if parts else ""),
        "strSrcPort": cfg.port or port,
        "nChannelNumber": 1,
        "bOnvifProfileAuto": cfg.profile_auto,
        "strOnvifAddr": cfg.onvif_addr,
        "strOnvifProfileMain": cfg.profile_main,
        "strOnvifProfileSub": cfg.profile_sub,
        "bOnline": runtime.online,
        "strSnapshotUrl": f"/api/v1/GetImage?token={cfg.token}",
        "bRec": cfg.record or runtime.remote_record,
        # a cloud edge's source carries the edge's token and its own token there; a local source has neither
        "strServerToken": cfg.server_token,
        "strOriginalToken": cfg.original_token,
        "strServerUuid": "",
        "nOriginalType": "H5_CH_SRC",
        "bDisable": False,
        "strUrlSub": url_sub,
        "bEnableUrlSub": bool(cfg.url_sub),
        # h5gate additions: why a source is offline, and what the supervisor did about it
        "strLastError": state.last_error,
        "nRestarts": state.restarts,
        "nTimelineResets": sum(s.process.timeline.resets for s in runtime.streams.values()),
        "strTransport": state.transport,
        "strVideoCodec": state.video_codec,
        "strAudioCodec": state.audio_codec,
        "nViewers": sum(s.users for s in runtime.streams.values()),
        # cluster: the node that pulls the camera ("" outside a cluster), and whether that is this one
        "strNodeId": runtime.owner,
        "bPulledHere": runtime.local,
    }


def listed_sources(request: Request, user: User, filters: bool = True) -> list[dict[str, Any]]:
    """GetSrc's list: the sources the user's role may see, filtered by `token`, `type` and `getonline`."""
    svc = services(request)
    runtimes = [r for t, r in svc.registry.sources.items() if svc.auth.sees(user, t)]
    # a push source's key in its publish URL, and query-string passwords: for Administrators only
    reveal = svc.auth.may(user, "Administrator")
    host, port = request.url.hostname or "127.0.0.1", svc.settings.rtmp_port

    def entry(r: SourceRuntime) -> dict[str, Any]:
        return describe(r, svc.host_id, reveal, rtmp_host=host, rtmp_port=port)

    if not filters:
        return [entry(r) for r in runtimes]
    token = param_token(request, required=False)
    if token:
        runtimes = [r for r in runtimes if r.config.token == token]
        if not runtimes:
            raise NotFound(f"no such source: {token}")
    kind = param(request, "type", required=False, maxlen=32)
    if kind:
        runtimes = [r for r in runtimes if r.config.kind == kind]
    if param_bool(request, "getonline", False):
        runtimes = [r for r in runtimes if r.online]
    return [entry(r) for r in runtimes]


@endpoint()
async def get_src(request: Request, user: User) -> Any:
    return {"src": listed_sources(request, user)}


def _common(request: Request) -> tuple[str, str, bool, str]:
    token = param_token(request)
    name = param(request, "name", required=False, default=token, maxlen=NAME_MAX)
    audio = param_bool(request, "audio", True)
    connect = _connect_type(request, "H5_ALWAYS")
    return token, name, audio, connect


def _connect_type(request: Request, default: str) -> str:
    connect = param(request, "connecttype", required=False, default=default, maxlen=16)
    return CONNECT_ALIASES.get(connect.lower(), connect)


def _rtsp_type(request: Request, default: str) -> str:
    rtsp_type = param(request, "rtsptype", required=False, default=default, maxlen=16)
    rtsp_type = RTSP_TYPE_ALIASES.get(rtsp_type.lower(), rtsp_type)
    if rtsp_type not in RTSP_TYPES:
        raise ApiError(f"invalid rtsptype: use one of {', '.join(RTSP_TYPES)}")
    return rtsp_type


def _stream_fields(request: Request, old: SourceConfig | None) -> dict[str, Any]:
    """url, user, password, rtsp type and sub URL of a stream source; on an edit, what is absent stays.

    Credentials in a URL are split off it (they are never shown or logged with it). On an edit, an empty
    password keeps the stored one, because GetSrc never reveals it and a form cannot send it back.
    """
    raw = param(request, "url", required=old is None, maxlen=2048)
    url, url_user, url_password = split_credentials(raw) if raw else (old.url if old else "", "", "")
    user_default = url_user or (old.user if old else "")
    password_default = url_password or (old.password if old else "")
    sub_raw = param(request, "suburl", required=False, maxlen=2048)
    if old is not None and "suburl" not in request.query_params and "enablesub" not in request.query_params:
        sub = old.url_sub
    else:
        sub = split_credentials(sub_raw)[0] if sub_raw and param_bool(request, "enablesub", bool(sub_raw)) else ""
    if old is not None and request.query_params.get("user") == "":  # an edit that clears the user name
        user = ""
    else:
        user = param(request, "user", required=False, default=user_default, maxlen=128)
    return {
        "url": url,
        "user": user,
        "password": param(request, "password", required=False, default=password_default, maxlen=128),
        "rtsp_type": _rtsp_type(request, old.rtsp_type if old else "H5_RTSP_AUTO"),
        "url_sub": sub,
    }


def _edited(request: Request, kind: str) -> SourceConfig:
    """The source an Update call names, which must exist and be of `kind`."""
    token = param_token(request)
    runtime = services(request).registry.get(token)
    if runtime is None:
        raise NotFound(f"no such source: {token}")
    cfg: SourceConfig = runtime.config
    if cfg.kind != kind:
        raise ApiError(f"source {token} is of type {cfg.kind}, not {kind}")
    return cfg


def _edit_common(request: Request, old: SourceConfig) -> dict[str, Any]:
    return {
        "name": param(request, "name", required=False, default=old.name, maxlen=NAME_MAX),
        "audio": param_bool(request, "audio", old.audio),
        "connect_type": _connect_type(request, old.connect_type),
    }


@endpoint(role="Administrator")
async def add_src_rtsp(request: Request, user: User) -> Any:
    token, name, audio, connect = _common(request)
    cfg = SourceConfig(
        token=token, name=name, kind="H5_STREAM", audio=audio, connect_type=connect, **_stream_fields(request, None)
    )
    await services(request).registry.add(cfg)
    return ok("Add successfully")


@endpoint(role="Administrator")
async def update_src_rtsp(request: Request, user: User) -> Any:
    old = _edited(request, "H5_STREAM")
    cfg = dataclasses.replace(old, **_edit_common(request, old), **_stream_fields(request, old))
    await services(request).registry.replace(cfg)
    return ok("Update successfully")


@endpoint(role="Administrator")
async def add_src_file(request: Request, user: User) -> Any:
    token, name, audio, connect = _common(request)
    path = param(request, "url", maxlen=1024)
    registry = services(request).registry
    real = check_file_path(path, registry.media_roots)
    await registry.add(
        SourceConfig(token=token, name=name, kind="H5_FILE", url=f"file:{real}", audio=audio, connect_type=connect)
    )
    return ok("Add successfully")


@endpoint(role="Administrator")
async def add_rtmp_push(request: Request, user: User) -> Any:
    """A source an encoder publishes to over RTMP; the answer carries the publish URL with its new key."""
    token, name, audio, _ = _common(request)
    key = new_key()
    svc = services(request)
    cfg = SourceConfig(token=token, name=name, kind=PUSH_KIND, url="", password=key, audio=audio)
    await svc.registry.add(cfg)
    url = publish_url(request.url.hostname or "127.0.0.1", svc.settings.rtmp_port, token, key)
    return ok("Add successfully", strUrl=url)


@endpoint(role="Administrator")
async def update_src_file(request: Request, user: User) -> Any:
    old = _edited(request, "H5_FILE")
    registry = services(request).registry
    path = param(request, "url", required=False, maxlen=1024)
    url = f"file:{check_file_path(path, registry.media_roots)}" if path else old.url
    await registry.replace(dataclasses.replace(old, url=url, **_edit_common(request, old)))
    return ok("Update successfully")


@endpoint(role="Administrator")
async def del_src(request: Request, user: User) -> Any:
    token = param_token(request)
    await services(request).registry.delete(token)
    return ok("Delete successfully")


def placeholder() -> Response:
    data = (MEDIA_DIR / "connecting.jpg").read_bytes()
    return Response(
        data, media_type="image/jpeg", headers={"Cache-Control": "no-store", "X-H5gate-Image": "placeholder"}
    )


@endpoint(role=None)
async def get_image(request: Request, _: None) -> Any:
    token = param_token(request)
    svc = services(request)
    user = await svc.auth.viewer(session_of(request))  # a session, or the anonymous viewer when that is on
    if user is None:
        raise ApiError("session is missing, invalid or expired", 401)
    require_camera(request, user, token)
    runtime = svc.registry.get(token)
    if runtime is None:
        raise NotFound(f"no such source: {token}")
    hub = runtime.main.hub
    if hub.ready:
        try:
            jpeg = await svc.snapshots.get(hub)
            return Response(jpeg, media_type="image/jpeg", headers={"Cache-Control": "no-store"})
        except SnapshotError as e:
            log.info("%s: GetImage decode failed: %s", token, e)
    fallback = svc.registry.snapshot_fallbacks.get(runtime.config.kind)
    if fallback is not None:
        picture = await fallback(runtime.config)
        if picture:
            return Response(picture, media_type="image/jpeg", headers={"Cache-Control": "no-store"})
    return placeholder()


@endpoint()
async def get_loading_image(request: Request, user: User) -> Any:
    return placeholder()


routes = [
    Route("/api/v1/GetSrc", get_src),
    Route("/api/v1/AddSrcRTSP", add_src_rtsp),
    Route("/api/v1/AddSrcFile", add_src_file),
    Route("/api/v1/AddRTMPPush", add_rtmp_push),
    Route("/api/v1/UpdateSrcRTSP", update_src_rtsp),
    Route("/api/v1/UpdateSrcFile", update_src_file),
    Route("/api/v1/DelSrc", del_src),
    Route("/api/v1/GetImage", get_image),
    Route("/api/v1/GetLoadingImage", get_loading_image),
]
chapter = Chapter("sources", routes)
