"""WebRTC out (h5srtcapi): a real Chromium and aiortc viewers against the real gateway and its sidecar.

Everything runs in a private network namespace that has only `lo` (tools/harness/webrtc_viewer.py): there
127.0.0.1 is the only address, so ICE works on loopback and nothing can leave the machine. Sources are
clips made here with ffmpeg (H.264 without B-frames, which browsers' WebRTC decoders need; AAC audio) and
the GStreamer RTSP camera (G.711 audio, H.265). The aiortc viewers keep what crossed the wire undecoded,
so tests compare it byte for byte with the source file: that is how "no re-encoding" is checked.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import signal
import statistics
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import psutil
import pytest
import websockets
from playwright.sync_api import Page

from supervisor.webrtc import parse_ice_servers
from tests.browser import launch, new_page
from tests.test_records import iso_time, manual_time, records
from tools.harness.camera import GstCamera, wait_until
from tools.harness.gateway import ROOT, Gateway
from tools.harness.webrtc_viewer import RtcViewer, private_network
from workers.webrtc.media import START_CODE, to_annexb

WEBRTC_ARGS = [
    "--autoplay-policy=no-user-gesture-required",
    "--allow-loopback-in-peer-connection",  # else Chromium gathers no candidate on `lo`, even alone there
    "--disable-features=WebRtcHideLocalIpsWithMdns",
]
GOP_FRAMES = 100  # 4 s at 25 fps: a viewer that waited for the next keyframe would wait seconds
CLIP_SECONDS = 8


def _make_clip(path: Path, *video: str) -> None:
    subprocess.run(
        ["/usr/bin/ffmpeg", "-loglevel", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=25",
         "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000", "-t", str(CLIP_SECONDS),
         *video, "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "64k", str(path)],
        check=True, timeout=60)  # fmt: skip


@pytest.fixture(scope="module")
def netns() -> Iterator[None]:
    with private_network():
        yield


@pytest.fixture(scope="module")
def clips(netns: None, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("clips")
    _make_clip(
        folder / "clip.mp4",
        "-c:v",
        "libx264",
        "-preset",
        "superfast",
        "-profile:v",
        "main",
        "-bf",
        "0",
        "-g",
        str(GOP_FRAMES),
        "-keyint_min",
        str(GOP_FRAMES),
        "-sc_threshold",
        "0",
    )
    return folder


def _sidecar(gw: Gateway) -> psutil.Process:
    assert gw.proc is not None
    for child in psutil.Process(gw.proc.pid).children():
        if "workers.webrtc" in " ".join(child.cmdline()):
            return child
    raise AssertionError("no WebRTC sidecar process")


def _status(gw: Gateway) -> dict[str, Any]:
    return gw.ok("h5srtcapi/Status")


def _start(gw: Gateway) -> Gateway:
    gw.start()
    assert wait_until(lambda: _status(gw)["bServiceRunning"], 20), gw.log()[-3000:]
    return gw


@pytest.fixture(scope="module")
def gw(clips: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    env = {"H5GATE_MEDIA_ROOTS": str(clips), "H5GATE_RECORD_FILE_SECONDS": "2", "H5GATE_PRE_RECORD_SECONDS": "0"}
    gateway = _start(Gateway(tmp_path_factory.mktemp("rtc-gw"), extra_args=["--no-demo"], env=env))
    try:
        gateway.ok("AddSrcFile", name="Clip", token="clip", url=str(clips / "clip.mp4"))
        gateway.wait_online("clip", timeout=30)
        yield gateway
    finally:
        gateway.stop()


@pytest.fixture(scope="module")
def ns_camera(netns: None) -> Iterator[GstCamera]:
    """The GStreamer camera inside the namespace (the session-wide one is outside, out of reach)."""
    with GstCamera() as cam:
        yield cam


def rtc_url(gw: Gateway, token: str, **params: str) -> str:
    query = urllib.parse.urlencode({"token": token, "profile": "main", "session": gw.session, **params})
    return f"{gw.ws_base}/api/v1/h5srtcapi?{query}"


def _nals(annexb: bytes) -> list[bytes]:
    return [n for n in annexb.split(START_CODE) if n]


def _picture_nals(annexb: bytes) -> tuple[bytes, ...]:
    """The NAL units of an access unit without parameter sets (which the sidecar adds to keyframes)."""
    return tuple(n for n in _nals(annexb) if n[0] & 0x1F not in (7, 8))


def _source_units(path: Path) -> set[tuple[bytes, ...]]:
    with av.open(str(path)) as container:
        return {_picture_nals(to_annexb(bytes(p), 4)[0]) for p in container.demux(container.streams.video[0]) if p.size}


# -- the browser ------------------------------------------------------------------------------------
@pytest.fixture
def page(netns: None) -> Iterator[Page]:
    """Per test: Playwright's sync API runs an event loop that the asyncio tests after it cannot share."""
    for browser in launch(WEBRTC_ARGS):
        yield from new_page(browser)


