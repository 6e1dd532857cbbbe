"""SQLite state (WAL, one schema version table), used from the event loop through one worker thread.

All statements run on a single dedicated thread, which serialises access to the one connection and
keeps disk waits off the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

log = logging.getLogger("h5gate.db")

# Each entry moves the schema one version up. Append only; never edit a released step.
MIGRATIONS: list[str] = [
    """
    CREATE TABLE sources (
        token TEXT PRIMARY KEY,
        config TEXT NOT NULL,
        created REAL NOT NULL
    );
    CREATE TABLE users (
        name TEXT PRIMARY KEY,
        password_md5 TEXT NOT NULL,
        role TEXT NOT NULL
    );
    """,
    # Recordings, snapshots and their jobs (api/records.py, workers/recorder.py, supervisor/recordings/).
    # Times are Unix seconds; paths are relative to the media store. `open` = still being written.
    """
    CREATE TABLE recordings (
        id INTEGER PRIMARY KEY,
        token TEXT NOT NULL,
        kind TEXT NOT NULL,
        path TEXT NOT NULL UNIQUE,
        start_ts REAL NOT NULL,
        end_ts REAL NOT NULL,
        size INTEGER NOT NULL DEFAULT 0,
        open INTEGER NOT NULL DEFAULT 1
    );
    CREATE INDEX recordings_token_start ON recordings (token, start_ts);
    CREATE INDEX recordings_start ON recordings (start_ts);
    CREATE TABLE snapshots (
        id INTEGER PRIMARY KEY,
        token TEXT NOT NULL,
        taken REAL NOT NULL,
        path TEXT NOT NULL UNIQUE,
        size INTEGER NOT NULL
    );
    CREATE INDEX snapshots_token_taken ON snapshots (token, taken);
    CREATE TABLE record_sessions (
        id TEXT PRIMARY KEY,
        token TEXT NOT NULL,
        kind TEXT NOT NULL,
        origin TEXT NOT NULL,
        path TEXT NOT NULL,
        stop_at REAL
    );
    CREATE TABLE record_policy (
        token TEXT PRIMARY KEY,
        schedule TEXT NOT NULL DEFAULT '',
        quota INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE record_conf (
        name TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    CREATE TABLE jobs (
        id TEXT PRIMARY KEY,
        action TEXT NOT NULL,
        run_at REAL NOT NULL,
        args TEXT NOT NULL
    );
    """,
    # The vendor consoles' model (issue #10): roles with per-camera rights, settings pages' values,
    # regions and saved live views, transcoding profiles. A user's `role` names a row of `roles`.
    """
    CREATE TABLE roles (
        token TEXT PRIMARY KEY,
        kind TEXT NOT NULL,
        all_cams INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE role_cams (
        role TEXT NOT NULL,
        cam TEXT NOT NULL,
        name TEXT NOT NULL DEFAULT '',
        PRIMARY KEY (role, cam)
    );
    CREATE TABLE conf (
        name TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    CREATE TABLE regions (
        token TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        parent TEXT NOT NULL,
        created REAL NOT NULL
    );
    CREATE TABLE region_cams (
        region TEXT NOT NULL,
        cam TEXT NOT NULL,
        PRIMARY KEY (region, cam)
    );
    CREATE TABLE views (
        token TEXT PRIMARY KEY,
        config TEXT NOT NULL,
        created REAL NOT NULL
    );
    CREATE TABLE trans_profiles (
        token TEXT PRIMARY KEY,
        config TEXT NOT NULL,
        created REAL NOT NULL
    );
    """,
    # RTSP Digest keys (supervisor/digest_keys.py): HA1 per user, with the stored password it was made under.
    """
    CREATE TABLE digest_keys (
        name TEXT PRIMARY KEY,
        ha1 TEXT NOT NULL,
        password TEXT NOT NULL
    );
    """,
    # Sessions survive a restart (issue #11): only a SHA-256 of each session id is kept, so the table
    # gives no one a session; last_seen is wall-clock seconds (the idle timeout counts across restarts).
    """
    CREATE TABLE sessions (
        id_hash TEXT PRIMARY KEY,
        user TEXT NOT NULL,
        last_seen REAL NOT NULL
    );
    """,
]


class Database:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.created = False  # True when this start made a new database (first start)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite")
        self._conn: sqlite3.Connection | None = None

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.created = not self.path.exists()
        # owner-only from its first byte: it holds users' password hashes, sessions and camera configs
        os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))
        for path in (self.path, *(self.path.with_name(self.path.name + x) for x in ("-wal", "-shm"))):
            with contextlib.suppress(FileNotFoundError):
                os.chmod(path, 0o600)
        conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        row = conn.execute("SELECT version FROM schema_version").fetchone()
        version = row[0] if row else 0
        if row is None:
            conn.execute("INSERT INTO schema_version VALUES (0)")
        for step, sql in enumerate(MIGRATIONS[version:], start=version + 1):
            conn.executescript("BEGIN;" + sql + f";UPDATE schema_version SET version = {step}; COMMIT;")
            log.info("database schema now at version %d", step)
        self._conn = conn

    async def open(self) -> None:
        await self.run(self._open)

    async def close(self) -> None:
        if self._conn is not None:
            await self.run(self._conn.close)
            self._conn = None
        self._pool.shutdown(wait=True)

    async def run(self, fn: Any, *args: Any) -> Any:
        """Run fn(*args) on the database thread."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    async def execute(self, sql: str, params: tuple[Any, ...] | dict[str, Any] = ()) -> int:
        """One statement; returns the number of rows it changed."""

        def work() -> int:
            assert self._conn is not None
            return self._conn.execute(sql, params).rowcount

        return await self.run(work)

    async def executemany(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        def work() -> None:
            assert self._conn is not None
            with self._conn:
                self._conn.execute("BEGIN")
                self._conn.executemany(sql, rows)

        await self.run(work)

    async def transaction(self, steps: list[tuple[str, list[tuple[Any, ...]]]]) -> None:
        """Several statements, each run over its rows (none: once), all or nothing (replacing a whole table)."""

        def work() -> None:
            assert self._conn is not None
            with self._conn:
                self._conn.execute("BEGIN")
                for sql, rows in steps:
                    if rows:
                        self._conn.executemany(sql, rows)
                    elif "?" not in sql:
                        self._conn.execute(sql)

        await self.run(work)

    async def fetchall(self, sql: str, params: tuple[Any, ...] | dict[str, Any] = ()) -> list[sqlite3.Row]:
        def work() -> list[sqlite3.Row]:
            assert self._conn is not None
            return self._conn.execute(sql, params).fetchall()

        return await self.run(work)

    async def data_version(self) -> int:
        """SQLite's PRAGMA data_version: it changes when another connection (`h5gate passwd`) commits."""

        def work() -> int:
            assert self._conn is not None
            return int(self._conn.execute("PRAGMA data_version").fetchone()[0])

        return await self.run(work)

    async def fetchone(self, sql: str, params: tuple[Any, ...] | dict[str, Any] = ()) -> sqlite3.Row | None:
        rows = await self.fetchall(sql, params)
        return rows[0] if rows else None
