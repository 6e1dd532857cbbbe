"""Recorded files back out: to a player through a sink (H5Stream playback), and as one exported clip.

The player gets what a live viewer gets (MIME string, init segment, fragments), from the files of the
requested range played as one stream across file boundaries and gaps. Its timeline never jumps: every
fragment's decode time is rewritten onto one continuous output timeline, with durations divided by the
speed, so any stock MSE player shows 4x without knowing about it, and after a seek the new content simply
continues the same timeline. Sending is paced by the wall clock with a short lead, so pause, seek and
speed take effect within that lead.

Playback talks to a `PlaybackSink`, not to a socket: the API layer adapts it to the live player's
WebSocket (h5swsapi) or to a WebRTC viewer (media to its sidecar feed, events over the signalling socket),
so the index walk, pacing and commands have one implementation whatever carries the pictures.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from workers.fmp4 import retime
from workers.recorder import Entry, FileIndex, index_file

log = logging.getLogger("h5gate.playback")

LEAD = 1.0  # seconds of output sent ahead of the wall clock
BATCH_BYTES = 512 * 1024
BATCH_ENTRIES = 64
GAP = 0.5  # a jump in recorded time larger than this is a gap: playback skips it
OVERLAP = 0.05  # files that overlap by more than this (two recordings of the same time) are not replayed
PROGRESS_EVERY = 1.0
SPEEDS = (0.5, 16.0)
FOLLOW_EVERY = 1.0  # how often a file still being recorded is re-read for new fragments


@dataclass
class Span:
    """One recorded file as playback sees it."""

    start: float  # wall-clock time of its first frame
    end: float
    path: Path
    open: bool = False  # still being recorded


class Timeline:
    """Maps recorded (wall-clock) time onto the output's continuous decode time."""

    def __init__(self) -> None:
        self.out_end = 0.0  # where the output has got to
        self.out0 = 0.0
        self.content0 = 0.0
        self.speed = 1.0
        self.content_end = 0.0  # recorded time up to which video was sent

    def anchor(self, content: float, speed: float | None = None) -> None:
        """From here on, recorded time `content` plays at output time `out_end`."""
        self.out0, self.content0 = self.out_end, content
        self.content_end = content
        if speed is not None:
            self.speed = speed

    def out(self, content: float) -> float:
        return self.out0 + (content - self.content0) / self.speed

    def content(self, out: float) -> float:
        return self.content0 + max(0.0, out - self.out0) * self.speed

    def place(self, content: float, entry: Entry, timescale: int) -> int:
        """The output decode time (in track ticks) of an entry starting at recorded time `content`."""
        out = self.out(content)
        self.out_end = max(self.out_end, out + (entry.end - entry.dts) / self.speed)
        if entry.video:
            self.content_end = max(self.content_end, content + entry.end - entry.dts)
        return max(0, round(out * timescale))


def read_entries(path: Path, entries: list[Entry]) -> list[bytes]:
    """The bytes of consecutive entries, with one read; thread-side."""
    first, last = entries[0], entries[-1]
    with open(path, "rb") as fh:
        fh.seek(first.offset)
        blob = fh.read(last.offset + last.size - first.offset)
    return [blob[e.offset - first.offset : e.offset - first.offset + e.size] for e in entries]


Refresh = Callable[[Span], Awaitable[list[Span]]]
Command = dict[str, object]  # a player's command, as its JSON object: {"cmd": "H5_SEEK", "nSeekTime": 12}
Event = dict[str, object]  # what playback tells the player: {"type": "H5S_EVENT_PB_TIME", ...}


class PlaybackSink(Protocol):
    """Where one playback goes, and where its player's commands come from."""

    async def send_mime(self, mime: str) -> None:
        """The codec string, first of all (`video/mp4; codecs="avc1.64001f"`)."""

    async def send_init(self, data: bytes) -> None:
        """An init segment (ftyp+moov): the first one, and a new one where the stream format changes."""

    async def send_fragment(self, data: bytes) -> None:
        """One media fragment (moof+mdat), already on the output timeline."""

    async def send_event(self, event: Event) -> None:
        """A progress or end event, sent to the player as JSON text."""

    async def receive_command(self) -> Command | None:
        """The player's next command; None once the player has gone."""

    async def close(self, code: int, reason: str) -> None:
        """End the playback with a close code and reason the player sees."""