PAGE_STATS = """async () => {
    const report = await window.player.getStats();
    const out = {codecs: {}, video: null, audio: null};
    if (!report) return out;
    report.forEach(r => {
        if (r.type === 'codec') out.codecs[r.id] = r.mimeType + ' ' + (r.sdpFmtpLine || '');
        if (r.type === 'inbound-rtp') out[r.kind] = r;
    });
    return out;
}"""


def test_console_tile_switches_between_websocket_and_webrtc(gw: Gateway, page: Page) -> None:
    page.goto(gw.base + "/console/login")
    page.evaluate("(s) => { sessionStorage.setItem('h5gate_session', s); localStorage.clear(); }", gw.session)
    page.goto(gw.base + "/console/")
    info = "document.querySelector('.tile[data-token=clip] .tile-info').textContent"
    page.wait_for_function(f"{info}.startsWith('WS · playing')", timeout=15_000)
    page.locator(".tile[data-token=clip] button.seg", has_text="RTC").click()
    page.wait_for_function(f"{info}.startsWith('RTC · playing')", timeout=15_000)
    video = "document.querySelector('.tile[data-token=clip] video')"
    t0 = page.evaluate(f"{video}.currentTime")
    page.wait_for_function(f"{video}.currentTime > {t0} + 1", timeout=10_000)
    assert wait_until(lambda: _status(gw)["nConnectCount"] >= 1, 5)
    page.locator(".tile[data-token=clip] button.seg", has_text="WS").click()
    page.wait_for_function(f"{info}.startsWith('WS · playing')", timeout=15_000)
    assert page.page_errors == []


def test_browser_plays_h264_over_webrtc_and_reconnects_after_a_sidecar_crash(gw: Gateway, page: Page) -> None:
    page.goto(gw.base + "/console/login")
    page.set_content('<video id="v" muted playsinline></video>')
    page.add_script_tag(url=gw.base + "/console/static/h5splayer.js")
    started = time.monotonic()
    page.evaluate(
        """(session) => {
        window.player = new H5sPlayerRTC({videoid: 'v', protocol: location.protocol, host: location.host,
                                          rootpath: '/', token: 'clip', session: session});
        window.player.connect();
    }""",
        gw.session,
    )
    page.wait_for_function("window.player.stats().framesDecoded > 0", timeout=10_000)
    first_picture = time.monotonic() - started
    assert _status(gw)["nConnectCount"] == 1

    sidecar = _sidecar(gw)
    cpu0, t0 = sum(sidecar.cpu_times()[:2]), time.monotonic()

    def three_seconds_of_audio() -> bool:  # the GOP burst makes frame counts jump: count audio
        audio = page.evaluate(PAGE_STATS)["audio"]
        return bool(audio) and audio["packetsReceived"] >= 150

    assert wait_until(three_seconds_of_audio, 15, interval=0.2), page.evaluate(PAGE_STATS)
    cores = (sum(sidecar.cpu_times()[:2]) - cpu0) / (time.monotonic() - t0)
    stats = page.evaluate(PAGE_STATS)
    video, audio = stats["video"], stats["audio"]
    assert stats["codecs"][video["codecId"]].startswith("video/H264"), stats["codecs"]
    assert "profile-level-id=4d" in stats["codecs"][video["codecId"]]  # the clip's own Main profile
    assert video["frameWidth"] == 640 and video["frameHeight"] == 360
    assert video["framesDecoded"] >= 75 and video["keyFramesDecoded"] >= 1
    assert video["framesDecoded"] >= 0.9 * video["framesReceived"] - 5, video  # decoded, not dropped
    assert stats["codecs"][audio["codecId"]].startswith("audio/opus")
    assert page.evaluate("document.getElementById('v').videoWidth") == 640
    # one viewer costs packetising, SRTP and the shared Opus encoder: a small fraction of a core
    # (aiortc's own path, a libx264 encode per viewer, is about 0.6 cores at 720p: docs/performance-webrtc.md)
    assert cores < 0.15, f"sidecar used {cores:.2f} cores for one viewer"
    assert first_picture < 3.0

    sidecar.kill()
    page.wait_for_function("window.player.stats().reconnects >= 1", timeout=10_000)
    before = page.evaluate("window.player.stats().reconnects")
    page.wait_for_function(
        "window.player.stats().state === 'playing' && window.player.stats().framesDecoded > 25", timeout=20_000
    )
    status = _status(gw)
    assert status["nServiceRestarts"] >= 1 and status["nConnectCount"] == 1, status
    assert _sidecar(gw).pid != sidecar.pid
    assert page.evaluate("window.player.stats().reconnects") == before  # one reconnect was enough

    page.evaluate("window.player.disconnect()")
    assert wait_until(lambda: _status(gw)["nConnectCount"] == 0, 3)
    # a viewer joining a running source: from connect() to the first picture on screen
    ms = page.evaluate(
        """(session) => new Promise(resolve => {
        const started = performance.now();
        document.getElementById('v').requestVideoFrameCallback(() => resolve(performance.now() - started));
        window.player = new H5sPlayerRTC({videoid: 'v', protocol: location.protocol, host: location.host,
                                          rootpath: '/', token: 'clip', session: session});
        window.player.connect();
    })""",
        gw.session,
    )
    page.evaluate("window.player.disconnect()")
    assert ms < 1000, f"first picture after {ms:.0f} ms"  # about 110 ms here when the box is quiet
    assert not page.page_errors, page.page_errors  # type: ignore[attr-defined]


