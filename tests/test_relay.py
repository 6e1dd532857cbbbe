"""The relay input: another h5gate's WS/fMP4 becomes a local hub's input, on one forward timeline.

Real parts only: two gateways pulling the same GStreamer camera, a RelayInput + StreamHub in the test's
own event loop pulling gateway A's /api/v1/h5swsapi over a real WebSocket; the upstream is switched to
gateway B, then A is restarted and taken back, and the hub's decode times must only move forward.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tools.harness.camera import FaultProxy, GstCamera
from tools.harness.gateway import Gateway
from workers.fmp4 import parse_init
from workers.hub import Cursor, StreamHub
from workers.relay_source import Provider, RelayInput, UpstreamClosed, split_message
from workers.relay_ws import h5swsapi_url, ws_provider

FPS = 25


@pytest.fixture(scope="module")
def cam() -> Iterator[GstCamera]:
    with GstCamera(fps=FPS, gop=FPS) as camera:
        yield camera


@pytest.fixture(scope="module")
def pair(cam: GstCamera, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Gateway, Gateway]]:
    """Gateways A and B, each pulling the same camera as source "cam"."""
    root = tmp_path_factory.mktemp("relay")
    gws = [Gateway(root / name, extra_args=["--no-demo"]) for name in ("a", "b")]
    try:
        for gw in gws:
            gw.start()
            gw.ok("AddSrcRTSP", token="cam", name="Camera", url=cam.url("h264"))
        for gw in gws:
            gw.wait_online("cam", timeout=30)
        yield gws[0], gws[1]
    finally:
        for gw in gws:
            gw.stop()


def provider_of(gw: Gateway, token: str = "cam") -> Provider:
    """A provider that reads the gateway's session at each connect (a restarted gateway logs in anew)."""

    def open_() -> AsyncIterator[bytes]:
        return ws_provider(h5swsapi_url(gw.base, token, "main"), headers={"Authorization": f"token {gw.session}"})()

    return open_


@dataclass
class Seen:
    """What a local consumer of the relayed hub got: (handler, decode time s, arrival, keyframe, gen)."""

    frags: list[tuple[str, float, float, bool, int]] = field(default_factory=list)

    def video(self, since: float = 0.0) -> list[tuple[str, float, float, bool, int]]:
        return [f for f in self.frags if f[0] == "vide" and f[2] >= since]


async def collect(hub: StreamHub, seen: Seen) -> None:
    await hub.wait_ready(60)
    cursor = Cursor(hub)
    while True:
        frag = await cursor.next()
        if frag is None:
            continue
        init = hub.inits[frag.gen]
        handler = init.tracks[frag.info.track_id].handler
        seen.frags.append((handler, frag.dts, frag.arrived, frag.keyframe, frag.gen))


