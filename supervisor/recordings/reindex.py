"""Rebuilding the recordings index from the files in the media store (thread-side, never on the event loop).

Everything an index row holds comes from a file and its path:

- token, and the start: `record/<token>/<Y-M-D>TZ<tz>/<H-M-S>/<name>.mp4` gives the second the recording
  was asked for, in its own zone. Names the server chose carry the Unix time: continuous files are named
  after their first frame (`<unix seconds>`), snapshots after the request (`<unix milliseconds>`). That
  second is refined with the file's mtime: the last write ends the media, so mtime - duration is the
  start to a few frames, and is used when it fits the path (a copied or touched file falls back to the
  path). Recordings may reach back up to the longest pre-record before the second in their path.
- the real duration: the fragments of the video track, read as crash recovery reads them
  (workers.recorder.index_file);
- the size: the file's; the type: H5_REC_SCHEDULE for names that are just the Unix second of their folder
  (how continuous files are named), H5_REC_MANUAL otherwise. Record and ManualRecordStart without a
  filename name their files the same way, so they come back as H5_REC_SCHEDULE, and H5_REC_ALARM is
  not written in the path at all, so such files come back as H5_REC_MANUAL.

Files that do not parse are logged, one line each, and left where they are: nothing here deletes or
changes a file.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from supervisor.errors import BadValue
from supervisor.recordings.index import Recording, Snapshot
from supervisor.recordings.paths import NAME_RE, clock_time
from workers.recorder import index_file

log = logging.getLogger("h5gate.reindex")

FOLDERS = {"record": ".mp4", "snapshot": ".jpg"}
TOKEN_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
DAY_RE = re.compile(r"^(\d{4}-\d{1,2}-\d{1,2})TZ(.{1,8})$")
UNIX_NAME_RE = re.compile(r"^(\d{10}|\d{13})(?:_(\d{1,2}))?$")
SUFFIX_RE = re.compile(r"^(.*?)_(\d{1,2})$")
PRE_RECORD_REACH = 30.0 + 5.0  # the longest nPreRecordLength (supervisor.recordings.service.CONF), plus a GOP
LONGEST_SESSION = 8 * 86400.0  # a piece of a split recording starts at most this long after its first
BUSY_SECONDS = 60.0  # an empty recording this recent is one a recorder has just opened
SNAPSHOT_DELAY = 15.0  # a snapshot is written at most this long after its request (waiting for a picture)


@dataclass
class Scan:
    recordings: list[Recording] = field(default_factory=list)  # found on disk, not in the index (id 0)
    snapshots: list[Snapshot] = field(default_factory=list)
    present: set[str] = field(default_factory=set)  # every .mp4/.jpg seen, indexed or not
    skipped: int = 0
    folders: set[str] = field(default_factory=set)  # the top folders that exist ("record", "snapshot")


class Unparsable(ValueError):
    """A file whose path or content does not tell what an index row needs."""


class Busy(ValueError):
    """A recording just created, with nothing but its init yet: its recorder indexes it."""


@dataclass
class Parsed:
    folder: str
    token: str
    base: float  # the time the path tells (Unix seconds)
    stem: str  # the name without its extension and without a _N suffix
    suffix: int  # N of a name_N (0 = none)
    server_named: bool  # the name is the Unix second of its folder: how continuous files are named


def parse_path(rel: str) -> Parsed:
    """`<folder>/<token>/<Y-M-D>TZ<tz>/<H-M-S>/<name>.<ext>` -> what the path tells."""
    parts = rel.split("/")
    if len(parts) != 5 or parts[0] not in FOLDERS:
        raise Unparsable("not <token>/<Y-M-D>TZ<tz>/<H-M-S>/<name>")
    folder, token, day, clock, filename = parts
    stem = filename[: -len(FOLDERS[folder])]
    day_m = DAY_RE.match(day)
    if not TOKEN_RE.match(token) or token in (".", ".."):
        raise Unparsable(f"invalid token folder {token[:40]!r}")
    if not day_m or not NAME_RE.match(stem):
        raise Unparsable("not <token>/<Y-M-D>TZ<tz>/<H-M-S>/<name>")
    try:
        base = clock_time(day_m.group(1), clock, day_m.group(2))
    except BadValue as e:
        raise Unparsable(str(e)) from None
    server_named = False
    unix = UNIX_NAME_RE.match(stem)
    if unix:
        value = int(unix.group(1)) / (1000 if len(unix.group(1)) == 13 else 1)
        if abs(value - base) <= 2:  # the name is the time its folder tells, more exactly
            server_named = len(unix.group(1)) == 10 and unix.group(2) is None and value == base
            base = value
    suffixed = SUFFIX_RE.match(stem)
    if suffixed:
        return Parsed(folder, token, base, suffixed.group(1), int(suffixed.group(2)), False)
    return Parsed(folder, token, base, stem, 0, server_named)


def _order(name: str) -> tuple[str, int, str]:
    """name.mp4, name_1.mp4, name_2.mp4 ... name_10.mp4: pieces of a recording in the order written."""
    stem, _, ext = name.rpartition(".")
    m = SUFFIX_RE.match(stem)
    return (m.group(1), int(m.group(2)), ext) if m else (stem, 0, ext)


def _walk(root: Path, folder: str) -> Iterable[str]:
    """Store-relative paths of the folder's media files (symbolic links to folders are not followed)."""
    top = root / folder
    ext = FOLDERS[folder]
    for dirpath, dirnames, filenames in os.walk(top):
        dirnames.sort()
        rel_dir = Path(dirpath).relative_to(root).as_posix()
        for name in sorted(filenames, key=_order):
            if name.lower().endswith(ext) and not name.startswith("."):
                yield f"{rel_dir}/{name}"