# -- aiortc viewers ---------------------------------------------------------------------------------
async def _status_async(gw: Gateway) -> dict[str, Any]:
    return await asyncio.to_thread(_status, gw)


async def _wait_count(gw: Gateway, count: int, timeout: float) -> float:
    """Seconds until Status says `count` viewers; fails after timeout."""
    started = time.monotonic()
    while (await _status_async(gw))["nConnectCount"] != count:
        assert time.monotonic() - started < timeout, await _status_async(gw)
        await asyncio.sleep(0.1)
    return time.monotonic() - started


async def test_video_is_passed_through_byte_for_byte_and_audio_is_opus(gw: Gateway, clips: Path) -> None:
    viewer = RtcViewer(rtc_url(gw, "clip"))
    try:
        await viewer.start()
        assert viewer.messages[0] == {"type": "iceserver", "iceServers": [], "iceTransportPolicy": "all"}
        offer = viewer.messages[1]["sdp"]
        assert "typ host" in offer and " 127.0.0.1 " in offer and "srflx" not in offer
        await viewer.wait_frames(60, timeout=15)
        await asyncio.sleep(0.5)
    finally:
        await viewer.close()
    assert viewer.codecs == ["H264", "opus"] or viewer.codecs == ["opus", "H264"]
    source = _source_units(clips / "clip.mp4")
    first_ts, first = viewer.video[0]
    assert [n[0] & 0x1F for n in _nals(first)][:2] == [7, 8] and 5 in [n[0] & 0x1F for n in _nals(first)]
    for _, unit in viewer.video:
        assert _picture_nals(unit) in source  # the camera's own bytes: nothing was re-encoded
    stamps = [ts for ts, _ in viewer.video]
    assert all(b > a for a, b in itertools.pairwise(stamps))
    assert _live(stamps[-1] - stamps[-2])  # live frames keep the source's 25 fps spacing
    decoder = av.CodecContext.create("opus", "r")
    samples = sum(f.samples for p in viewer.audio[:20] for f in decoder.decode(av.Packet(p)))
    assert len(viewer.audio) > 20 and samples == 20 * 960  # real 20 ms Opus packets
    assert viewer.first_frame < 1.5


def _live(step: int) -> bool:
    """An RTP timestamp step of 40 ms (25 fps at 90 kHz), give or take the clip's loop point."""
    return abs(step - 3600) <= 360


async def _steps_past_burst(viewer: RtcViewer, live: int = 10) -> list[int]:
    """RTP timestamp steps of the frames received, once `live` frames came after the start burst."""
    while True:
        await viewer.wait_frames(len(viewer.video) + 1, timeout=5)
        steps = [b - a for a, b in itertools.pairwise(ts for ts, _ in viewer.video)]
        if sum(map(_live, steps)) >= live:
            return steps