class Playback:
    """One playback socket: a sender paced by the clock, and the player's commands."""

    def __init__(
        self,
        sink: PlaybackSink,
        spans: list[Span],
        begin: float,
        end: float,
        format_time: Callable[[float], str],
        refresh: Refresh,
        name: str,
    ) -> None:
        self.sink = sink
        self.spans = spans
        self.begin = begin
        self.end = end
        self.format_time = format_time
        self.refresh = refresh  # spans after a given one (a recording going on adds files)
        self.name = name
        self.timeline = Timeline()
        self.playing = False
        self.repace = False  # pending commands, applied by the sender
        self.seek_to: float | None = None
        self.speed_to: float | None = None
        self.finished = False
        self.epoch = 0  # bumped by every command that invalidates what the sender is about to send
        self.changed = asyncio.Event()
        self.index: FileIndex | None = None
        self.index_open = False  # the current file was still being written when it was read
        self.skip_before = 0.0  # recorded time of the keyframe playback last (re)started on
        self.span_i = 0
        self.entry_i = 0
        self.init = b""
        self.mime = ""
        self.pace_wall = 0.0
        self.pace_out = 0.0
        self.last_progress = 0.0

    # -- commands --------------------------------------------------------------------------------------
    async def read_commands(self) -> None:
        while True:
            cmd = await self.sink.receive_command()
            if cmd is None:
                return
            await self.command(cmd)

    async def command(self, cmd: Command) -> None:
        """Note what the player asked for; the sender applies it (it alone moves the position)."""
        name = cmd.get("cmd")
        if name in ("H5_START", "H5_RESUME"):
            if self.playing:
                return
            self.playing = self.repace = True
            log.info("%s: playback %s", self.name, "started" if name == "H5_START" else "resumed")
        elif name == "H5_PAUSE":
            self.playing = False
            log.info("%s: playback paused", self.name)
        elif name == "H5_SEEK":
            value = cmd.get("nSeekTime", cmd.get("nTime"))
            seconds = _number(value)
            if seconds is None or seconds < 0:
                log.info("%s: ignored seek to %r", self.name, value)
                return
            self.seek_to = self.begin + seconds
            log.info("%s: seek to %.1fs", self.name, seconds)
        elif name == "H5_SPEED":
            speed = _number(cmd.get("nSpeed"))
            if speed is None or not SPEEDS[0] <= speed <= SPEEDS[1]:
                log.info("%s: ignored speed %r", self.name, cmd.get("nSpeed"))
                return
            self.speed_to = speed
            log.info("%s: speed %g", self.name, speed)
        else:
            return
        self.epoch += 1
        self.changed.set()

    async def _apply(self) -> None:
        """Carry out the commands that came since the last batch."""
        if self.seek_to is not None:
            target, self.seek_to = self.seek_to, None
            await self.seek(target)
        if self.speed_to is not None:
            self.timeline.anchor(self._position_content(), self.speed_to)
            self.speed_to = None
        if self.repace:
            self.repace = False
            self._repace()

    def _repace(self) -> None:
        self.pace_wall, self.pace_out = time.monotonic(), self.timeline.out_end
        self.timeline.anchor(self._position_content())
        self.last_progress = 0.0

    def _position_content(self) -> float:
        """Recorded time of the next video frame to send (audio may run a little ahead of it in the file)."""
        if self.index is not None:
            for entry in self.index.entries[self.entry_i : self.entry_i + 16]:
                if entry.video:
                    return self.spans[self.span_i].start + entry.dts
        return self.timeline.content_end

    def _start_at(self, content: float) -> None:
        """Playback (re)starts on the keyframe at `content`: audio from before it is left out."""
        self.skip_before = content
        self.timeline.anchor(content)

    # -- position ----------------------------------------------------------------------------------------
    async def _load(self, i: int) -> bool:
        """Make span i current; False if its file cannot be read or cannot follow the previous one."""
        span = self.spans[i]
        try:
            index = await asyncio.to_thread(index_file, span.path)
        except (OSError, ValueError) as e:
            log.warning("%s: skipping %s (%s)", self.name, span.path.name, e)
            return False
        if self.init and index.init.data != self.init:
            if index.init.mime != self.mime:
                return False
            await self.sink.send_init(index.init.data)
        self.init, self.mime = index.init.data, index.init.mime
        self.index, self.span_i, self.entry_i = index, i, 0
        self.index_open = span.open
        return True

    async def seek(self, target: float) -> None:
        """Position on the last keyframe at or before `target` (or the next recording after a gap)."""
        self.finished = False
        for i, span in enumerate(self.spans):
            if span.end > target or span.open:
                if not await self._load(i):
                    continue
                assert self.index is not None
                self.entry_i = self.index.keyframe_at(max(0.0, target - span.start))
                self._start_at(self._position_content())
                self.last_progress = 0.0
                return
        self.finished = True

    async def _advance(self) -> bool:
        """Move on when the current file is used up; False when there is nothing more (yet)."""
        assert self.index is not None
        if self.entry_i < len(self.index.entries):
            return True
        span = self.spans[self.span_i]
        if self.span_i + 1 == len(self.spans):  # the last known file: has the recording gone on?
            known = {s.path for s in self.spans}
            for found in await self.refresh(span):
                if found.path == span.path:
                    span.open, span.end = found.open, found.end
                elif found.start > span.start and found.path not in known:
                    self.spans.append(found)
        if self.index_open:  # it was still being written when read: read what came since
            fresh = await asyncio.to_thread(index_file, span.path)
            self.index_open = span.open
            if len(fresh.entries) > self.entry_i:
                self.index = fresh
                return True
            if span.open:
                return False
        for i in range(self.span_i + 1, len(self.spans)):
            nxt, played = self.spans[i], self.timeline.content_end
            if (nxt.end <= played + OVERLAP and not nxt.open) or not await self._load(i):
                continue  # another recording of what was just played, or unreadable
            assert self.index is not None
            if not self.index.entries:  # a file that has only just been started
                if nxt.open:
                    return False
                continue
            if nxt.start < played - OVERLAP:  # overlaps what was played: go on from its next keyframe
                self.entry_i = self.index.keyframe_from(played - nxt.start)
                if self.entry_i >= len(self.index.entries):
                    continue
                self._start_at(nxt.start + self.index.entries[self.entry_i].dts)
            elif nxt.start > played + GAP:
                self.timeline.anchor(nxt.start)
            return True
        self.finished = True
        return False

    # -- sending -------------------------------------------------------------------------------------------
    async def run(self) -> None:
        """Send the MIME string and init at once, media after H5_START."""
        await self.seek(self.begin)
        if self.index is None:
            await self.sink.close(4404, "no recording in this range")
            return
        await self.sink.send_mime(self.mime)
        await self.sink.send_init(self.init)
        reader = asyncio.create_task(self.read_commands())
        sender = asyncio.create_task(self._send_loop())
        try:
            done, _ = await asyncio.wait({reader, sender}, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if not task.cancelled() and task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]
        finally:
            for task in (reader, sender):
                task.cancel()
            await asyncio.gather(reader, sender, return_exceptions=True)

    async def _send_loop(self) -> None:
        while True:
            await self._apply()
            if not self.playing or self.finished:
                await self._wait(None)
                continue
            epoch = self.epoch
            if not await self._advance():
                if self.finished:
                    await self._finish()
                else:
                    await self._wait(FOLLOW_EVERY)
                continue
            assert self.index is not None
            span, index = self.spans[self.span_i], self.index
            batch = self._batch(index)
            data = await asyncio.to_thread(read_entries, span.path, batch)
            for entry, blob in zip(batch, data, strict=True):
                if epoch != self.epoch:
                    break
                content = span.start + entry.dts
                if content >= self.end:
                    self.finished = True
                    await self._finish()
                    break
                self.entry_i += 1
                if content < self.skip_before - 0.001:
                    continue  # audio from before the keyframe playback starts on
                track = index.init.tracks.get(entry.track)
                if track is None:
                    continue
                out = self.timeline.out(content)
                if not await self._pace(out, epoch):
                    self.entry_i -= 1
                    break
                tfdt = self.timeline.place(content, entry, track.timescale)
                await self.sink.send_fragment(retime(blob, tfdt, self.timeline.speed))
                await self._progress(False)

    def _batch(self, index: FileIndex) -> list[Entry]:
        batch: list[Entry] = []
        size = 0
        for entry in index.entries[self.entry_i : self.entry_i + BATCH_ENTRIES]:
            batch.append(entry)
            size += entry.size
            if size >= BATCH_BYTES:
                break
        return batch

    async def _pace(self, out: float, epoch: int) -> bool:
        """Wait until output time `out` is within LEAD of the clock; False if a command came first."""
        while True:
            if epoch != self.epoch:
                return False
            wait = self.pace_wall + (out - self.pace_out) - LEAD - time.monotonic()
            if wait <= 0:
                return True
            await self._progress(False)
            await self._wait(min(wait, PROGRESS_EVERY))

    async def _wait(self, timeout: float | None) -> None:
        self.changed.clear()
        try:
            await asyncio.wait_for(self.changed.wait(), timeout)
        except TimeoutError:
            pass

    async def _progress(self, force: bool, content: float | None = None) -> None:
        now = time.monotonic()
        if not force and now - self.last_progress < PROGRESS_EVERY:
            return
        self.last_progress = now
        if content is None:
            playhead = min(self.pace_out + (now - self.pace_wall), self.timeline.out_end)
            content = self.timeline.content(playhead)
        content = min(content, self.end)
        await self.sink.send_event({"type": "H5S_EVENT_PB_TIME", "pbTime": {"strTime": self.format_time(content)}})

    async def _finish(self) -> None:
        """The end of the range (or of the recordings): say so once and wait for a seek."""
        await self._progress(True, self.timeline.content_end)
        await self.sink.send_event({"type": "H5S_EVENT_PB_END"})
        log.info("%s: playback reached the end", self.name)


