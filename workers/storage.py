"""The media store: its path layout, times as the manual writes them, the SQLite index and retention.

Paths follow the vendor's manual exactly (`record/<token>/<Y-M-D>TZ<tz>/<H-M-S>/<name>.mp4`, parts not
zero-padded). Every part that comes from a request is checked against a strict pattern before it is
joined, and joined paths are resolved and must stay under the store, so no request reaches outside it
or into another source's folder. The index answers `Search` without walking the disk.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Protocol

from supervisor.db import Database

log = logging.getLogger("h5gate.storage")

KINDS = ("H5_REC_MANUAL", "H5_REC_SCHEDULE", "H5_REC_ALARM")
NAME_RE = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,63}$")
DATE_RE = re.compile(r"^(\d{4})-(\d{1,2})-(\d{1,2})$")
CLOCK_RE = re.compile(r"^(\d{1,2})-(\d{1,2})-(\d{1,2})$")
TZ_RE = re.compile(r"^([+-]?)(\d{1,2})(?:([.:])(\d{1,2}))?$")
TIME_RE = re.compile(
    r"^(\d{4})-(\d{1,2})-(\d{1,2})(?:[T ](\d{1,2}):?(\d{2}):?(\d{2})(?:[.,](\d{1,9}))?)?"
    r"(Z|[+-]\d{1,2}(?::?\d{2})?)?$"
)
SEARCH_LIMIT = 20000
LONGEST_FILE = 3660.0  # files are cut at most every hour (nRecordDuration <= 3600 s), plus a margin


class BadValue(ValueError):
    """A request value that does not fit; its text is shown to the client."""


# -- times ------------------------------------------------------------------------------------------------


def local_offset(ts: float | None = None) -> int:
    """The server zone's offset from UTC in seconds at `ts` (now by default)."""
    return time.localtime(time.time() if ts is None else ts).tm_gmtoff


def tz_label(offset: int) -> str:
    """Seconds east of UTC as the manual's TZ part: 28800 -> "8", -28800 -> "-8", 19800 -> "5.5"."""
    return f"{offset / 3600:g}"


def parse_tz(text: str) -> int:
    """`8`, `-8`, `+8`, `5.5` or `5:30` (a `+` that URL decoding turned into a space too) -> seconds."""
    m = TZ_RE.match(text.strip() if text.startswith(" ") else text)
    if not m:
        raise BadValue("invalid tz: use hours east of UTC such as 8, -8 or 5.5")
    sign, hours, sep, frac = m.groups()
    seconds = int(hours) * 3600
    if frac:
        seconds += int(float("0." + frac) * 3600) if sep == "." else int(frac) * 60
    seconds = -seconds if sign == "-" else seconds
    if not -12 * 3600 <= seconds <= 14 * 3600 or seconds % 900:
        raise BadValue("invalid tz: out of range (-12 to 14 hours, in quarter hours)")
    return seconds


def parse_time(text: str) -> tuple[float, int | None]:
    """The manual's `2018-03-07T120101+08`, ISO 8601 and `Date.toISOString()` -> (Unix time, offset).

    The offset is None when the text has none (then the server's zone applies).
    """
    text = re.sub(r" (\d{1,2}(?::?\d{2})?)$", r"+\1", text.strip())  # "+08" whose + became a space
    m = TIME_RE.match(text)
    if not m:
        raise BadValue(f"invalid time: {text[:40]} (use 2018-03-07T120101+08 or ISO 8601)")
    y, mo, d, h, mi, s, frac, zone = m.groups()
    offset: int | None = None
    if zone == "Z":
        offset = 0
    elif zone:
        sign = -1 if zone[0] == "-" else 1
        digits = zone[1:].replace(":", "")
        hours, minutes = (digits[:-2], digits[-2:]) if len(digits) > 2 else (digits, "0")
        offset = sign * (int(hours) * 3600 + int(minutes) * 60)
        if abs(offset) > 14 * 3600:
            raise BadValue("invalid time: offset out of range")
    try:
        naive = datetime(int(y), int(mo), int(d), int(h or 0), int(mi or 0), int(s or 0))
    except ValueError:
        raise BadValue(f"invalid time: {text[:40]}") from None
    tz = timezone(timedelta(seconds=offset)) if offset is not None else None
    value = naive.replace(tzinfo=tz).timestamp() if tz else naive.timestamp()
    if frac:
        value += float("0." + frac)
    return value, offset