async def test_a_new_viewer_starts_from_the_gop_cache(gw: Gateway) -> None:
    """The clip's GOP is 4 s; a viewer gets the cached frames at once, squeezed 1 ms apart."""
    first = RtcViewer(rtc_url(gw, "clip"))
    await first.start()
    await first.wait_frames(10)
    viewers = []
    try:
        for _ in range(3):  # a viewer that joins right on a keyframe has no burst: try again
            viewer = RtcViewer(rtc_url(gw, "clip", audio="false"))
            viewers.append(viewer)
            await viewer.start()
            steps = await _steps_past_burst(viewer)
            assert 5 in [n[0] & 0x1F for n in _nals(viewer.video[0][1])]  # starts on an IDR
            assert all(step == 90 or _live(step) for step in steps), steps
            assert viewer.first_frame < 1.5, viewer.first_frame
            assert "m=audio" not in viewer.messages[1]["sdp"] and viewer.audio == []
            if 90 in steps:
                burst = steps.index(next(filter(_live, steps)))
                assert steps[:burst] == [90] * burst and all(map(_live, steps[burst:])), steps
                break
        else:
            raise AssertionError("three viewers in a row joined exactly on a keyframe")
    finally:
        for viewer in [first, *viewers]:
            await viewer.close()


async def test_status_counts_viewers_and_a_vanished_viewer_is_cleaned_up(gw: Gateway) -> None:
    await _wait_count(gw, 0, 5)
    a, b = RtcViewer(rtc_url(gw, "clip")), RtcViewer(rtc_url(gw, "clip"), typed_candidates=False)
    await a.start()
    assert (await _status_async(gw))["nConnectCount"] == 1  # counted from the offer on
    await b.start()  # an old player: candidates without "type"
    assert (await _status_async(gw))["nConnectCount"] == 2
    await a.wait_frames(5)
    await b.wait_frames(5)
    assert (await _status_async(gw))["nConnected"] == 2
    await a.close()
    await _wait_count(gw, 1, 3)

    ghost = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tools.harness.webrtc_viewer",
        rtc_url(gw, "clip"),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert ghost.stdout is not None
        assert await asyncio.wait_for(ghost.stdout.readline(), 15) == b"PLAYING\n"
        await _wait_count(gw, 2, 3)
        ghost.send_signal(signal.SIGSTOP)  # gone without a word: no keepalive, no ICE consent, no close
        vanished = await _wait_count(gw, 1, 30)
    finally:
        ghost.kill()
        await ghost.wait()
    assert vanished < 30
    n = len(b.video)
    await b.wait_frames(n + 25)  # the other viewer never noticed
    await b.close()
    await _wait_count(gw, 0, 3)


async def _expect_error_close(ws: Any) -> tuple[str, int | None]:
    error = ""
    try:
        async for raw in ws:
            message = json.loads(raw)
            if message.get("type") == "error":
                error = message["strCode"]
    except websockets.ConnectionClosed:
        pass
    return error, ws.close_code


async def _until_offer(ws: Any) -> None:
    await ws.send(json.dumps({"type": "open"}))
    while json.loads(await ws.recv()).get("type") != "offer":
        pass


async def test_bad_signalling_gets_an_error_and_a_close_and_harms_no_one(gw: Gateway) -> None:
    watcher = RtcViewer(rtc_url(gw, "clip"), typed_candidates=False)
    await watcher.start()
    await watcher.wait_frames(5)
    restarts = (await _status_async(gw))["nServiceRestarts"]
    url = rtc_url(gw, "clip")
    cases: list[tuple[str, Any]] = []
    async with websockets.connect(url) as ws:
        await ws.send("{this is not json")
        cases.append(("not JSON", await _expect_error_close(ws)))
    async with websockets.connect(url) as ws:
        await ws.send(json.dumps({"type": "answer", "sdp": "v=0\r\n"}))
        cases.append(("answer before offer", await _expect_error_close(ws)))
    async with websockets.connect(url, max_size=None) as ws:
        await _until_offer(ws)
        await ws.send(json.dumps({"type": "answer", "sdp": "v=0\r\n" + "a=x-junk:" + "y" * 2_000_000}))
        cases.append(("too large", await _expect_error_close(ws)))
    async with websockets.connect(url) as ws:
        await _until_offer(ws)
        await ws.send(json.dumps({"type": "answer", "sdp": "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n"}))
        cases.append(("not accepted", await _expect_error_close(ws)))
    async with websockets.connect(url) as ws:
        await _until_offer(ws)
        await ws.send(json.dumps({"type": "remoteice", "candidate": "candidate:1 1 udp nonsense"}))
        cases.append(("invalid ICE candidate", await _expect_error_close(ws)))
    async with websockets.connect(url) as ws:
        await ws.send(b"\x00binary")
        cases.append(("binary", await _expect_error_close(ws)))
    for expected, (error, code) in cases:
        assert expected in error and code == 4400, (expected, error, code)
    n = len(watcher.video)
    await watcher.wait_frames(n + 25)
    status = await _status_async(gw)
    await watcher.close()
    assert status["nServiceRestarts"] == restarts and status["nConnectCount"] == 1, status


