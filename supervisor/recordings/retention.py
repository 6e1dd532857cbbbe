"""Retention: the oldest files go, by age, by per-source quota, and while the disk is fuller than allowed."""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from supervisor.recordings.index import RecordIndex
from supervisor.recordings.paths import remove_file

log = logging.getLogger("h5gate.storage")


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

    async def snapshots_by_quota(self, quota: int, keep: str = "") -> int:
        """The oldest snapshots go while all of them together take more than `quota` bytes (0 = no cap);
        `keep` (the one just taken, whose path its caller is about to return) stays."""
        if quota <= 0:
            return 0
        async with self.lock:
            row = await self.db.fetchone("SELECT SUM(size) AS used FROM snapshots")
            over = (row["used"] or 0) - quota if row else 0
            if over <= 0:
                return 0
            rows = await self.db.fetchall("SELECT id, path, size FROM snapshots ORDER BY taken LIMIT ?", (self.BATCH,))
            picked, total = [], 0
            for r in rows:
                if r["path"] == keep:
                    continue
                picked.append(r)
                total += r["size"]
                if total >= over:
                    break
            if not picked:
                return 0
            for r in picked:
                await asyncio.to_thread(remove_file, self.root, r["path"])
            await self.db.executemany("DELETE FROM snapshots WHERE id = ?", [(r["id"],) for r in picked])
            log.info("retention: %d snapshots deleted (over the %.1f MB snapshot quota)", len(picked), quota / 2**20)
            return len(picked)

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
