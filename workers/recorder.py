"""Recordings from the hub: fragmented MP4 files written fragment by fragment, and reading them back.

A Recorder is one more hub consumer (it acquires the stream like a viewer: no second camera connection).
It writes the init segment, then complete moof+mdat pairs in batches, so a file cut short by a crash or a
full disk still plays to its last complete fragment. Each file's timeline starts at 0 on a video keyframe.
Continuous recorders cut at the first keyframe after `file_seconds`; the next file starts where the
previous one ends in media time, so consecutive files have neither gap nor overlap. A new ffmpeg run (new
init segment, timestamps restart) always starts a new file.
"""

from __future__ import annotations

import asyncio
import bisect
import errno
import logging
import math
import os
import shutil
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from workers.fmp4 import InitInfo, parse_fragment, parse_init
from workers.hub import Cursor, Fragment, HubClosed, StreamHub

log = logging.getLogger("h5gate.recorder")

FLUSH_SECONDS = 0.5  # a batch of fragments goes to disk at least this often
FLUSH_BYTES = 1 << 20
SYNC_SECONDS = 10.0  # fdatasync this often: a power cut loses at most this much
READY_WAIT = 5.0
DISK_RETRY_SECONDS = 2.0
MIN_FREE_BYTES = 512 << 10  # a recorder stopped by a full disk resumes when this much is free again
REANCHOR_DRIFT = 2.0  # re-read the wall clock when media time has drifted this far from it
MAX_SUFFIX = 100