async def _rejected(url: str) -> tuple[int | None, str]:
    async with websockets.connect(url) as ws:
        with pytest.raises(websockets.ConnectionClosed):
            await ws.recv()
        return ws.close_code, ws.close_reason or ""


async def test_rejections_say_why(gw: Gateway, ns_camera: GstCamera) -> None:
    gw.ok("AddSrcRTSP", name="H265", token="cam265", url=ns_camera.url("h265"), audio="false")
    code, reason = await _rejected(rtc_url(gw, "clip", session="nope"))
    assert code == 4401
    code, reason = await _rejected(rtc_url(gw, "nosuch"))
    assert code == 4404 and "unknown token" in reason
    code, reason = await _rejected(rtc_url(gw, "clip", playback="true", serverpb="true", begintime="bad"))
    assert code == 4400 and "begintime" in reason  # the WebSocket playback's own checks
    code, reason = await _rejected(rtc_url(gw, "cam265"))
    assert code == 4415 and "H.264 only" in reason and ("hev1" in reason or "hvc1" in reason), reason
    status, body = gw.get("h5srtcapi/Status", session=None)
    assert status == 401 and body["bStatus"] is False
    gw.ok("DelSrc", token="cam265")


async def test_deleting_a_source_ends_its_viewers(gw: Gateway, clips: Path) -> None:
    await asyncio.to_thread(gw.ok, "AddSrcFile", name="Gone", token="gone", url=str(clips / "clip.mp4"))
    viewer = RtcViewer(rtc_url(gw, "gone"))
    try:
        await viewer.start(timeout=15)
        await viewer.wait_frames(5)
        await asyncio.to_thread(gw.ok, "DelSrc", token="gone")
        await viewer.wait_closed()
    finally:
        await viewer.close()
    assert viewer.close_code == 1000 and viewer.close_reason == "source deleted"
    await _wait_count(gw, 0, 3)


async def test_rtsp_camera_with_g711_audio(gw: Gateway, ns_camera: GstCamera) -> None:
    """Any H.264 source: an RTSP camera with G.711 (ffmpeg makes AAC of it, the sidecar Opus)."""
    gw.ok("AddSrcRTSP", name="Cam", token="campcma", url=ns_camera.url("h264_pcma"), audio="true")
    viewer = RtcViewer(rtc_url(gw, "campcma"))
    try:
        await asyncio.to_thread(gw.wait_online, "campcma", True, 20)
        await viewer.start(timeout=15)
        await viewer.wait_frames(50, timeout=15)
        assert "profile-level-id=42e01f" in viewer.messages[1]["sdp"]  # constrained baseline, as sent
        assert len(viewer.audio) > 10
    finally:
        await viewer.close()
        gw.ok("DelSrc", token="campcma")


