"""Weekly recording schedules: `mon-fri 08:00-18:00; sat,sun 10:00-12:00; daily 22:00-06:00`.

A schedule is text (as SetRecordSchedule takes it and the database keeps it); parsed, it is a list of
windows that say, minute by minute, when continuous recording runs.
"""

from __future__ import annotations

import re
from datetime import datetime

from supervisor.errors import BadValue

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
WINDOW_RE = re.compile(r"^([a-z,\-*]+)\s+(\d{1,2}):(\d{2})-(\d{1,2}):(\d{2})$")
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
