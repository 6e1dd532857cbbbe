"""Timed work: APScheduler 3 (AsyncIOScheduler), and the recording service built on it.

One-off jobs that must survive a restart (the stop of a timed recording) are rows in SQLite: the
scheduler's own store stays in memory and the rows are turned back into jobs at start, where one that
fell due while the server was down runs at once. Periodic jobs (retention, weekly schedules) are not
stored: they are re-created from settings at every start.

Recordings decides which recorders run (Record, ManualRecordStart, PathRecord sessions; continuous and
scheduled recording per source), keeps their index rows, their stored stops and retention. Running
sessions are rows too: after a restart, a recording cut short by a crash is closed at its real length
and, if its time is not up, goes on in a new file.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.date import DateTrigger
from apscheduler.triggers.interval import IntervalTrigger

from supervisor.api.common import ApiError
from supervisor.db import Database
from workers import reindex, storage
from workers.playback import Export
from workers.recorder import RecFile, Recorder, repair_file
from workers.storage import BadValue, Policy, RecordIndex, Retention

log = logging.getLogger("h5gate.jobs")
logging.getLogger("apscheduler").setLevel(logging.WARNING)  # it logs every run of every job at INFO

Action = Callable[[dict[str, Any]], Awaitable[None]]
MAX_SESSIONS = 8  # timed/manual recordings of one source at once
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


class Jobs:
    def __init__(self, db: Database) -> None:
        self.db = db
        self.scheduler = AsyncIOScheduler(job_defaults={"coalesce": True, "max_instances": 1})
        self.actions: dict[str, Action] = {}

    def register(self, action: str, fn: Action) -> None:
        """Name what a stored job does; names, not functions, are what the rows keep."""
        self.actions[action] = fn

    async def start(self) -> None:
        self.scheduler.start()
        rows = await self.db.fetchall("SELECT id, action, run_at, args FROM jobs")
        for row in rows:
            self._schedule(row["id"], row["action"], row["run_at"], json.loads(row["args"]))
        if rows:
            log.info("%d stored jobs re-created", len(rows))

    def shutdown(self) -> None:
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)

    async def at(self, job_id: str, run_at: float, action: str, args: dict[str, Any]) -> None:
        """Run `action(args)` once at `run_at` (Unix time), also if the server restarts in between."""
        await self.db.execute(
            "INSERT INTO jobs (id, action, run_at, args) VALUES (?, ?, ?, ?) ON CONFLICT(id) DO UPDATE "
            "SET action = excluded.action, run_at = excluded.run_at, args = excluded.args",
            (job_id, action, run_at, json.dumps(args)),
        )
        self._schedule(job_id, action, run_at, args)

    async def cancel(self, job_id: str) -> None:
        await self.db.execute("DELETE FROM jobs WHERE id = ?", (job_id,))
        self.remove(job_id)

    def remove(self, job_id: str) -> None:
        if self.scheduler.get_job(job_id) is not None:
            self.scheduler.remove_job(job_id)

    def every(self, job_id: str, seconds: float, fn: Callable[[], Awaitable[Any]]) -> None:
        self.scheduler.add_job(fn, IntervalTrigger(seconds=seconds), id=job_id, replace_existing=True)

    def weekly(self, job_id: str, fn: Callable[[], Awaitable[Any]], day_of_week: str, hour: int, minute: int) -> None:
        """Run fn at a time of given weekdays (`mon,tue` ...), in the server's zone."""
        trigger = CronTrigger(day_of_week=day_of_week, hour=hour, minute=minute)
        self.scheduler.add_job(fn, trigger, id=job_id, replace_existing=True)

    def remove_prefix(self, prefix: str) -> None:
        for job in self.scheduler.get_jobs():
            if job.id.startswith(prefix):
                job.remove()

    def _schedule(self, job_id: str, action: str, run_at: float, args: dict[str, Any]) -> None:
        when = datetime.fromtimestamp(max(run_at, time.time()), tz=UTC)
        self.scheduler.add_job(
            self._run,
            DateTrigger(run_date=when),
            args=[job_id, action, args],
            id=job_id,
            replace_existing=True,
            misfire_grace_time=None,
        )

    async def _run(self, job_id: str, action: str, args: dict[str, Any]) -> None:
        await self.db.execute("DELETE FROM jobs WHERE id = ?", (job_id,))
        fn = self.actions.get(action)
        if fn is None:
            log.warning("job %s: unknown action %s, dropped", job_id, action)
            return
        try:
            await fn(args)
        except Exception:
            log.exception("job %s (%s) failed", job_id, action)


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
        self._reindex_lock = asyncio.Lock()
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
        row = await self.db.fetchone(
            "SELECT EXISTS (SELECT 1 FROM recordings) AS r, EXISTS (SELECT 1 FROM snapshots) AS s"
        )
        empty = [folder for folder, has in (("record", row["r"]), ("snapshot", row["s"])) if not has]
        if empty:  # a new or lost database: what the store holds is indexed again, in the background
            self._spawn(self._reindex_at_start(empty))
        self.jobs.register("record_stop", self._job_stop)

    async def started(self) -> None:
        """After the sources are loaded: resume interrupted recordings, start jobs and recorders."""
        now = time.time()
        for row in await self.db.fetchall("SELECT id, token, kind, origin, path, stop_at FROM record_sessions"):
            runtime = self.state.registry.get(row["token"])
            if runtime is None or (row["stop_at"] is not None and row["stop_at"] <= now + 1):
                await self.db.execute("DELETE FROM record_sessions WHERE id = ?", (row["id"],))
                continue
            session = Session(
                row["id"],
                row["token"],
                row["kind"],
                row["origin"],
                row["path"],
                row["stop_at"],
                self._recorder(row["token"], row["kind"], row["path"], runtime),
            )
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
        return Recorder(
            token,
            kind,
            runtime.main,
            self.root,
            lambda start: stem,
            self,
            pre_record=self.settings.pre_record_seconds,
            file_seconds=self.settings.record_file_seconds,
        )

    async def start(self, token: str, origin: str, kind: str, stem: str, duration: float | None) -> Session:
        runtime = self._runtime(token)
        if sum(1 for s in self.sessions.values() if s.token == token) >= MAX_SESSIONS:
            raise ApiError(f"{token} already has {MAX_SESSIONS} recordings running", 429)
        taken = {s.stem for s in self.sessions.values()}  # their first file may not exist yet
        stem = await asyncio.to_thread(_free_stem, self.root, stem, taken)
        sid = uuid.uuid4().hex[:16]
        stop_at = time.time() + duration if duration else None
        await self.db.execute(
            "INSERT INTO record_sessions (id, token, kind, origin, path, stop_at) VALUES (?, ?, ?, ?, ?, ?)",
            (sid, token, kind, origin, stem, stop_at),
        )
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
            log.info(
                "%s: %s stopped (%s)",
                session.token,
                session.origin,
                ", ".join(session.recorder.files) or "nothing recorded",
            )
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
            token in self.schedules and in_schedule(parse_schedule(self.schedules[token]), now)
        )

    async def reconcile(self) -> None:
        """Start and stop continuous recorders to match bRec, schedules and the sources that exist."""
        async with self._lock:
            registry, now = self.state.registry, time.time()
            for session in list(self.sessions.values()):
                if registry.get(session.token) is None:  # its source was deleted
                    await self.stop_session(session.id)
            for token, rec in list(self.continuous.items()):
                runtime = registry.get(token)
                if runtime is None or not rec.running or not self.wants_continuous(runtime, now):
                    del self.continuous[token]
                    await rec.stop()
                    log.info("%s: continuous recording off", token)
            for token, runtime in list(registry.sources.items()):
                if token not in self.continuous and self.wants_continuous(runtime, now):
                    rec = Recorder(
                        token,
                        "H5_REC_SCHEDULE",
                        runtime.main,
                        self.root,
                        lambda start, t=token: f"{storage.dated_dir('record', t, start)}/{int(start)}",
                        self,
                        pre_record=self.settings.pre_record_seconds,
                        file_seconds=self.settings.record_file_seconds,
                        resume_after_error=True,
                    )
                    self.continuous[token] = rec
                    rec.start()
                    log.info("%s: continuous recording on (%gs files)", token, self.settings.record_file_seconds)

    def _schedule_jobs(self, token: str, text: str) -> None:
        self.jobs.remove_prefix(f"sched-{token}-")
        for n, (day, first, last) in enumerate(parse_schedule(text)):
            for edge, minute in (("a", first), ("b", last)):
                weekday = (day + minute // 1440) % 7
                self.jobs.weekly(
                    f"sched-{token}-{n}{edge}", self.reconcile, DAYS[weekday], (minute % 1440) // 60, minute % 60
                )

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
            (token, self.schedules.get(token, ""), self.quotas.get(token, 0)),
        )
        if schedule is not None:
            self._schedule_jobs(token, schedule)
            await self.reconcile()
        if quota:
            self._spawn(self.run_retention())

    async def set_conf(self, values: dict[str, float]) -> None:
        for name, value in values.items():
            setattr(self.settings, name, value)
            await self.db.execute(
                "INSERT INTO record_conf (name, value) VALUES (?, ?) ON CONFLICT(name) "
                "DO UPDATE SET value = excluded.value",
                (name, str(value)),
            )
        self._fit_ring()
        for rec in [*self.continuous.values(), *(s.recorder for s in self.sessions.values())]:
            rec.file_seconds = self.settings.record_file_seconds
        self._spawn(self.run_retention())

    async def _reindex_at_start(self, folders: list[str]) -> None:
        try:
            await self.reindex(folders, drop_missing=False)
        except Exception:
            log.exception("the index could not be rebuilt from the media store")

    async def reindex(self, folders: list[str] | None = None, drop_missing: bool = True) -> dict[str, int]:
        """Index the media files that have no row (paths, times, fragments read in a thread); with
        drop_missing, forget rows whose files are gone. Rows that exist keep their values (the
        recorder's are more exact than what a path tells); files being written are left alone."""
        folders = list(reindex.FOLDERS) if folders is None else folders
        async with self._reindex_lock, self.retention.lock:
            began = time.monotonic()
            recs, shots = await self.index.indexed_paths()
            cancel = threading.Event()
            try:
                scan = await asyncio.to_thread(reindex.scan, self.root, set(recs) | set(shots), folders, cancel=cancel)
            except asyncio.CancelledError:
                cancel.set()  # the thread stops at its next file
                raise
            added, shots_added = await self.index.add_found(
                [(r.token, r.kind, r.path, r.start, r.end, r.size) for r in scan.recordings],
                [(s.token, s.taken, s.path, s.size) for s in scan.snapshots],
            )
            removed = 0
            if drop_missing:
                keep = self.protected()
                gone_recs = [
                    i
                    for path, i in recs.items()
                    if path.split("/", 1)[0] in scan.folders and path not in scan.present and path not in keep
                ]
                gone_shots = [i for path, i in shots.items() if "snapshot" in scan.folders and path not in scan.present]
                await self.index.drop_rows(gone_recs, gone_shots)
                removed = len(gone_recs) + len(gone_shots)
            indexed = sum(1 for path in scan.present if path in recs or path in shots) + added + shots_added
            if added or shots_added or removed or scan.skipped:
                log.info(
                    "index rebuilt from the media store in %.1fs: %d recordings and %d snapshots added, "
                    "%d rows of missing files removed, %d files skipped",
                    time.monotonic() - began,
                    added,
                    shots_added,
                    removed,
                    scan.skipped,
                )
            return {"files": indexed, "added": added + shots_added, "removed": removed, "skipped": scan.skipped}

    async def run_retention(self) -> int:
        policy = Policy(
            self.settings.record_in_day,
            self.settings.snapshot_in_day,
            self.settings.disk_auto_del_percent,
            dict(self.quotas),
        )
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
            "strToken": token,
            "bRecording": any(r.status == "recording" for r in running),
            "strStatus": text,
            "strSchedule": self.schedules.get(token, ""),
            "nQuotaByte": self.quotas.get(token, 0),
            "recording": [
                {
                    "strOrigin": origin,
                    "nType": r.kind,
                    "strStatus": r.status,
                    "strPath": storage.http_path(r.current.rel) if r.current else "",
                    "strStartTime": storage.format_time(r.started),
                }
                for origin, r in recorders
            ],
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