async def test_ice_settings_reach_the_browser_and_the_offer(netns: None, clips: Path, tmp_path: Path) -> None:
    servers = [{"urls": "turn:turn.example.org:3478", "username": "u", "credential": "p"}]
    env = {
        "H5GATE_MEDIA_ROOTS": str(clips),
        "H5GATE_WEBRTC_ICE_SERVERS": json.dumps(servers),
        "H5GATE_WEBRTC_RELAY_ONLY": "true",
        "H5GATE_WEBRTC_PUBLIC_IP": "203.0.113.7",
        "H5GATE_WEBRTC_PORT_MIN": "40000",
        "H5GATE_WEBRTC_PORT_MAX": "40009",
    }
    gateway = await asyncio.to_thread(_start, Gateway(tmp_path / "gw", extra_args=["--no-demo"], env=env))
    viewer = RtcViewer(rtc_url(gateway, "clip"))
    try:
        await asyncio.to_thread(gateway.ok, "AddSrcFile", name="Clip", token="clip", url=str(clips / "clip.mp4"))
        await asyncio.to_thread(gateway.wait_online, "clip", True, 30)
        await viewer.start()
        assert viewer.messages[0] == {"type": "iceserver", "iceServers": servers, "iceTransportPolicy": "relay"}
        lines = [x for x in viewer.messages[1]["sdp"].splitlines() if x.startswith("a=candidate")]
        ports = {int(x.split()[5]) for x in lines}
        assert ports and all(40000 <= p <= 40009 for p in ports), lines
        assert any(" 203.0.113.7 " in x and "typ srflx raddr 127.0.0.1" in x for x in lines), lines
        await viewer.wait_frames(10)  # the host candidate still carries the media on a LAN (here: lo)
    finally:
        await viewer.close()
        await asyncio.to_thread(gateway.stop)


async def test_recordings_play_over_webrtc_with_the_playback_commands(gw: Gateway, clips: Path) -> None:
    """Same query and commands as playback over h5swsapi; the recorded bytes go out unchanged."""
    t0 = time.time()
    await asyncio.to_thread(gw.ok, "SetRecord", token="clip", enable="true")
    done = await asyncio.to_thread(
        wait_until, lambda: sum(not r["bRecording"] for r in records(gw, "clip", t0)) >= 3, 30, 0.5
    )
    await asyncio.to_thread(gw.ok, "SetRecord", token="clip", enable="false")
    assert done and await asyncio.to_thread(
        wait_until, lambda: not any(r["bRecording"] for r in records(gw, "clip", t0)), 10, 0.3
    )
    files = await asyncio.to_thread(records, gw, "clip", t0)
    begin, end = files[0]["nStartTimeMs"] / 1000, files[-1]["nEndTimeMs"] / 1000
    viewer = RtcViewer(
        rtc_url(
            gw,
            "clip",
            playback="true",
            serverpb="true",
            filename="fake",
            begintime=manual_time(begin),
            endtime=iso_time(end + 1),
        )
    )
    try:
        await viewer.start()
        assert "m=audio" not in viewer.messages[1]["sdp"]
        await viewer.ws.send(json.dumps({"cmd": "H5_START"}))
        await viewer.wait_frames(40, timeout=10)
        assert any(m.get("type") == "H5S_EVENT_PB_TIME" for m in viewer.messages), viewer.messages

        await viewer.ws.send(json.dumps({"cmd": "H5_PAUSE"}))
        await asyncio.sleep(0.5)
        paused = len(viewer.video)
        await asyncio.sleep(1.5)
        assert len(viewer.video) == paused
        await viewer.ws.send(json.dumps({"cmd": "H5_RESUME"}))
        await viewer.wait_frames(paused + 10, timeout=5)

        await viewer.ws.send(json.dumps({"cmd": "H5_SPEED", "nSpeed": 4}))
        await asyncio.sleep(1.5)  # what was sent ahead at 1x comes first
        fast = len(viewer.video)
        await viewer.wait_frames(fast + 20, timeout=5)
        steps = [b - a for a, b in itertools.pairwise(ts for ts, _ in viewer.video[fast:])]
        assert statistics.median(steps) == 900, steps  # 4x: a quarter of 40 ms between frames
    finally:
        await viewer.close()
    source = _source_units(clips / "clip.mp4")
    assert all(_picture_nals(unit) in source for _, unit in viewer.video)  # recorded, sent unchanged
    stamps = [ts for ts, _ in viewer.video]
    assert all(b > a for a, b in itertools.pairwise(stamps))


@pytest.mark.parametrize("text", ['[{"urls": "http://x"}]', "[{", '[{"urls": "stun:a", "password": "x"}]', "ftp://a"])
def test_bad_ice_server_settings_are_refused_clearly(text: str) -> None:
    with pytest.raises(ValueError, match="webrtc_ice_servers"):
        parse_ice_servers(text)


def test_ice_server_settings_forms() -> None:
    assert parse_ice_servers("") == []
    assert parse_ice_servers("stun:a:3478, turns:b:5349") == [{"urls": "stun:a:3478"}, {"urls": "turns:b:5349"}]
