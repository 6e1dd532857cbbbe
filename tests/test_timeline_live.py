"""The owned timeline with real parts: a camera whose RTP clock the fault proxy breaks in flight, the
GStreamer camera restarting its timeline when another client joins the mount, the real server and ffmpeg,
a WS viewer, recordings decoded by ffprobe, Search, and Chromium playing through the faults.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import pytest
from playwright.sync_api import Browser, Page

from tests.browser import launch, new_page
from tests.rtp_client import RtspReader
from tests.test_records import records, store_path, video_seconds
from tests.wsclient import Received, watch_sync
from tools.harness.camera import FaultProxy, GstCamera, wait_until
from tools.harness.gateway import Gateway

FRAME_MS = 40.0  # the test camera runs at 25 fps


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    gateway = Gateway(tmp_path_factory.mktemp("timeline"), extra_args=["--no-demo"]).start()
    try:
        yield gateway
    finally:
        gateway.stop()


def add_source(gw: Gateway, token: str, url: str) -> None:
    gw.ok("AddSrcRTSP", token=token, name=token, url=url, rtsptype="tcp")
    gw.wait_online(token, timeout=30)


def later(seconds: float, action: Callable[[], object]) -> threading.Timer:
    timer = threading.Timer(seconds, action)
    timer.start()
    return timer


def check_viewer_timeline(got: Received, *, min_frames: int) -> list[float]:
    """Decode times per track never go back; every video step is the frame interval within ±50 %, unless
    the viewer itself waited that long for the frame (a real pause upstream). Returns the video steps (ms).

    The cached GOP a viewer gets first (its first second) is history: it holds whatever the camera sent
    before, frames the camera itself dropped while starting included, so its steps are not judged.
    """
    assert got.close_code is None, (got.close_code, got.close_reason)
    assert got.fragments and all(idx == 0 for idx, _, _ in got.fragments), "re-init or nothing received"
    init = got.inits[0]
    last: dict[int, int] = {}
    for _, frag, _ in got.fragments:
        if frag.track_id in last:
            assert frag.tfdt > last[frag.track_id], "decode time went back or stood still"
        last[frag.track_id] = frag.tfdt
    video = [(f, t) for _, f, t in got.fragments if init.tracks[f.track_id].handler == "vide"]
    assert len(video) >= min_frames, len(video)
    scale = init.video.timescale if init.video else 90000
    steps = []
    bad = []
    for i, ((a, ta), (b, tb)) in enumerate(zip(video, video[1:], strict=False)):
        step = (b.tfdt - a.tfdt) / scale * 1000
        steps.append(step)
        if tb - got.first_at < 1.0:
            continue
        waited = (tb - ta) * 1000
        if not (0.5 * FRAME_MS <= step <= 1.5 * FRAME_MS or (step > FRAME_MS and step <= waited + 1.5 * FRAME_MS)):
            bad.append((i, round(step, 1), round(waited)))
    assert not bad, f"{len(bad)} of {len(steps)} decode-time steps off the frame interval: {bad[:20]}"
    return steps


def resets(gw: Gateway, token: str) -> int:
    return int(gw.source(token)["nTimelineResets"])


FAULTS: dict[str, tuple[str, Callable[[FaultProxy], None], bool]] = {
    # name: (mount, fault applied 4 s into watching, does it re-anchor?)
    "jump_back": ("h264", lambda p: p.set_mode("jump_back"), True),
    "jump_forward": ("h264", lambda p: p.set_mode("jump_forward"), True),
    "audio_jumps_back_alone": ("h264", lambda p: p.set_mode("jump_back", channel=2), True),
    "video_only_jump_back": ("h264_noaudio", lambda p: p.set_mode("jump_back"), True),
    "jitter": ("h264", lambda p: p.set_mode("jitter", channel=0), False),
}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_ws_viewer_sees_a_steady_timeline_through_clock_faults(gw: Gateway, camera: GstCamera, fault: str) -> None:
    mount, apply, re_anchors = FAULTS[fault]
    token = f"tl_{fault}"
    with FaultProxy.for_camera(camera) as proxy:
        add_source(gw, token, proxy.url(mount))
        try:
            assert resets(gw, token) == 0
            timer = later(4.0, lambda: apply(proxy))
            got = watch_sync(gw.ws_url(token), frames=10**6, seconds=13, stop_after=13)
            timer.join()
            n = resets(gw, token)
            rewritten = proxy.status()["rewritten"]
        finally:
            gw.ok("DelSrc", token=token)
    assert rewritten
    # ffmpeg's muxer holds back the track whose clock runs ahead (it interleaves by decode time) until the
    # other one's next RTCP report: a source with audio may deliver only the frames before the fault
    steps = check_viewer_timeline(got, min_frames=250 if mount == "h264_noaudio" else 100)
    if fault == "audio_jumps_back_alone":  # re-anchored alone, audio still lines up with video
        init = got.inits[0]
        ends = {
            init.tracks[f.track_id].handler: (f.tfdt + f.duration) / init.tracks[f.track_id].timescale
            for _, f, _ in got.fragments
        }
        assert abs(ends["vide"] - ends["soun"]) < 0.5, ends
    if re_anchors:
        assert n >= 1, "the camera's clock broke but no reset was counted"
        assert f"{token}/main: timeline reset:" in gw.log()
    else:
        assert n == 0, [line for line in gw.log().splitlines() if f"{token}/main: timeline" in line]
        assert max(steps) - min(steps) > 5, "jitter did not reach the viewer's timeline"


def test_rtp_wrap_passes_without_a_reset(gw: Gateway, camera: GstCamera) -> None:
    """The 32-bit RTP timestamp wraps 3 s after the source connects: nothing to re-anchor.

    Video only: with audio, ffmpeg 5.1's RTSP demuxer itself loses the video timestamps when a session
    starts this close to the wrap ("Timestamps are unset"), before any of our code sees them.
    """
    with FaultProxy.for_camera(camera) as proxy:
        proxy.set_mode("wrap")
        add_source(gw, "tl_wrap", proxy.url("h264_noaudio"))
        try:
            got = watch_sync(gw.ws_url("tl_wrap"), frames=10**6, seconds=8, stop_after=8)
            n = resets(gw, "tl_wrap")
        finally:
            gw.ok("DelSrc", token="tl_wrap")
    check_viewer_timeline(got, min_frames=120)
    assert n == 0, [line for line in gw.log().splitlines() if "tl_wrap/main: timeline" in line]


def test_gstreamer_client_joining_the_mount(gw: Gateway) -> None:
    """Debian's GStreamer RTSP server restarts the shared media's clock when another client joins."""
    with GstCamera() as cam:
        add_source(gw, "tl_join", cam.url("h264"))
        try:

            def join() -> None:
                reader = RtspReader(cam.url("h264")).start()
                try:
                    reader.read_for(3.0)
                finally:
                    reader.close()

            timer = later(4.0, join)
            got = watch_sync(gw.ws_url("tl_join"), frames=10**6, seconds=13, stop_after=13)
            timer.join()
            n = resets(gw, "tl_join")
        finally:
            gw.ok("DelSrc", token="tl_join")
    check_viewer_timeline(got, min_frames=150)  # ffmpeg's muxer holds a track while the clocks disagree
    assert n >= 1 and "tl_join/main: timeline reset:" in gw.log()


def test_recordings_started_after_a_jump_play_their_full_length(gw: Gateway, camera: GstCamera) -> None:
    """Files started during the clamped seconds after a jump back decode to their real length; Search agrees."""
    with FaultProxy.for_camera(camera) as proxy:
        add_source(gw, "tl_rec", proxy.url("h264"))
        try:
            time.sleep(2.0)
            since = time.time()
            proxy.set_mode("jump_back")
            time.sleep(0.5)
            first = gw.ok("Record", token="tl_rec", duration=6, filename="after_jump")
            time.sleep(2.0)
            second = gw.ok("Record", token="tl_rec", duration=5, filename="later")
            paths = [first["strPath"], second["strPath"]]

            def closed() -> bool:
                listed = {r["strPath"]: r for r in records(gw, "tl_rec", since)}
                return all(p in listed and not listed[p]["bRecording"] for p in paths)

            assert wait_until(closed, 30, 0.5), records(gw, "tl_rec", since)
            listed = {r["strPath"]: r for r in records(gw, "tl_rec", since)}
            assert resets(gw, "tl_rec") >= 1
        finally:
            gw.ok("DelSrc", token="tl_rec")
    for path, asked in zip(paths, (6, 5), strict=True):
        seconds, keyframe_first = video_seconds(store_path(gw, path))
        row = listed[path]
        searched = (row["nEndTimeMs"] - row["nStartTimeMs"]) / 1000
        assert keyframe_first
        assert asked - 0.5 <= seconds <= asked + 7.0, (path, seconds)  # pre-record (5 s) reaches back to a keyframe
        assert abs(searched - seconds) < 0.3, (row, seconds)
        assert int(row["strDuration"]) >= asked - 1, row


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    yield from launch()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    yield from new_page(browser)


def test_chromium_keeps_playing_through_a_jump_back(gw: Gateway, camera: GstCamera, page: Page) -> None:
    """currentTime keeps advancing, never standing still for more than 1 s, while the camera's clock jumps.

    Video only: on today's ffmpeg path a source with audio still stalls for as long as ffmpeg's muxer holds
    back the track whose clock runs ahead (it interleaves by decode time, up to the camera's next RTCP
    report); our own ingest (no ffmpeg muxer) removes that. The timeline itself is checked with audio above.
    """
    with FaultProxy.for_camera(camera) as proxy:
        add_source(gw, "tl_web", proxy.url("h264_noaudio"))
        try:
            page.goto(gw.base + "/login")
            page.evaluate(
                "() => { document.body.innerHTML ="
                ' \'<video id="v" muted playsinline width="640" height="360"></video>\'; }'
            )
            page.add_script_tag(url="/static/h5splayer.js")
            conf = (
                "{videoid: 'v', protocol: window.location.protocol, host: window.location.host, rootpath: '/',"
                f" token: 'tl_web', hlsver: 'v1', session: '{gw.session}', streamprofile: 'main'}}"
            )
            page.evaluate(f"() => {{ window.player = new H5sPlayerWS({conf}); window.player.connect(); }}")
            page.wait_for_function("() => document.getElementById('v').currentTime > 2", timeout=20_000)
            proxy.set_mode("jump_back")
            samples: list[tuple[float, float]] = []
            t0 = time.monotonic()
            while time.monotonic() - t0 < 10.0:
                samples.append((time.monotonic(), page.evaluate("() => document.getElementById('v').currentTime")))
                page.wait_for_timeout(100)
            proxy.set_mode("jump_forward")
            while time.monotonic() - t0 < 16.0:
                samples.append((time.monotonic(), page.evaluate("() => document.getElementById('v').currentTime")))
                page.wait_for_timeout(100)
            stats = page.evaluate("() => window.player.stats()")
            page.evaluate("() => window.player.disconnect()")
        finally:
            gw.ok("DelSrc", token="tl_web")
    stall = 0.0
    longest = 0.0
    for (ta, ca), (tb, cb) in zip(samples, samples[1:], strict=False):
        assert cb >= ca, "currentTime went back"
        stall = stall + (tb - ta) if cb == ca else 0.0
        longest = max(longest, stall)
    assert longest <= 1.0, f"playback stood still for {longest:.2f} s"
    advanced = samples[-1][1] - samples[0][1]
    assert advanced >= 0.8 * (samples[-1][0] - samples[0][0]), (advanced, stats)
    assert page.page_errors == []
