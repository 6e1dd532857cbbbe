"""MP4 box reading, the timing repair, per-viewer rebasing and the hub's ring, on real ffmpeg output."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import pytest

from workers.ffmpeg import PIPE_MOVFLAGS
from workers.fmp4 import Splitter, TimingRepair, parse_fragment, parse_init
from workers.hub import HubClosed, HubInterrupted, StreamHub
from workers.process import FfmpegProcess

DEMO = Path(__file__).resolve().parents[1] / "media" / "demo.mp4"


@pytest.fixture(scope="module")
def pipe_bytes() -> bytes:
    """Four seconds of the demo clip as ffmpeg writes it into the hub's pipe."""
    return subprocess.run(
        [
            "ffmpeg",
            "-hide_banner",
            "-loglevel",
            "error",
            "-i",
            str(DEMO),
            "-t",
            "4",
            "-map",
            "0:v:0",
            "-map",
            "0:a:0",
            "-c",
            "copy",
            "-f",
            "mp4",
            "-movflags",
            PIPE_MOVFLAGS,
            "pipe:1",
        ],
        check=True,
        capture_output=True,
    ).stdout


def split(data: bytes, chunk: int = 5000) -> list[tuple[str, bytes]]:
    splitter = Splitter()
    out: list[tuple[str, bytes]] = []
    for i in range(0, len(data), chunk):
        out += splitter.feed(data[i : i + chunk])
    return out


def test_splitter_and_codec_strings(pipe_bytes: bytes) -> None:
    parts = split(pipe_bytes, 777)  # odd chunk size: boxes straddle reads
    assert parts[0][0] == "init" and parts[0][1][4:8] == b"ftyp"
    init = parse_init(parts[0][1])
    assert init.mime == 'video/mp4; codecs="avc1.4d401e, mp4a.40.2"'
    assert (init.video.width, init.video.height) == (640, 360)
    frags = [parse_fragment(b) for k, b in parts[1:]]
    assert all(k == "fragment" for k, _ in parts[1:])
    video = [f for f in frags if f.track_id == init.video.track_id]
    assert 95 <= len(video) <= 105  # about 4 s at 25 fps, one frame per fragment
    assert all(f.samples == 1 for f in video)
    assert [i for i, f in enumerate(video) if f.keyframe] == list(range(0, len(video), 50))  # GOP 50


def test_timing_repair_makes_every_track_continuous(pipe_bytes: bytes) -> None:
    parts = split(pipe_bytes)
    raw = [parse_fragment(b) for _, b in parts[1:]]
    assert any(f.duration == 0 for f in raw), "ffmpeg no longer emits zero-duration samples: drop the repair"
    repair = TimingRepair()
    fixed = [parse_fragment(b) for _, b in parts[1:] for b, _ in repair.push(b, parse_fragment(b))]
    for track in (1, 2):
        seq = [f for f in fixed if f.track_id == track]
        gaps = [
            (a.tfdt, a.duration, b.tfdt)
            for a, b in zip(seq[1:], seq[2:], strict=False)
            if a.tfdt + a.duration != b.tfdt
        ]
        assert gaps == []
        assert all(f.duration > 0 for f in seq)


async def test_hub_gop_cache_rebase_and_slow_cursor(pipe_bytes: bytes) -> None:
    parts = split(pipe_bytes)
    hub = StreamHub("t", ring_seconds=60.0)
    hub.set_init(parts[0][1])
    repair = TimingRepair()
    slow = hub.cursor()  # joined before anything arrived: starts at the very first fragment
    for _, b in parts[1:]:
        for data, info in repair.push(b, parse_fragment(b)):
            hub.publish(data, info)
    gop = hub.gop()
    assert gop[0].keyframe and gop[0].seq == hub.keyframe_seq and gop[0].dts >= 2.0
    # a new viewer's first fragment is the newest keyframe, and rebased it starts at time zero
    first = await hub.cursor().next(1)
    assert first is gop[0]
    shift = int(first.dts * 1_000_000)
    assert parse_fragment(first.rebased(shift)).tfdt == 0
    assert first.rebased(shift) is first.rebased(shift)  # viewers with the same start share the bytes
    # a cursor far behind the newest media is moved to the newest keyframe, and that is counted
    slow.slow_seconds = 0.5
    nxt = await slow.next(1)
    assert nxt is gop[0]
    assert slow.skips == 1 and hub.skips == 1