class FileWriter:
    """The blocking side of one file; every method runs in a worker thread."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.fd = -1
        self.size = 0
        self._synced = time.monotonic()

    def create(self, rel: str, init: bytes) -> str:
        """Create `rel` (or rel_1, rel_2 ... if taken: never overwrite) holding the init; returns the name."""
        stem = rel.removesuffix(".mp4")
        (self.root / stem).parent.mkdir(parents=True, exist_ok=True)
        for n in range(MAX_SUFFIX):
            name = f"{stem}.mp4" if n == 0 else f"{stem}_{n}.mp4"
            try:
                self.fd = os.open(self.root / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                continue
            try:
                self.append([init])
            except OSError:
                os.close(self.fd)
                os.unlink(self.root / name)
                self.fd = -1
                raise
            return name
        raise FileExistsError(f"{stem}.mp4 and {MAX_SUFFIX - 1} numbered variants exist")

    def append(self, chunks: list[bytes]) -> None:
        """Write whole fragments; on failure cut the file back to the last whole one and re-raise."""
        data = b"".join(chunks)
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self.fd, view) :]
        except OSError:
            try:
                os.ftruncate(self.fd, self.size)
            except OSError:
                pass
            raise
        self.size += len(data)
        if time.monotonic() - self._synced > SYNC_SECONDS:
            os.fdatasync(self.fd)
            self._synced = time.monotonic()

    def close(self) -> None:
        if self.fd >= 0:
            try:
                os.fdatasync(self.fd)
            except OSError:
                pass
            os.close(self.fd)
            self.fd = -1


@dataclass(eq=False)
class RecFile:
    """One file being written: where, when it starts, and how much of it is safely on disk."""

    rel: str  # path relative to the media store
    start: float  # wall-clock time of its first frame
    gen: int
    first_dts: float  # hub media time of its first frame
    writer: FileWriter
    row: int = 0  # index row id, set by the sink
    duration: float = 0.0  # media seconds on disk
    pending: list[bytes] = field(default_factory=list)
    pending_bytes: int = 0
    pending_end: float = 0.0

    @property
    def size(self) -> int:
        return self.writer.size


class RecordSink(Protocol):
    """Where a recorder reports its files (the index) and its trouble."""

    async def file_opened(self, recorder: Recorder, f: RecFile) -> None: ...

    async def file_closed(self, recorder: Recorder, f: RecFile) -> None: ...

    async def write_failed(self, recorder: Recorder, error: OSError) -> None: ...


class Stream(Protocol):
    def acquire(self) -> StreamHub: ...

    def release(self) -> None: ...


def wall_time(frag: Fragment) -> float:
    """When the hub received this fragment, as wall-clock time."""
    return time.time() - (time.monotonic() - frag.arrived)


class Recorder:
    """Copies one stream's fragments from its hub into files until stopped."""

    def __init__(
        self,
        token: str,
        kind: str,
        stream: Stream,
        root: Path,
        name_for: Callable[[float], str],
        sink: RecordSink,
        *,
        pre_record: float = 0.0,
        file_seconds: float | None = None,
        resume_after_error: bool = False,
    ) -> None:
        self.token = token
        self.kind = kind
        self.stream = stream
        self.root = root
        self.name_for = name_for  # start time -> path relative to the store, without ".mp4"
        self.sink = sink
        self.pre_record = pre_record
        self.file_seconds = file_seconds
        self.resume_after_error = resume_after_error
        self.status = "starting"
        self.hub: StreamHub | None = None
        self.current: RecFile | None = None
        self.files: list[str] = []  # every file this recorder wrote, in order
        self.started = time.time()
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._last_flush = time.monotonic()
        self._failed = False

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"recorder {self.token}")

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def stop(self) -> None:
        """Flush and close the current file; returns once it is indexed."""
        self._stopping.set()
        if self._task is not None:
            await asyncio.shield(self._task)

    async def _run(self) -> None:
        hub = self.hub = self.stream.acquire()
        pre_record = self.pre_record
        try:
            while not self._stopping.is_set():
                if not await hub.wait_ready(READY_WAIT):
                    self.status = "waiting for source"
                    await self._sleep(0.5)
                    continue
                cursor = hub.cursor()
                cursor.slow_seconds = math.inf  # never skip ahead: only the ring's end can lose media
                earlier = hub.since(pre_record) if pre_record > 0 else []
                if earlier:
                    cursor.seq = earlier[0].seq
                pre_record = 0.0  # only the first start reaches back
                self.status = "recording"
                self._failed = False
                await self._consume(cursor)
                if self._failed:
                    if not self.resume_after_error:
                        break
                    await self._wait_for_space()
        except HubClosed:
            log.info("%s: source gone, recording ends", self.token)
        except Exception:
            log.exception("%s: recorder failed", self.token)
        finally:
            await self._close_file()
            self.stream.release()
            if not self._failed:
                self.status = "stopped"

    async def _sleep(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self._stopping.wait(), seconds)
        except TimeoutError:
            pass

    async def _consume(self, cursor: Cursor) -> None:
        skips = cursor.skips
        while not self._stopping.is_set() and not self._failed:
            frag = await cursor.next(timeout=FLUSH_SECONDS)
            if cursor.skips != skips:
                skips = cursor.skips
                log.warning("%s: recorder fell behind the hub, media lost; new file", self.token)
                await self._close_file()
            if frag is not None:
                await self._take(frag)
            if self.current is not None and (
                self.current.pending_bytes >= FLUSH_BYTES or time.monotonic() - self._last_flush >= FLUSH_SECONDS
            ):
                await self._flush()

    async def _take(self, frag: Fragment) -> None:
        f = self.current
        if f is not None and frag.gen != f.gen:
            await self._close_file()
            f = None
        if f is None:
            if not frag.keyframe:
                return
            await self._open_file(frag, wall_time(frag))
        elif frag.keyframe and self.file_seconds and frag.dts - f.first_dts >= self.file_seconds:
            length = frag.dts - f.first_dts
            start = f.start + length
            if abs(start - wall_time(frag)) > REANCHOR_DRIFT:
                log.info(
                    "%s: media time drifted %.1fs from the clock, re-anchored", self.token, start - wall_time(frag)
                )
                start = wall_time(frag)
            await self._close_file(length)
            await self._open_file(frag, start)
        f = self.current
        if f is None or frag.dts < f.first_dts:
            return  # no file (write failed), or audio from before the file's first keyframe
        data = frag.rebased(round(f.first_dts * 1_000_000))
        f.pending.append(data)
        f.pending_bytes += len(data)
        if frag.video:
            f.pending_end = max(f.pending_end, frag.end - f.first_dts)

    async def _open_file(self, frag: Fragment, start: float) -> None:
        init = self.hub.inits.get(frag.gen) if self.hub is not None else None
        if init is None:
            return
        writer = FileWriter(self.root)
        try:
            rel = await asyncio.to_thread(writer.create, self.name_for(start), init.data)
        except OSError as e:
            await self._write_error(e)
            return
        f = RecFile(rel, start, frag.gen, frag.dts, writer)
        self.current = f
        self.files.append(rel)
        self._last_flush = time.monotonic()
        await self.sink.file_opened(self, f)
        log.info("%s: recording to %s", self.token, rel)

    async def _flush(self) -> None:
        f = self.current
        self._last_flush = time.monotonic()
        if f is None or not f.pending:
            return
        chunks, end = f.pending, f.pending_end
        f.pending, f.pending_bytes = [], 0
        try:
            await asyncio.to_thread(f.writer.append, chunks)
        except OSError as e:
            await self._write_error(e)
            return
        f.duration = end

    async def _close_file(self, length: float | None = None) -> None:
        """Flush, close and report the current file; `length` is its exact span at a cut."""
        f = self.current
        if f is None:
            return
        await self._flush()
        if self.current is None:  # the flush failed and closed it
            return
        self.current = None
        if length is not None and f.duration > 0:
            f.duration = length
        await asyncio.to_thread(f.writer.close)
        await self.sink.file_closed(self, f)

    async def _write_error(self, error: OSError) -> None:
        """Disk full or another write error: keep what is on disk, close the file, tell the sink."""
        self._failed = True
        self.status = "disk full" if error.errno in (errno.ENOSPC, errno.EDQUOT) else f"write failed: {error}"
        log.warning("%s: recording stopped, %s", self.token, self.status)
        f, self.current = self.current, None
        if f is not None:
            f.pending, f.pending_bytes = [], 0
            await asyncio.to_thread(f.writer.close)
            await self.sink.file_closed(self, f)
        await self.sink.write_failed(self, error)

    async def _wait_for_space(self) -> None:
        while not self._stopping.is_set():
            free = await asyncio.to_thread(lambda: shutil.disk_usage(self.root).free)
            if free >= MIN_FREE_BYTES:
                log.info("%s: %.1f MB free again, recording resumes", self.token, free / 2**20)
                return
            await self._sleep(DISK_RETRY_SECONDS)


