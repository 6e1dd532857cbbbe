"""Events for the consoles' event socket (h5seventapi): sources going online and offline, recordings
starting and stopping, a recorder stopped by a full disk.

Each event is one JSON object with the fields the consoles read (`type`, `strDevToken`, `strUUID`,
`strTime`) and details of its own. Subscribers each get a bounded queue: one that does not read loses
its oldest events, never holds up the publisher. Source state is watched once a second (the registry
has no callback for it): a change shows within a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

log = logging.getLogger("h5gate.events")

TYPES = {
    "online": "H5S_EVENT_SRC_ONLINE",
    "offline": "H5S_EVENT_SRC_OFFLINE",
    "record_start": "H5S_EVENT_RECORD_START",
    "record_stop": "H5S_EVENT_RECORD_STOP",
    "disk_full": "H5S_EVENT_DISK_FULL",
}
QUEUE = 256
WATCH_SECONDS = 1.0


class Subscriber:
    def __init__(self, may_see: Callable[[str], bool]) -> None:
        self.may_see = may_see
        self.queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(QUEUE)
        self.dropped = 0


class EventBus:
    def __init__(self) -> None:
        self.subscribers: set[Subscriber] = set()
        self.published = 0
        self._watch: asyncio.Task[None] | None = None

    def publish(self, kind: str, token: str, detail: dict[str, Any] | None = None) -> dict[str, Any]:
        event = {
            "type": TYPES.get(kind, kind),
            "strDevToken": token,
            "strUUID": str(uuid.uuid4()),
            "strTime": datetime.now().astimezone().isoformat(timespec="seconds"),
            **(detail or {}),
        }
        self.published += 1
        for sub in list(self.subscribers):
            if not sub.may_see(token):
                continue
            if sub.queue.full():
                sub.queue.get_nowait()
                sub.dropped += 1
            sub.queue.put_nowait(event)
        return event

    def subscribe(self, may_see: Callable[[str], bool]) -> Subscriber:
        sub = Subscriber(may_see)
        self.subscribers.add(sub)
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        self.subscribers.discard(sub)

    def watch_sources(self, online_of: Callable[[], dict[str, bool]]) -> None:
        """Publish online/offline as each source's state changes (a new source's first state included)."""

        async def loop() -> None:
            known: dict[str, bool] = {}
            while True:
                try:
                    now = online_of()
                    for token, online in now.items():
                        if known.get(token) is not online and (token in known or online):
                            self.publish("online" if online else "offline", token)
                    for token in known.keys() - now.keys():  # deleted: it went offline for good
                        if known[token]:
                            self.publish("offline", token, {"bDeleted": True})
                    known = now
                except Exception:
                    log.exception("source watch failed")
                await asyncio.sleep(WATCH_SECONDS)

        self._watch = asyncio.create_task(loop())

    async def close(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