async def until(predicate: object, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        await asyncio.sleep(0.1)
    return False


def assert_forward(seen: Seen) -> None:
    """Each track's decode times strictly increase, across every upstream switch."""
    for handler in ("vide", "soun"):
        times = [f[1] for f in seen.frags if f[0] == handler]
        bad = [(i, a, b) for i, (a, b) in enumerate(zip(times, times[1:], strict=False)) if b <= a]
        assert not bad, f"{handler} decode time went back or stood still at {bad[:5]}"


def assert_rate(seen: Seen, since: float, seconds: float) -> None:
    """Frames arrive at the camera's rate and keep its cadence in decode time.

    The arrival count allows for a stall of the shared 2-core test machine (frames then come late, in
    a burst); the decode times must still step by one frame interval each.
    """
    frames = [f for f in seen.video(since) if f[2] <= since + seconds]
    load = open("/proc/loadavg").read().split()[0]
    assert len(frames) >= FPS * seconds * 0.7, f"{len(frames)} frames in {seconds}s at {FPS} fps (load {load})"
    steps = sorted(b[1] - a[1] for a, b in zip(frames, frames[1:], strict=False))
    assert abs(steps[len(steps) // 2] - 1 / FPS) < 0.005, f"median decode step {steps[len(steps) // 2]:.4f}s"
    span = frames[-1][1] - frames[0][1]
    assert abs(span - (len(frames) - 1) / FPS) < 0.25, f"{len(frames)} frames span {span:.2f}s of decode time"


def test_relay_follows_upstream_switches_and_restarts(pair: tuple[Gateway, Gateway]) -> None:
    a, b = pair
    for gw in pair:
        gw.wait_online("cam", timeout=30)

    async def run() -> None:
        hub = StreamHub("relay/main")
        relay = RelayInput("relay/main", hub, provider_of(a), restart_min=0.2, restart_max=1.0, upstream="A")
        seen = Seen()
        relay.start()
        reader = asyncio.create_task(collect(hub, seen))
        try:
            # 1. from A: init first, then a keyframe, at the camera's rate, online
            assert await until(lambda: len(seen.video()) >= 1, 20), relay.state.last_error
            assert hub.init is not None and hub.init.video is not None
            assert hub.init.mime.startswith('video/mp4; codecs="avc1.')
            assert seen.frags[0][0] == "vide" and seen.frags[0][3], "the first fragment is a video keyframe"
            assert relay.online and relay.state.video_codec == "h264" and relay.state.audio_codec == "aac"
            t0 = time.monotonic()
            await asyncio.sleep(4.2)
            assert_rate(seen, t0, 4.0)
            assert_forward(seen)

            # 2. switch upstream to B (a new owner): time continues forward, picture resumes quickly
            before = seen.video()[-1]
            relay.set_provider(provider_of(b), "B")
            switched = time.monotonic()
            # (a fragment of A's already in flight may still land just after the switch: B's start with a new init)
            assert await until(lambda: any(f[4] > before[4] for f in seen.video(switched)), 10), (
                "a new upstream connection is a new init generation",
                relay.state.last_error,
            )
            first = next(f for f in seen.video(switched) if f[4] > before[4])
            assert first[3], "after a switch the hub restarts at a keyframe"
            wall_gap = first[2] - before[2]
            assert 0 < first[1] - before[1] <= wall_gap + 0.5, (first, before)
            t1 = time.monotonic() + 0.5
            await asyncio.sleep(3.7)
            assert_rate(seen, t1, 3.0)
            assert_forward(seen)

            # 3. back to A, and A restarts under the relay: offline while it is down, then forward again
            runs = relay.runs
            relay.set_provider(provider_of(a), "A")
            assert await until(lambda: relay.runs > runs and relay.online, 15), relay.state.last_error
            await asyncio.sleep(1.0)
            restarts = relay.state.restarts
            await asyncio.to_thread(a.stop)
            down = time.monotonic()
            assert await until(lambda: not relay.online, 10)
            assert relay.state.last_error, "the relay says why it is down"
            last_before = seen.video()[-1]
            await asyncio.sleep(2.0)  # a gap in wall time that the decode times must reflect, not hide
            await asyncio.to_thread(a.start)
            assert await until(lambda: bool(seen.video(down + 2.0)), 40), relay.state.last_error
            first = seen.video(down + 2.0)[0]
            assert relay.online and relay.state.restarts > restarts
            gap = first[1] - last_before[1]
            assert 2.0 <= gap <= first[2] - last_before[2] + 0.5, (gap, first, last_before)
            t2 = time.monotonic() + 0.5
            await asyncio.sleep(3.5)
            assert_rate(seen, t2, 3.0)
            assert_forward(seen)
            assert relay.timeline.resets == 0, "upstream switches are new runs, not timeline breaks"
        finally:
            reader.cancel()
            await relay.stop()
            await asyncio.gather(reader, return_exceptions=True)
            if a.proc is None:  # a failure mid-restart must not leave the module's gateway down
                await asyncio.to_thread(a.start)

    asyncio.run(run())


def test_relay_reports_why_the_upstream_refuses(pair: tuple[Gateway, Gateway]) -> None:
    """An unknown token, a bad session and a dead port each end up in last_error; nothing reaches the hub."""
    a, _ = pair

    async def reason(provider: Provider) -> str:
        hub = StreamHub("relay/x")
        relay = RelayInput("relay/x", hub, provider, restart_min=5.0)
        relay.start()
        try:
            assert await until(lambda: relay.state.last_error != "", 10)
            assert hub.init is None and not relay.online
            return relay.state.last_error
        finally:
            await relay.stop()

    async def run() -> None:
        assert "4404" in await reason(provider_of(a, "no-such-cam"))
        assert "unknown token" in await reason(provider_of(a, "no-such-cam"))
        bad = ws_provider(h5swsapi_url(a.base, "cam", session="00000000-0000-0000-0000-000000000000"))
        assert "4401" in await reason(bad)
        dead = ws_provider(h5swsapi_url("http://127.0.0.1:9", "cam"), open_timeout=3)
        assert "upstream" in await reason(dead)

    asyncio.run(run())


def test_relay_provider_close_reason_and_format_change() -> None:
    """A provider's UpstreamClosed(retry_now) reconnects without backoff; other messages are skipped."""
    assert split_message(b'video/mp4; codecs="avc1.42e01e"') == ("other", [])
    assert split_message(b"\x00\x00\x00\x10moof\x00\x00\x00\x00\x00\x00\x00\x00") == ("other", [])
    calls: list[float] = []

    async def run() -> None:
        def provider() -> AsyncIterator[bytes]:
            async def gen() -> AsyncIterator[bytes]:
                calls.append(time.monotonic())
                yield b'video/mp4; codecs="avc1.42e01e"'
                raise UpstreamClosed("upstream closed (4000: stream format changed)", 4000, retry_now=True)

            return gen()

        hub = StreamHub("relay/y")
        relay = RelayInput("relay/y", hub, provider, restart_min=10.0)
        relay.start()
        try:
            assert await until(lambda: len(calls) >= 3, 5), "retry_now reconnects without the 10 s backoff"
            assert "4000" in relay.state.last_error and hub.init is None
        finally:
            await relay.stop()

    asyncio.run(run())


def test_split_message_takes_real_init_and_batches(pair: tuple[Gateway, Gateway]) -> None:
    """The real h5swsapi messages: MIME string skipped, init recognised, batched fragments split."""
    a, _ = pair
    a.wait_online("cam", timeout=30)

    async def run() -> list[tuple[str, int]]:
        kinds: list[tuple[str, int]] = []
        messages = provider_of(a)()
        async for message in messages:
            kind, pieces = split_message(message)
            kinds.append((kind, len(pieces)))
            if kind == "init":
                assert parse_init(pieces[0]).video is not None
            if len(kinds) >= 8:
                break
        await messages.aclose()  # type: ignore[attr-defined]
        return kinds

    kinds = asyncio.run(run())
    assert kinds[0] == ("other", 0) and kinds[1] == ("init", 1)
    assert all(k == "fragments" and n >= 1 for k, n in kinds[2:])
    assert max(n for _, n in kinds[2:]) > 1, "the GOP cache, and audio with video, arrive batched"


def test_relay_carries_an_upstream_source_restart_in_the_same_connection(cam: GstCamera, tmp_path: Path) -> None:
    """The upstream's camera connection drops and comes back: h5swsapi sends a new init on the same socket;
    the relay keeps its connection, takes the new init, and its decode times still only move forward."""
    with FaultProxy.for_camera(cam) as proxy:
        gw = Gateway(tmp_path / "c", extra_args=["--no-demo"]).start()
        try:
            gw.ok("AddSrcRTSP", token="cam", name="Camera", url=proxy.url("h264"))
            gw.wait_online("cam", timeout=30)

            async def run() -> None:
                hub = StreamHub("relay/c")
                relay = RelayInput("relay/c", hub, provider_of(gw), restart_min=0.2, restart_max=1.0)
                seen = Seen()
                relay.start()
                reader = asyncio.create_task(collect(hub, seen))
                try:
                    assert await until(lambda: len(seen.video()) >= 25, 20), relay.state.last_error
                    gen, runs = hub.gen, relay.runs
                    proxy.set_mode("drop")  # the upstream's camera connection is cut; it reconnects
                    dropped = time.monotonic()
                    assert await until(lambda: hub.gen > gen and bool(seen.video(dropped + 0.5)), 30)
                    assert relay.runs == runs, "the relay kept its connection across the upstream's restart"
                    await asyncio.sleep(3.0)
                    assert_forward(seen)
                    assert relay.online and seen.video()[-1][4] == hub.gen
                finally:
                    reader.cancel()
                    await relay.stop()
                    await asyncio.gather(reader, return_exceptions=True)

            asyncio.run(run())
        finally:
            gw.stop()
