"""Supervision against real cameras and injected faults: codecs, transports, outages, kills and restarts."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.wsclient import check_playable, watch, watch_sync
from tools.harness.camera import FaultProxy, GstCamera, SilentServer, wait_until
from tools.harness.gateway import Gateway


def ffmpeg_pids(gw: Gateway) -> list[int]:
    assert gw.proc is not None
    pids = []
    for p in psutil.Process(gw.proc.pid).children(recursive=True):
        with contextlib.suppress(psutil.NoSuchProcess):  # a child that ended between the listing and the look
            if p.name() == "ffmpeg":
                pids.append(p.pid)
    return pids


def wait_field(gw: Gateway, token: str, check, timeout: float = 20.0) -> dict:  # type: ignore[no-untyped-def]
    src: dict = {}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        src = gw.source(token)
        if check(src):
            return src
        time.sleep(0.2)
    raise AssertionError(f"condition not met for {token}: {src}")


@pytest.fixture(scope="module")
def auth_camera() -> Iterator[GstCamera]:
    with GstCamera(user="cam", password="right-pass") as cam:
        yield cam


@pytest.mark.parametrize("mount,audio_in", [("h264_pcma", "pcm_alaw"), ("h264_pcmu", "pcm_mulaw")])
def test_g711_becomes_aac(gateway: Gateway, camera: GstCamera, mount: str, audio_in: str) -> None:
    gateway.ok("AddSrcRTSP", token=mount, name=mount, url=camera.url(mount))
    try:
        src = wait_field(gateway, mount, lambda s: s["bOnline"] and s["strAudioCodec"])
        assert src["strAudioCodec"] == audio_in and src["strVideoCodec"] == "h264"
        got = watch_sync(gateway.ws_url(mount), frames=30)
        assert got.mime.endswith(', mp4a.40.2"')
        check_playable(got)
        assert any(got.inits[0].tracks[f.track_id].handler == "soun" for _, f, _ in got.fragments)
        assert "transcoding to AAC" in gateway.log()
    finally:
        gateway.ok("DelSrc", token=mount)


def test_audio_off_and_video_only_sources(gateway: Gateway, camera: GstCamera) -> None:
    gateway.ok("AddSrcRTSP", token="noaud", name="a", url=camera.url("h264"), audio="false")
    gateway.ok("AddSrcRTSP", token="vidonly", name="b", url=camera.url("h264_noaudio"))
    try:
        for token in ("noaud", "vidonly"):
            gateway.wait_online(token)
            got = watch_sync(gateway.ws_url(token), frames=20)
            assert "mp4a" not in got.mime and got.mime.startswith('video/mp4; codecs="avc1.')
            assert len(got.inits[0].tracks) == 1
            check_playable(got)
    finally:
        gateway.ok("DelSrc", token="noaud")
        gateway.ok("DelSrc", token="vidonly")


def test_mjpeg_is_encoded_to_h264(gateway: Gateway, camera: GstCamera) -> None:
    gateway.ok("AddSrcRTSP", token="mjpg", name="m", url=camera.url("mjpeg"))
    try:
        src = wait_field(gateway, "mjpg", lambda s: s["bOnline"])
        assert src["strVideoCodec"] == "mjpeg"
        got = watch_sync(gateway.ws_url("mjpg"), frames=20)
        assert got.mime.startswith('video/mp4; codecs="avc1.')
        check_playable(got)
    finally:
        gateway.ok("DelSrc", token="mjpg")


def test_h265_is_copied_and_never_sent_to_players_without_hevc(gateway: Gateway, camera: GstCamera) -> None:
    """H.265 goes through as it is; a player that says hevc=false gets H.264 from the default transcoding
    profile (issue #10; tests/test_vendor_live.py covers the shared transcode), never the H.265 bytes."""
    gateway.ok("AddSrcRTSP", token="hevc", name="h", url=camera.url("h265"))
    try:
        gateway.wait_online("hevc")
        got = watch_sync(gateway.ws_url("hevc"), frames=20)
        assert got.mime.startswith(('video/mp4; codecs="hev1.', 'video/mp4; codecs="hvc1.'))
        check_playable(got)
        other = watch_sync(gateway.ws_url("hevc", hevc="false"), frames=5, seconds=40)
        assert other.mime.startswith('video/mp4; codecs="avc1.'), other.mime
    finally:
        gateway.ok("DelSrc", token="hevc")


@pytest.mark.parametrize("rtsptype,transport", [("tcp", "tcp"), ("udp", "udp"), ("H5_RTSP_AUTO", "tcp")])
def test_rtsp_transport(gateway: Gateway, camera: GstCamera, rtsptype: str, transport: str) -> None:
    gateway.ok("AddSrcRTSP", token="tr", name="t", url=camera.url("h264_noaudio"), rtsptype=rtsptype)
    try:
        src = gateway.wait_online("tr")
        assert src["strTransport"] == transport
        assert len(watch_sync(gateway.ws_url("tr"), frames=25).video()) >= 25
    finally:
        gateway.ok("DelSrc", token="tr")


def test_unreachable_camera_backs_off(gateway: Gateway) -> None:
    gateway.ok("AddSrcRTSP", token="unreach", name="u", url="rtsp://127.0.0.1:9/x")
    try:
        src = wait_field(gateway, "unreach", lambda s: s["strLastError"], timeout=10)
        assert src["strLastError"] == "connection refused" and src["bOnline"] is False
        time.sleep(6)
        restarts = gateway.source("unreach")["nRestarts"]
        assert 2 <= restarts <= 6, restarts  # 0.5 s doubling: a few tries, not a busy loop
    finally:
        gateway.ok("DelSrc", token="unreach")


def test_wrong_credentials_are_reported_and_never_shown(gateway: Gateway, auth_camera: GstCamera) -> None:
    bad = auth_camera.url("h264").replace("right-pass", "Wrong-Secret-9")
    gateway.ok("AddSrcRTSP", token="badauth", name="b", url=bad)
    gateway.ok(
        "AddSrcRTSP",
        token="goodauth",
        name="g",
        url=auth_camera.url("h264").split("@")[0] + "@" + auth_camera.url("h264").split("@")[1],
    )
    try:
        src = wait_field(gateway, "badauth", lambda s: s["strLastError"], timeout=15)
        assert "401" in src["strLastError"] and src["bOnline"] is False
        assert gateway.wait_online("goodauth")["strUser"] == "cam"
        text = json.dumps(gateway.ok("GetSrc")) + gateway.log()
        assert "Wrong-Secret-9" not in text and "right-pass" not in text
    finally:
        gateway.ok("DelSrc", token="badauth")
        gateway.ok("DelSrc", token="goodauth")


def test_silent_camera_times_out(gateway: Gateway) -> None:
    with SilentServer() as silent:
        gateway.ok("AddSrcRTSP", token="silent", name="s", url=silent.url("h264"))
        try:
            start = time.monotonic()
            src = wait_field(gateway, "silent", lambda s: s["strLastError"], timeout=25)
            assert src["bOnline"] is False and time.monotonic() - start < 20
            assert "timed out" in src["strLastError"] or "stalled" in src["strLastError"]
        finally:
            gateway.ok("DelSrc", token="silent")


def test_camera_dies_mid_stream_and_viewer_resumes(gateway: Gateway, camera: GstCamera) -> None:
    with FaultProxy.for_camera(camera) as proxy:
        gateway.ok("AddSrcRTSP", token="flaky", name="f", url=proxy.url("h264"), rtsptype="tcp")
        try:
            gateway.wait_online("flaky")

            async def scenario():  # type: ignore[no-untyped-def]
                viewer = asyncio.create_task(watch(gateway.ws_url("flaky"), stop_after=14))
                await asyncio.sleep(3)
                await asyncio.to_thread(proxy.set_mode, "drop")
                return await viewer

            got = asyncio.run(scenario())
            assert got.close_code is None, "the viewer stayed connected"
            assert len(got.inits) == 2, "a fresh init after the source came back"
            first_run = [f for i, f, _ in got.fragments if i == 0]
            second_run = [(f, t) for i, f, t in got.fragments if i == 1]
            assert len(second_run) > 100
            video_end = max(f.tfdt + f.duration for f in first_run if f.track_id == 1)
            resumed = [f for f, _ in second_run if f.track_id == 1]
            assert resumed[0].keyframe and resumed[0].tfdt >= video_end - 1  # timeline goes on
            src = gateway.source("flaky")
            assert src["bOnline"] is True and src["nRestarts"] >= 1
        finally:
            gateway.ok("DelSrc", token="flaky")


@pytest.mark.parametrize("client", ["ffmpeg", "own"])
def test_watchdog_ends_a_hung_source(tmp_path: Path, camera: GstCamera, client: str) -> None:
    """A camera that keeps its connection open and sends nothing: ffmpeg hangs (its own timeout is 120 s
    here) and is killed; our RTSP client's session is ended and opened anew. Either way it says so."""
    env = {"H5GATE_RTSP_TIMEOUT": "120", "H5GATE_STALL_TIMEOUT": "3", "H5GATE_RTSP_CLIENT": client}
    gw = Gateway(tmp_path, extra_args=["--no-demo"], env=env).start()
    try:
        with FaultProxy.for_camera(camera) as proxy:
            gw.ok("AddSrcRTSP", token="hang", name="h", url=proxy.url("h264_noaudio"), rtsptype="tcp")
            gw.wait_online("hang")
            pids = ffmpeg_pids(gw)
            assert len(pids) == (1 if client == "ffmpeg" else 0)
            accepted = proxy.status()["accepted"]
            proxy.set_mode("freeze")  # only the watchdog can notice
            src = wait_field(gw, "hang", lambda s: "stalled" in s["strLastError"], timeout=12)
            assert src["bOnline"] is False
            assert wait_until(lambda: not any(psutil.pid_exists(p) for p in pids), timeout=3)
            assert "watchdog" in gw.log()
            proxy.set_mode("normal")
            gw.wait_online("hang", timeout=20)
            assert proxy.status()["accepted"] > accepted  # a new camera session
    finally:
        gw.stop()


@pytest.mark.parametrize("client,mount", [("ffmpeg", "h264_noaudio"), ("own", "h264_pcma")])
def test_sigkilled_ffmpeg_is_restarted_at_once(tmp_path: Path, camera: GstCamera, client: str, mount: str) -> None:
    """The source's ffmpeg, or with our RTSP client the ffmpeg that makes AAC of G.711, killed: back at once."""
    gw = Gateway(tmp_path, extra_args=["--no-demo"], env={"H5GATE_RTSP_CLIENT": client}).start()
    try:
        gw.ok("AddSrcRTSP", token="k", name="k", url=camera.url(mount))
        gw.wait_online("k")
        time.sleep(6)  # healthy for a while: the backoff is back at its minimum
        old = ffmpeg_pids(gw)
        assert len(old) == 1
        os.kill(old[0], signal.SIGKILL)
        killed = time.monotonic()
        assert wait_until(lambda: ffmpeg_pids(gw) and ffmpeg_pids(gw) != old, timeout=3)
        assert time.monotonic() - killed < 1.5
        gw.wait_online("k", timeout=10)
        assert len(watch_sync(gw.ws_url("k"), frames=10).video()) >= 10
    finally:
        gw.stop()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_no_ffmpeg_left_behind(tmp_path: Path, camera: GstCamera, sig: int) -> None:
    gw = Gateway(tmp_path).start()  # the demo's ffmpeg, and the one making AAC of the camera's G.711
    try:
        gw.wait_online("demo")
        gw.ok("AddSrcRTSP", token="c", name="c", url=camera.url("h264_pcma"))
        gw.wait_online("c")
        assert wait_until(lambda: len(ffmpeg_pids(gw)) == 2, timeout=5)
        pids = ffmpeg_pids(gw)
        assert len(pids) == 2
        gw.stop(sig)
        assert wait_until(lambda: not any(psutil.pid_exists(p) for p in pids), timeout=5), pids
    finally:
        gw.stop()  # a failed assertion must not leave a server (and its ffmpeg) running


def test_sources_persist_across_restart_and_crash(tmp_path: Path, camera: GstCamera) -> None:
    gw = Gateway(tmp_path, extra_args=["--no-demo"]).start()
    try:
        gw.ok("AddSrcRTSP", token="keep", name="Kept camera", url=camera.url("h264"), audio="false")
        gw.stop(signal.SIGKILL)  # a crash right after the add
        gw.start()
        src = gw.wait_online("keep")
        assert src["strName"] == "Kept camera" and src["bEnableAudio"] is False
        gw.ok("DelSrc", token="keep")
        gw.stop()
        gw.start()
        assert gw.ok("GetSrc")["src"] == []
        assert "demo" not in gw.log().split("h5gate.registry")[-1]  # the demo is added on the first start only
    finally:
        gw.stop()


def test_bundled_ffmpeg_when_none_on_path(tmp_path: Path) -> None:
    """A machine without ffmpeg: the binary shipped by imageio-ffmpeg serves every part."""
    gw = Gateway(tmp_path, env={"PATH": str(tmp_path / "empty")}).start()
    try:
        gw.wait_online("demo", timeout=30)
        assert "using ffmpeg" in gw.log() and "imageio_ffmpeg" in gw.log()
        check_playable(watch_sync(gw.ws_url("demo"), frames=25))
        status, headers, body = gw.request(f"/api/v1/GetImage?token=demo&session={gw.session}")
        assert status == 200 and body[:2] == b"\xff\xd8" and "x-h5gate-image" not in headers
        assert gw.proc is not None
        exes = [c.exe() for c in psutil.Process(gw.proc.pid).children(recursive=True)]
        assert any("imageio_ffmpeg" in exe for exe in exes), exes
    finally:
        gw.stop()
