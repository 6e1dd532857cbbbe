"""The vendor player's WebSocket (h5swsapi) byte by byte, against the demo clip and a real RTSP camera."""

from __future__ import annotations

import asyncio
import json
import socket
import time

import pytest
import websockets

from tests.wsclient import check_playable, watch, watch_sync
from tools.harness.camera import GstCamera
from tools.harness.gateway import Gateway


def test_demo_stream_protocol(gateway: Gateway) -> None:
    got = watch_sync(gateway.ws_url("demo"), frames=60)
    assert got.mime == 'video/mp4; codecs="avc1.4d401e, mp4a.40.2"'
    init = got.inits[0]
    assert init.video is not None and (init.video.width, init.video.height) == (640, 360)
    check_playable(got)
    video = got.video()
    assert len(video) >= 60 and all(f.samples == 1 for f in video)  # one fragment per frame
    assert [f.tfdt for f in video] == sorted(f.tfdt for f in video)
    audio = [f for _, f, _ in got.fragments if f.track_id != init.video.track_id]
    assert audio, "AAC audio is copied through"


def test_gop_cache_first_frame_at_once(gateway: Gateway) -> None:
    """A new viewer of a running source gets a keyframe at once, not at the next keyframe (2 s GOP)."""
    waits = []
    for _ in range(3):
        start = time.monotonic()
        got = watch_sync(gateway.ws_url("demo"), frames=1)
        waits.append(got.first_at - start)
        assert got.video()[0].keyframe
    assert sorted(waits)[1] < 1.0, waits  # behaviour, not a benchmark: well under the 2 s GOP


@pytest.mark.parametrize(
    "keepalive", ['{"cmd":"H5_KEEPALIVE"}', '{"cmd":"H5_KEEPALIVE","nSpeed":"1.0","nTime":"0"}', "keepalive"]
)
def test_keepalive_forms_keep_the_stream_going(gateway: Gateway, keepalive: str) -> None:
    got = watch_sync(gateway.ws_url("demo"), frames=30, keepalive=keepalive)
    assert got.close_code is None and len(got.video()) >= 30


def test_real_camera_h264_aac(gateway: Gateway, camera: GstCamera) -> None:
    gateway.ok("AddSrcRTSP", token="cam264", name="Camera", url=camera.url("h264"))
    try:
        src = gateway.wait_online("cam264")
        assert src["strVideoCodec"] == "h264" and src["strAudioCodec"] == "aac"
        got = watch_sync(gateway.ws_url("cam264"), frames=40)
        assert got.mime.startswith('video/mp4; codecs="avc1.') and got.mime.endswith(', mp4a.40.2"')
        assert got.mime == got.inits[0].mime
        check_playable(got)
        # the codec string is the stream's own profile and level, read from its avcC
        assert got.inits[0].video.codec[5:7] in ("42", "4d", "64")
    finally:
        gateway.ok("DelSrc", token="cam264")


def test_close_codes(gateway: Gateway) -> None:
    got = watch_sync(gateway.ws_url("no-such-token"))
    assert got.close_code == 4404 and "unknown token" in got.close_reason
    got = watch_sync(gateway.ws_url("demo", session="00000000-0000-0000-0000-000000000000"))
    assert got.close_code == 4401 and not got.mime
    got = watch_sync(gateway.ws_url("demo", profile="transcode9"))
    assert got.close_code == 4404


def test_offline_source_gets_a_clear_close(gateway: Gateway) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once closed
    gateway.ok("AddSrcRTSP", token="dead1", name="Dead", url=f"rtsp://127.0.0.1:{port}/x")
    try:
        start = time.monotonic()
        got = watch_sync(gateway.ws_url("dead1"), seconds=20)
        assert got.close_code == 1013 and got.close_reason.startswith("source offline")
        assert time.monotonic() - start < 12
        src = gateway.source("dead1")
        assert src["bOnline"] is False and src["strLastError"] == "connection refused"
    finally:
        gateway.ok("DelSrc", token="dead1")


def test_delete_disconnects_viewers_and_status_counts(gateway: Gateway) -> None:
    gateway.ok("AddSrcFile", token="victim", name="Victim", url="demo.mp4")
    gateway.wait_online("victim")

    async def scenario() -> tuple[int, int, object]:
        before = gateway.ok("h5swsapi/Status")["nConnectCount"]
        viewer = asyncio.create_task(watch(gateway.ws_url("victim"), stop_after=15))
        await asyncio.sleep(1.5)
        during = await asyncio.to_thread(gateway.ok, "h5swsapi/Status")
        await asyncio.to_thread(gateway.ok, "DelSrc", token="victim")
        got = await viewer
        return during["nConnectCount"] - before, before, got

    delta, before, got = asyncio.run(scenario())
    assert delta == 1
    assert got.close_code == 1000 and got.close_reason == "source deleted" and got.video()
    assert gateway.ok("h5swsapi/Status")["nConnectCount"] == before


def test_status_shape(gateway: Gateway) -> None:
    status = gateway.ok("h5swsapi/Status")
    assert isinstance(status["nConnectCount"], int) and status["nConnectCount"] >= 0


def test_stalled_viewer_does_not_slow_others(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A viewer that stops reading is disconnected (and counted); another viewer keeps full frame rate."""
    gw = Gateway(tmp_path, env={"H5GATE_SEND_TIMEOUT": "3", "H5GATE_WS_SEND_BUFFER": "32768"}).start()
    try:
        gw.wait_online("demo")
        raw = socket.socket()
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        raw.connect(("127.0.0.1", gw.port))
        path = gw.ws_url("demo").split(str(gw.port), 1)[1]
        raw.sendall(
            (
                f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        assert raw.recv(12).startswith(b"HTTP/1.1 101")  # then never read again
        got = watch_sync(gw.ws_url("demo"), stop_after=8)
        frames = len(got.video())
        assert frames >= 0.9 * 25 * 8 - 30, frames  # minus the first GOP's head start
        deadline = time.monotonic() + 10
        status = {}
        while time.monotonic() < deadline:
            status = gw.ok("h5swsapi/Status")
            if status["nSlowDisconnects"] >= 1:
                break
            time.sleep(0.3)
        assert status["nSlowDisconnects"] == 1 and status["nConnectCount"] == 0
        raw.close()
        assert "stopped reading for 3s, disconnecting" in gw.log() and "Exception in ASGI" not in gw.log()
    finally:
        gw.stop()


def test_websocket_compression_is_off(gateway: Gateway) -> None:
    """Browsers offer permessage-deflate; compressing video per viewer costs CPU for nothing."""

    async def handshake() -> str | None:
        async with websockets.connect(gateway.ws_url("demo"), max_queue=None) as ws:  # offers deflate
            return ws.response.headers.get("Sec-WebSocket-Extensions")

    assert asyncio.run(handshake()) is None


def test_status_counts_return_to_zero_after_clients_leave(gateway: Gateway) -> None:
    async def many() -> None:
        await asyncio.gather(*(watch(gateway.ws_url("demo"), frames=5) for _ in range(5)))

    asyncio.run(many())
    time.sleep(0.3)
    assert json.loads(json.dumps(gateway.ok("h5swsapi/Status")))["nConnectCount"] == 0
