"""Settings changed at run time from the consoles' settings pages, kept in the database as JSON.

The startup Settings (config file, environment, flags) say how the server starts; these are the
values a console page reads and writes while it runs (log level, anonymous view, WebRTC and cloud
forms ...). Each name holds one JSON value; reads come from memory, writes go to the database first.
"""

from __future__ import annotations

import json
from typing import Any

from supervisor.db import Database


class ConfStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._values: dict[str, Any] = {}

    async def load(self) -> None:
        rows = await self.db.fetchall("SELECT name, value FROM conf")
        self._values = {}
        for row in rows:
            try:
                self._values[row["name"]] = json.loads(row["value"])
            except ValueError:
                continue

    def get(self, name: str, default: Any = None) -> Any:
        return self._values.get(name, default)

    def section(self, name: str, defaults: dict[str, Any]) -> dict[str, Any]:
        """A stored dict merged over its defaults (fields added later get their default)."""
        stored = self._values.get(name)
        return {**defaults, **(stored if isinstance(stored, dict) else {})}

    async def set(self, name: str, value: Any) -> None:
        await self.db.execute(
            "INSERT INTO conf (name, value) VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET value = excluded.value",
            (name, json.dumps(value)),
        )
        self._values[name] = value

    def snapshot(self) -> dict[str, Any]:
        return dict(self._values)
