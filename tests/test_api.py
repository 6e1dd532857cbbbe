"""REST contract of §5.2 and §5.3 (without PTZ/ONVIF): fields, types, sessions, errors and hostile input."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tools.harness.gateway import ROOT, Gateway

MD5_12345 = "827ccb0eea8a706c4c34a16891f84e7b"
PROTECTED = [
    "Logout",
    "Keepalive",
    "GetSystemInfo",
    "GetRunInfo",
    "UpdateUser",
    "GetUserInfo",
    "GetSrc",
    "AddSrcFile",
    "AddSrcRTSP",
    "DelSrc",
    "GetImage",
    "h5swsapi/Status",
]


def test_login_plain_and_md5(gateway: Gateway) -> None:
    for password in ("12345", MD5_12345, MD5_12345.upper()):
        status, body = gateway.get("Login", session=None, user="admin", password=password)
        assert status == 200 and body["bStatus"] is True and body["nTimeout"] == 600
        assert len(body["strSession"]) == 36  # a UUID
    # a wrong password is a 200 with bStatus false: the consoles show their own message only for a 200
    status, body = gateway.get("Login", session=None, user="admin", password="wrong")
    assert status == 200 and body["bStatus"] is False and body["nFaultTimes"] >= 1
    assert "strSession" not in body


def test_login_lockout_after_repeated_failures(gateway: Gateway) -> None:
    # the consoles show "3 - nFaultTimes tries left" up to 3, then the lock with tLockTimeResidue / 60 minutes
    counts = [gateway.get("Login", session=None, user="ghost", password="nope")[1]["nFaultTimes"] for _ in range(3)]
    assert counts == [1, 2, 3]
    status, body = gateway.get("Login", session=None, user="ghost", password="nope")
    assert status == 200 and body["nFaultTimes"] == 4 and body["tLockTimeResidue"] > 250 and "locked" in body["strCode"]
    status, body = gateway.get("Login", session=None, user="ghost", password="nope")
    assert body["nFaultTimes"] > 3 and body["tLockTimeResidue"] > 0  # still locked; other users are not affected
    assert gateway.get("Login", session=None, user="admin", password="12345")[0] == 200


@pytest.mark.parametrize("name", PROTECTED)
def test_every_call_needs_a_session(gateway: Gateway, name: str) -> None:
    for session in (None, "c1782caf-b670-42d8-ba90-2244d0b0ee83", "x" * 300):
        status, body = gateway.get(name, session=session, token="demo", user="admin")
        assert status == 401, (name, session)
        assert body == {"bStatus": False, "strCode": "session is missing, invalid or expired"}


def test_session_in_header_and_cookie(gateway: Gateway) -> None:
    status, _, body = gateway.request("/api/v1/GetSrc", headers={"Authorization": f"token {gateway.session}"})
    assert status == 200 and json.loads(body)["src"]
    status, _, body = gateway.request("/api/v1/GetSrc", headers={"Cookie": f"h5gate_session={gateway.session}"})
    assert status == 200 and json.loads(body)["src"]


def test_keepalive_logout(gateway: Gateway) -> None:
    session = gateway.ok("Login", session=None, user="admin", password="12345")["strSession"]
    assert gateway.ok("Keepalive", session=session) == {"bStatus": True, "strCode": "Keepalive successfully"}
    assert gateway.ok("Logout", session=session)["bStatus"] is True
    assert gateway.get("Keepalive", session=session)[0] == 401


def test_session_idle_timeout_and_keepalive(tmp_path: Path) -> None:
    gw = Gateway(tmp_path, extra_args=["--no-demo"], env={"H5GATE_LOGIN_TIMEOUT": "2"}).start()
    try:
        login = gw.ok("Login", session=None, user="admin", password="12345")
        assert login["nTimeout"] == 2
        session = login["strSession"]  # this one: a login takes a slow password hash, the first may be stale
        for _ in range(3):  # kept alive past the timeout
            time.sleep(1.2)
            assert gw.get("Keepalive", session=session)[0] == 200
        time.sleep(2.5)
        assert gw.get("GetSrc", session=session)[0] == 401
    finally:
        gw.stop()


def test_system_info(gateway: Gateway) -> None:
    info = gateway.ok("GetSystemInfo")
    assert set(info) >= {"strVersion", "strHostId", "strLicenseType", "strLicenseFull", "strChannelLimit", "strEndtime"}
    assert info["strLicenseType"] == "None" and info["strChannelLimit"] == "unlimited"
    assert re.fullmatch(r"r\d+\.\d+\.\d{4}\.\d{2}", info["strVersion"])  # the vendor's rX.Y.MMDD.YY
    assert info["strH5gateVersion"][0].isdigit()
    assert gateway.ok("GetSystemInfo")["strHostId"] == info["strHostId"]


def test_run_info(gateway: Gateway) -> None:
    info = gateway.ok("GetRunInfo")
    assert info["strRunTime"].endswith("MIN") and "H " in info["strRunTime"]
    for key in ("strCPU", "strMemory"):
        assert info[key].endswith("%") and 0 <= int(info[key][:-1]) <= 100
    assert info["strNetworkIn"].endswith("kpbs") and info["strNetworkOut"].endswith("kpbs")
    for key in (
        "nRunTimeSec",
        "nCPUUsage",
        "nMemoryUsage",
        "nTotalMemoryByte",
        "nNetworkInK",
        "nNetworkOutK",
        "nTotalSpaceByte",
        "nFreeSpaceByte",
        "nRecordTotalSpaceByte",
        "nRecordFreeSpaceByte",
    ):
        assert isinstance(info[key], int) and info[key] >= 0, key
    assert info["nTotalMemoryByte"] > 100 * 2**20 and info["nFreeSpaceByte"] <= info["nTotalSpaceByte"]
    assert info["strTotalSpace"].endswith("GB") and info["strFreeSpace"].endswith("GB")


def test_user_info_and_update(gateway: Gateway) -> None:
    info = gateway.ok("GetUserInfo", user="admin")
    assert info["strUser"] == "admin" and info["strUserType"] == "Administrator" and info["strRole"] == "Administrator"
    assert gateway.get("GetUserInfo", user="nobody")[0] == 404
    new = hashlib.md5(b"s3cret-pass").hexdigest()
    status, body = gateway.get("UpdateUser", user="admin", oldpassword="0" * 32, newpassword=new)
    assert status == 403 and body["bStatus"] is False
    assert gateway.get("UpdateUser", user="admin", oldpassword=MD5_12345, newpassword="short")[0] == 400
    other = gateway.ok("Login", session=None, user="admin", password="12345")["strSession"]
    body = gateway.ok("UpdateUser", user="admin", oldpassword=MD5_12345, newpassword=new)
    assert body == {"bStatus": True, "strCode": "Update user successfully"}
    try:
        assert gateway.get("Keepalive", session=other)[0] == 401  # other sessions end
        assert gateway.get("Keepalive")[0] == 200  # the caller's stays
        assert gateway.get("Login", session=None, user="admin", password="12345")[1]["bStatus"] is False
        assert gateway.ok("Login", session=None, user="admin", password="s3cret-pass")["bStatus"]
    finally:
        gateway.ok("UpdateUser", user="admin", oldpassword=new, newpassword=MD5_12345)


def test_get_src_fields(gateway: Gateway) -> None:
    src = gateway.source("demo")
    expected = {
        "nType",
        "strName",
        "strToken",
        "strUrl",
        "strUser",
        "strPasswd",
        "bPasswdEncrypt",
        "bEnableAudio",
        "nConnectType",
        "nRTSPType",
        "strSrcIpAddress",
        "strSrcPort",
        "nChannelNumber",
        "bOnvifProfileAuto",
        "strOnvifAddr",
        "strOnvifProfileMain",
        "strOnvifProfileSub",
        "bOnline",
        "strSnapshotUrl",
        "bRec",
        "strServerToken",
        "strOriginalToken",
        "strServerUuid",
    }
    assert expected <= set(src)
    assert src["nType"] == "H5_FILE" and src["strToken"] == "demo" and src["bOnline"] is True
    assert src["strPasswd"] == "*****" and src["strSnapshotUrl"] == "/api/v1/GetImage?token=demo"
    assert src["nConnectType"] == "H5_ALWAYS" and src["nRTSPType"] == "H5_RTSP_AUTO"
    assert src["strOriginalToken"] == "" and src["strServerUuid"] == ""  # a local source (the manual's form)
    assert gateway.get("GetSrc", token="nope")[0] == 404
    assert len(gateway.ok("GetSrc")["src"]) >= 1


def test_add_rtsp_hides_credentials_everywhere(gateway: Gateway) -> None:
    url = "rtsp://camuser:Very%40Secret1@127.0.0.1:9/stream1"
    body = gateway.ok("AddSrcRTSP", token="cred1", name="Cam 1", url=url, audio="false")
    assert body == {"bStatus": True, "strCode": "Add successfully"}
    try:
        src = gateway.source("cred1")
        assert src["strUrl"] == "rtsp://127.0.0.1:9/stream1" and src["strUser"] == "camuser"
        assert src["strSrcIpAddress"] == "127.0.0.1" and src["strSrcPort"] == "9"
        assert src["bEnableAudio"] is False and src["nType"] == "H5_STREAM"
        listing = json.dumps(gateway.ok("GetSrc"))
        assert "Very" not in listing and "Secret1" not in listing
        time.sleep(1.5)  # let ffmpeg fail at least once: its error lines go to the log
        assert "Very@Secret1" not in gateway.log() and "Very%40Secret1" not in gateway.log()
        status, body = gateway.get("AddSrcRTSP", token="cred1", name="again", url=url)
        assert status == 409 and "exists" in body["strCode"]
    finally:
        gateway.ok("DelSrc", token="cred1")
    assert gateway.get("GetSrc", token="cred1")[0] == 404
    assert gateway.get("DelSrc", token="cred1")[0] == 404


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/passwd",
        "-i /etc/passwd",
        "javascript:alert(1)",
        "rtsp://",
        "rtsp://host/a b",
        "rtsp://host/x\n-f",
        "concat:/etc/passwd|/etc/hosts",
        "subfile,,start,0,end,0,,:/etc/passwd",
        "rtsp://h/" + "a" * 3000,
        "udp://127.0.0.1:1234",
        "",
    ],
)
def test_add_rtsp_rejects_bad_urls(gateway: Gateway, url: str) -> None:
    status, body = gateway.get("AddSrcRTSP", token="bad1", name="x", url=url)
    assert 400 <= status < 500 and body["bStatus"] is False and body["strCode"]
    assert gateway.get("GetSrc", token="bad1")[0] == 404


@pytest.mark.parametrize("token", ["../x", "a/b", "a b", "x" * 65, "tok;rm", "..", "ü"])
def test_add_rejects_bad_tokens(gateway: Gateway, token: str) -> None:
    status, body = gateway.get("AddSrcRTSP", token=token, name="x", url="rtsp://127.0.0.1/x")
    assert status == 400 and body["bStatus"] is False and "token" in body["strCode"]


@pytest.mark.parametrize(
    "path",
    ["/etc/passwd", "../../../../etc/passwd", "demo.mp4/../../../etc/hosts", "nonexistent.mp4", "/proc/self/environ"],
)
def test_add_file_stays_in_media_roots(gateway: Gateway, path: str) -> None:
    status, body = gateway.get("AddSrcFile", token="file1", name="f", url=path)
    assert status == 400 and body["bStatus"] is False
    assert gateway.get("GetSrc", token="file1")[0] == 404


def test_add_file_source_plays(gateway: Gateway) -> None:
    assert gateway.ok("AddSrcFile", token="file2", name="Clip", url="demo.mp4")["bStatus"]
    try:
        src = gateway.wait_online("file2")
        assert src["nType"] == "H5_FILE" and src["strUrl"].endswith("/demo.mp4")
    finally:
        gateway.ok("DelSrc", token="file2")


def test_bad_parameters_answer_4xx_json(gateway: Gateway) -> None:
    cases = [
        ("AddSrcRTSP", {"token": "t"}),
        ("AddSrcRTSP", {"token": "t", "url": "rtsp://h/x", "audio": "maybe"}),
        ("AddSrcRTSP", {"token": "t", "url": "rtsp://h/x", "rtsptype": "sctp"}),
        ("DelSrc", {}),
        ("GetImage", {}),
        ("AddSrcRTSP", {"token": "t", "url": "rtsp://h/x", "name": "a\x00b"}),
    ]
    for name, params in cases:
        status, body = gateway.get(name, **params)
        assert 400 <= status < 500 and body["bStatus"] is False, (name, params, body)
    status, _, raw = gateway.request("/api/v1/NoSuchCall?session=" + gateway.session)
    assert status == 404 and json.loads(raw)["bStatus"] is False


def test_viewer_role_watches_but_cannot_change_sources(tmp_path: Path) -> None:
    """Users made with `h5gate passwd USER --role Viewer` may list and watch, not add or delete."""
    cli = [sys.executable, "-m", "supervisor.cli", "--data-dir", str(tmp_path), "passwd", "watcher", "--role", "Viewer"]
    done = subprocess.run(cli, input="watch-only\n", text=True, capture_output=True, cwd=ROOT, timeout=60)
    assert done.returncode == 0, done.stderr
    gw = Gateway(tmp_path, extra_args=["--no-demo"]).start()
    try:
        session = gw.ok("Login", session=None, user="watcher", password="watch-only")["strSession"]
        info = gw.ok("GetUserInfo", session=session)
        assert info["strUser"] == "watcher" and info["strUserType"] == "Viewer"
        assert gw.get("GetSrc", session=session)[0] == 200
        status, body = gw.get("AddSrcRTSP", session=session, token="t", url="rtsp://127.0.0.1/x")
        assert status == 403 and body["bStatus"] is False and "Administrator" in body["strCode"]
        assert gw.get("DelSrc", session=session, token="t")[0] == 403
        assert gw.get("GetUserInfo", session=session, user="admin")[0] == 403
    finally:
        gw.stop()