def format_time(ts: float, offset: int | None = None) -> str:
    """`2018-04-25T19:32:05+08:00` (whole seconds, rounded down), in `offset` or the server's zone."""
    whole = math.floor(ts)
    offset = local_offset(whole) if offset is None else offset
    hours, minutes = divmod(abs(offset) // 60, 60)
    sign = "-" if offset < 0 else "+"
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole + offset)) + f"{sign}{hours:02d}:{minutes:02d}"


# -- paths ------------------------------------------------------------------------------------------------


def check_name(name: str, what: str = "filename") -> str:
    """A file name from a request: no separators, no leading dot; a given extension is dropped."""
    name = re.sub(r"\.(mp4|jpg|jpeg)$", "", name, flags=re.IGNORECASE)
    if not NAME_RE.match(name):
        raise BadValue(f"invalid {what}: 1-64 letters, digits, '_', '-' or '.', not starting with '.'")
    return name


def dated_dir(kind: str, token: str, ts: float, offset: int | None = None) -> str:
    """`<kind>/<token>/<Y-M-D>TZ<tz>/<H-M-S>` for a moment, in `offset` or the server's zone."""
    offset = local_offset(ts) if offset is None else offset
    t = datetime.fromtimestamp(ts, timezone(timedelta(seconds=offset)))
    return f"{kind}/{token}/{t.year}-{t.month}-{t.day}TZ{tz_label(offset)}/{t.hour}-{t.minute}-{t.second}"


def parse_clock(start1: str, start2: str) -> datetime:
    """start1 (Y-M-D) and start2 (H-M-S) as PathRecord, PathSnapshot and Archive take them."""
    d, c = DATE_RE.match(start1), CLOCK_RE.match(start2)
    if not d:
        raise BadValue("invalid start1: use Y-M-D such as 2018-3-29")
    if not c:
        raise BadValue("invalid start2: use H-M-S such as 20-3-29")
    try:
        return datetime(*(int(v) for v in d.groups()), *(int(v) for v in c.groups()))
    except ValueError:
        raise BadValue("invalid start1/start2: no such date or time") from None


def clock_time(start1: str, start2: str, tz: str) -> float:
    """Unix time of start1/start2 in zone `tz` (the server's zone when empty)."""
    naive = parse_clock(start1, start2)
    if not tz:
        return naive.timestamp()
    return naive.replace(tzinfo=timezone(timedelta(seconds=parse_tz(tz)))).timestamp()


def path_dir(kind: str, token: str, start1: str, start2: str, tz: str) -> str:
    """The folder PathRecord/PathSnapshot name with start1 (Y-M-D), start2 (H-M-S) and tz, unpadded."""
    t = parse_clock(start1, start2)
    offset = parse_tz(tz) if tz else local_offset()
    return f"{kind}/{token}/{t.year}-{t.month}-{t.day}TZ{tz_label(offset)}/{t.hour}-{t.minute}-{t.second}"


def resolve(root: Path, rel: str) -> Path:
    """The file for a store-relative path, which must stay inside the store (symlinks resolved)."""
    if not rel or rel.startswith("/") or "\\" in rel or "\0" in rel:
        raise BadValue("invalid path")
    parts = rel.split("/")
    if any(p in ("", ".", "..") for p in parts) or parts[0] not in ("record", "snapshot", "archive"):
        raise BadValue("invalid path")
    real_root = root.resolve()
    real = (root / rel).resolve()
    if not real.is_relative_to(real_root):
        raise BadValue("invalid path")
    return real


def http_path(rel: str) -> str:
    return "/mediastore/" + rel


