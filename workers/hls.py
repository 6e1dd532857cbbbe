"""HLS made on demand from a StreamHub: fMP4 (LL-HLS) cut in memory, MPEG-TS by an ffmpeg fed from the hub.

A source's own ffmpeg used to write both HLS flavours to disk all the time, watched or not: two more muxers
in every ffmpeg (memory per source) and a steady trickle of writes. Now HLS exists only while someone
fetches it, and is cut from what the hub already holds:

- v2 (fMP4): the hub's fragments are already fMP4, one frame each, so a segment is just the fragments from
  one video keyframe to the next once `target` seconds have passed, concatenated; the hub's init segment is
  the EXT-X-MAP. Fragments are grouped into parts of at most `part_target` seconds, which gives LL-HLS
  (EXT-X-PART, EXT-X-PRELOAD-HINT, blocking playlist reload) for free: a part is ready as soon as its last
  frame is in the hub. Nothing touches the disk.
- v1 (MPEG-TS): ffmpeg reads the hub's fMP4 on stdin and its HLS muxer writes TS segments into a folder,
  only while clients fetch them; the folder is emptied when it stops.

Both start from the oldest keyframe the hub still holds, so a first playlist already lists a few seconds of
segments instead of making the first client wait for them.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import secrets
import shutil
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from workers.child import Child
from workers.fmp4 import InitInfo
from workers.hub import Cursor, Fragment, HubClosed, StreamHub
from workers.supervise import RunState

log = logging.getLogger("h5gate.hls")

TAIL_SEGMENTS = 2  # segments kept beyond the playlist, for clients that fetch what they just saw listed
PART_SEGMENTS = 3  # segments (from the newest) whose parts the playlist lists


def run_id() -> str:
    """A packager run's id, for segment names that never repeat: behind a cache they are immutable.

    The millisecond clock orders runs of one node (restarts of the source, of the server); the random
    suffix separates nodes and survives a clock that stepped back. 13-15 hex digits.
    """
    return f"{time.time_ns() // 1_000_000:x}{secrets.token_hex(2)}"


def history_cursor(hub: StreamHub) -> Cursor:
    """A cursor at the oldest keyframe of the hub's current run: a playlist starts with segments to list.

    It never counts as "behind": it reads what the ring holds as fast as it can, and only the ring's own
    trimming can move it forward.
    """
    cursor = hub.cursor()
    cursor.slow_seconds = math.inf
    for frag in hub.ring:
        if frag.keyframe and frag.gen == hub.gen:
            cursor.seq = frag.seq
            break
    return cursor


@dataclass
class Part:
    index: int
    data: bytes
    duration: float
    independent: bool


@dataclass
class Segment:
    msn: int
    gen: int
    start: float  # decode time (seconds, on the packager's timeline) of its first frame
    wall: float  # time.time() when its first frame reached the hub: EXT-X-PROGRAM-DATE-TIME
    discontinuity: bool
    parts: list[Part] = field(default_factory=list)
    duration: float = 0.0
    complete: bool = False

    @property
    def data(self) -> bytes:
        return b"".join(p.data for p in self.parts)


class FragmentedHls:
    """One source's fMP4 HLS in memory: segments of whole GOPs, split into parts for LL-HLS.

    Fed one hub fragment at a time (push); what it has made is read with playlist(), segment(), part(),
    init(), and waited for with wait_for(), which is how a blocking playlist reload or a preload hint waits.
    """

    def __init__(self, name: str, target: float, segment_num: int, part_target: float) -> None:
        self.name = name
        self.target = target
        self.segment_num = max(1, segment_num)
        self.part_target = part_target
        self.run = run_id()  # in every URI: a restarted packager (on any node) never reuses a cached name
        self.segments: deque[Segment] = deque()
        self.inits: dict[int, InitInfo] = {}
        self.next_msn = 0
        self.discontinuities = 0  # EXT-X-DISCONTINUITY-SEQUENCE: discontinuities dropped off the top
        self.target_duration = max(1, math.ceil(target))
        self._gen: int | None = None
        self._has_video = True
        self._shift = 0.0  # seconds subtracted from this run's decode times (a run that went back)
        self._shift_us = 0
        self._end = 0.0  # where the timeline has got to (end of the newest video frame)
        self._run_start = 0.0  # decode time of the first keyframe of this run
        self._pending: list[bytes] = []
        self._pending_dur = 0.0
        self._pending_key = False
        self._last_frame = 0.04
        self._open: Segment | None = None
        self._discontinuity = False
        self._changed = asyncio.Event()
        self.closed = False

    # -- input ------------------------------------------------------------------------------------------
    def push(self, frag: Fragment, init: InitInfo) -> None:
        if frag.gen != self._gen:
            if not frag.keyframe and init.video is not None:
                return  # a new run starts on a keyframe
            self._new_run(frag, init)
        if self._has_video and not frag.video:
            if self._open is None or frag.dts - self._shift < self._run_start - 0.001:
                return  # audio from before the run's first keyframe would land before the playlist's start
        dts = frag.dts - self._shift
        timed = frag.video or not self._has_video
        if timed and (frag.keyframe or not self._has_video):
            seg = self._open
            if seg is None or dts - seg.start >= self.target - 0.001:
                if seg is None:
                    self._run_start = dts
                self._close_segment(dts)
                wall = time.time() - (time.monotonic() - frag.arrived)
                self._open = Segment(self.next_msn, frag.gen, dts, wall, self._discontinuity)
                self._discontinuity = False
                self.next_msn += 1
                self._pending_key = True
            elif frag.video:  # a keyframe inside a segment starts a part a player can begin with
                if self._pending_dur:
                    self._close_part()
                self._pending_key = True  # (audio held before it is independent too)
        if self._open is None:
            return
        duration = frag.end - frag.dts
        if timed and self._pending_dur and self._pending_dur + duration > self.part_target + 0.001:
            self._close_part()  # a frame longer than foreseen: the part ends before it, not past its target
        self._pending.append(frag.rebased(self._shift_us))
        if timed:
            if duration > 0:
                self._last_frame = duration
            self._pending_dur += duration
            self._end = max(self._end, frag.end - self._shift)
            if self._pending_dur + self._last_frame > self.part_target + 0.001:
                self._close_part()
        self._wake()

    def _new_run(self, frag: Fragment, init: InitInfo) -> None:
        """A new init (the source's ffmpeg restarted): new EXT-X-MAP, a discontinuity, a timeline that
        goes on from where it stopped if the new run's times start earlier."""
        first = self._gen is None
        self._close_segment(self._end, carry_audio=False)  # the old run's audio needs the old init
        self._gen = frag.gen
        self.inits[frag.gen] = init
        self._has_video = init.video is not None
        if not first:
            self._discontinuity = True
            self._shift = frag.dts - self._end if frag.dts < self._end else 0.0
            self._shift_us = int(self._shift * 1_000_000)
            log.info("%s: HLS: new source run (init %d), discontinuity", self.name, frag.gen)

    def _close_part(self) -> None:
        seg = self._open
        if seg is None or not self._pending:
            return
        part = Part(len(seg.parts), b"".join(self._pending), self._pending_dur, self._pending_key)
        seg.parts.append(part)
        seg.duration += part.duration
        self._pending, self._pending_dur, self._pending_key = [], 0.0, False

    def _close_segment(self, end: float, carry_audio: bool = True) -> None:
        seg = self._open
        if seg is None:
            return
        if not self._pending_dur and self._has_video and carry_audio:
            pass  # audio that came after the last frame goes on into the next segment's first part
        else:
            self._close_part()
        if not carry_audio:
            self._pending, self._pending_dur, self._pending_key = [], 0.0, False
        self._open = None
        if not seg.parts:
            return
        seg.duration = max(seg.duration, end - seg.start) if end > seg.start else seg.duration
        seg.complete = True
        self.segments.append(seg)
        self.target_duration = max(self.target_duration, round(seg.duration))
        while sum(1 for s in self.segments if s.complete) > self.segment_num + TAIL_SEGMENTS:
            old = self.segments.popleft()
            if old.discontinuity:
                self.discontinuities += 1
        for gen in [g for g in self.inits if g != self._gen and all(s.gen != g for s in self.segments)]:
            del self.inits[gen]

    def close(self) -> None:
        self.closed = True
        self._wake()

    def _wake(self) -> None:
        event, self._changed = self._changed, asyncio.Event()
        event.set()

    # -- output -----------------------------------------------------------------------------------------
    def _listed(self) -> list[Segment]:
        """The complete segments the playlist lists, then the one being made (when it has parts)."""
        done = [s for s in self.segments if s.complete][-self.segment_num :]
        if self._open is not None and self._open.parts:
            done.append(self._open)
        return done

    @property
    def ready(self) -> bool:
        """Whether a playlist can be given: at least one complete segment."""
        return any(s.complete for s in self.segments)

    def has(self, msn: int, part: int | None) -> bool:
        """Whether segment `msn` is complete (part None) or has part `part`: a blocking reload's condition."""
        newest = self._open if self._open is not None and self._open.parts else None
        for seg in (*self.segments, *((newest,) if newest else ())):
            if seg.msn > msn:
                return True
            if seg.msn == msn:
                return seg.complete if part is None else (seg.complete or len(seg.parts) > part)
        return False

    async def wait_for(self, test: Callable[[], bool], timeout: float) -> bool:
        """Wait until test() holds or the timeout passes; False on timeout or close."""
        deadline = time.monotonic() + timeout
        while not test():
            left = deadline - time.monotonic()
            if left <= 0 or self.closed:
                return False
            event = self._changed
            try:
                async with asyncio.timeout(left):
                    await event.wait()
            except TimeoutError:
                return bool(test())
        return True

    def find(self, msn: int) -> Segment | None:
        for seg in self.segments:
            if seg.msn == msn:
                return seg
        if self._open is not None and self._open.msn == msn:
            return self._open
        return None

    def segment(self, msn: int) -> bytes | None:
        seg = self.find(msn)
        return seg.data if seg is not None and seg.complete else None

    def part(self, msn: int, index: int) -> bytes | None:
        seg = self.find(msn)
        if seg is None or index >= len(seg.parts):
            return None
        return seg.parts[index].data

    def init(self, gen: int) -> bytes | None:
        info = self.inits.get(gen)
        return info.data if info is not None else None

    def next_part(self) -> tuple[int, int]:
        """(msn, part index) of the part expected next: the preload hint.

        A segment that has reached its target duration ends at the next keyframe, so then the next part
        is most likely the first of the next segment.
        """
        seg = self._open
        if seg is not None and (self._pending or seg.duration < self.target - 0.001):
            return seg.msn, len(seg.parts)
        return self.next_msn, 0

    def playlist(self, query: str = "", low_latency: bool = True) -> str:
        """The media playlist; `query` (e.g. "?session=...") is carried on every URI."""
        listed = self._listed()
        complete = [s for s in listed if s.complete]
        lines = [
            "#EXTM3U",
            "#EXT-X-VERSION:6",
            f"#EXT-X-TARGETDURATION:{self.target_duration}",
        ]
        if low_latency:
            lines += [
                f"#EXT-X-PART-INF:PART-TARGET={self.part_target:.3f}",
                f"#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK={3 * self.part_target:.3f}",
            ]
        first = listed[0] if listed else None
        lines += [
            f"#EXT-X-MEDIA-SEQUENCE:{first.msn if first else self.next_msn}",
            f"#EXT-X-DISCONTINUITY-SEQUENCE:{self._discontinuity_sequence(first)}",
            "#EXT-X-INDEPENDENT-SEGMENTS",
        ]
        part_from = complete[-PART_SEGMENTS + 1].msn if len(complete) >= PART_SEGMENTS - 1 else -1
        gen = None
        for seg in listed:
            if seg.discontinuity and seg is not first:
                lines.append("#EXT-X-DISCONTINUITY")
            if seg.gen != gen:
                lines.append(f'#EXT-X-MAP:URI="init-{self.run}-{seg.gen}.mp4{query}"')
                gen = seg.gen
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seg.wall))
            lines.append(f"#EXT-X-PROGRAM-DATE-TIME:{stamp}.{int(seg.wall * 1000) % 1000:03d}Z")
            if low_latency and seg.msn >= part_from:
                for part in seg.parts:
                    flag = ",INDEPENDENT=YES" if part.independent else ""
                    uri = f"part-{self.run}-{seg.msn}-{part.index}.m4s{query}"
                    lines.append(f'#EXT-X-PART:DURATION={part.duration:.5f},URI="{uri}"{flag}')
            if seg.complete:
                lines.append(f"#EXTINF:{seg.duration:.5f},")
                lines.append(f"seg-{self.run}-{seg.msn}.m4s{query}")
        if low_latency:
            msn, index = self.next_part()
            lines.append(f'#EXT-X-PRELOAD-HINT:TYPE=PART,URI="part-{self.run}-{msn}-{index}.m4s{query}"')
        return "\n".join(lines) + "\n"

    def _discontinuity_sequence(self, first: Segment | None) -> int:
        """Discontinuities before the first listed segment (including its own tag, which is not written)."""
        count = self.discontinuities
        for seg in self.segments:
            if seg is first:
                break
            if seg.discontinuity:
                count += 1
        if first is not None and first.discontinuity:
            count += 1
        return count


