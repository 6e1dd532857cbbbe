"""Manual §5.5, recording and snapshots, and what goes with it: continuous and scheduled recording,
retention and storage figures, clip export (Archive), the media store over HTTP, playback over the live
player's WebSocket (the /recordings page is templates/recordings.html).

Recordings are written from the hub (workers/recorder.py), so recording never opens another camera
connection; which recordings run, and when they stop, is the Recordings service (supervisor/recordings/).
This module only turns requests into its calls and its answers into the manual's fields.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import shutil
import time
from collections.abc import Mapping
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Route
from starlette.types import Send
from starlette.websockets import WebSocket, WebSocketDisconnect

from supervisor.api import caching
from supervisor.api.common import (
    CLOSE_BAD_REQUEST,
    CLOSE_UNKNOWN,
    CLOSE_UNSUPPORTED,
    TOKEN_RE,
    ApiError,
    Chapter,
    camera_param,
    endpoint,
    fail,
    ok,
    param,
    param_bool,
    param_number,
    param_token,
    require_camera,
    services,
    session_of,
    visible,
)
from supervisor.api.playback_sinks import WebSocketSink
from supervisor.auth import User
from supervisor.errors import BadValue, DomainError, Forbidden, NotFound, StorageError, Unavailable
from supervisor.recordings import paths as storage
from supervisor.recordings.index import Recording
from supervisor.recordings.service import CONF, Recordings, RecordStatus, Session
from supervisor.services import Services
from workers.playback import Playback, PlaybackSink, Span
from workers.snapshot import SnapshotError

log = logging.getLogger("h5gate.records")

MAX_DURATION = 7 * 86400
READY_TIMEOUT = 8.0

# -- endpoints ---------------------------------------------------------------------------------------------


def _service(request: Request | WebSocket) -> Recordings:
    service = services(request).recordings
    assert service is not None  # the recordings chapter's start() set it
    return service


def _duration(request: Request, required: bool = True) -> float | None:
    if not required and not request.query_params.get("duration"):
        return None
    return param_number(request, "duration", low=1, high=MAX_DURATION)


def _filename(request: Request, required: bool) -> str:
    name = param(request, "filename", required=required, maxlen=80)
    return storage.check_name(name) if name else ""


def _path_dir(request: Request, kind: str, token: str) -> str:
    start1 = param(request, "start1", maxlen=16)
    start2 = param(request, "start2", maxlen=16)
    tz = request.query_params.get("tz", "")
    if len(tz) > 8:
        raise ApiError("invalid tz")
    return storage.path_dir(kind, token, start1, start2, tz)


def _kind(request: Request, default: str) -> str:
    value = param(request, "type", required=False, default=default, maxlen=16).lower()
    kinds = {
        "manual": "H5_REC_MANUAL",
        "alarm": "H5_REC_ALARM",
        "h5_rec_manual": "H5_REC_MANUAL",
        "h5_rec_alarm": "H5_REC_ALARM",
    }
    if value not in kinds:
        raise ApiError("invalid type: use manual or alarm")
    return kinds[value]


def _started(session: Session, message: str) -> dict[str, Any]:
    return ok(message, strPath=storage.http_path(session.stem + ".mp4"), strRecordId=session.id)


@endpoint(role="Operator")
async def record(request: Request, user: User) -> Any:
    token = camera_param(request, user)
    duration = _duration(request)
    name = _filename(request, False) or str(int(time.time()))
    stem = f"{storage.dated_dir('record', token, time.time())}/{name}"
    _service(request).check_duration(duration)
    session = await _service(request).start(token, "Record", "H5_REC_MANUAL", stem, duration)
    return _started(session, "Record successfully")


@endpoint(role="Operator")
async def manual_record_start(request: Request, user: User) -> Any:
    token = camera_param(request, user)
    duration = _duration(request, required=False)
    service = _service(request)
    session = service.running_session(token, "ManualRecordStart")
    if session is not None:
        return _started(session, "Already recording")
    stem = f"{storage.dated_dir('record', token, time.time())}/{int(time.time())}"
    service.check_duration(duration)
    # without a duration it runs until ManualRecordStop, but never longer than record_max_seconds: a
    # running recording is out of retention's reach, so a forgotten one must end by itself
    duration = duration or float(service.settings.record_max_seconds)
    session = await service.start(token, "ManualRecordStart", "H5_REC_MANUAL", stem, duration)
    return _started(session, "Record start successfully")


@endpoint(role="Operator")
async def manual_record_stop(request: Request, user: User) -> Any:
    token = camera_param(request, user)
    # all=true (Administrators only) ends every recording of the source, PathRecord's too, and for good;
    # without it the manual's meaning stays: the recordings someone started by hand
    everything = param_bool(request, "all", False)
    if everything and not services(request).auth.may(user, "Administrator"):
        raise Forbidden("only an Administrator may stop every recording (all=true)")
    stopped = await _service(request).stop_manual(token, everything=everything)
    files = [storage.http_path(f) for s in stopped for f in s.recorder.files]
    return ok("Record stop successfully" if stopped else "Not recording", strPath=files)


@endpoint(role="Operator")
async def path_record(request: Request, user: User) -> Any:
    token = camera_param(request, user)
    stem = f"{_path_dir(request, 'record', token)}/{_filename(request, True)}"
    duration = _duration(request)
    assert duration is not None
    always = param_bool(request, "alwayscreate", False)
    kind = _kind(request, "manual")
    service = _service(request)
    running = service.running_session(token, "PathRecord")
    if not always and running is not None:
        capped = await service.extend(running, duration)
        limit = service.settings.record_max_seconds
        return _started(running, f"Record extended to at most {limit}s from now" if capped else "Record extended")
    service.check_duration(duration)
    session = await service.start(token, "PathRecord", kind, stem, duration)
    return _started(session, "Record successfully")


async def _snapshot(request: Request, user: User, token: str, stem: str) -> dict[str, Any]:
    service = _service(request)
    service.snapshot_rate.take(user.name)
    stream = service.stream(token)
    hub = stream.acquire()
    try:
        if not await hub.wait_ready(READY_TIMEOUT):
            raise Unavailable(f"{token} is offline: no picture to save")
        jpeg = await services(request).snapshots.get(hub)
    except SnapshotError as e:
        raise Unavailable(f"cannot decode a picture: {e}") from None
    finally:
        stream.release()
    taken = time.time()
    try:
        rel = await service.save_snapshot(token, stem, jpeg, taken)
    except OSError as e:
        log.warning("%s: snapshot not saved: %s", token, e.strerror)
        raise StorageError(f"snapshot not saved: {e.strerror}") from None
    return ok("Snapshot successfully", strPath=storage.http_path(rel))


@endpoint(role="Operator")
async def snapshot(request: Request, user: User) -> Any:
    token = camera_param(request, user)
    name = _filename(request, False) or str(int(time.time() * 1000))
    return await _snapshot(request, user, token, f"{storage.dated_dir('snapshot', token, time.time())}/{name}")


@endpoint(role="Operator")
async def path_snapshot(request: Request, user: User) -> Any:
    token = camera_param(request, user)
    stem = f"{_path_dir(request, 'snapshot', token)}/{_filename(request, True)}"
    return await _snapshot(request, user, token, stem)


def _time(request: Request, name: str, default: float | None) -> tuple[float, int | None]:
    return _query_time(request.query_params, name, default)


def _query_time(q: Mapping[str, str], name: str, default: float | None) -> tuple[float, int | None]:
    value = q.get(name, "")
    if not value:
        if default is None:
            raise ApiError(f"missing parameter: {name}")
        return default, None
    if len(value) > 40:
        raise ApiError(f"invalid time: {name}")
    try:
        return storage.parse_time(value)
    except BadValue as e:
        raise BadValue(f"{name}: {e}") from None


@endpoint()
async def search(request: Request, user: User) -> Any:
    kind = param(request, "type", required=False, default="record", maxlen=16).lower()
    if kind not in ("record", "snapshot"):
        raise ApiError("invalid type: use record or snapshot")
    token = param_token(request, required=False)
    start, offset = _time(request, "start", 0.0)
    end, end_offset = _time(request, "end", time.time() + 86400)
    offset = offset if offset is not None else end_offset
    if end <= start:
        raise ApiError("end must be after start")
    if token:
        require_camera(request, user, token)
    auth = services(request).auth
    service = _service(request)
    if kind == "snapshot":
        found = [
            {
                "strToken": r.token,
                "strStartTime": storage.format_time(r.taken, offset),
                "strPath": storage.http_path(r.path),
                "nSize": r.size,
                "nStartTimeMs": math.floor(r.taken * 1000),
            }
            for r in await service.snapshots(token, start, end)
            if auth.sees(user, r.token)
        ]
        return {"record": found, "snapshot": found}
    rows = await service.recordings(token, start, end)
    return {"record": [_describe(r, offset) for r in rows if auth.sees(user, r.token)]}


def _describe(rec: Recording, offset: int | None) -> dict[str, Any]:
    """Search's shape: the manual's fields, the newer strEndTime and nType, and exact times in ms."""
    return {
        "strToken": rec.token,
        "strStartTime": storage.format_time(rec.start, offset),
        "strEndTime": storage.format_time(rec.end, offset),
        "strDuration": str(max(0, math.floor(rec.end - rec.start))),
        "strPath": storage.http_path(rec.path),
        "nType": rec.kind,
        "nSize": rec.size,
        "bRecording": rec.open,
        "nStartTimeMs": math.floor(rec.start * 1000),
        "nEndTimeMs": math.floor(rec.end * 1000),
    }


def _status(status: RecordStatus) -> dict[str, Any]:
    return {
        "strToken": status.token,
        "bRecording": status.recording,
        "strStatus": status.text,
        "strSchedule": status.schedule,
        "nQuotaByte": status.quota,
        "recording": [
            {
                "strOrigin": origin,
                "nType": r.kind,
                "strStatus": r.status,
                "strPath": storage.http_path(r.current.rel) if r.current else "",
                "strStartTime": storage.format_time(r.started),
            }
            for origin, r in status.recorders
        ],
    }


@endpoint(role="Administrator")
async def set_record(request: Request, user: User) -> Any:
    token = camera_param(request, user)
    enable = param_bool(request, "enable", True)
    registry = services(request).registry
    if registry.get(token) is None:
        raise NotFound(f"no such source: {token}")
    await registry.update(token, record=enable)
    await _service(request).reconcile()
    return ok("Continuous recording on" if enable else "Continuous recording off")


@endpoint()
async def get_record_status(request: Request, user: User) -> Any:
    token = param_token(request, required=False)
    if token:
        require_camera(request, user, token)
    service = _service(request)
    tokens = [token] if token else visible(request, user, services(request).registry.sources)
    runtimes = [service.source(t) for t in tokens]
    out = []
    for t, runtime in zip(tokens, runtimes, strict=True):
        entry = _status(service.status(t))
        entry["bRec"] = bool(runtime.config.record)
        out.append(entry)
    return {"src": out}


@endpoint(role="Administrator")
async def set_record_schedule(request: Request, user: User) -> Any:
    token = camera_param(request, user)
    text = param(request, "schedule", required=False, maxlen=1024)
    await _service(request).set_policy(token, schedule=text)
    return ok("Schedule set" if text else "Schedule removed")


@endpoint(role="Administrator")
async def set_record_quota(request: Request, user: User) -> Any:
    token = camera_param(request, user)
    megabytes = param_number(request, "quota", low=0, high=2**30)
    await _service(request).set_policy(token, quota=int(megabytes * 2**20))
    return ok("Quota set" if megabytes else "Quota removed")


def _conf(service: Recordings) -> dict[str, Any]:
    s = service.settings
    return {
        field: (int(v) if float(v).is_integer() else v)
        for field, v in ((f, getattr(s, name)) for f, name, _, _ in CONF.values())
    }


@endpoint()
async def get_record_conf(request: Request, user: User) -> Any:
    return _conf(_service(request))


@endpoint(role="Administrator")
async def set_record_conf(request: Request, user: User) -> Any:
    values = {}
    for key, (_, name, low, high) in CONF.items():
        if request.query_params.get(key):
            values[name] = param_number(request, key, low=low, high=high)
    if not values:
        raise ApiError(f"nothing to set: use {', '.join(CONF)}")
    await _service(request).set_conf(values)
    return ok("Record configuration set", **_conf(_service(request)))


@endpoint()
async def get_record_duration(request: Request, user: User) -> Any:
    return {"nRecordDuration": _conf(_service(request))["nRecordDuration"]}


@endpoint(role="Administrator")
async def set_record_duration(request: Request, user: User) -> Any:
    low, high = CONF["recordduration"][2:]
    await _service(request).set_conf({"record_file_seconds": param_number(request, "duration", low=low, high=high)})
    return ok("Record duration set", nRecordDuration=_conf(_service(request))["nRecordDuration"])


@endpoint()
async def get_storage_info(request: Request, user: User) -> Any:
    service = _service(request)
    disk = await asyncio.to_thread(_disk_usage, service.root)
    usage = await service.usage()
    now = time.time()
    sources = []
    for token in sorted(set(usage) | set(services(request).registry.sources)):
        u = usage.get(token, {})
        status = service.status(token)
        oldest = u.get("oldest")
        sources.append(
            {
                "strToken": token,
                "nRecordByte": u.get("record", 0),
                "nRecordFiles": u.get("files", 0),
                "nSnapshotByte": u.get("snapshot", 0),
                "nSnapshotFiles": u.get("snapshots", 0),
                "fDaysHeld": round((now - oldest) / 86400, 3) if oldest else 0,
                "strOldest": storage.format_time(oldest) if oldest else "",
                "nQuotaByte": status.quota,
                "strStatus": status.text,
            }
        )
    return {
        "nTotalByte": disk.total,
        "nFreeByte": disk.free,
        "nUsedByte": disk.used,
        "nUsedPercent": round(100 * disk.used / disk.total, 1) if disk.total else 0,
        **_conf(service),
        "src": sources,
    }


@endpoint(role="Administrator")
async def reindex_records(request: Request, user: User) -> Any:
    """Rebuild the index from the media store (H5Stream's bReIndex, on demand): files without a row are
    indexed, rows whose files are gone are dropped; calling it twice changes nothing the second time."""
    done = await _service(request).reindex()
    return ok(
        f"Index rebuilt: {done['added']} added, {done['removed']} removed, {done['skipped']} skipped",
        nFiles=done["files"],
        nAdded=done["added"],
        nRemoved=done["removed"],
        nSkipped=done["skipped"],
    )


def _disk_usage(root: Path) -> Any:
    root.mkdir(parents=True, exist_ok=True)
    return shutil.disk_usage(root)


# -- clip export -------------------------------------------------------------------------------------------


async def _export(request: Request, user: User, token: str, begin: float, end: float) -> dict[str, Any]:
    service = _service(request)
    service.export_rate.take(user.name)
    name, rel = await service.export(token, begin, end)
    return ok("Archive started", strFileName=name, strUrl=storage.http_path(rel))


def _clock_time(request: Request) -> float:
    """Archive's start1 (Y-M-D) and start2 (H-M-S), in `tz` or the server's zone."""
    tz = request.query_params.get("tz", "")
    if len(tz) > 8:
        raise ApiError("invalid tz")
    return storage.clock_time(param(request, "start1", maxlen=16), param(request, "start2", maxlen=16), tz)


@endpoint(role="Operator")
async def archive(request: Request, user: User) -> Any:
    token = camera_param(request, user)
    begin = _clock_time(request)
    duration = _duration(request)
    assert duration is not None
    return await _export(request, user, token, begin, begin + duration)


@endpoint(role="Operator")
async def export_clip_call(request: Request, user: User) -> Any:
    token = camera_param(request, user)
    begin = _time(request, "start", None)[0]
    end = _time(request, "end", None)[0]
    return await _export(request, user, token, begin, end)


@endpoint()
async def get_archive_status(request: Request, user: User) -> Any:
    token = camera_param(request, user)
    name = param(request, "filename", maxlen=120)
    progress = _service(request).export_progress(token, name)
    if progress is None:
        raise NotFound(f"no such archive: {name[:80]}")
    if progress.error and not progress.duration:
        return fail(progress.error, 500 if progress.done else 409, strFileName=name)
    return ok(
        progress.error or ("Archive done" if progress.done else "Archive in progress"),
        nPercentage=progress.percent,
        strFileName=name,
        strUrl=storage.http_path(f"archive/{token}/{name}.mp4"),
    )


# -- the media store over HTTP, the page, playback -------------------------------------------------------------

MEDIA_TYPES = {".mp4": "video/mp4", ".jpg": "image/jpeg"}


async def media_file(request: Request) -> Response:
    """/mediastore/<path> exactly as Search returns it, behind the session and the camera's rights, with ranges."""
    auth = services(request).auth
    user = await auth.check(session_of(request))
    if user is None:
        return fail("session is missing, invalid or expired", 401)
    rel = request.path_params["path"]
    token = rel.split("/")[1] if rel.count("/") >= 2 else ""
    if not auth.sees(user, token):
        return fail("file not found", 404)  # a camera the user may not see has no files for them
    root = _service(request).root
    try:
        path = await asyncio.to_thread(storage.resolve, root, rel)
    except BadValue:
        return fail("invalid path", 400)
    try:
        found = path.suffix in MEDIA_TYPES and await asyncio.to_thread(path.is_file)
    except OSError:  # a name the file system refuses (too long, not a directory ...) is not a file of ours
        found = False
    if not found:
        return fail("file not found", 404)
    try:
        stat = await asyncio.to_thread(os.stat, path)
    except OSError:  # deleted by retention between the check and now
        return fail("file not found", 404)
    response = FileAsOfStat(path, media_type=MEDIA_TYPES[path.suffix], headers=caching.recording(), stat_result=stat)
    if not_modified(request, response):  # a cache revalidating a file that has not grown since
        kept = {k: v for k, v in response.headers.items() if k in ("etag", "last-modified", "cache-control", "vary")}
        return Response(status_code=304, headers=kept)
    return response


class FileAsOfStat(FileResponse):
    """A file sent as it was when stat'ed: a recording still being written grows while it is sent.

    Starlette's whole-file answer reads to the end of the file, past the Content-Length it announced (the
    server then breaks the connection mid-answer, and a cache in front stores nothing or a broken copy);
    this one stops at the stat'ed size, which the ETag and Last-Modified describe. Ranges already stop there.
    """

    async def _handle_simple(self, send: Send, send_header_only: bool, send_pathsend: bool) -> None:
        if send_header_only or send_pathsend:
            return await super()._handle_simple(send, send_header_only, send_pathsend)
        assert self.stat_result is not None
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        left = self.stat_result.st_size
        async with self._open_file() as file:
            while True:
                chunk = await file.read(min(self.chunk_size, left)) if left > 0 else b""
                left -= len(chunk)
                more = bool(chunk) and left > 0
                await send({"type": "http.response.body", "body": chunk, "more_body": more})
                if not more:
                    return


def not_modified(request: Request, response: Response) -> bool:
    """RFC 9110 §13.1: If-None-Match decides when present (weak comparison), else If-Modified-Since."""
    etag = response.headers.get("etag", "")
    if_none_match = request.headers.get("if-none-match")
    if if_none_match is not None:
        tags = [t.strip().removeprefix("W/") for t in if_none_match.split(",")]
        return "*" in tags or etag in tags
    since = request.headers.get("if-modified-since")
    modified = response.headers.get("last-modified")
    if since and modified:
        try:
            return parsedate_to_datetime(modified) <= parsedate_to_datetime(since)
        except (TypeError, ValueError):
            return False
    return False


async def playback_ws(ws: WebSocket, user: User) -> None:
    """h5swsapi?playback=true&serverpb=true&token&begintime&endtime[&filename]: recordings as live video."""
    await ws.accept()
    sink = WebSocketSink(ws)
    if not services(ws).auth.sees(user, ws.query_params.get("token", "")):
        return await sink.close(4404, "unknown token")
    await serve_playback(_service(ws), sink, ws.query_params, user)


async def serve_playback(service: Recordings, sink: PlaybackSink, q: Mapping[str, str], user: User) -> None:
    """One playback request, whatever carries it (WebSocketSink, or WebRTCSink from api/webrtc.py)."""
    token = q.get("token", "")
    if not TOKEN_RE.match(token):
        return await sink.close(CLOSE_UNKNOWN, "invalid token")
    if q.get("serverpb", "false").lower() != "true":
        return await sink.close(
            CLOSE_UNSUPPORTED, "only playback of this server's recordings (serverpb=true) is supported"
        )
    filename = q.get("filename", "")
    single = q.get("begintime", "0") in ("", "0") and filename not in ("", "fake")  # one file, whole
    try:
        if single:
            rows = await _single_file(service, token, filename)
            begin, offset = rows[0].start, None
            end = rows[0].end + 1 if not rows[0].open else time.time() + MAX_DURATION
        else:
            begin, offset = _query_time(q, "begintime", None)
            end = _query_time(q, "endtime", None)[0]
            if end <= begin:
                raise ApiError("endtime must be after begintime")
            rows = await service.recordings(token, begin, end)
    except ApiError as e:
        return await sink.close(CLOSE_BAD_REQUEST, e.code)
    except DomainError as e:  # every refusal of a playback request closes with 4400
        return await sink.close(CLOSE_BAD_REQUEST, e.message)

    async def refresh(span: Span) -> list[Span]:
        if single:
            current = await service.recording_at(rows[0].path)
            return [service.span(current)] if current else []
        return [service.span(r) for r in await service.recordings(token, span.start, end)]

    player = Playback(
        sink,
        [service.span(r) for r in rows],
        begin,
        end,
        lambda t: storage.format_time(t, offset),
        refresh,
        f"{token}/playback",
    )
    try:
        log.info(
            "%s: playback of %s .. %s for %s",
            token,
            storage.format_time(begin, offset),
            storage.format_time(end, offset),
            user.name,
        )
        await player.run()
    except (WebSocketDisconnect, RuntimeError, ConnectionError):
        pass
    except OSError as e:  # a file went away under the player (deleted by retention, say)
        log.warning("%s: playback stopped: %s", token, e)
        await sink.close(1011, "recording no longer readable")


async def _single_file(service: Recordings, token: str, filename: str) -> list[Recording]:
    """The file named by `filename`: a strPath from Search, or just its name."""
    found = await service.recording_named(token, filename)
    if found is None:
        raise NotFound("no such recording")
    return [found]


# -- wiring ---------------------------------------------------------------------------------------------------


async def start(svc: Services) -> None:
    service = Recordings(svc.settings, svc.db, svc.registry)
    await service.open()
    svc.recordings = service
    svc.playback_ws = playback_ws

    async def play(sink: PlaybackSink, query: Mapping[str, str], user: User) -> None:
        if not svc.auth.sees(user, query.get("token", "")):
            return await sink.close(4404, "unknown token")
        await serve_playback(service, sink, query, user)

    svc.playback = play  # playback over WebRTC (api/webrtc.py) plays into its own sink


async def started(svc: Services) -> None:
    """After the sources are loaded: recorders need them."""
    assert svc.recordings is not None
    await svc.recordings.started()


async def stop(svc: Services) -> None:
    if svc.recordings is not None:
        await svc.recordings.close()


routes = [
    Route("/api/v1/Record", record),
    Route("/api/v1/ManualRecordStart", manual_record_start),
    Route("/api/v1/ManualRecordStop", manual_record_stop),
    Route("/api/v1/PathRecord", path_record),
    Route("/api/v1/Snapshot", snapshot),
    Route("/api/v1/PathSnapshot", path_snapshot),
    Route("/api/v1/Search", search),
    Route("/api/v1/SetRecord", set_record),
    Route("/api/v1/GetRecordStatus", get_record_status),
    Route("/api/v1/SetRecordSchedule", set_record_schedule),
    Route("/api/v1/SetRecordQuota", set_record_quota),
    Route("/api/v1/GetRecordConf", get_record_conf),
    Route("/api/v1/SetRecordConf", set_record_conf),
    Route("/api/v1/GetRecordDuration", get_record_duration),
    Route("/api/v1/SetRecordDuration", set_record_duration),
    Route("/api/v1/GetStorageInfo", get_storage_info),
    Route("/api/v1/ReindexRecords", reindex_records),
    Route("/api/v1/Archive", archive),
    Route("/api/v1/ExportClip", export_clip_call),
    Route("/api/v1/GetArchiveStatus", get_archive_status),
    Route("/mediastore/{path:path}", media_file),
]
chapter = Chapter("records", routes, start=start, started=started, stop=stop)
