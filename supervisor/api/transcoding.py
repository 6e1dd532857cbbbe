"""Transcoding profiles (AddTransProfile, DelTransProfile, GetTransProfile, Get/SetTransProfileDefault) and
the loopback feed that hands a source's hub to its transcoding ffmpeg.

The feed is `GET /api/v1/h5gatetranscodefeed?token=<source>&key=<per-run key>`: the init segment, then the
source's fragments from its newest keyframe on, rebased to start at zero, as one endless HTTP body. It
ends when the source's run changes (new init), and ffmpeg is restarted onto the new run. Only the
server's own ffmpeg knows the key.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from supervisor.api.common import Chapter, endpoint, ok, param, param_number, services
from supervisor.auth import User
from supervisor.services import Services
from supervisor.transcode import Transcoder, TransProfile
from workers.hub import HubClosed

log = logging.getLogger("h5gate.transcode")

FEED_PATH = "/api/v1/h5gatetranscodefeed"
FEED_WAIT = 10.0  # seconds the feed waits for a source that is (re)connecting


def _transcoder(request: Request) -> Transcoder:
    found = services(request).transcoder
    assert found is not None
    return found


def _profile_params(request: Request, token: str, name: str) -> TransProfile:
    size_w = int(param_number(request, "width", default=640, low=16, high=4096, integer=True))
    size_h = int(param_number(request, "height", default=480, low=16, high=4096, integer=True))
    return TransProfile(
        token=token,
        name=name,
        fps_type=param(request, "fpstype", required=False, default="H5_FPS_AUTO", maxlen=32),
        fps=int(param_number(request, "fps", default=25, low=1, high=60, integer=True)),
        scale_type=param(request, "scaletype", required=False, default="H5_SCALE_FIXED", maxlen=32),
        width=size_w,
        height=size_h,
        bitrate=int(param_number(request, "bitrate", default=1024, low=64, high=50_000, integer=True)),
        engine=param(request, "engine", required=False, default="H5_SW_ONLY", maxlen=32),
    ).check()


@endpoint()
async def get_trans_profile(request: Request, user: User) -> Any:
    transcoder = _transcoder(request)
    return {"profile": [p.describe() for p in transcoder.profiles.values()]}


@endpoint(role="Administrator")
async def add_trans_profile(request: Request, user: User) -> Any:
    token = param(request, "token", maxlen=64)
    name = param(request, "name", required=False, default=token, maxlen=128)
    await _transcoder(request).add(_profile_params(request, token, name))
    return ok("Add profile successfully")


@endpoint(role="Administrator")
async def del_trans_profile(request: Request, user: User) -> Any:
    svc = services(request)
    await _transcoder(request).delete(param(request, "token", maxlen=64), list(svc.registry.sources.values()))
    return ok("Delete profile successfully")


@endpoint()
async def get_trans_profile_default(request: Request, user: User) -> Any:
    return {"profile": [_transcoder(request).default.describe()]}


@endpoint(role="Administrator")
async def set_trans_profile_default(request: Request, user: User) -> Any:
    await _transcoder(request).set_default(_profile_params(request, "default", "Default"))
    return ok("Set default profile successfully")


async def _feed(hub: Any) -> AsyncIterator[bytes]:
    """Init, then fragments from the newest keyframe, rebased to zero; ends when the run changes."""
    cursor = hub.cursor()
    gen = None
    shift_us = 0
    try:
        while True:
            frag = await cursor.next()
            if frag is None:
                continue
            if gen is None:
                init = hub.inits.get(frag.gen)
                if init is None or not frag.keyframe:
                    continue
                gen, shift_us = frag.gen, int(frag.dts * 1_000_000)
                yield init.data
            elif frag.gen != gen:
                return  # a new run of the source: ffmpeg restarts onto it
            elif frag.dts * 1_000_000 < shift_us - 1:
                continue
            yield frag.rebased(shift_us)
    except HubClosed:
        return


async def transcode_feed(request: Request) -> Response:
    svc = services(request)
    transcoder = svc.transcoder
    key = request.query_params.get("key", "")
    if transcoder is None or not hmac.compare_digest(key.encode(), transcoder.key.encode()):
        return Response(status_code=403)
    runtime = svc.registry.get(request.query_params.get("token", ""))
    if runtime is None:
        return Response(status_code=404)
    stream = runtime.main
    hub = stream.acquire()  # an on-demand source runs while its transcodes do

    async def body() -> AsyncIterator[bytes]:
        try:
            if await hub.wait_ready(FEED_WAIT):
                async for chunk in _feed(hub):
                    yield chunk
        except HubClosed:
            return
        finally:
            stream.release()

    return StreamingResponse(body(), media_type="video/mp4", headers={"Cache-Control": "no-store"})


async def start(svc: Services) -> None:
    transcoder = Transcoder(svc.db, svc.conf, svc.ffmpeg, svc.settings)
    await transcoder.load()
    host = svc.settings.host if svc.settings.host not in ("", "0.0.0.0", "::") else "127.0.0.1"
    host = f"[{host}]" if ":" in host else host
    port = svc.settings.port

    def feed_url(token: str, key: str) -> str:
        return f"http://{host}:{port}{FEED_PATH}?token={token}&key={key}"

    transcoder.feed_url = feed_url
    svc.transcoder = transcoder


routes = [
    Route("/api/v1/GetTransProfile", get_trans_profile),
    Route("/api/v1/AddTransProfile", add_trans_profile),
    Route("/api/v1/DelTransProfile", del_trans_profile),
    Route("/api/v1/GetTransProfileDefault", get_trans_profile_default),
    Route("/api/v1/SetTransProfileDefault", set_trans_profile_default),
    Route(FEED_PATH, transcode_feed),
]
chapter = Chapter("transcoding", routes, start=start)
