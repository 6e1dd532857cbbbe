"""The SQLite index of the media store: one row per recording and per snapshot, so `Search` never walks the disk.

Files still being written are rows too (`open`), whose end and size come from the recorder's memory.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from supervisor.db import Database

log = logging.getLogger("h5gate.storage")

SEARCH_LIMIT = 20000
LONGEST_FILE = 3660.0  # files are cut at most every hour (nRecordDuration <= 3600 s), plus a margin


@dataclass
class Recording:
    """One recorded file: an index row, a file found on disk by a reindex (id 0: no row yet), or one being written."""

    token: str
    kind: str  # H5_REC_MANUAL, H5_REC_SCHEDULE, H5_REC_ALARM
    path: str  # store-relative
    start: float  # Unix time of its first frame
    end: float
    size: int
    open: bool = False  # still being written
    id: int = 0  # its row (0: not in the index yet)


@dataclass
class Snapshot:
    """One stored JPEG: an index row, or a file a reindex found."""

    token: str
    taken: float  # Unix time the picture was asked for
    path: str  # store-relative
    size: int


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
            r["token"], r["kind"], r["path"], r["start_ts"], r["end_ts"], r["size"], bool(r["open"]), r["id"]
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

    async def newest_named(self, token: str, name: str) -> Recording | None:
        """The newest recording of a source whose file is called `name` (in whichever folder)."""
        row = await self.db.fetchone(
            "SELECT path FROM recordings WHERE token = ? AND path LIKE ? ORDER BY start_ts DESC",
            (token, "%/" + name.replace("%", "")),
        )
        return await self.recording_by_path(row["path"]) if row else None

    def is_live(self, row: int) -> bool:
        """Whether a recorder of this process is writing the row's file now (not a row a crash left open)."""
        return row in self.live

    async def add_snapshot(self, token: str, taken: float, rel: str, size: int) -> None:
        await self.db.execute(
            "INSERT INTO snapshots (token, taken, path, size) VALUES (?, ?, ?, ?) "
            "ON CONFLICT(path) DO UPDATE SET token = excluded.token, taken = excluded.taken, "
            "size = excluded.size",
            (token, taken, rel, size),
        )

    async def snapshots(self, token: str | None, start: float, end: float) -> list[Snapshot]:
        params: list[object]
        where, params = "taken >= ? AND taken < ?", [start, end]
        if token:
            where = "token = ? AND " + where
            params = [token, start, end]
        rows = await self.db.fetchall(
            f"SELECT token, taken, path, size FROM snapshots WHERE {where} ORDER BY taken LIMIT ?",
            (*params, SEARCH_LIMIT),
        )
        return [Snapshot(r["token"], r["taken"], r["path"], r["size"]) for r in rows]

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

    async def add_found(self, recordings: list[Recording], snapshots: list[Snapshot]) -> tuple[int, int]:
        """Rows for files found on disk; a path already indexed keeps its row. Returns how many rows of each
        were added."""
        count = "SELECT (SELECT COUNT(*) FROM recordings) AS r, (SELECT COUNT(*) FROM snapshots) AS s"
        before = await self.db.fetchone(count)
        if recordings:
            await self.db.executemany(
                "INSERT INTO recordings (token, kind, path, start_ts, end_ts, size, open) "
                "VALUES (?, ?, ?, ?, ?, ?, 0) ON CONFLICT(path) DO NOTHING",
                [(r.token, r.kind, r.path, r.start, r.end, r.size) for r in recordings],
            )
            span = max(r.end - r.start for r in recordings)
            self.longest = max(self.longest, span + 60)
        if snapshots:
            await self.db.executemany(
                "INSERT INTO snapshots (token, taken, path, size) VALUES (?, ?, ?, ?) ON CONFLICT(path) DO NOTHING",
                [(s.token, s.taken, s.path, s.size) for s in snapshots],
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
