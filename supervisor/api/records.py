"""Manual §5.5, recording and snapshots, and what goes with it: continuous and scheduled recording,
retention, storage figures, clip export (Archive), the media store over HTTP, playback over the live
player's WebSocket and the /recordings page.

Recordings are written from the hub (workers/recorder.py), so recording never opens another camera
connection. Timed stops are stored jobs (supervisor/jobs.py) and running recordings are stored sessions:
after a restart, a recording cut short by a crash is closed at its real length and, if its time is not
up, goes on in a new file.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import shutil
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Route
from starlette.templating import Jinja2Templates
from starlette.websockets import WebSocket, WebSocketDisconnect

from supervisor.api.common import (
    TOKEN_RE,
    ApiError,
    endpoint,
    fail,
    ok,
    param,
    param_bool,
    param_number,
    param_token,
    session_of,
)
from supervisor.auth import User
from supervisor.jobs import Jobs
from workers import storage
from workers.playback import Export, Playback, Span, export_clip
from workers.recorder import RecFile, Recorder, repair_file
from workers.snapshot import SnapshotError
from workers.storage import BadValue, Policy, RecordIndex, Retention

log = logging.getLogger("h5gate.records")

TEMPLATES = Jinja2Templates(directory=str(Path(__file__).resolve().parents[2] / "templates"))
MAX_SESSIONS = 8  # timed/manual recordings of one source at once
MAX_DURATION = 7 * 86400
READY_TIMEOUT = 8.0
RECONCILE_SECONDS = 60.0
ARCHIVE_KEEP_SECONDS = 86400.0
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
WINDOW_RE = re.compile(r"^([a-z,\-*]+)\s+(\d{1,2}):(\d{2})-(\d{1,2}):(\d{2})$")
# SetRecordConf parameter -> (GetRecordConf field, settings field, lowest, highest)
CONF = {
    "recordduration": ("nRecordDuration", "record_file_seconds", 1, 3600),
    "recordinday": ("nRecordInDay", "record_in_day", 1, 3650),
    "snapshotinday": ("nSnapshotInDay", "snapshot_in_day", 1, 3650),
    "diskautodelpercent": ("nDiskAutoDelPercent", "disk_auto_del_percent", 1, 99),
    "prerecordlength": ("nPreRecordLength", "pre_record_seconds", 0, 30),
}


# -- weekly schedules ------------------------------------------------------------------------------------

Window = tuple[int, int, int]  # weekday (0 = Monday), first minute, minute after the last


def _days(spec: str) -> list[int]:
    if spec in ("*", "daily"):
        return list(range(7))
    out: list[int] = []
    for part in spec.split(","):
        ends = part.split("-")
        if len(ends) > 2 or any(e not in DAYS for e in ends):
            raise BadValue(f"invalid days: {part} (use mon..sun, ranges such as mon-fri, or daily)")
        a, b = DAYS.index(ends[0]), DAYS.index(ends[-1])
        out += [(a + i) % 7 for i in range((b - a) % 7 + 1)]
    return out


def parse_schedule(text: str) -> list[Window]:
    """`mon-fri 08:00-18:00; sat,sun 10:00-12:00; daily 22:00-06:00` (an end before the start is next day)."""
    windows: list[Window] = []
    for item in filter(None, (p.strip().lower() for p in text.split(";"))):
        m = WINDOW_RE.match(item)
        if not m:
            raise BadValue(f"invalid schedule entry: {item[:40]} (use e.g. mon-fri 08:00-18:00)")
        h1, m1, h2, m2 = (int(v) for v in m.groups()[1:])
        first, last = h1 * 60 + m1, h2 * 60 + m2
        if h1 > 23 or m1 > 59 or m2 > 59 or last > 1440 or first == last:
            raise BadValue(f"invalid times in schedule entry: {item[:40]}")
        for day in _days(m.group(1)):
            if first < last:
                windows.append((day, first, last))
            else:
                windows.append((day, first, 1440))
                if last:
                    windows.append(((day + 1) % 7, 0, last))
    return windows


def in_schedule(windows: list[Window], ts: float) -> bool:
    t = datetime.fromtimestamp(ts)
    minute = t.hour * 60 + t.minute
    return any(day == t.weekday() and first <= minute < last for day, first, last in windows)


# -- the service ------------------------------------------------------------------------------------------

@dataclass(eq=False)
class Session:
    """A recording someone asked for (Record, ManualRecordStart, PathRecord), until it stops."""

    id: str
    token: str
    kind: str
    origin: str
    stem: str  # store-relative path of its first file, without .mp4
    stop_at: float | None
    recorder: Recorder


class Recordings:
    """Which recordings run, their index rows, their timed stops, snapshots, exports and retention."""

    def __init__(self, state: Any) -> None:
        self.state = state
        self.settings = state.settings
        self.root: Path = self.settings.media_store
        self.db = state.db
        self.index = RecordIndex(self.db, self.root)
        self.retention = Retention(self.index, self.protected)
        self.jobs = Jobs(self.db)
        self.sessions: dict[str, Session] = {}
        self.continuous: dict[str, Recorder] = {}
        self.schedules: dict[str, str] = {}
        self.quotas: dict[str, int] = {}
        self.errors: dict[str, str] = {}  # token -> why its recording last stopped on its own
        self.exports: dict[str, tuple[str, Export]] = {}  # file name -> (token, progress)
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[Any]] = set()

    # -- lifecycle ---------------------------------------------------------------------------------
    async def open(self) -> None:
        for row in await self.db.fetchall("SELECT name, value FROM record_conf"):
            if row["name"] in {f for _, f, _, _ in CONF.values()}:
                setattr(self.settings, row["name"], float(row["value"]))
        self.settings.record_file_seconds = float(self.settings.record_file_seconds)
        self._fit_ring()
        for row in await self.db.fetchall("SELECT token, schedule, quota FROM record_policy"):
            if row["schedule"]:
                self.schedules[row["token"]] = row["schedule"]
            if row["quota"]:
                self.quotas[row["token"]] = row["quota"]
        recovered = await self.index.recover(repair_file)
        if recovered:
            log.info("%d recordings interrupted by a crash were closed and indexed", recovered)
        self.jobs.register("record_stop", self._job_stop)

    async def started(self) -> None:
        """After the sources are loaded: resume interrupted recordings, start jobs and recorders."""
        now = time.time()
        for row in await self.db.fetchall("SELECT id, token, kind, origin, path, stop_at FROM record_sessions"):
            runtime = self.state.registry.get(row["token"])
            if runtime is None or (row["stop_at"] is not None and row["stop_at"] <= now + 1):
                await self.db.execute("DELETE FROM record_sessions WHERE id = ?", (row["id"],))
                continue
            session = Session(row["id"], row["token"], row["kind"], row["origin"], row["path"], row["stop_at"],
                              self._recorder(row["token"], row["kind"], row["path"], runtime))
            self.sessions[session.id] = session
            session.recorder.start()
            log.info("%s: %s recording resumed after a restart (%s)", session.token, session.origin, session.stem)
        await self.jobs.start()
        self.jobs.every("retention", self.settings.retention_interval, self.run_retention)
        self.jobs.every("record-reconcile", RECONCILE_SECONDS, self.reconcile)
        for token, text in self.schedules.items():
            self._schedule_jobs(token, text)
        await self.reconcile()
        self._spawn(self.run_retention())

    async def close(self) -> None:
        """Stop every recorder, keeping the sessions so a restart resumes them."""
        self.jobs.shutdown()
        recorders = [s.recorder for s in self.sessions.values()] + list(self.continuous.values())
        await asyncio.gather(*(r.stop() for r in recorders), return_exceptions=True)
        for task in self._tasks:
            task.cancel()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _fit_ring(self) -> None:
        """Hubs must hold the pre-record length (plus a GOP) in memory."""
        need = self.settings.pre_record_seconds + 2.0
        self.settings.ring_seconds = max(self.settings.ring_seconds, need)
        registry = getattr(self.state, "registry", None)
        for runtime in registry.sources.values() if registry else ():
            for stream in runtime.streams.values():
                stream.hub.ring_seconds = max(stream.hub.ring_seconds, need)

    # -- the recorders' sink -----------------------------------------------------------------------
    async def file_opened(self, recorder: Recorder, f: RecFile) -> None:
        f.row = await self.index.add_recording(recorder.token, recorder.kind, f.rel, f)
        self.errors.pop(recorder.token, None)

    async def file_closed(self, recorder: Recorder, f: RecFile) -> None:
        if f.duration <= 0:  # nothing but the init made it to disk
            self.index.live.pop(f.row, None)
            await self.db.execute("DELETE FROM recordings WHERE id = ?", (f.row,))
            await asyncio.to_thread(storage.remove_file, self.root, f.rel)
            return
        await self.index.finish_recording(f.row, f.start + f.duration, f.size)

    async def write_failed(self, recorder: Recorder, error: OSError) -> None:
        self.errors[recorder.token] = recorder.status
        self._spawn(self.run_retention())

    # -- sessions ----------------------------------------------------------------------------------
    def _runtime(self, token: str) -> Any:
        runtime = self.state.registry.get(token)
        if runtime is None:
            raise ApiError(f"no such source: {token}", 404)
        return runtime

    def _recorder(self, token: str, kind: str, stem: str, runtime: Any) -> Recorder:
        return Recorder(token, kind, runtime.main, self.root, lambda start: stem, self,
                        pre_record=self.settings.pre_record_seconds,
                        file_seconds=self.settings.record_file_seconds)

    async def start(self, token: str, origin: str, kind: str, stem: str, duration: float | None) -> Session:
        runtime = self._runtime(token)
        if sum(1 for s in self.sessions.values() if s.token == token) >= MAX_SESSIONS:
            raise ApiError(f"{token} already has {MAX_SESSIONS} recordings running", 429)
        taken = {s.stem for s in self.sessions.values()}  # their first file may not exist yet
        stem = await asyncio.to_thread(_free_stem, self.root, stem, taken)
        sid = uuid.uuid4().hex[:16]
        stop_at = time.time() + duration if duration else None
        await self.db.execute("INSERT INTO record_sessions (id, token, kind, origin, path, stop_at) "
                              "VALUES (?, ?, ?, ?, ?, ?)", (sid, token, kind, origin, stem, stop_at))
        if stop_at is not None:
            await self.jobs.at(f"stop-{sid}", stop_at, "record_stop", {"id": sid})
        session = Session(sid, token, kind, origin, stem, stop_at, self._recorder(token, kind, stem, runtime))
        self.sessions[sid] = session
        session.recorder.start()
        log.info("%s: %s started, %s%s", token, origin, stem, f" for {duration:g}s" if duration else "")
        return session

    async def extend(self, session: Session, duration: float) -> None:
        """PathRecord on a recording in progress: it goes on `duration` seconds longer."""
        session.stop_at = (session.stop_at or time.time()) + duration
        await self.db.execute("UPDATE record_sessions SET stop_at = ? WHERE id = ?", (session.stop_at, session.id))
        await self.jobs.at(f"stop-{session.id}", session.stop_at, "record_stop", {"id": session.id})
        log.info("%s: %s extended by %gs", session.token, session.stem, duration)

    async def stop_session(self, sid: str) -> Session | None:
        session = self.sessions.pop(sid, None)
        await self.db.execute("DELETE FROM record_sessions WHERE id = ?", (sid,))
        await self.jobs.cancel(f"stop-{sid}")
        if session is not None:
            await session.recorder.stop()
            log.info("%s: %s stopped (%s)", session.token, session.origin, ", ".join(session.recorder.files)
                     or "nothing recorded")
        return session

    async def _job_stop(self, args: dict[str, Any]) -> None:
        await self.stop_session(str(args.get("id", "")))

    def protected(self) -> set[str]:
        """Files retention must leave: those of running manual recordings and those being written."""
        keep = {f for s in self.sessions.values() if s.recorder.running for f in s.recorder.files}
        keep |= {r.current.rel for r in self.continuous.values() if r.current is not None}
        return keep

    # -- continuous and scheduled recording ------------------------------------------------------------
    def wants_continuous(self, runtime: Any, now: float) -> bool:
        token = runtime.config.token
        return bool(runtime.config.record) or (
            token in self.schedules and in_schedule(parse_schedule(self.schedules[token]), now))

    async def reconcile(self) -> None:
        """Start and stop continuous recorders to match bRec, schedules and the sources that exist."""
        async with self._lock:
            registry, now = self.state.registry, time.time()
            for token, rec in list(self.continuous.items()):
                runtime = registry.get(token)
                if runtime is None or not rec.running or not self.wants_continuous(runtime, now):
                    del self.continuous[token]
                    await rec.stop()
                    log.info("%s: continuous recording off", token)
            for token, runtime in list(registry.sources.items()):
                if token not in self.continuous and self.wants_continuous(runtime, now):
                    rec = Recorder(token, "H5_REC_SCHEDULE", runtime.main, self.root,
                                   lambda start, t=token: f"{storage.dated_dir('record', t, start)}/{int(start)}",
                                   self, pre_record=self.settings.pre_record_seconds,
                                   file_seconds=self.settings.record_file_seconds, resume_after_error=True)
                    self.continuous[token] = rec
                    rec.start()
                    log.info("%s: continuous recording on (%gs files)", token, self.settings.record_file_seconds)

    def _schedule_jobs(self, token: str, text: str) -> None:
        self.jobs.remove_prefix(f"sched-{token}-")
        for n, (day, first, last) in enumerate(parse_schedule(text)):
            for edge, minute in (("a", first), ("b", last)):
                weekday = (day + minute // 1440) % 7
                self.jobs.weekly(f"sched-{token}-{n}{edge}", self.reconcile, DAYS[weekday],
                                 (minute % 1440) // 60, minute % 60)

    async def set_policy(self, token: str, schedule: str | None = None, quota: int | None = None) -> None:
        if schedule is not None:
            parse_schedule(schedule)
            self.schedules[token] = schedule
            if not schedule:
                del self.schedules[token]
        if quota is not None:
            self.quotas[token] = quota
        await self.db.execute(
            "INSERT INTO record_policy (token, schedule, quota) VALUES (?, ?, ?) ON CONFLICT(token) DO UPDATE "
            "SET schedule = excluded.schedule, quota = excluded.quota",
            (token, self.schedules.get(token, ""), self.quotas.get(token, 0)))
        if schedule is not None:
            self._schedule_jobs(token, schedule)
            await self.reconcile()
        if quota:
            self._spawn(self.run_retention())

    async def set_conf(self, values: dict[str, float]) -> None:
        for name, value in values.items():
            setattr(self.settings, name, value)
            await self.db.execute("INSERT INTO record_conf (name, value) VALUES (?, ?) ON CONFLICT(name) "
                                  "DO UPDATE SET value = excluded.value", (name, str(value)))
        self._fit_ring()
        for rec in [*self.continuous.values(), *(s.recorder for s in self.sessions.values())]:
            rec.file_seconds = self.settings.record_file_seconds
        self._spawn(self.run_retention())

    async def run_retention(self) -> int:
        policy = Policy(self.settings.record_in_day, self.settings.snapshot_in_day,
                        self.settings.disk_auto_del_percent, dict(self.quotas))
        removed = await self.retention.run(policy)
        await asyncio.to_thread(_expire_archives, self.root / "archive", time.time() - ARCHIVE_KEEP_SECONDS)
        return removed

    # -- status ---------------------------------------------------------------------------------------
    def status(self, token: str) -> dict[str, Any]:
        recorders = [(s.origin, s.recorder) for s in self.sessions.values() if s.token == token]
        if token in self.continuous:
            recorders.append(("continuous", self.continuous[token]))
        running = [r for _, r in recorders if r.running]
        text = self.errors.get(token) or (running[0].status if running else "idle")
        return {
            "strToken": token, "bRecording": any(r.status == "recording" for r in running), "strStatus": text,
            "strSchedule": self.schedules.get(token, ""), "nQuotaByte": self.quotas.get(token, 0),
            "recording": [{"strOrigin": origin, "nType": r.kind, "strStatus": r.status,
                           "strPath": storage.http_path(r.current.rel) if r.current else "",
                           "strStartTime": storage.format_time(r.started)} for origin, r in recorders],
        }


def _free_stem(root: Path, stem: str, taken: set[str]) -> str:
    """The stem itself, or stem_1, stem_2 ... whichever names no file and no running recording (thread-side)."""
    for n in range(100):
        candidate = stem if n == 0 else f"{stem}_{n}"
        if candidate not in taken and not (root / f"{candidate}.mp4").exists():
            return candidate
    raise ApiError("too many recordings with this name", 409)


def _expire_archives(folder: Path, before: float) -> None:
    if not folder.is_dir():
        return
    for path in folder.glob("*/*.mp4"):
        if path.stat().st_mtime < before:
            path.unlink(missing_ok=True)


# -- endpoints ---------------------------------------------------------------------------------------------

def _service(request: Request | WebSocket) -> Recordings:
    return request.app.state.recordings


def _duration(request: Request, required: bool = True) -> float | None:
    if not required and not request.query_params.get("duration"):
        return None
    return param_number(request, "duration", low=1, high=MAX_DURATION)


def _filename(request: Request, required: bool) -> str:
    name = param(request, "filename", required=required, maxlen=80)
    try:
        return storage.check_name(name) if name else ""
    except BadValue as e:
        raise ApiError(str(e)) from None


def _path_dir(request: Request, kind: str, token: str) -> str:
    start1 = param(request, "start1", maxlen=16)
    start2 = param(request, "start2", maxlen=16)
    tz = request.query_params.get("tz", "")
    if len(tz) > 8:
        raise ApiError("invalid tz")
    try:
        return storage.path_dir(kind, token, start1, start2, tz)
    except BadValue as e:
        raise ApiError(str(e)) from None


def _kind(request: Request, default: str) -> str:
    value = param(request, "type", required=False, default=default, maxlen=16).lower()
    kinds = {"manual": "H5_REC_MANUAL", "alarm": "H5_REC_ALARM", "h5_rec_manual": "H5_REC_MANUAL",
             "h5_rec_alarm": "H5_REC_ALARM"}
    if value not in kinds:
        raise ApiError("invalid type: use manual or alarm")
    return kinds[value]


def _started(session: Session, message: str) -> dict[str, Any]:
    return ok(message, strPath=storage.http_path(session.stem + ".mp4"), strRecordId=session.id)


@endpoint(role="Operator")
async def record(request: Request, user: User) -> Any:
    token = param_token(request)
    duration = _duration(request)
    name = _filename(request, False) or str(int(time.time()))
    stem = f"{storage.dated_dir('record', token, time.time())}/{name}"
    session = await _service(request).start(token, "Record", "H5_REC_MANUAL", stem, duration)
    return _started(session, "Record successfully")


@endpoint(role="Operator")
async def manual_record_start(request: Request, user: User) -> Any:
    token = param_token(request)
    duration = _duration(request, required=False)
    service = _service(request)
    service._runtime(token)
    for session in service.sessions.values():
        if session.token == token and session.origin == "ManualRecordStart" and session.recorder.running:
            return _started(session, "Already recording")
    stem = f"{storage.dated_dir('record', token, time.time())}/{int(time.time())}"
    session = await service.start(token, "ManualRecordStart", "H5_REC_MANUAL", stem, duration)
    return _started(session, "Record start successfully")


@endpoint(role="Operator")
async def manual_record_stop(request: Request, user: User) -> Any:
    token = param_token(request)
    service = _service(request)
    service._runtime(token)
    stopped = [await service.stop_session(s.id) for s in list(service.sessions.values())
               if s.token == token and s.origin != "PathRecord"]  # path recordings end at their own time
    files = [storage.http_path(f) for s in stopped if s for f in s.recorder.files]
    return ok("Record stop successfully" if stopped else "Not recording", strPath=files)


@endpoint(role="Operator")
async def path_record(request: Request, user: User) -> Any:
    token = param_token(request)
    stem = f"{_path_dir(request, 'record', token)}/{_filename(request, True)}"
    duration = _duration(request)
    assert duration is not None
    always = param_bool(request, "alwayscreate", False)
    kind = _kind(request, "manual")
    service = _service(request)
    service._runtime(token)
    if not always:
        for session in service.sessions.values():
            if session.token == token and session.origin == "PathRecord" and session.recorder.running:
                await service.extend(session, duration)
                return _started(session, "Record extended")
    session = await service.start(token, "PathRecord", kind, stem, duration)
    return _started(session, "Record successfully")


async def _snapshot(request: Request, token: str, stem: str) -> dict[str, Any]:
    service = _service(request)
    stream = service._runtime(token).main
    hub = stream.acquire()
    try:
        if not await hub.wait_ready(READY_TIMEOUT):
            raise ApiError(f"{token} is offline: no picture to save", 503)
        jpeg = await request.app.state.snapshots.get(hub)
    except SnapshotError as e:
        raise ApiError(f"cannot decode a picture: {e}", 503) from None
    finally:
        stream.release()
    taken = time.time()
    try:
        rel = await asyncio.to_thread(storage.write_new, service.root, stem, "jpg", jpeg)
    except OSError as e:
        log.warning("%s: snapshot not saved: %s", token, e.strerror)
        raise ApiError(f"snapshot not saved: {e.strerror}", 507) from None
    await service.index.add_snapshot(token, taken, rel, len(jpeg))
    log.info("%s: snapshot saved to %s", token, rel)
    return ok("Snapshot successfully", strPath=storage.http_path(rel))


@endpoint(role="Operator")
async def snapshot(request: Request, user: User) -> Any:
    token = param_token(request)
    name = _filename(request, False) or str(int(time.time() * 1000))
    return await _snapshot(request, token, f"{storage.dated_dir('snapshot', token, time.time())}/{name}")


@endpoint(role="Operator")
async def path_snapshot(request: Request, user: User) -> Any:
    token = param_token(request)
    stem = f"{_path_dir(request, 'snapshot', token)}/{_filename(request, True)}"
    return await _snapshot(request, token, stem)


def _time(request: Request | WebSocket, name: str, default: float | None) -> tuple[float, int | None]:
    value = request.query_params.get(name, "")
    if not value:
        if default is None:
            raise ApiError(f"missing parameter: {name}")
        return default, None
    if len(value) > 40:
        raise ApiError(f"invalid time: {name}")
    try:
        return storage.parse_time(value)
    except BadValue as e:
        raise ApiError(f"{name}: {e}") from None


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
    service = _service(request)
    if kind == "snapshot":
        rows = await service.index.snapshots(token, start, end)
        found = [{"strToken": r["token"], "strStartTime": storage.format_time(r["taken"], offset),
                  "strPath": storage.http_path(r["path"]), "nSize": r["size"],
                  "nStartTimeMs": math.floor(r["taken"] * 1000)} for r in rows]
        return {"record": found, "snapshot": found}
    return {"record": [r.describe(offset) for r in await service.index.recordings(token, start, end)]}


@endpoint(role="Administrator")
async def set_record(request: Request, user: User) -> Any:
    token = param_token(request)
    enable = param_bool(request, "enable", True)
    registry = request.app.state.registry
    if registry.get(token) is None:
        raise ApiError(f"no such source: {token}", 404)
    await registry.update(token, record=enable)
    await _service(request).reconcile()
    return ok("Continuous recording on" if enable else "Continuous recording off")


@endpoint()
async def get_record_status(request: Request, user: User) -> Any:
    token = param_token(request, required=False)
    service = _service(request)
    tokens = [token] if token else list(request.app.state.registry.sources)
    for t in tokens:
        service._runtime(t)
    out = []
    for t in tokens:
        entry = service.status(t)
        entry["bRec"] = bool(request.app.state.registry.get(t).config.record)
        out.append(entry)
    return {"src": out}


@endpoint(role="Administrator")
async def set_record_schedule(request: Request, user: User) -> Any:
    token = param_token(request)
    text = param(request, "schedule", required=False, maxlen=1024)
    _service(request)._runtime(token)
    try:
        await _service(request).set_policy(token, schedule=text)
    except BadValue as e:
        raise ApiError(str(e)) from None
    return ok("Schedule set" if text else "Schedule removed")


@endpoint(role="Administrator")
async def set_record_quota(request: Request, user: User) -> Any:
    token = param_token(request)
    megabytes = param_number(request, "quota", low=0, high=2**30)
    _service(request)._runtime(token)
    await _service(request).set_policy(token, quota=int(megabytes * 2**20))
    return ok("Quota set" if megabytes else "Quota removed")


def _conf(service: Recordings) -> dict[str, Any]:
    s = service.settings
    return {field: (int(v) if float(v).is_integer() else v) for field, v in
            ((f, getattr(s, name)) for f, name, _, _ in CONF.values())}


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
    usage = await service.index.usage()
    now = time.time()
    sources = []
    for token in sorted(set(usage) | set(request.app.state.registry.sources)):
        u = usage.get(token, {})
        oldest = u.get("oldest")
        sources.append({"strToken": token, "nRecordByte": u.get("record", 0), "nRecordFiles": u.get("files", 0),
                        "nSnapshotByte": u.get("snapshot", 0), "nSnapshotFiles": u.get("snapshots", 0),
                        "fDaysHeld": round((now - oldest) / 86400, 3) if oldest else 0,
                        "strOldest": storage.format_time(oldest) if oldest else "",
                        "nQuotaByte": service.quotas.get(token, 0), "strStatus": service.status(token)["strStatus"]})
    return {"nTotalByte": disk.total, "nFreeByte": disk.free, "nUsedByte": disk.used,
            "nUsedPercent": round(100 * disk.used / disk.total, 1) if disk.total else 0,
            **_conf(service), "src": sources}


def _disk_usage(root: Path) -> Any:
    root.mkdir(parents=True, exist_ok=True)
    return shutil.disk_usage(root)


# -- clip export -------------------------------------------------------------------------------------------

async def _export(request: Request, token: str, begin: float, end: float) -> dict[str, Any]:
    service = _service(request)
    if end <= begin or end - begin > MAX_DURATION:
        raise ApiError("invalid range: end must be after start, at most 7 days")
    rows = await service.index.recordings(token, begin, end)
    if not rows:
        raise ApiError("no recording in this range", 404)
    spans = [Span(r.start, r.end, service.root / r.path) for r in rows]
    name = f"{token}-{int(begin)}-{int(end - begin)}-{uuid.uuid4().hex[:6]}"
    rel = f"archive/{token}/{name}.mp4"
    progress = Export()
    service.exports[name] = (token, progress)

    async def work() -> None:
        try:
            await asyncio.to_thread(export_clip, spans, begin, end, service.root / rel, progress)
            log.info("%s: clip %s exported (%.1fs)", token, rel, progress.duration)
        except (OSError, ValueError) as e:
            progress.error = f"export failed: {e}"
            log.warning("%s: clip %s failed: %s", token, rel, e)
        progress.done = True
        if not progress.error or progress.duration:
            progress.percent = 100

    service._spawn(work())
    return ok("Archive started", strFileName=name, strUrl=storage.http_path(rel))


def _clock_time(request: Request) -> float:
    """Archive's start1 (Y-M-D) and start2 (H-M-S), in `tz` or the server's zone."""
    tz = request.query_params.get("tz", "")
    if len(tz) > 8:
        raise ApiError("invalid tz")
    try:
        return storage.clock_time(param(request, "start1", maxlen=16), param(request, "start2", maxlen=16), tz)
    except BadValue as e:
        raise ApiError(str(e)) from None


@endpoint(role="Operator")
async def archive(request: Request, user: User) -> Any:
    token = param_token(request)
    begin = _clock_time(request)
    duration = _duration(request)
    assert duration is not None
    return await _export(request, token, begin, begin + duration)


@endpoint(role="Operator")
async def export_clip_call(request: Request, user: User) -> Any:
    token = param_token(request)
    begin = _time(request, "start", None)[0]
    end = _time(request, "end", None)[0]
    return await _export(request, token, begin, end)


@endpoint()
async def get_archive_status(request: Request, user: User) -> Any:
    token = param_token(request)
    name = param(request, "filename", maxlen=120)
    found = _service(request).exports.get(name)
    if found is None or found[0] != token:
        raise ApiError(f"no such archive: {name[:80]}", 404)
    progress = found[1]
    if progress.error and not progress.duration:
        return fail(progress.error, 500 if progress.done else 409, strFileName=name)
    return ok(progress.error or ("Archive done" if progress.done else "Archive in progress"),
              nPercentage=progress.percent, strFileName=name,
              strUrl=storage.http_path(f"archive/{token}/{name}.mp4"))


# -- the media store over HTTP, the page, playback -------------------------------------------------------------

MEDIA_TYPES = {".mp4": "video/mp4", ".jpg": "image/jpeg"}


async def media_file(request: Request) -> Response:
    """/mediastore/<path> exactly as Search returns it, behind the session, with byte ranges."""
    if request.app.state.auth.check(session_of(request)) is None:
        return fail("session is missing, invalid or expired", 401)
    root = _service(request).root
    try:
        path = await asyncio.to_thread(storage.resolve, root, request.path_params["path"])
    except BadValue:
        return fail("invalid path", 400)
    if path.suffix not in MEDIA_TYPES or not await asyncio.to_thread(path.is_file):
        return fail("file not found", 404)
    return FileResponse(path, media_type=MEDIA_TYPES[path.suffix], headers={"Cache-Control": "no-cache"})


async def recordings_page(request: Request) -> Response:
    return TEMPLATES.TemplateResponse(request, "recordings.html", {"version": request.app.state.version})


async def _close(ws: WebSocket, code: int, reason: str) -> None:
    await ws.accept()
    await ws.close(code=code, reason=reason[:120])


async def playback_ws(ws: WebSocket, user: User) -> None:
    """h5swsapi?playback=true&serverpb=true&token&begintime&endtime[&filename]: recordings as live video."""
    service = _service(ws)
    q = ws.query_params
    token = q.get("token", "")
    if not TOKEN_RE.match(token):
        return await _close(ws, 4404, "invalid token")
    if q.get("serverpb", "false").lower() != "true":
        return await _close(ws, 4415, "only playback of this server's recordings (serverpb=true) is supported")
    filename = q.get("filename", "")
    try:
        if q.get("begintime", "0") in ("", "0") and filename not in ("", "fake"):
            rows = await _single_file(service, token, filename)
            begin, end, offset = rows[0].start, rows[0].end + 1, None
        else:
            begin, offset = _time(ws, "begintime", None)
            end = _time(ws, "endtime", None)[0]
            if end <= begin:
                raise ApiError("endtime must be after begintime")
            rows = await service.index.recordings(token, begin, end)
    except ApiError as e:
        return await _close(ws, 4400, e.code)

    def spans(found: list[storage.Recording]) -> list[Span]:
        return [Span(r.start, r.end, service.root / r.path, r.open and r.id in service.index.live) for r in found]

    async def refresh(span: Span) -> list[Span]:
        return spans(await service.index.recordings(token, span.start, end))

    player = Playback(ws, spans(rows), begin, end, lambda t: storage.format_time(t, offset), refresh,
                      f"{token}/playback")
    try:
        await ws.accept()
        log.info("%s: playback of %s .. %s for %s", token, storage.format_time(begin, offset),
                 storage.format_time(end, offset), user.name)
        await player.run()
    except (WebSocketDisconnect, RuntimeError, ConnectionError):
        pass


async def _single_file(service: Recordings, token: str, filename: str) -> list[storage.Recording]:
    """The file named by `filename`: a strPath from Search, or just its name."""
    rel = filename.removeprefix("/mediastore/")
    if "/" in rel:
        found = await service.index.recording_by_path(rel)
    else:
        row = await service.db.fetchone("SELECT path FROM recordings WHERE token = ? AND path LIKE ? "
                                        "ORDER BY start_ts DESC", (token, "%/" + rel.replace("%", "")))
        found = await service.index.recording_by_path(row["path"]) if row else None
    if found is None or found.token != token:
        raise ApiError("no such recording")
    return [found]


# -- wiring ---------------------------------------------------------------------------------------------------

async def install(app: Any) -> None:
    state = app.state
    service = Recordings(state)
    await service.open()
    state.recordings = service
    state.playback_ws = playback_ws
    load = state.registry.load

    async def load_then_start() -> None:
        # Recorders need the sources, which app.py loads right after install(): start them then.
        await load()
        await service.started()

    state.registry.load = load_then_start


async def uninstall(app: Any) -> None:
    service = getattr(app.state, "recordings", None)
    if service is not None:
        await service.close()


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
    Route("/api/v1/Archive", archive),
    Route("/api/v1/ExportClip", export_clip_call),
    Route("/api/v1/GetArchiveStatus", get_archive_status),
    Route("/mediastore/{path:path}", media_file),
    Route("/recordings", recordings_page),
]
