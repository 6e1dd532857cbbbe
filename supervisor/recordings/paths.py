"""The media store's path layout and times as the manual writes them (pure functions, plus file writes).

Paths follow the vendor's manual exactly (`record/<token>/<Y-M-D>TZ<tz>/<H-M-S>/<name>.mp4`, parts not
zero-padded). Every part that comes from a request is checked against a strict pattern before it is
joined, and joined paths are resolved and must stay under the store, so no request reaches outside it
or into another source's folder.
"""

from __future__ import annotations

import math
import os
import re
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

from supervisor.errors import BadValue

KINDS = ("H5_REC_MANUAL", "H5_REC_SCHEDULE", "H5_REC_ALARM")
NAME_RE = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,63}$")
DATE_RE = re.compile(r"^(\d{4})-(\d{1,2})-(\d{1,2})$")
CLOCK_RE = re.compile(r"^(\d{1,2})-(\d{1,2})-(\d{1,2})$")
TZ_RE = re.compile(r"^([+-]?)(\d{1,2})(?:([.:])(\d{1,2}))?$")
TIME_RE = re.compile(
    r"^(\d{4})-(\d{1,2})-(\d{1,2})(?:[T ](\d{1,2}):?(\d{2}):?(\d{2})(?:[.,](\d{1,9}))?)?"
    r"(Z|[+-]\d{1,2}(?::?\d{2})?)?$"
)


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
    # The r12 console (h5sweb) sends `Date.toISOString() + "08:00"`: the Z already fixes the instant, so
    # the appended offset is dropped rather than refused (refusing broke its playback search).
    text = re.sub(r"Z[+-]?\d{1,2}:?\d{2}$", "Z", text)
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
        (year, month, day), (hour, minute, second) = (int(v) for v in d.groups()), (int(v) for v in c.groups())
        return datetime(year, month, day, hour, minute, second)
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


MAX_NAME = 255  # bytes in one path component (NAME_MAX on Linux and most file systems)
MAX_PATH = 1024  # bytes in a store-relative path; ours are well under 200


def resolve(root: Path, rel: str) -> Path:
    """The file for a store-relative path, which must stay inside the store (symlinks resolved)."""
    if not rel or rel.startswith("/") or "\\" in rel or "\0" in rel:
        raise BadValue("invalid path")
    parts = rel.split("/")
    if any(p in ("", ".", "..") for p in parts) or parts[0] not in ("record", "snapshot", "archive"):
        raise BadValue("invalid path")
    # a name the file system cannot hold is no file of ours (the OS would answer ENAMETOOLONG)
    sizes = [len(p.encode("utf-8", "surrogateescape")) for p in parts]
    if sum(sizes) + len(parts) > MAX_PATH or max(sizes) > MAX_NAME:
        raise BadValue("invalid path: name too long")
    real_root = root.resolve()
    try:
        real = (root / rel).resolve()
    except OSError:
        raise BadValue("invalid path") from None
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
