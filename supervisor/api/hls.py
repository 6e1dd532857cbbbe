"""HLS out: /hls/v1|v2/<token>/<name>, made on demand (supervisor/hls.py), behind the session.

v2 is LL-HLS: a playlist request with _HLS_msn (and _HLS_part) is held until that segment (part) exists,
and a request for the hinted next part is held until it is ready. The session given in the query is
carried on every URI of a playlist, so players that do not keep cookies are authorised for segments too.
Playlists are never cached; segments, parts and init segments have names that are never reused (a run id
in each, v1's numbers start at the microsecond clock), so any cache may keep them: supervisor/api/caching.py
says which cache, and for whom. Error answers are never stored (a part asked for too early must not stay 404).
"""

from __future__ import annotations

import asyncio
import re
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from supervisor.api import caching
from supervisor.api.common import TOKEN_RE, ApiError, Chapter, endpoint, services, session_of
from supervisor.hls import HlsService
from supervisor.services import Services
from workers.hls import FragmentedHls

PLAYLIST = "application/vnd.apple.mpegurl"
TS_NAME_RE = re.compile(r"^hls\d{1,20}\.ts$")
V2_NAME_RE = re.compile(r"^(init|seg|part)-([0-9a-f]{6,24})-(\d{1,12})(?:-(\d{1,6}))?\.(mp4|m4s)$")
NUMBER_RE = re.compile(r"^\d{1,12}$")
MAX_AHEAD = 2  # a blocking reload may ask for at most this many segments beyond the newest (else 400)


def _query(request: Request) -> str:
    session = request.query_params.get("session")
    return f"?session={quote(session, safe='')}" if session else ""


def _number(request: Request, name: str) -> int | None:
    value = request.query_params.get(name)
    if value is None:
        return None
    if not NUMBER_RE.match(value):
        raise ApiError(f"invalid {name}: a whole number")
    return int(value)


def _rewrite_ts_playlist(text: str, query: str) -> str:
    """Carry the session on every segment URI of ffmpeg's playlist."""
    lines = [f"{line}{query}" if line and not line.startswith("#") else line for line in text.splitlines()]
    return "\n".join(lines) + "\n"


@endpoint(role=None)
async def hls_file(request: Request, _: None) -> Response:
    svc = services(request)
    user = await svc.auth.viewer(session_of(request))  # a session, or the anonymous viewer when that is on
    if user is None:
        raise ApiError("session is missing, invalid or expired", 401)
    version = request.path_params["version"]
    token = request.path_params["token"]
    name = request.path_params["name"]
    if version not in ("v1", "v2") or not TOKEN_RE.match(token):
        raise ApiError("invalid HLS path")
    if svc.registry.get(token) is None or svc.hls is None or not svc.auth.sees(user, token):
        raise ApiError(f"no such source: {token}", 404)
    if name == "hls.m3u8":  # HLS has no connection to count: who reads playlists is who watches
        svc.hls_viewers.saw(token, session_of(request) or "")
    if version == "v2":
        return await _v2(request, svc.hls, token, name)
    return await _v1(request, svc.hls, token, name)


async def _v2(request: Request, service: HlsService, token: str, name: str) -> Response:
    if name == "hls.m3u8":
        msn, part = _number(request, "_HLS_msn"), _number(request, "_HLS_part")
        if part is not None and msn is None:
            raise ApiError("_HLS_part needs _HLS_msn")
        playing = await service.fmp4(token)
        if msn is not None:
            if msn > playing.next_msn + MAX_AHEAD:
                raise ApiError(f"_HLS_msn {msn} is too far ahead (next segment is {playing.next_msn})")
            if not await playing.wait_for(lambda: playing.has(msn, part), 3 * playing.target_duration):
                raise ApiError("the requested segment did not come in time", 503)
        return Response(playing.playlist(_query(request)), media_type=PLAYLIST, headers=caching.playlist(request))
    m = V2_NAME_RE.match(name)
    if m is None:
        raise ApiError("invalid HLS name")
    kind, run_id, number, index = m.group(1), m.group(2), int(m.group(3)), m.group(4)
    if (kind == "part") != (index is not None) or m.group(5) != ("mp4" if kind == "init" else "m4s"):
        raise ApiError("invalid HLS name")
    running = service.touch(token, "v2")
    hls: FragmentedHls | None = running.maker if running is not None else None
    if hls is None or hls.run != run_id:
        raise ApiError("not found (the HLS stream was restarted: reload the playlist)", 404)
    data: bytes | None
    if kind == "init":
        data, media = hls.init(number), "video/mp4"
    elif kind == "seg":
        if hls.next_msn - 1 <= number <= hls.next_msn:  # the segment being made: wait for its end (bounded)
            await hls.wait_for(lambda: hls.segment(number) is not None or hls.closed, 3 * hls.target_duration)
        data, media = hls.segment(number), "video/iso.segment"
    else:
        i = int(index or 0)
        if hls.part(number, i) is None and hls.next_msn - 1 <= number <= hls.next_msn and i < 1000:
            # a preload hint: held until the part is ready, or its segment ended without it
            done = lambda: hls.part(number, i) is not None or hls.segment(number) is not None or hls.closed  # noqa: E731
            await hls.wait_for(done, 3 * hls.target_duration)
        data, media = hls.part(number, i), "video/iso.segment"
    if data is None:
        raise ApiError("not found (no longer or not yet in the playlist)", 404)
    return Response(data, media_type=media, headers=caching.segment(request))


async def _v1(request: Request, service: HlsService, token: str, name: str) -> Response:
    if name == "hls.m3u8":
        ts = await service.ts(token)
        text = await asyncio.to_thread(ts.playlist.read_text)
        headers = caching.playlist(request)
        return Response(_rewrite_ts_playlist(text, _query(request)), media_type=PLAYLIST, headers=headers)
    if not TS_NAME_RE.match(name):
        raise ApiError("invalid HLS name")
    running = service.touch(token, "v1")
    if running is None:
        raise ApiError("not found (HLS v1 is not running: load the playlist)", 404)
    try:  # read whole: ffmpeg deletes old segments, and a file gone mid-response would be a broken answer
        data = await asyncio.to_thread((running.maker.folder / name).read_bytes)
    except FileNotFoundError:
        raise ApiError("segment not found", 404) from None
    return Response(data, media_type="video/mp2t", headers=caching.segment(request))


async def start(svc: Services) -> None:
    svc.hls = HlsService(svc.settings, svc.registry, svc.ffmpeg)


async def stop(svc: Services) -> None:
    if svc.hls is not None:
        await svc.hls.stop_all()


routes = [Route("/hls/{version}/{token}/{name}", hls_file)]
chapter = Chapter("hls", routes, start=start, stop=stop)
