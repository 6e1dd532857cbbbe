"""The consoles' settings pages (issue #10) against the real server: what is set is stored, shown, and done.

Log level and rotating log act at once; the IP/port check keeps ffmpeg off a camera whose port is shut;
HTTPS with a certificate and key is served by h5gate itself after Restart; configuration backups are
listed, downloaded and restored (the server restarts in place with the restored configuration).
"""

from __future__ import annotations

import json
import shutil
import ssl
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tools.harness.camera import free_port, wait_until
from tools.harness.gateway import Gateway


@pytest.fixture
def gw(tmp_path: Path) -> Iterator[Gateway]:
    gateway = Gateway(tmp_path / "gw", extra_args=["--no-demo"]).start()
    try:
        yield gateway
    finally:
        gateway.stop()


def wait_back(gw: Gateway, timeout: float = 40.0) -> None:
    """After Restart: the same process answers again with a new login."""
    deadline = time.monotonic() + timeout
    time.sleep(1.0)
    while time.monotonic() < deadline:
        try:
            status, body = gw.get("Login", session=None, user="admin", password="12345")
            if status == 200 and body.get("bStatus"):
                gw.session = body["strSession"]
                return
        except OSError:
            pass
        time.sleep(0.3)
    raise AssertionError("the server did not come back:\n" + gw.log()[-3000:])


def test_log_settings_act_at_once(gw: Gateway) -> None:
    assert gw.ok("GetLogLevel")["strLevelLog"] == "H5_LOG_INFO"
    gw.ok("SetLogLevel", level="H5_LOG_DEBUG")
    assert gw.ok("GetLogLevel")["strLevelLog"] == "H5_LOG_DEBUG"
    assert gw.get("SetLogLevel", level="LOUD")[0] == 400
    assert gw.ok("GetRotatingLog")["enable"] is False
    path = Path(gw.ok("SetRotatingLog", enable="true")["strPath"])
    gw.ok("AddSrcRTSP", token="logged", url="rtsp://127.0.0.1:9/x")
    assert "logged: source added" in path.read_text()
    gw.ok("SetRotatingLog", enable="false")
    assert gw.ok("GetRotatingLog")["enable"] is False


def test_ip_port_check_keeps_ffmpeg_off_a_shut_port(gw: Gateway) -> None:
    assert gw.ok("GetIpPortCheck") == {"enable": False, "nDetentionPeriod": 30}
    gw.ok("SetIpPortCheck", enable="true", period=60)
    assert gw.ok("GetIpPortCheck") == {"enable": True, "nDetentionPeriod": 60}
    port = free_port()  # nothing listens there
    gw.ok("AddSrcRTSP", token="shut", url=f"rtsp://127.0.0.1:{port}/x")
    deadline = time.monotonic() + 10
    while "IP port check" not in gw.source("shut")["strLastError"]:
        assert time.monotonic() < deadline, gw.source("shut")
        time.sleep(0.3)
    out = subprocess.run(["ps", "-eo", "args="], capture_output=True, text=True, env={"COLUMNS": "4096"}).stdout
    assert f"127.0.0.1:{port}/x" not in out  # no ffmpeg was started against it


