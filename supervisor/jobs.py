"""Timed work: a thin wrapper over APScheduler 3 (AsyncIOScheduler), with one-off jobs that survive a restart.

One-off jobs that must survive a restart (the stop of a timed recording) are rows in SQLite: the
scheduler's own store stays in memory and the rows are turned back into jobs at start, where one that
fell due while the server was down runs at once. Periodic jobs (retention, weekly schedules) are not
stored: their owners re-create them at every start. What the jobs do lives with their owners (the
recordings wing: supervisor/recordings/).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.date import DateTrigger
from apscheduler.triggers.interval import IntervalTrigger

from supervisor.db import Database

log = logging.getLogger("h5gate.jobs")
logging.getLogger("apscheduler").setLevel(logging.WARNING)  # it logs every run of every job at INFO

Action = Callable[[dict[str, Any]], Awaitable[None]]


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
