"""UpdateSrcRTSP / UpdateSrcFile / UpdateSrcONVIF's checks: editing a source keeps its token, changes
what was given, keeps the rest (the password above all, which GetSrc never shows), survives a restart, and
refuses bad values without touching the running source. Against a real camera that wants credentials."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tools.harness.camera import GstCamera
from tools.harness.gateway import Gateway

USER, PASSWORD = "cam", "s3cret!"


@pytest.fixture(scope="module")
def auth_camera() -> Iterator[GstCamera]:
    with GstCamera(user=USER, password=PASSWORD, width=320, height=180, fps=10, gop=10, bitrate=300) as cam:
        yield cam


def wait_error(gw: Gateway, token: str, timeout: float = 20.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        src = gw.source(token)
        if not src["bOnline"] and src["strLastError"]:
            return src
        time.sleep(0.3)
    pytest.fail(f"{token} did not go offline with an error: {gw.source(token)}")


def test_update_rtsp_keeps_token_and_password_changes_what_is_given(
    fresh_gateway: Gateway, auth_camera: GstCamera
) -> None:
    gw = fresh_gateway
    url = auth_camera.url(credentials=False)
    gw.ok("AddSrcRTSP", token="door", name="Door", url=url, user=USER, password=PASSWORD, rtsptype="tcp")
    gw.wait_online("door", timeout=30)

    # a new name only: the stored password still opens the camera after the restart the edit causes
    restarts = gw.source("door")["nRestarts"]
    gw.ok("UpdateSrcRTSP", token="door", name="Front door")
    src = gw.wait_online("door", timeout=30)
    assert (src["strName"], src["strToken"], src["strUrl"], src["strUser"]) == ("Front door", "door", url, USER)
    assert src["nRTSPType"] == "H5_RTSP_TCP" and src["nRestarts"] <= restarts + 1

    # a wrong password given: the camera refuses it (the edit really reached ffmpeg)
    gw.ok("UpdateSrcRTSP", token="door", password="wrong")
    src = wait_error(gw, "door")
    assert "401" in src["strLastError"] or "auth" in src["strLastError"].lower(), src["strLastError"]

    # credentials inside a new URL are split off it, as AddSrcRTSP does; udp transport, a sub stream
    gw.ok("UpdateSrcRTSP", token="door", url=auth_camera.url(), rtsptype="udp", suburl=url, connecttype="ondemand")
    src = gw.source("door")
    assert src["strUrl"] == url and src["strUser"] == USER and "s3cret" not in str(src)
    assert (src["nRTSPType"], src["strUrlSub"], src["nConnectType"]) == ("H5_RTSP_UDP", url, "H5_ONDEMAND")
    gw.ok("UpdateSrcRTSP", token="door", connecttype="always", rtsptype="tcp", enablesub="false")
    src = gw.wait_online("door", timeout=30)
    assert src["strUrlSub"] == "" and src["bEnableUrlSub"] is False

    # kept across a restart of the server
    gw.stop()
    gw.start()
    src = gw.wait_online("door", timeout=30)
    assert (src["strName"], src["strUrl"], src["nRTSPType"]) == ("Front door", url, "H5_RTSP_TCP")
    assert [s["strToken"] for s in gw.ok("GetSrc")["src"]] == ["door"]


def test_update_refuses_bad_values_and_leaves_the_source_running(fresh_gateway: Gateway, camera: GstCamera) -> None:
    gw = fresh_gateway
    gw.ok("AddSrcRTSP", token="cam", name="Cam", url=camera.url())
    gw.wait_online("cam", timeout=30)
    before = gw.source("cam")
    cases = [
        ({"name": "x"}, 400, "missing parameter: token"),
        ({"token": "nope"}, 404, "no such source: nope"),
        ({"token": "bad token"}, 400, "invalid token"),
        ({"token": "cam", "url": "file:///etc/passwd"}, 400, "unsupported url scheme"),
        ({"token": "cam", "url": "rtsp://host/a b"}, 400, "invalid url"),
        ({"token": "cam", "rtsptype": "carrier-pigeon"}, 400, "invalid rtsptype"),
        ({"token": "cam", "connecttype": "sometimes"}, 400, "invalid connect type"),
        ({"token": "cam", "audio": "maybe"}, 400, "invalid value for audio"),
        ({"token": "cam", "name": "x" * 129}, 400, "parameter too long: name"),
    ]
    for params, status, code in cases:
        got, body = gw.get("UpdateSrcRTSP", **params)
        assert (got, body["bStatus"]) == (status, False), (params, got, body)
        assert body["strCode"].startswith(code), (params, body)
    # the other kinds' calls refuse a source that is not theirs
    got, body = gw.get("UpdateSrcFile", token="cam", name="x")
    assert got == 400 and body["strCode"] == "source cam is of type H5_STREAM, not H5_FILE"
    got, body = gw.get("UpdateSrcONVIF", token="cam", name="x")
    assert got == 400 and body["strCode"] == "source cam is of type H5_STREAM, not H5_ONVIF"
    # only an administrator may edit; no session, no edit
    got, body = gw.get("UpdateSrcRTSP", session=False, token="cam", name="x")
    assert got == 401
    after = gw.source("cam")
    assert after["strName"] == before["strName"] and after["bOnline"] and after["nRestarts"] == before["nRestarts"]


def test_update_file_source(fresh_gateway: Gateway, tmp_path: Path) -> None:
    gw = fresh_gateway
    gw.ok("AddSrcFile", token="clip", name="Clip", url="demo.mp4", connecttype="ondemand")
    gw.ok("UpdateSrcFile", token="clip", name="Lobby clip", audio="false")
    src = gw.source("clip")
    assert (src["strName"], src["bEnableAudio"], src["nConnectType"]) == ("Lobby clip", False, "H5_ONDEMAND")
    assert src["strUrl"].endswith("/media/demo.mp4")
    got, body = gw.get("UpdateSrcFile", token="clip", url="/etc/passwd")
    assert got == 400 and body["strCode"] == "file is outside the configured media roots"
    got, body = gw.get("UpdateSrcFile", token="clip", url="../../etc/passwd")
    assert got == 400 and not body["bStatus"]
    assert gw.source("clip")["strUrl"].endswith("/media/demo.mp4")
    gw.ok("UpdateSrcFile", token="clip", connecttype="always")
    assert gw.wait_online("clip", timeout=30)["nConnectType"] == "H5_ALWAYS"
