"""Transcoding profiles and the event socket (issue #10), against the real server, real ffmpeg, a real camera.

What must hold: a viewer asking for a profile gets H.264 at the profile's size from ONE shared ffmpeg per
(source, profile) that reads the source's hub (never the camera), started by its first viewer and stopped
30 s after its last; an H.265 camera reaches a player that says hevc=false through the default profile;
the event socket tells of sources going online and offline and of recordings starting and stopping.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import websockets

from tests.wsclient import watch, watch_sync
from tools.harness.camera import GstCamera
from tools.harness.gateway import Gateway

DEMO = str(Path(__file__).resolve().parents[1] / "media" / "demo.mp4")


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    gateway = Gateway(tmp_path_factory.mktemp("vendorlive")).start()
    try:
        gateway.wait_online("demo", timeout=30)
        yield gateway
    finally:
        gateway.stop()


def transcoders(gw: Gateway) -> list[str]:
    """Command lines of this server's transcoding ffmpegs (they read its hub feed on its port, not a camera)."""
    out = subprocess.run(["ps", "-eo", "args="], capture_output=True, text=True, env={"COLUMNS": "4096"}).stdout
    feed = f"127.0.0.1:{gw.port}/api/v1/h5gatetranscodefeed"
    return [line for line in out.splitlines() if "ffmpeg" in line.split(" ", 1)[0] and feed in line]


def test_profiles_crud(gw: Gateway) -> None:
    assert gw.ok("GetTransProfile")["profile"] == []
    default = gw.ok("GetTransProfileDefault")["profile"][0]
    assert default["strToken"] == "default" and default["nCodec"] == "H5_CODEC_H264"
    gw.ok("AddTransProfile", name="Small", token="small", fpstype="H5_FPS_FIXED", fps=10,
          scaletype="H5_SCALE_FIXED", width=320, height=240, bitrate=300, engine="H5_SW_ONLY")  # fmt: skip
    listed = gw.ok("GetTransProfile")["profile"]
    assert listed == [{"strName": "Small", "strToken": "small", "nCodec": "H5_CODEC_H264", "nEngine": "H5_SW_ONLY",
                       "nBitrate": 300, "nFPSType": "H5_FPS_FIXED", "nFPS": 10, "nScaleType": "H5_SCALE_FIXED",
                       "nWidth": 320, "nHeight": 240}]  # fmt: skip
    assert gw.get("AddTransProfile", token="small", name="again")[0] == 409
    for bad in ({"width": "9"}, {"fps": "0"}, {"fpstype": "H5_FPS_WARP"}, {"bitrate": "x"}, {"token": "a b"}):
        assert gw.get("AddTransProfile", **{"token": "bad", "name": "Bad", **bad})[0] == 400, bad
    gw.ok("SetTransProfileDefault", fpstype="H5_FPS_AUTO", fps=25, scaletype="H5_SCALE_FIXED", width=352, height=288,
          bitrate=400, engine="H5_SW_ONLY")  # fmt: skip
    default = gw.ok("GetTransProfileDefault")["profile"][0]
    assert (default["nWidth"], default["nHeight"], default["nBitrate"]) == (352, 288, 400)


def test_profile_viewers_share_one_transcode_fed_from_the_hub(gw: Gateway) -> None:
    if not any(p["strToken"] == "small" for p in gw.ok("GetTransProfile")["profile"]):
        test_profiles_crud(gw)
    assert transcoders(gw) == []
    url = gw.ws_url("demo", profile="small")

    async def two_viewers() -> tuple[Any, Any, list[str]]:
        first = asyncio.create_task(watch(url, frames=30, seconds=40))
        await asyncio.sleep(3)
        second = asyncio.create_task(watch(url, frames=30, seconds=40))
        await asyncio.sleep(2)
        running = await asyncio.to_thread(transcoders, gw)
        return await first, await second, running

    a, b, running = asyncio.run(two_viewers())
    assert len(running) == 1, running  # one ffmpeg for both viewers
    assert "/api/v1/h5gatetranscodefeed?token=demo" in running[0] and "scale=320:240" in running[0]
    for got in (a, b):
        assert got.mime.startswith('video/mp4; codecs="avc1.'), got.mime
        video = got.inits[0].video
        assert video is not None and (video.width, video.height) == (320, 240)
        frames = got.video()
        assert len(frames) >= 30
        span = (frames[-1].tfdt - frames[0].tfdt) / got.inits[0].tracks[frames[0].track_id].timescale
        assert 1.5 < span < 4.5, span  # 10 fps: 29 frame intervals are about 2.9 s of media
    # the main stream is untouched
    main = watch_sync(gw.ws_url("demo"), frames=3, seconds=10)
    assert main.inits[0].video is not None and main.inits[0].video.width > 320
    # stopped 30 s after its last viewer, not before
    time.sleep(20)
    assert len(transcoders(gw)) == 1
    deadline = time.monotonic() + 25
    while transcoders(gw):
        assert time.monotonic() < deadline, "the transcode outlived its last viewer by more than 45 s"
        time.sleep(1)
    assert gw.get("DelTransProfile", token="small")[0] == 200
    assert watch_sync(gw.ws_url("demo", profile="small"), frames=1, seconds=5).close_code == 4404