def test_pages_store_and_show(gw: Gateway) -> None:
    gw.ok("SetStorageConf", storageui="true", storageport=9000)
    assert gw.ok("GetStorageConf")["nStorageConfigPort"] == 9000
    gw.ok("SetRTCCloudModeInfo", cloudmode="true", cloudpublicip="192.0.2.7", portrangemin=51000, portrangemax=51100)
    cloud = gw.ok("GetRTCCloudModeInfo")
    assert cloud == {
        "bCloudMode": True,
        "strCloudPublicIp": "192.0.2.7",
        "iPortRangeMin": 51000,
        "iPortRangeMax": 51100,
    }
    assert gw.get("SetRTCCloudModeInfo", cloudmode="true", portrangemin=9, portrangemax=8)[0] == 400
    gw.ok("SetRTCRelayModeInfo", relaymode="true", relaypublicip="192.0.2.8", relaypublicport=3478,
          relayuser="u", relaypasswd="secret", relaypasswdencrypt="false")  # fmt: skip
    relay = gw.ok("GetRTCRelayModeInfo")
    assert relay["bRelayMode"] is True and relay["strRelayPasswd"] == "******"
    gw.ok("SetRTCTurnServerInfo", turnserver="true", turnserverip="192.0.2.9", turnserverport=3479)
    assert gw.ok("GetRTCTurnServerInfo")["nTurnServerPort"] == 3479
    info = gw.ok("GetCloudClientInfo")
    assert info["bOnline"] is False and info["bEnable"] is False
    # enabled, towards a centre that is not there (a closed loopback port): saved, shown, and offline with the reason
    gw.ok("SetCloudInfo", enable="true", servername="edge1", servertoken="e1", cloudip="127.0.0.1", cloudport=9,
          ssl="false", user="u", password="0" * 32, keepalivetime=3, edgetranscoding="false")  # fmt: skip
    info = gw.ok("GetCloudClientInfo")
    assert info["bEnable"] is True and info["strServerName"] == "edge1" and info["bOnline"] is False
    assert info["strPasswd"] == "******" and info["strCloudPort"] == "9"
    assert wait_until(lambda: "refused" in gw.ok("GetCloudClientInfo")["strLastError"].lower(), 10)
    status, body = gw.get("SetCloudInfo", enable="true", servertoken="e1", cloudip="127.0.0.1", password="12345")
    assert status == 400 and "MD5" in body["strCode"], body
    gw.ok("SetCloudInfo", enable="false", servertoken="e1", cloudip="127.0.0.1", cloudport=9)
    assert gw.ok("GetCloudClientInfo")["bEnable"] is False


def test_https_served_by_h5gate_after_restart(gw: Gateway, tmp_path: Path) -> None:
    folder = gw.data_dir / "certificate"
    folder.mkdir()
    key, crt = tmp_path / "k.pem", tmp_path / "c.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(crt), "-days", "2", "-subj", "/CN=127.0.0.1"], check=True, capture_output=True)  # fmt: skip
    (folder / "server.pem").write_bytes(crt.read_bytes() + key.read_bytes())
    (folder / "broken.pem").write_text("not a certificate")
    https = free_port()
    assert gw.get("SetHTTPConf", http=gw.port, https=https, sslcertificatefile="broken.pem")[0] == 400
    assert gw.get("SetHTTPConf", http=gw.port, https=https, sslcertificatefile="../h5gate.db")[0] == 400
    gw.ok("SetHTTPConf", http=gw.port, https=https, sslcertificatefile="server.pem", forcehttps="false",
          enabledomain="false", documentroot="")  # fmt: skip
    assert gw.ok("GetHTTPConf")["nHTTPSPort"] == https
    pid = gw.proc.pid if gw.proc else 0
    gw.ok("Restart")
    wait_back(gw)
    assert gw.proc is not None and gw.proc.pid == pid and gw.proc.poll() is None  # restarted in place
    context = ssl.create_default_context(cafile=str(crt))
    context.check_hostname = False
    url = f"https://127.0.0.1:{https}//api/v1/GetSrc?session={gw.session}"
    with urllib.request.urlopen(url, context=context, timeout=10) as resp:
        assert resp.status == 200 and json.loads(resp.read())["src"] == []


def test_config_backup_download_and_restore(gw: Gateway, tmp_path: Path) -> None:
    assert gw.ok("GetSnapshotList") == {"strName": []}
    gw.ok("AddSrcRTSP", token="keep", name="Kept", url="rtsp://127.0.0.1:9/k")
    gw.ok("CreateRole", roletoken="night", role="Viewer")
    made = gw.ok("CreateSnapshot")
    name = made["strName"]
    assert gw.ok("GetSnapshotList")["strName"] == [name]
    status, headers, body = gw.request(f"/api/v1/GetSnapshotFile?name={name}&session={gw.session}")
    assert status == 200 and json.loads(body)["tables"]["sources"][0]["token"] == "keep"
    assert gw.get("GetSnapshotFile", name="../h5gate.db")[0] == 400
    gw.ok("DelSrc", token="keep")
    gw.ok("DeleteRole", roletoken="night")
    gw.ok("AddSrcRTSP", token="later", url="rtsp://127.0.0.1:9/l")
    gw.ok("RestoreSnapshot", name=name)
    wait_back(gw)
    assert [s["strToken"] for s in gw.ok("GetSrc")["src"]] == ["keep"]
    assert "night" in {r["strRoleToken"] for r in gw.ok("GetRoleList")["roles"]}
    shutil.rmtree(gw.data_dir / "backups")
    assert gw.get("RestoreSnapshot", name=name)[0] == 404