def _number(value: object) -> float | None:
    if not isinstance(value, int | float | str):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if number == number else None


# -- clip export --------------------------------------------------------------------------------------------


@dataclass
class Export:
    """Progress of one export, read by GetArchiveStatus while the thread writes."""

    percent: int = 0
    error: str = ""
    duration: float = 0.0
    done: bool = False


def export_clip(spans: list[Span], begin: float, end: float, out: Path, progress: Export) -> None:
    """Concatenate the fragments of [begin, end) into one fragmented MP4, without re-encoding.

    Starts on the keyframe at or before `begin`; gaps between files are closed up. Thread-side.
    """
    timeline = Timeline()
    init = b""
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "wb") as fh:
        for span in spans:
            index = index_file(span.path)
            played = timeline.content_end
            if not init:
                first = index.keyframe_at(begin - span.start)
            elif span.end <= played + OVERLAP:
                continue  # another recording of what is already in the clip
            else:
                first = index.keyframe_from(played - span.start) if span.start < played - OVERLAP else 0
            if first >= len(index.entries):
                continue
            if not init:
                init = index.init.data
                fh.write(init)
            elif index.init.data != init:
                progress.error = "the stream format changed; the clip ends there"
                break
            content0 = span.start + index.entries[first].dts
            if not timeline.out_end or content0 > played + GAP or span.start < played - OVERLAP:
                timeline.anchor(content0)
            entries = index.entries[first:]
            for i in range(0, len(entries), 256):
                chunk = [e for e in entries[i : i + 256] if span.start + e.dts < end]
                if not chunk:
                    break
                for entry, blob in zip(chunk, read_entries(span.path, chunk), strict=True):
                    content = span.start + entry.dts
                    track = index.init.tracks.get(entry.track)
                    if track is None or content < timeline.content0 - 0.001:
                        continue
                    fh.write(retime(blob, timeline.place(content, entry, track.timescale)))
                progress.percent = min(99, int(100 * (timeline.content_end - begin) / max(1e-3, end - begin)))
    progress.duration = timeline.out_end