def test_h265_camera_to_a_player_without_hevc(gw: Gateway, camera: GstCamera) -> None:
    gw.ok("AddSrcRTSP", token="cam265", name="H265 camera", url=camera.url("h265"))
    try:
        gw.wait_online("cam265", timeout=30)
        native = watch_sync(gw.ws_url("cam265"), frames=3, seconds=15)
        assert native.mime.startswith('video/mp4; codecs="hev1') or native.mime.startswith('video/mp4; codecs="hvc1')
        got = watch_sync(gw.ws_url("cam265", hevc="false"), frames=10, seconds=40)
        assert got.mime.startswith('video/mp4; codecs="avc1.'), (got.mime, got.close_reason)
        assert len(got.video()) >= 10
        video = got.inits[0].video
        default = gw.ok("GetTransProfileDefault")["profile"][0]
        assert video is not None and (video.width, video.height) == (default["nWidth"], default["nHeight"])
        assert any("token=cam265" in line for line in transcoders(gw))
    finally:
        gw.ok("DelSrc", token="cam265")


def test_event_socket(gw: Gateway, tmp_path: Path) -> None:
    query = urllib.parse.urlencode({"session": gw.session})

    async def listen() -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        async with websockets.connect(f"{gw.ws_base}//api/v1/h5seventapi?{query}") as ws:
            await ws.send(json.dumps({"type": "keepalive"}))
            await asyncio.to_thread(gw.ok, "AddSrcFile", token="evclip", name="Events", url=DEMO)
            while not any(e["type"] == "H5S_EVENT_SRC_ONLINE" and e["strDevToken"] == "evclip" for e in events):
                events.append(json.loads(await asyncio.wait_for(ws.recv(), 20.0)))  # within a second of online
            await asyncio.to_thread(gw.ok, "Record", token="evclip", duration=2)
            deadline = time.monotonic() + 40
            deleted = False
            while time.monotonic() < deadline:
                try:
                    events.append(json.loads(await asyncio.wait_for(ws.recv(), 1.0)))
                except TimeoutError:
                    await ws.send(json.dumps({"type": "keepalive"}))
                mine = [e for e in events if e["strDevToken"] == "evclip"]
                if any(e.get("bDeleted") for e in mine):
                    break
                if not deleted and any(e["type"] == "H5S_EVENT_RECORD_STOP" for e in mine):
                    await asyncio.to_thread(gw.ok, "DelSrc", token="evclip")
                    deleted = True
        return events

    events = asyncio.run(listen())
    mine = [e for e in events if e["strDevToken"] == "evclip"]
    kinds = [e["type"] for e in mine]
    assert kinds.index("H5S_EVENT_SRC_ONLINE") < kinds.index("H5S_EVENT_RECORD_START")
    assert kinds.index("H5S_EVENT_RECORD_START") < kinds.index("H5S_EVENT_RECORD_STOP")
    assert kinds[-1] == "H5S_EVENT_SRC_OFFLINE" and mine[-1]["bDeleted"] is True  # deleted: offline for good
    start = mine[kinds.index("H5S_EVENT_RECORD_START")]
    assert start["strPath"].startswith("/mediastore/record/evclip/") and len(start["strUUID"]) == 36
    assert start["strTime"][:4].isdigit() and "T" in start["strTime"]


def test_event_socket_needs_a_session(gw: Gateway) -> None:
    async def refused() -> int | None:
        async with websockets.connect(f"{gw.ws_base}/api/v1/h5seventapi?session=null") as ws:
            try:
                await asyncio.wait_for(ws.recv(), 5)
            except websockets.ConnectionClosed as e:
                return e.rcvd.code if e.rcvd else None
        return None

    assert asyncio.run(refused()) == 4401