def write_new(root: Path, rel_stem: str, ext: str, data: bytes) -> str:
    """Write a new file (rel_stem.ext, or rel_stem_1.ext ... if taken: never overwrite); thread-side."""
    (root / rel_stem).parent.mkdir(parents=True, exist_ok=True)
    for n in range(100):
        rel = f"{rel_stem}.{ext}" if n == 0 else f"{rel_stem}_{n}.{ext}"
        try:
            fd = os.open(root / rel, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            continue
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        except OSError:
            os.close(fd)
            os.unlink(root / rel)
            raise
        os.close(fd)
        return rel
    raise FileExistsError(f"{rel_stem}.{ext} and 99 numbered variants exist")


def remove_file(root: Path, rel: str) -> int:
    """Delete a stored file and the folders it leaves empty (up to the source's folder); thread-side."""
    path = root / rel
    try:
        size = path.stat().st_size
        path.unlink()
    except FileNotFoundError:
        size = 0
    parent = path.parent
    for _ in range(2):  # <H-M-S>, then <Y-M-D>TZ<tz>
        try:
            parent.rmdir()
        except OSError:
            break
        parent = parent.parent
    return size


# -- the index --------------------------------------------------------------------------------------------


@dataclass
class Recording:
    id: int
    token: str
    kind: str
    path: str
    start: float
    end: float
    size: int
    open: bool

    def describe(self, offset: int | None) -> dict[str, Any]:
        """Search's shape: the manual's fields, the newer strEndTime and nType, and exact times in ms."""
        return {
            "strToken": self.token,
            "strStartTime": format_time(self.start, offset),
            "strEndTime": format_time(self.end, offset),
            "strDuration": str(max(0, math.floor(self.end - self.start))),
            "strPath": http_path(self.path),
            "nType": self.kind,
            "nSize": self.size,
            "bRecording": self.open,
            "nStartTimeMs": math.floor(self.start * 1000),
            "nEndTimeMs": math.floor(self.end * 1000),
        }


class LiveFile(Protocol):
    """What the index needs to know about a file still being written (a workers.recorder.RecFile)."""

    start: float
    duration: float

    @property
    def size(self) -> int: ...


class RecordIndex:
    """Rows of recordings and snapshots; files being written report their progress from memory."""

    def __init__(self, db: Database, root: Path) -> None:
        self.db = db
        self.root = root
        self.live: dict[int, tuple[str, LiveFile]] = {}  # row id -> (token, file being written)
        self.longest = LONGEST_FILE  # no file spans more: Search only looks this far before its start

    async def add_recording(self, token: str, kind: str, rel: str, f: LiveFile) -> int:
        # A reindex may have found the file first: the recorder's own values win.
        await self.db.execute(
            "INSERT INTO recordings (token, kind, path, start_ts, end_ts, size, open) "
            "VALUES (?, ?, ?, ?, ?, 0, 1) ON CONFLICT(path) DO UPDATE SET token = excluded.token, "
            "kind = excluded.kind, start_ts = excluded.start_ts, end_ts = excluded.end_ts, "
            "size = 0, open = 1",
            (token, kind, rel, f.start, f.start),
        )
        row = await self.db.fetchone("SELECT id FROM recordings WHERE path = ?", (rel,))
        assert row is not None
        self.live[row["id"]] = (token, f)
        return int(row["id"])

    async def finish_recording(self, row: int, end: float, size: int) -> None:
        live = self.live.pop(row, None)
        if live is not None:
            self.longest = max(self.longest, end - live[1].start + 60)
        await self.db.execute("UPDATE recordings SET end_ts = ?, size = ?, open = 0 WHERE id = ?", (end, size, row))

    def _recording(self, r: Any) -> Recording:
        rec = Recording(
            r["id"], r["token"], r["kind"], r["path"], r["start_ts"], r["end_ts"], r["size"], bool(r["open"])
        )
        if rec.id in self.live:
            live = self.live[rec.id][1]
            rec.end, rec.size = live.start + live.duration, live.size
        return rec

    async def recordings(
        self, token: str | None, start: float, end: float, limit: int = SEARCH_LIMIT
    ) -> list[Recording]:
        """Files of a source (or all) that overlap [start, end), oldest first."""
        where = "start_ts < ? AND start_ts > ? AND (end_ts > ? OR open = 1)"
        params: list[Any] = [end, start - self.longest, start]
        if token:
            where = "token = ? AND " + where
            params.insert(0, token)
        rows = await self.db.fetchall(
            f"SELECT id, token, kind, path, start_ts, end_ts, size, open FROM recordings WHERE {where} "
            "ORDER BY start_ts LIMIT ?",
            (*params, limit),
        )
        found = [self._recording(r) for r in rows]
        return [r for r in found if r.end > start and r.end > r.start or r.open and r.id in self.live]

    async def recording_by_path(self, rel: str) -> Recording | None:
        row = await self.db.fetchone(
            "SELECT id, token, kind, path, start_ts, end_ts, size, open FROM recordings WHERE path = ?", (rel,)
        )
        return self._recording(row) if row else None

    async def add_snapshot(self, token: str, taken: float, rel: str, size: int) -> None:
        await self.db.execute(
            "INSERT INTO snapshots (token, taken, path, size) VALUES (?, ?, ?, ?) "
            "ON CONFLICT(path) DO UPDATE SET token = excluded.token, taken = excluded.taken, "
            "size = excluded.size",
            (token, taken, rel, size),
        )

    async def snapshots(self, token: str | None, start: float, end: float) -> list[Any]:
        where, params = "taken >= ? AND taken < ?", [start, end]
        if token:
            where, params = "token = ? AND " + where, [token, start, end]
        return await self.db.fetchall(
            f"SELECT token, taken, path, size FROM snapshots WHERE {where} ORDER BY taken LIMIT ?",
            (*params, SEARCH_LIMIT),
        )

    async def recover(self, repair: Callable[[Path], Any]) -> int:
        """Close rows left open by a crash: cut each file to its last whole fragment, keep its real length."""
        row = await self.db.fetchone("SELECT MAX(end_ts - start_ts) AS span FROM recordings WHERE open = 0")
        if row and row["span"]:
            self.longest = max(self.longest, row["span"] + 60)
        rows = await self.db.fetchall("SELECT id, path, start_ts FROM recordings WHERE open = 1")
        for row in rows:
            path = self.root / row["path"]
            try:
                index = await asyncio.to_thread(repair, path)
            except (OSError, ValueError) as e:
                log.warning("%s: unreadable after a crash (%s), removed from the index", row["path"], e)
                await self.db.execute("DELETE FROM recordings WHERE id = ?", (row["id"],))
                continue
            await self.finish_recording(row["id"], row["start_ts"] + index.duration, index.valid_end)
            log.info("%s: closed after a crash, %.1fs kept", row["path"], index.duration)
        return len(rows)

    async def indexed_paths(self) -> tuple[dict[str, int], dict[str, int]]:
        """Path -> row id of every recording and of every snapshot."""
        recs = await self.db.fetchall("SELECT id, path FROM recordings")
        shots = await self.db.fetchall("SELECT id, path FROM snapshots")
        return {r["path"]: r["id"] for r in recs}, {r["path"]: r["id"] for r in shots}

    async def add_found(
        self, recordings: list[tuple[str, str, str, float, float, int]], snapshots: list[tuple[str, float, str, int]]
    ) -> tuple[int, int]:
        """Rows for files found on disk (token, kind, path, start, end, size) and (token, taken, path, size);
        a path already indexed keeps its row. Returns how many rows of each were added."""
        count = "SELECT (SELECT COUNT(*) FROM recordings) AS r, (SELECT COUNT(*) FROM snapshots) AS s"
        before = await self.db.fetchone(count)
        if recordings:
            await self.db.executemany(
                "INSERT INTO recordings (token, kind, path, start_ts, end_ts, size, open) "
                "VALUES (?, ?, ?, ?, ?, ?, 0) ON CONFLICT(path) DO NOTHING",
                recordings,
            )
            span = max(end - start for _, _, _, start, end, _ in recordings)
            self.longest = max(self.longest, span + 60)
        if snapshots:
            await self.db.executemany(
                "INSERT INTO snapshots (token, taken, path, size) VALUES (?, ?, ?, ?) ON CONFLICT(path) DO NOTHING",
                snapshots,
            )
        after = await self.db.fetchone(count)
        assert before is not None and after is not None
        return after["r"] - before["r"], after["s"] - before["s"]

    async def drop_rows(self, recording_ids: list[int], snapshot_ids: list[int]) -> None:
        """Forget rows whose files are gone (the files being written are never among them)."""
        recording_ids = [i for i in recording_ids if i not in self.live]
        if recording_ids:
            await self.db.executemany("DELETE FROM recordings WHERE id = ?", [(i,) for i in recording_ids])
        if snapshot_ids:
            await self.db.executemany("DELETE FROM snapshots WHERE id = ?", [(i,) for i in snapshot_ids])

    async def usage(self) -> dict[str, dict[str, Any]]:
        """Bytes, files and oldest start per source (recordings and snapshots)."""
        out: dict[str, dict[str, Any]] = {}
        for r in await self.db.fetchall(
            "SELECT token, SUM(size) AS bytes, COUNT(*) AS files, "
            "MIN(start_ts) AS oldest FROM recordings GROUP BY token"
        ):
            out[r["token"]] = {
                "record": r["bytes"] or 0,
                "files": r["files"],
                "oldest": r["oldest"],
                "snapshot": 0,
                "snapshots": 0,
            }
        for r in await self.db.fetchall(
            "SELECT token, SUM(size) AS bytes, COUNT(*) AS files FROM snapshots GROUP BY token"
        ):
            entry = out.setdefault(r["token"], {"record": 0, "files": 0, "oldest": None})
            entry["snapshot"], entry["snapshots"] = r["bytes"] or 0, r["files"]
        for token, live in self.live.values():
            entry = out.setdefault(
                token, {"record": 0, "files": 0, "oldest": live.start, "snapshot": 0, "snapshots": 0}
            )
            entry["record"] += live.size
        return out


# -- retention --------------------------------------------------------------------------------------------


@dataclass
class Policy:
    record_days: float
    snapshot_days: float
    disk_percent: float
    quotas: dict[str, int]  # token -> bytes (0 = none)


class Retention:
    """Deletes the oldest files: by age, by per-source quota, and while the disk is fuller than allowed.

    Files still being written and every file of a running manual recording (`protected`) stay.
    """

    BATCH = 500

    def __init__(self, index: RecordIndex, protected: Callable[[], set[str]]) -> None:
        self.index = index
        self.db = index.db
        self.root = index.root
        self.protected = protected
        self.lock = asyncio.Lock()  # also held by a reindex, so no file goes while it is being indexed

    async def run(self, policy: Policy) -> int:
        async with self.lock:
            now = time.time()
            removed = await self._by_age(now - policy.record_days * 86400)
            removed += await self._snapshots_by_age(now - policy.snapshot_days * 86400)
            for token, quota in policy.quotas.items():
                if quota > 0:
                    removed += await self._by_quota(token, quota)
            removed += await self._by_disk(policy.disk_percent)
            return removed

    async def _delete(self, rows: list[Any], reason: str) -> tuple[int, int]:
        keep = self.protected()
        rows = [r for r in rows if r["path"] not in keep]
        freed = 0
        for r in rows:
            freed += await asyncio.to_thread(remove_file, self.root, r["path"])
        if rows:
            await self.db.executemany("DELETE FROM recordings WHERE id = ?", [(r["id"],) for r in rows])
            log.info("retention: %d recordings deleted (%s), %.1f MB freed", len(rows), reason, freed / 2**20)
        return len(rows), freed

    async def _by_age(self, before: float) -> int:
        rows = await self.db.fetchall(
            "SELECT id, path, size FROM recordings WHERE open = 0 AND end_ts < ? ORDER BY start_ts LIMIT ?",
            (before, self.BATCH),
        )
        return (await self._delete(rows, "older than the retention period"))[0]

    async def _snapshots_by_age(self, before: float) -> int:
        rows = await self.db.fetchall("SELECT id, path FROM snapshots WHERE taken < ? LIMIT ?", (before, self.BATCH))
        for r in rows:
            await asyncio.to_thread(remove_file, self.root, r["path"])
        if rows:
            await self.db.executemany("DELETE FROM snapshots WHERE id = ?", [(r["id"],) for r in rows])
            log.info("retention: %d snapshots deleted (older than the retention period)", len(rows))
        return len(rows)

    async def _by_quota(self, token: str, quota: int) -> int:
        row = await self.db.fetchone("SELECT SUM(size) AS used FROM recordings WHERE token = ?", (token,))
        over = (row["used"] or 0) - quota if row else 0
        if over <= 0:
            return 0
        rows = await self._oldest("token = ? AND ", (token,), over)
        return (await self._delete(rows, f"{token} over its {quota / 2**20:.1f} MB quota"))[0]

    async def _by_disk(self, percent: float) -> int:
        usage = await asyncio.to_thread(shutil.disk_usage, self.root)
        over = usage.used - usage.total * percent / 100
        if over <= 0:
            return 0
        rows = await self._oldest("", (), over)
        count, freed = await self._delete(rows, f"disk over {percent:g}%")
        if freed < over:
            log.warning("retention: disk still over %g%% and nothing more may be deleted", percent)
        return count

    async def _oldest(self, where: str, params: tuple[Any, ...], need: float) -> list[Any]:
        """The oldest closed files whose sizes add up to at least `need` bytes."""
        rows = await self.db.fetchall(
            f"SELECT id, path, size FROM recordings WHERE {where}open = 0 ORDER BY start_ts LIMIT ?",
            (*params, self.BATCH),
        )
        keep = self.protected()
        picked, total = [], 0
        for r in rows:
            if r["path"] in keep:
                continue
            picked.append(r)
            total += r["size"]
            if total >= need:
                break
        return picked