def _inside(root: Path, rel: str) -> Path:
    path = (root / rel).resolve()
    if not path.is_relative_to(root.resolve()) or not path.is_file():
        raise Unparsable("not a regular file inside the media store")
    return path


def _recording(
    root: Path, rel: str, p: Parsed, duration_of: Callable[[Path], float], previous: Recording | None
) -> Recording:
    path = _inside(root, rel)
    try:
        duration = duration_of(path)
    except Exception as e:  # whatever the damage, it only skips this file
        raise Unparsable(f"not a fragmented MP4 recording ({type(e).__name__}: {e})") from None
    st = path.stat()
    if duration <= 0:
        if time.time() - st.st_mtime < BUSY_SECONDS:
            raise Busy(rel)
        raise Unparsable("no complete video fragment")
    estimate = st.st_mtime - duration  # the last write ends the media
    if p.suffix == 0:
        fits = p.base - PRE_RECORD_REACH <= estimate < p.base + 1
        start = estimate if fits else p.base
    else:  # a later piece of a split recording, or a second one of the same name: after the path's time
        fits = p.base - PRE_RECORD_REACH <= estimate <= p.base + LONGEST_SESSION
        start = estimate if fits else max(p.base, previous.end if previous else p.base)
    kind = "H5_REC_SCHEDULE" if p.server_named else "H5_REC_MANUAL"
    return Recording(p.token, kind, rel, start, start + duration, st.st_size)


def _snapshot(root: Path, rel: str, p: Parsed) -> Snapshot:
    path = _inside(root, rel)
    with open(path, "rb") as fh:
        if fh.read(3) != b"\xff\xd8\xff":
            raise Unparsable("not a JPEG")
    st = path.stat()
    fits = p.base - 1 <= st.st_mtime <= p.base + SNAPSHOT_DELAY
    return Snapshot(p.token, st.st_mtime if fits else p.base, rel, st.st_size)


def _duration(path: Path) -> float:
    return index_file(path).duration


def scan(
    root: Path,
    known: set[str],
    folders: Iterable[str] = FOLDERS,
    *,
    cancel: threading.Event | None = None,
    duration_of: Callable[[Path], float] = _duration,
) -> Scan:
    """Walk the store's record/ and snapshot/ folders; parse every media file not in `known`.

    Blocking: run it in a worker thread. Setting `cancel` stops it (InterruptedError).
    """
    out = Scan()
    for folder in folders:
        if not (root / folder).is_dir():
            continue
        out.folders.add(folder)
        previous: dict[tuple[str, str], Recording] = {}  # (folder, stem) -> the last piece found
        for rel in _walk(root, folder):
            if cancel is not None and cancel.is_set():
                raise InterruptedError("reindex cancelled")
            out.present.add(rel)
            if rel in known:
                continue
            try:
                p = parse_path(rel)
                if folder == "record":
                    key = (rel.rsplit("/", 1)[0], p.stem)
                    found = _recording(root, rel, p, duration_of, previous.get(key))
                    previous[key] = found
                    out.recordings.append(found)
                else:
                    out.snapshots.append(_snapshot(root, rel, p))
            except Busy:
                log.debug("reindex: %s is being written, left to its recorder", rel)
            except (Unparsable, OSError) as e:
                out.skipped += 1
                log.warning("reindex: %s skipped, kept on disk: %s", rel, e)
    return out