async def feed_fmp4(hub: StreamHub, hls: FragmentedHls) -> None:
    """Move the hub's fragments into the packager until the hub closes or the task is cancelled."""
    cursor = history_cursor(hub)
    try:
        while True:
            frag = await cursor.next()
            if frag is None:
                continue
            init = hub.inits.get(frag.gen)
            if init is not None:
                hls.push(frag, init)
    except HubClosed:
        pass
    finally:
        hls.close()


class TsHls:
    """MPEG-TS HLS (v1): an ffmpeg that reads the hub's fMP4 on stdin and writes TS segments to `folder`.

    ffmpeg's HLS muxer does the TS work (Annex B, ADTS, PAT/PMT, segment names and deletion). It runs only
    while clients fetch; `stop()` ends it and empties the folder. A new source run with the same init goes
    on in the same ffmpeg (decode times kept going forward); a different init restarts ffmpeg, which
    continues the playlist after an EXT-X-DISCONTINUITY. Segment numbers (and so names) start at the
    microsecond clock: a new run, even one a moment after the last, never reuses a name a cache holds.
    """

    def __init__(self, name: str, binary: str, hub: StreamHub, folder: Path, target: int, segment_num: int) -> None:
        self.name = name
        self.binary = binary
        self.hub = hub
        self.folder = folder
        self.target = target
        self.segment_num = segment_num
        self.playlist = folder / "hls.m3u8"
        self.state = RunState()
        self._child = Child(self.state)
        self._task: asyncio.Task[None] | None = None
        self.runs = 0
        self.done = asyncio.Event()

    def command(self, restart: bool) -> list[str]:
        flags = "delete_segments+independent_segments+omit_endlist+temp_file"
        if restart:
            flags += "+append_list+discont_start"
        out = self.folder.absolute()
        return [
            self.binary,
            *("-hide_banner", "-nostdin", "-nostats", "-loglevel", "repeat+level+warning"),
            *("-f", "mp4", "-i", "pipe:0", "-map", "0", "-c", "copy"),
            *("-f", "hls", "-hls_time", str(self.target), "-hls_list_size", str(self.segment_num)),
            *("-hls_flags", flags, "-hls_allow_cache", "0", "-hls_start_number_source", "epoch_us"),
            *("-hls_segment_filename", f"{out}/hls%d.ts", f"{out}/hls.m3u8"),
        ]

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"hls-ts:{self.name}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        await asyncio.to_thread(_remove, self.folder)

    async def _run(self) -> None:
        cursor = history_cursor(self.hub)
        await asyncio.to_thread(_empty, self.folder)
        restart = False
        try:
            while True:
                cursor = await self._run_once(cursor, restart)
                restart = True
        except HubClosed:
            pass
        finally:
            self.done.set()

    async def _run_once(self, cursor: Cursor, restart: bool) -> Cursor:
        """One ffmpeg: feed it until the init changes (returns the cursor at the new run's first fragment)."""
        self.runs += 1
        log.info("%s: HLS v1: starting ffmpeg", self.name)
        proc = await self._child.spawn(
            *self.command(restart),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        assert proc.stdin is not None
        errors = asyncio.create_task(self._log_stderr(proc))
        gen: int | None = None
        init_data = b""
        shift_us = 0
        end_us = 0
        try:
            while True:
                frag = await cursor.next()
                if frag is None:
                    continue
                if frag.gen != gen:
                    init = self.hub.inits.get(frag.gen)
                    if init is None or (not frag.keyframe and init.video is not None):
                        continue
                    if gen is None:
                        proc.stdin.write(init.data)
                        init_data = init.data
                    elif init.data != init_data:
                        cursor.seq = frag.seq  # this fragment starts the next ffmpeg
                        return cursor
                    start_us = int(frag.dts * 1_000_000)
                    shift_us = start_us - end_us if gen is not None and start_us < end_us else 0
                    gen = frag.gen
                proc.stdin.write(frag.rebased(shift_us))
                end_us = max(end_us, int(frag.end * 1_000_000) - shift_us)
                await proc.stdin.drain()
        except (BrokenPipeError, ConnectionResetError):
            log.warning("%s: HLS v1: ffmpeg closed its input (exit %s)", self.name, proc.returncode)
            await asyncio.sleep(1.0)  # no tight loop if ffmpeg cannot take this stream
            return history_cursor(self.hub)
        finally:
            if proc.stdin is not None and not proc.stdin.is_closing():
                proc.stdin.close()
            await self._child.reap()
            await asyncio.gather(errors, return_exceptions=True)

    async def _log_stderr(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stderr is not None
        while raw := await proc.stderr.readline():
            line = raw.decode("utf-8", "replace").rstrip()
            if "[error]" in line or "[fatal]" in line:
                log.warning("%s: HLS v1: ffmpeg: %s", self.name, line)


def _remove(folder: Path) -> None:
    """Delete the run's folder, and the source's folder above it once no run has one there."""
    shutil.rmtree(folder, True)
    try:
        folder.parent.rmdir()
    except OSError:
        pass  # another run's folder is still there


def _empty(folder: Path) -> None:
    """A fresh, empty folder: a playlist must never list a segment of an earlier run."""
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.iterdir():
        if old.is_file():
            os.unlink(old)