# -- reading recordings back -----------------------------------------------------------------------------


@dataclass
class Entry:
    """One moof+mdat of a recorded file."""

    offset: int
    size: int
    track: int
    dts: float  # media seconds from the file's start
    end: float
    keyframe: bool
    video: bool


@dataclass
class FileIndex:
    init: InitInfo
    entries: list[Entry]
    valid_end: int  # byte offset just after the last complete fragment
    duration: float  # media seconds the complete fragments span
    keyframes: list[int]  # indexes into entries of video keyframes
    keyframe_times: list[float]

    def keyframe_at(self, seconds: float) -> int:
        """Index of the entry of the last keyframe at or before `seconds` (the first if none is)."""
        if not self.keyframes:
            return 0
        i = bisect.bisect_right(self.keyframe_times, seconds + 1e-6) - 1
        return self.keyframes[max(0, i)]

    def keyframe_from(self, seconds: float) -> int:
        """Index of the entry of the first keyframe at or after `seconds` (len(entries) if none is)."""
        i = bisect.bisect_left(self.keyframe_times, seconds - 1e-3)
        return self.keyframes[i] if i < len(self.keyframes) else len(self.entries)


class NotRecording(ValueError):
    """The file is not a fragmented MP4 with at least an init segment."""


def index_file(path: Path) -> FileIndex:
    """Walk a recorded file's boxes: its init and every complete fragment (a torn tail is ignored)."""
    total = path.stat().st_size
    entries: list[Entry] = []
    with open(path, "rb", buffering=1 << 20) as fh:
        head = fh.read(min(total, 1 << 20))
        pos, init_end = 0, 0
        while pos + 8 <= len(head):
            size, kind = struct.unpack_from(">I4s", head, pos)
            if kind not in (b"ftyp", b"moov", b"free") or size < 8:
                break
            pos += size
            if kind == b"moov":
                init_end = pos
        if init_end == 0 or init_end > len(head):
            raise NotRecording(f"{path.name}: no init segment")
        init = parse_init(head[:init_end])
        valid = pos = init_end
        while pos + 8 <= total:
            fh.seek(pos)
            size, kind = struct.unpack(">I4s", fh.read(8))
            if kind != b"moof" or size < 8 or pos + size + 8 > total:
                break
            moof = fh.read(size - 8)
            msize, mkind = struct.unpack(">I4s", fh.read(8))
            end = pos + size + msize
            if mkind != b"mdat" or msize < 8 or end > total:
                break
            try:
                info = parse_fragment(struct.pack(">I4s", size, kind) + moof)
            except (StopIteration, struct.error, IndexError):
                break
            track = init.tracks.get(info.track_id)
            if track is not None:
                video = track.handler == "vide"
                dts = info.tfdt / track.timescale
                entries.append(
                    Entry(
                        pos,
                        end - pos,
                        info.track_id,
                        dts,
                        (info.tfdt + info.duration) / track.timescale,
                        video and info.keyframe,
                        video,
                    )
                )
            valid = pos = end
    video_ends = [e.end for e in entries if e.video] or [e.end for e in entries] or [0.0]
    keyframes = [i for i, e in enumerate(entries) if e.keyframe]
    return FileIndex(init, entries, valid, max(video_ends), keyframes, [entries[i].dts for i in keyframes])


def repair_file(path: Path) -> FileIndex:
    """After a crash: cut a torn last fragment off, so the file ends on a whole one."""
    index = index_file(path)
    if path.stat().st_size > index.valid_end:
        with open(path, "r+b") as fh:
            fh.truncate(index.valid_end)
    return index