async def test_cursor_waits_then_sees_close() -> None:
    hub = StreamHub("t")
    cursor = hub.cursor()
    assert await cursor.next(0.05) is None
    task = asyncio.create_task(cursor.next(5))
    await asyncio.sleep(0.01)
    hub.close()
    with pytest.raises(HubClosed):
        await task


async def test_an_interrupt_ends_current_cursors_with_its_reason_and_the_hub_waits_for_a_keyframe(
    pipe_bytes: bytes,
) -> None:
    """A cloud edge going offline: its viewers are told why, and a new viewer does not get a stale picture."""
    parts = split(pipe_bytes)
    hub = StreamHub("t", ring_seconds=60.0)
    hub.set_init(parts[0][1])
    fragments = [(b, parse_fragment(b)) for _, b in parts[1:]]
    for data, info in fragments[:30]:
        hub.publish(data, info)
    watching = hub.cursor()
    assert hub.ready and await watching.next(1) is not None
    while watching.next_nowait() is not None:  # caught up: it now waits for the source
        pass
    waiting = asyncio.create_task(watching.next(5))
    await asyncio.sleep(0.01)
    hub.interrupt("source offline: cloud edge e1 is offline")
    with pytest.raises(HubInterrupted, match="cloud edge e1 is offline"):
        await waiting
    assert isinstance(HubInterrupted("x"), HubClosed)  # every consumer ends as for a closed hub
    assert not hub.ready and not hub.closed
    after = hub.cursor()  # made after the interrupt: not affected by it
    assert await after.next(0.05) is None
    video = parse_init(parts[0][1]).video
    assert video is not None
    keyframes = [i for i, (_, info) in enumerate(fragments) if info.keyframe and info.track_id == video.track_id]
    for data, info in fragments[30 : keyframes[-1]]:
        hub.publish(data, info)  # what comes before the next keyframe cannot start a picture: dropped
    assert not hub.ready
    hub.publish(*fragments[keyframes[-1]])
    assert hub.ready and (await after.next(1)) is not None
    with pytest.raises(HubInterrupted):
        watching.next_nowait()


def test_a_run_whose_init_browsers_cannot_play_never_reaches_the_hub(pipe_bytes: bytes) -> None:
    """MJPEG (or G.711) copied into MP4 may come out before ffmpeg's stream lines are read: the init decides."""
    mjpeg = subprocess.run(
        [
            "ffmpeg",
            "-hide_banner",
            "-loglevel",
            "error",
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=320x180:rate=5",
            "-t",
            "1",
            "-c:v",
            "mjpeg",
            "-f",
            "mp4",
            "-movflags",
            PIPE_MOVFLAGS,
            "pipe:1",
        ],
        check=True,
        capture_output=True,
    ).stdout
    process = FfmpegProcess("t", "ffmpeg", StreamHub("t"), plan_for=None)  # type: ignore[arg-type]
    assert process._unplayable(parse_init(split(mjpeg)[0][1]))
    assert process.video_mode == "h264" and process.audio_mode == "copy"
    assert process._unplayable(parse_init(split(mjpeg)[0][1]))  # also when stderr already switched the mode
    process = FfmpegProcess("t", "ffmpeg", StreamHub("t"), plan_for=None)  # type: ignore[arg-type]
    assert not process._unplayable(parse_init(split(pipe_bytes)[0][1]))  # H.264 + AAC: copied as they are
    assert process.video_mode == "copy"
