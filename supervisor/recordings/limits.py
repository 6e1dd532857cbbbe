"""What an Operator may make the gateway write: rates per user, and the clip store's quota.

Recordings are bounded by retention and quotas; snapshots and exported clips were not, so 300 snapshots
in half a second or a few dozen exports could fill the disk. Each user may now start at most
`media_rate_per_minute` snapshots and as many exports a minute (a sliding window), and the clip folder
is kept under its quota and age by `trim_archives`.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from pathlib import Path

from supervisor.errors import Busy

log = logging.getLogger("h5gate.storage")


class RateLimit:
    """At most `per_minute` events per key in any 60 seconds; keys are user names (a bounded set)."""

    def __init__(self, what: str, per_minute: int) -> None:
        self.what = what
        self.per_minute = per_minute
        self.events: dict[str, deque[float]] = {}

    def take(self, key: str, now: float | None = None) -> None:
        """Count one event of `key`, or raise Busy (429) when it has had its share this minute."""
        if self.per_minute <= 0:
            return
        now = time.monotonic() if now is None else now
        window = self.events.setdefault(key, deque())
        while window and now - window[0] >= 60.0:
            window.popleft()
        if len(window) >= self.per_minute:
            wait = 60.0 - (now - window[0])
            raise Busy(f"too many {self.what}: at most {self.per_minute} a minute, try again in {wait:.0f}s")
        window.append(now)


def trim_archives(folder: Path, before: float, quota: int, busy: set[Path]) -> tuple[int, int]:
    """Delete clips older than `before`, then the oldest until they total at most `quota` bytes (0 = any).

    Clips still being written (`busy`) stay. Thread-side; returns (files deleted, bytes freed).
    """
    if not folder.is_dir():
        return 0, 0
    clips = []
    for path in folder.glob("*/*.mp4"):
        try:
            st = path.stat()
        except FileNotFoundError:
            continue
        clips.append((st.st_mtime, st.st_size, path))
    clips.sort()
    total = sum(size for _, size, _ in clips)
    deleted = freed = 0
    for mtime, size, path in clips:
        if path in busy:
            continue
        if mtime < before or (quota > 0 and total > quota):
            path.unlink(missing_ok=True)
            total -= size
            deleted += 1
            freed += size
    if deleted:
        log.info("retention: %d exported clips deleted (age or quota), %.1f MB freed", deleted, freed / 2**20)
    return deleted, freed
