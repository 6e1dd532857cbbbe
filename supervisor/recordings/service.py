"""The recording service: which recordings run, their index rows, their timed stops, snapshots, exports, retention.

Recordings decides which recorders run (Record, ManualRecordStart, PathRecord sessions; continuous and
scheduled recording per source), keeps their index rows, their stored stops and retention. Running
sessions are rows too: after a restart, a recording cut short by a crash is closed at its real length
and, if its time is not up, goes on in a new file. The API (supervisor/api/records.py) turns requests
into calls of the public methods here and answers into the manual's fields.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from supervisor.config import Settings
from supervisor.db import Database
from supervisor.errors import BadValue, Busy, Conflict, NotFound
from supervisor.jobs import Jobs
from supervisor.recordings import paths, reindex
from supervisor.recordings.index import RecordIndex, Recording, Snapshot
from supervisor.recordings.limits import RateLimit, trim_archives
from supervisor.recordings.retention import Policy, Retention
from supervisor.recordings.schedule import DAYS, in_schedule, parse_schedule
from supervisor.registry import Registry, SourceRuntime, Stream
from workers.playback import Export, Span, export_clip
from workers.recorder import RecFile, Recorder, repair_file

log = logging.getLogger("h5gate.jobs")

MAX_SESSIONS = 8  # timed/manual recordings of one source at once
MAX_EXPORT = 7 * 86400
RECONCILE_SECONDS = 60.0
MAX_RUNNING_EXPORTS = 2  # clips being written at once, for all users
# SetRecordConf parameter -> (GetRecordConf field, settings field, lowest, highest)
CONF = {
    "recordduration": ("nRecordDuration", "record_file_seconds", 1, 3600),
    "recordinday": ("nRecordInDay", "record_in_day", 1, 3650),
    "snapshotinday": ("nSnapshotInDay", "snapshot_in_day", 1, 3650),
    "diskautodelpercent": ("nDiskAutoDelPercent", "disk_auto_del_percent", 1, 99),
    "prerecordlength": ("nPreRecordLength", "pre_record_seconds", 0, 30),
}


@dataclass
class RecordStatus:
    """GetRecordStatus of one source, before the API names its fields."""

    token: str
    recording: bool  # a recorder is writing now
    text: str  # "recording", "idle", or why its recording last stopped on its own
    schedule: str
    quota: int  # bytes, 0 = none
    recorders: list[tuple[str, Recorder]]  # (origin: Record, ..., continuous) of each, running or not


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

    def __init__(self, settings: Settings, db: Database, registry: Registry) -> None:
        self.settings = settings
        self.root: Path = settings.media_store
        self.db = db
        self.registry = registry
        self.index = RecordIndex(self.db, self.root)
        self.retention = Retention(self.index, self.protected)
        self.jobs = Jobs(self.db)
        self.sessions: dict[str, Session] = {}
        self.continuous: dict[str, Recorder] = {}
        self.schedules: dict[str, str] = {}
        self.quotas: dict[str, int] = {}
        self.errors: dict[str, str] = {}  # token -> why its recording last stopped on its own
        self.exports: dict[str, tuple[str, Export]] = {}  # file name -> (token, progress)
        self.snapshot_rate = RateLimit("snapshots", settings.media_rate_per_minute)
        self.export_rate = RateLimit("exports", settings.media_rate_per_minute)
        self._lock = asyncio.Lock()
        self._reindex_lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[Any]] = set()
        # told of each file started or finished and of a recorder stopped by a full disk (the event socket)
        self.notify: Callable[[str, str, dict[str, Any]], object] | None = None

    def _notify(self, kind: str, token: str, **detail: Any) -> None:
        if self.notify is not None:
            self.notify(kind, token, detail)

    # -- lifecycle ---------------------------------------------------------------------------------
    async def open(self) -> None:
        for row in await self.db.fetchall("SELECT name, value FROM record_conf"):
            if row["name"] in {f for _, f, _, _ in CONF.values()}:
                setattr(self.settings, row["name"], float(row["value"]))
        # SetRecordConf takes fractions (and the stored values are read back as floats): float from here on
        setattr(self.settings, "record_file_seconds", float(self.settings.record_file_seconds))  # noqa: B010
        self._fit_ring()
        for row in await self.db.fetchall("SELECT token, schedule, quota FROM record_policy"):
            if row["schedule"]:
                self.schedules[row["token"]] = row["schedule"]
            if row["quota"]:
                self.quotas[row["token"]] = row["quota"]
        recovered = await self.index.recover(repair_file)
        if recovered:
            log.info("%d recordings interrupted by a crash were closed and indexed", recovered)
        held = await self.db.fetchone(
            "SELECT EXISTS (SELECT 1 FROM recordings) AS r, EXISTS (SELECT 1 FROM snapshots) AS s"
        )
        assert held is not None
        empty = [folder for folder, has in (("record", held["r"]), ("snapshot", held["s"])) if not has]
        if empty:  # a new or lost database: what the store holds is indexed again, in the background
            self._spawn(self._reindex_at_start(empty))
        self.jobs.register("record_stop", self._job_stop)

    async def started(self) -> None:
        """After the sources are loaded: resume interrupted recordings, start jobs and recorders."""
        now = time.time()
        for row in await self.db.fetchall("SELECT id, token, kind, origin, path, stop_at FROM record_sessions"):
            runtime = self.registry.get(row["token"])
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

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _fit_ring(self) -> None:
        """Hubs must hold the pre-record length (plus a GOP) in memory."""
        need = self.settings.pre_record_seconds + 2.0
        self.settings.ring_seconds = max(self.settings.ring_seconds, need)
        for runtime in self.registry.sources.values():
            for stream in runtime.streams.values():
                stream.hub.ring_seconds = max(stream.hub.ring_seconds, need)

    # -- the recorders' sink -----------------------------------------------------------------------
    async def file_opened(self, recorder: Recorder, f: RecFile) -> None:
        f.row = await self.index.add_recording(recorder.token, recorder.kind, f.rel, f)
        self.errors.pop(recorder.token, None)
        self._notify("record_start", recorder.token, strPath=paths.http_path(f.rel), strKind=recorder.kind)

    async def file_closed(self, recorder: Recorder, f: RecFile) -> None:
        self._notify("record_stop", recorder.token, strPath=paths.http_path(f.rel), nDuration=round(f.duration, 3))
        if f.duration <= 0:  # nothing but the init made it to disk
            self.index.live.pop(f.row, None)
            await self.db.execute("DELETE FROM recordings WHERE id = ?", (f.row,))
            await asyncio.to_thread(paths.remove_file, self.root, f.rel)
            return
        await self.index.finish_recording(f.row, f.start + f.duration, f.size)

    async def write_failed(self, recorder: Recorder, error: OSError) -> None:
        self.errors[recorder.token] = recorder.status
        if recorder.status == "disk full":
            self._notify("disk_full", recorder.token, strStorage=str(self.root))
        self._spawn(self.run_retention())

    # -- sessions ----------------------------------------------------------------------------------
    def source(self, token: str) -> SourceRuntime:
        """The source a request names, which must exist."""
        runtime = self.registry.get(token)
        if runtime is None:
            raise NotFound(f"no such source: {token}")
        return runtime

    def _recorder(self, token: str, kind: str, stem: str, runtime: SourceRuntime) -> Recorder:
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
        runtime = self.source(token)
        if sum(1 for s in self.sessions.values() if s.token == token) >= MAX_SESSIONS:
            raise Busy(f"{token} already has {MAX_SESSIONS} recordings running")
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

    def check_duration(self, duration: float | None) -> None:
        """A recording may be asked to run at most record_max_seconds (endless ones fill the disk)."""
        cap = self.settings.record_max_seconds
        if duration is not None and duration > cap:
            raise BadValue(f"duration too long: at most {cap} seconds (record_max_seconds)")

    async def extend(self, session: Session, duration: float) -> bool:
        """PathRecord on a recording in progress: it goes on `duration` seconds longer, but never ends
        more than record_max_seconds from now; True when that cap cut the extension short."""
        now = time.time()
        wanted = (session.stop_at or now) + duration
        limit = now + self.settings.record_max_seconds
        capped = wanted > limit
        session.stop_at = min(wanted, limit)
        await self.db.execute("UPDATE record_sessions SET stop_at = ? WHERE id = ?", (session.stop_at, session.id))
        await self.jobs.at(f"stop-{session.id}", session.stop_at, "record_stop", {"id": session.id})
        log.info("%s: %s extended by %gs%s", session.token, session.stem, duration, " (capped)" if capped else "")
        return capped

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

    def running_session(self, token: str, origin: str) -> Session | None:
        """The running recording of a source that `origin` (ManualRecordStart, PathRecord) started, if any."""
        self.source(token)
        for session in self.sessions.values():
            if session.token == token and session.origin == origin and session.recorder.running:
                return session
        return None

    async def stop_manual(self, token: str, everything: bool = False) -> list[Session]:
        """ManualRecordStop: every recording of the source someone asked for, except PathRecord's (those
        end at their own time) unless `everything` (an Administrator's stop ends them too, for good: the
        row goes, so a restart does not resume it)."""
        self.source(token)
        stopped = [
            await self.stop_session(s.id)
            for s in list(self.sessions.values())
            if s.token == token and (everything or s.origin != "PathRecord")
        ]
        return [s for s in stopped if s is not None]

    async def _job_stop(self, args: dict[str, Any]) -> None:
        await self.stop_session(str(args.get("id", "")))

    def protected(self) -> set[str]:
        """Files retention must leave: those of running manual recordings and those being written."""
        keep = {f for s in self.sessions.values() if s.recorder.running for f in s.recorder.files}
        keep |= {r.current.rel for r in self.continuous.values() if r.current is not None}
        return keep

    # -- continuous and scheduled recording ------------------------------------------------------------
    def wants_continuous(self, runtime: SourceRuntime, now: float) -> bool:
        token = runtime.config.token
        if not runtime.local:  # in a cluster, the node that pulls the camera records it (no second copy)
            return False
        return bool(runtime.config.record) or (
            token in self.schedules and in_schedule(parse_schedule(self.schedules[token]), now)
        )

    async def reconcile(self) -> None:
        """Start and stop continuous recorders to match bRec, schedules and the sources that exist."""
        async with self._lock:
            registry, now = self.registry, time.time()
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
                        _continuous_name(token),
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
        """SetRecordSchedule, SetRecordQuota: kept in the database, in force at once."""
        self.source(token)
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
            added, shots_added = await self.index.add_found(scan.recordings, scan.snapshots)
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
        removed += await self.retention.snapshots_by_quota(int(self.settings.snapshot_quota_mb * 2**20))
        removed += (await self.trim_archives())[0]
        return removed

    async def trim_archives(self, keep: str = "") -> tuple[int, int]:
        """Exported clips older than archive_keep_hours, then the oldest over archive_quota_mb, go (clips
        being written stay, and `keep`, the one just finished: its caller has yet to fetch it)."""
        before = time.time() - self.settings.archive_keep_hours * 3600
        busy = {self.root / f"archive/{t}/{n}.mp4" for n, (t, p) in self.exports.items() if not p.done}
        if keep:
            busy.add(self.root / keep)
        quota = int(self.settings.archive_quota_mb * 2**20)
        return await asyncio.to_thread(trim_archives, self.root / "archive", before, quota, busy)

    # -- snapshots, search, exports, playback -------------------------------------------------------------
    def stream(self, token: str) -> Stream:
        """The main stream of a source, whose hub snapshots are taken from."""
        return self.source(token).main

    async def save_snapshot(self, token: str, stem: str, jpeg: bytes, taken: float) -> str:
        """Store a JPEG as a new file (never overwriting one) and index it; its store-relative path.
        OSError when the store cannot take it."""
        rel = await asyncio.to_thread(paths.write_new, self.root, stem, "jpg", jpeg)
        await self.index.add_snapshot(token, taken, rel, len(jpeg))
        log.info("%s: snapshot saved to %s", token, rel)
        await self.retention.snapshots_by_quota(int(self.settings.snapshot_quota_mb * 2**20), keep=rel)
        return rel

    async def recordings(self, token: str | None, start: float, end: float) -> list[Recording]:
        """Files of a source (or all) that overlap [start, end), oldest first."""
        return await self.index.recordings(token, start, end)

    async def snapshots(self, token: str | None, start: float, end: float) -> list[Snapshot]:
        return await self.index.snapshots(token, start, end)

    async def recording_named(self, token: str, filename: str) -> Recording | None:
        """The file a playback request names: a strPath from Search, or just its file name (the newest)."""
        rel = filename.removeprefix("/mediastore/")
        found = await self.index.recording_by_path(rel) if "/" in rel else await self.index.newest_named(token, rel)
        return found if found is not None and found.token == token else None

    async def recording_at(self, rel: str) -> Recording | None:
        return await self.index.recording_by_path(rel)

    def span(self, rec: Recording) -> Span:
        """A recording as playback reads it: open only while its recorder still writes it."""
        return Span(rec.start, rec.end, self.root / rec.path, rec.open and self.index.is_live(rec.id))

    async def export(self, token: str, begin: float, end: float) -> tuple[str, str]:
        """Start writing [begin, end) of a source into one clip (in a thread); its name and store path."""
        if end <= begin or end - begin > MAX_EXPORT:
            raise BadValue("invalid range: end must be after start, at most 7 days")
        rows = await self.index.recordings(token, begin, end)
        if not rows:
            raise NotFound("no recording in this range")
        if sum(1 for _, p in self.exports.values() if not p.done) >= MAX_RUNNING_EXPORTS:
            raise Busy(f"{MAX_RUNNING_EXPORTS} clips are being exported: try again when one is done")
        await self.trim_archives()  # make room under the quota before writing more
        spans = [Span(r.start, r.end, self.root / r.path) for r in rows]
        name = f"{token}-{int(begin)}-{int(end - begin)}-{uuid.uuid4().hex[:6]}"
        rel = f"archive/{token}/{name}.mp4"
        progress = Export()
        self.exports[name] = (token, progress)

        async def work() -> None:
            try:
                await asyncio.to_thread(export_clip, spans, begin, end, self.root / rel, progress)
                log.info("%s: clip %s exported (%.1fs)", token, rel, progress.duration)
            except (OSError, ValueError) as e:
                progress.error = f"export failed: {e}"
                log.warning("%s: clip %s failed: %s", token, rel, e)
            progress.done = True
            if not progress.error or progress.duration:
                progress.percent = 100
            await self.trim_archives(keep=rel)

        self._spawn(work())
        return name, rel

    def export_progress(self, token: str, name: str) -> Export | None:
        found = self.exports.get(name)
        return found[1] if found is not None and found[0] == token else None

    # -- status ---------------------------------------------------------------------------------------
    async def usage(self) -> dict[str, dict[str, Any]]:
        """Bytes, files and oldest start per source (recordings and snapshots), files being written included."""
        return await self.index.usage()

    def status(self, token: str) -> RecordStatus:
        """What records a source now (sessions first, then continuous), and why it stopped if it did."""
        recorders = [(s.origin, s.recorder) for s in self.sessions.values() if s.token == token]
        if token in self.continuous:
            recorders.append(("continuous", self.continuous[token]))
        running = [r for _, r in recorders if r.running]
        return RecordStatus(
            token,
            any(r.status == "recording" for r in running),
            self.errors.get(token) or (running[0].status if running else "idle"),
            self.schedules.get(token, ""),
            self.quotas.get(token, 0),
            recorders,
        )


def _continuous_name(token: str) -> Callable[[float], str]:
    """Continuous files are named after the Unix second of their first frame, in its dated folder."""
    return lambda start: f"{paths.dated_dir('record', token, start)}/{int(start)}"


def _free_stem(root: Path, stem: str, taken: set[str]) -> str:
    """The stem itself, or stem_1, stem_2 ... whichever names no file and no running recording (thread-side)."""
    for n in range(100):
        candidate = stem if n == 0 else f"{stem}_{n}"
        if candidate not in taken and not (root / f"{candidate}.mp4").exists():
            return candidate
    raise Conflict("too many recordings with this name")
