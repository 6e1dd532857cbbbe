"""Issue #11 against a real server over real sockets: slow clients (2), failed-login memory (3), forwarded
headers (5), query-string passwords (7), over-long media store names (8), and cross-site actions (1)."""

from __future__ import annotations

import http.client
import json
import socket
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest

from tools.harness.gateway import ROOT, Gateway

VICTIM_FILE = str(ROOT / "media" / "demo.mp4")


def passwd(data_dir: Path, user: str, password: str, role: str) -> None:
    """`h5gate passwd` as an administrator runs it (before the server starts here)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [sys.executable, "-m", "supervisor.cli", "--data-dir", str(data_dir), "passwd", user, "--role", role],
        input=password + "\n",
        text=True,
        cwd=ROOT,
        check=True,
        capture_output=True,
        timeout=60,
    )


def call(
    gw: Gateway, path: str, *, method: str = "GET", headers: dict[str, str] | None = None, source: str = ""
) -> tuple[int, bytes]:
    """One request on its own connection (optionally from another loopback address)."""
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=15, source_address=(source, 0) if source else None)
    try:
        conn.request(method, path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def metric(gw: Gateway, name: str) -> float:
    status, body = call(gw, f"/metrics?session={gw.session}")
    assert status == 200, body
    for line in body.decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


# -- 8: an over-long name under /mediastore ------------------------------------------------------------


def test_long_media_store_names_are_4xx_not_500(gateway: Gateway) -> None:
    (gateway.data_dir / "mediastore" / "record" / "demo").mkdir(parents=True, exist_ok=True)  # as after a recording
    for rel in (
        "record/demo/" + "a" * 400 + ".mp4",
        "record/demo/" + "b" * 256 + "/x.mp4",
        "record/" + "c/" * 3000 + "x.mp4",
        "record/" + "d" * 400 + ".mp4",
    ):
        status, headers, body = gateway.request(f"/mediastore/{rel}?session={gateway.session}")
        assert 400 <= status < 500, (len(rel), status, body[:200])
        assert json.loads(body)["bStatus"] is False
    assert gateway.get("GetSystemInfo")[0] == 200
    assert "Traceback" not in gateway.log()


# -- 1: actions need the session in the query or header, from no other site, and never on HEAD --------------


def _add_victim(gw: Gateway, token: str) -> None:
    status, body = gw.get("AddSrcFile", token=token, name=token, url=VICTIM_FILE)
    assert status == 200, body


def _exists(gw: Gateway, token: str) -> bool:
    return any(s["strToken"] == token for s in gw.ok("GetSrc")["src"])


def test_cookie_alone_reads_but_never_acts(gateway: Gateway) -> None:
    _add_victim(gateway, "csrfcookie")
    cookie = {"Cookie": f"h5gate_session={gateway.session}"}
    status, body = call(gateway, "/api/v1/DelSrc?token=csrfcookie", headers=cookie)
    assert status == 403 and b"session" in body, body
    status, _ = call(gateway, "/api/v1/UpdateUser?user=admin&oldpassword=12345&newpassword=" + "0" * 32, headers=cookie)
    assert status == 403
    assert _exists(gateway, "csrfcookie")
    # reading with the cookie alone still works: a page embedding a snapshot or the source list
    assert call(gateway, "/api/v1/GetSrc", headers=cookie)[0] == 200
    assert call(gateway, "/api/v1/GetImage?token=demo", headers=cookie)[0] == 200
    status, _ = call(gateway, "/hls/v1/demo/hls.m3u8", headers=cookie)
    assert status in (200, 404)  # 404 only while the first segments are being written: no 401/403
    assert gateway.get("DelSrc", token="csrfcookie")[0] == 200


def test_cross_site_actions_are_refused_even_with_the_session(gateway: Gateway) -> None:
    _add_victim(gateway, "csrfsite")
    query = f"/api/v1/DelSrc?token=csrfsite&session={gateway.session}"
    for headers in (
        {"Sec-Fetch-Site": "cross-site"},
        {"Origin": "http://evil.example"},
        {"Origin": "null"},
    ):
        status, body = call(gateway, query, headers=headers)
        assert status == 403 and b"another site" in body, (headers, body)
    assert _exists(gateway, "csrfsite")
    # the same call from the gateway's own page (same origin) goes through
    status, _ = call(gateway, query, headers={"Sec-Fetch-Site": "same-origin", "Origin": gateway.base})
    assert status == 200 and not _exists(gateway, "csrfsite")


def test_head_performs_no_action(gateway: Gateway) -> None:
    _add_victim(gateway, "csrfhead")
    status, _ = call(gateway, f"/api/v1/DelSrc?token=csrfhead&session={gateway.session}", method="HEAD")
    assert status == 405
    assert _exists(gateway, "csrfhead")
    assert call(gateway, f"/api/v1/GetSrc?session={gateway.session}", method="HEAD")[0] == 200
    assert gateway.get("DelSrc", token="csrfhead")[0] == 200


def test_login_cookie_is_samesite_strict(gateway: Gateway) -> None:
    status, headers, _ = gateway.request("/api/v1/Login?user=admin&password=12345")
    assert status == 200
    cookie = headers["set-cookie"].lower()
    assert "samesite=strict" in cookie and "httponly" in cookie


# -- 7: passwords in a source URL's query string ------------------------------------------------------------


@pytest.fixture
def viewer_gateway(tmp_path: Path) -> Iterator[Gateway]:
    data = tmp_path / "gw"
    passwd(data, "watcher", "watch-pw-1", "Viewer")
    gw = Gateway(data, extra_args=["--no-demo"], env={"H5GATE_WEBRTC": "false"}).start()
    try:
        yield gw
    finally:
        gw.stop()


def test_query_string_passwords_are_redacted_for_viewers_and_in_logs(viewer_gateway: Gateway) -> None:
    gw = viewer_gateway
    secret, sub_secret = "Qs3cretPw9", "SubK3y77x"
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))  # a port nothing listens on: ffmpeg fails and logs the URL
    port = dead.getsockname()[1]
    dead.close()
    url = f"rtsp://127.0.0.1:{port}/cam/realmonitor?channel=1&user=admin&password={secret}"
    sub = f"rtsp://127.0.0.1:{port}/sub?pwd={sub_secret}"
    assert gw.get("AddSrcRTSP", token="qcam", name="qcam", url=url, suburl=sub)[0] == 200
    _, body = gw.get("Login", session=None, user="watcher", password="watch-pw-1")
    viewer = body["strSession"]
    src = gw.ok("GetSrc", session=viewer, token="qcam")["src"][0]
    assert secret not in json.dumps(src) and sub_secret not in json.dumps(src)
    assert src["strUrl"].endswith("channel=1&user=admin&password=***")
    assert src["strUrlSub"].endswith("/sub?pwd=***")
    assert gw.source("qcam")["strUrl"] == url  # the Administrator sees what he configured
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and "ffmpeg" not in gw.log():
        time.sleep(0.5)
    time.sleep(2)  # a failed run or two
    log = gw.log()
    assert "qcam" in log and "ffmpeg" in log
    assert secret not in log and sub_secret not in log, [line for line in log.splitlines() if secret in line]


# -- 5 and 3: forwarded headers and failed-login records ----------------------------------------------------


@pytest.fixture
def lockout_gateway(tmp_path: Path) -> Iterator[Gateway]:
    env = {
        "H5GATE_WEBRTC": "false",
        "H5GATE_TRUSTED_PROXIES": "127.0.0.2",
        "H5GATE_LOGIN_FAULT_RECORDS": "50",
        "H5GATE_LOGIN_LOCK_SECONDS": "3",
    }
    gw = Gateway(tmp_path / "gw", extra_args=["--no-demo"], env=env).start()
    try:
        yield gw
    finally:
        gw.stop()


def _login(gw: Gateway, user: str, password: str, *, xff: str = "", source: str = "") -> dict:
    headers = {"X-Forwarded-For": xff} if xff else {}
    query = urllib.parse.urlencode({"user": user, "password": password})
    _, body = call(gw, f"/api/v1/Login?{query}", headers=headers, source=source)
    return json.loads(body)


def test_forwarded_for_is_believed_only_from_trusted_proxies(lockout_gateway: Gateway) -> None:
    gw = lockout_gateway
    # from an untrusted local client, a new X-Forwarded-For per try does not dodge the lockout
    for n in range(5):
        body = _login(gw, "admin", "wrong", xff=f"198.51.100.{n + 1}")
    assert body["tLockTimeResidue"] > 0 and "locked" in body["strCode"]
    assert "locked" in _login(gw, "admin", "12345", xff="198.51.100.99")["strCode"]
    # a configured proxy (127.0.0.2) is believed: the lock is on the address it names, not on the proxy
    for _ in range(5):
        body = _login(gw, "admin", "wrong", xff="198.51.100.50", source="127.0.0.2")
    assert "locked" in body["strCode"]
    assert _login(gw, "admin", "12345", xff="198.51.100.51", source="127.0.0.2")["bStatus"] is True


def test_failed_login_records_are_bounded_and_expire(lockout_gateway: Gateway) -> None:
    gw = lockout_gateway
    for n in range(150):
        _login(gw, f"nobody{n}", "x")
    assert 1 <= metric(gw, "h5gate_login_fault_records") <= 50
    time.sleep(3.5)  # past login_lock_seconds: the records are old news
    _login(gw, "latecomer", "x")
    assert metric(gw, "h5gate_login_fault_records") == 1


# -- 2: slow and silent clients -----------------------------------------------------------------------------


@pytest.fixture
def small_gateway(tmp_path: Path) -> Iterator[Gateway]:
    env = {"H5GATE_WEBRTC": "false", "H5GATE_REQUEST_TIMEOUT": "3", "H5GATE_IDLE_TIMEOUT": "2"}
    gw = Gateway(tmp_path / "gw", extra_args=["--no-demo"], env=env, limit_files=256).start()
    try:
        yield gw
    finally:
        gw.stop()


def _closed_by_server(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        return sock.recv(1) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True  # reset


def test_half_open_and_silent_sockets_do_not_stop_the_server(small_gateway: Gateway) -> None:
    gw = small_gateway
    socks: list[socket.socket] = []
    try:
        for n in range(300):  # from another loopback address, so the cap per address is that client's
            s = socket.create_connection(("127.0.0.1", gw.port), timeout=5, source_address=("127.0.0.2", 0))
            if n % 2:
                s.sendall(b"GET /api/v1/GetSystemInfo HTTP/1.1\r\nHost: x\r\nX-Slow: ")  # half a request
            socks.append(s)
        started = time.monotonic()
        status, body = call(gw, "/api/v1/Login?user=admin&password=12345")
        assert status == 200 and json.loads(body)["bStatus"] is True, body
        assert time.monotonic() - started < 3
        # past the request timeout every one of them has been closed by the server
        time.sleep(3 + 2)
        still_open = [s for s in socks if not _closed_by_server(s)]
        assert not still_open, f"{len(still_open)} of 300 sockets still open"
        assert call(gw, "/api/v1/Login?user=admin&password=12345", source="127.0.0.2")[0] == 200
    finally:
        for s in socks:
            s.close()


def test_trickled_requests_and_idle_keepalive_are_closed(small_gateway: Gateway) -> None:
    gw = small_gateway
    trickle = socket.create_connection(("127.0.0.1", gw.port), timeout=5)
    request = b"GET /api/v1/GetSystemInfo HTTP/1.1\r\nHost: x\r\nX-Padding: " + b"a" * 100
    closed_after = None
    started = time.monotonic()
    for byte in request:  # one byte every 0.25 s: busy, but never a whole request
        try:
            trickle.sendall(bytes([byte]))
        except OSError:
            closed_after = time.monotonic() - started
            break
        if _closed_by_server(trickle):
            closed_after = time.monotonic() - started
            break
        trickle.setblocking(True)
        time.sleep(0.25)
    trickle.close()
    assert closed_after is not None and closed_after < 3 + 1.5, closed_after
    # a keep-alive connection that made one request and then says nothing is closed after idle_timeout
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=10)
    conn.request("GET", "/api/v1/Login?user=admin&password=12345")
    assert conn.getresponse().read()
    sock = conn.sock
    time.sleep(2 + 1)
    assert _closed_by_server(sock)
    conn.close()
