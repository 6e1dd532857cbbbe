"""HTTPS served by h5gate itself (issue #11; the listener is the vendor consoles' SetHTTPConf one:
https_port with a PEM of certificate and key in data_dir/certificate): the session cookie is Secure, wss://
works for the socket routes, with the connection guards of supervisor/connections.py on both listeners.
A self-signed certificate for 127.0.0.1 is made here with `cryptography`; the clients trust exactly it."""

from __future__ import annotations

import asyncio
import datetime
import http.client
import ipaddress
import json
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
import websockets
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.wsclient import check_playable, watch
from tools.harness.camera import free_port
from tools.harness.gateway import Gateway


def self_signed(folder: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "h5gate test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "server.crt", folder / "server.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


@pytest.fixture
def tls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Gateway, ssl.SSLContext]]:
    cert, key = self_signed(tmp_path)
    context = ssl.create_default_context(cafile=str(cert))
    monkeypatch.setattr(ssl, "_create_default_https_context", lambda: context)  # urllib trusts our certificate
    folder = tmp_path / "gw" / "certificate"
    folder.mkdir(parents=True)
    (folder / "server.pem").write_bytes(cert.read_bytes() + key.read_bytes())
    https_port = free_port()
    env = {"H5GATE_HTTPS_PORT": str(https_port), "H5GATE_WEBRTC": "false"}
    gw = Gateway(tmp_path / "gw", env=env)  # with the demo source
    gw.base = f"https://127.0.0.1:{https_port}"
    gw.ws_base = f"wss://127.0.0.1:{https_port}"
    gw.https_port = https_port  # type: ignore[attr-defined]
    gw.start()
    try:
        yield gw, context
    finally:
        gw.stop()


def test_https_and_secure_cookie(tls: tuple[Gateway, ssl.SSLContext]) -> None:
    gw, _ = tls
    status, headers, body = gw.request("/api/v1/Login?user=admin&password=12345")
    assert status == 200 and json.loads(body)["bStatus"] is True
    cookie = headers["set-cookie"].lower()
    assert "secure" in cookie and "samesite=strict" in cookie
    assert gw.ok("GetSrc")["src"][0]["strToken"] == "demo"
    assert gw.request("/console/login")[0] == 200  # the console's pages too


def test_plain_port_still_answers(tls: tuple[Gateway, ssl.SSLContext]) -> None:
    gw, _ = tls
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=10)
    conn.request("GET", f"/api/v1/GetSystemInfo?session={gw.session}")
    resp = conn.getresponse()
    assert resp.status == 200 and json.loads(resp.read())["strVersion"]
    assert "secure" not in (resp.getheader("set-cookie") or "")
    conn.close()


def test_live_video_over_wss(tls: tuple[Gateway, ssl.SSLContext]) -> None:
    gw, context = tls
    gw.wait_online("demo", timeout=30)

    async def run() -> object:
        import tests.wsclient as wsclient

        real_connect = wsclient.websockets.connect

        def connect(url: str, **kwargs: object) -> object:
            return real_connect(url, ssl=context, **kwargs)

        wsclient.websockets.connect = connect  # type: ignore[assignment]
        try:
            return await watch(gw.ws_url("demo"), frames=30)
        finally:
            wsclient.websockets.connect = real_connect

    got = asyncio.run(run())
    assert got.mime.startswith('video/mp4; codecs="avc1')  # type: ignore[attr-defined]
    check_playable(got)  # type: ignore[arg-type]

    async def bad_session(path: str) -> int | None:
        url = f"{gw.ws_base}{path}?token=demo&session=nope"
        async with websockets.connect(url, ssl=context) as ws:
            try:
                await ws.recv()
            except websockets.exceptions.ConnectionClosed as e:
                return e.rcvd.code if e.rcvd else None
        return None

    # the other socket routes answer over TLS too (and still want a session)
    for path in ("/api/v1/h5swsapi", "/api/v1/h5swscmnapi"):
        assert asyncio.run(bad_session(path)) == 4401, path


def test_plain_port_redirects_to_https(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """http_redirect: every plain request is sent to the same path on the HTTPS port, sockets are refused
    on the plain port, /healthz still answers there, and the HTTPS side serves as usual."""
    cert, key = self_signed(tmp_path)
    context = ssl.create_default_context(cafile=str(cert))
    monkeypatch.setattr(ssl, "_create_default_https_context", lambda: context)
    folder = tmp_path / "gw" / "certificate"
    folder.mkdir(parents=True)
    (folder / "server.pem").write_bytes(cert.read_bytes() + key.read_bytes())
    https_port = free_port()
    env = {"H5GATE_HTTPS_PORT": str(https_port), "H5GATE_HTTP_REDIRECT": "true", "H5GATE_WEBRTC": "false"}
    gw = Gateway(tmp_path / "gw", env=env)
    plain = gw.base
    gw.base = f"https://127.0.0.1:{https_port}"
    gw.start()
    try:
        host, port = plain.removeprefix("http://").split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        conn.request("GET", "/console/login?next=%2Fconsole%2F")
        answer = conn.getresponse()
        answer.read()
        assert answer.status == 308
        assert answer.getheader("location") == f"https://127.0.0.1:{https_port}/console/login?next=%2Fconsole%2F"
        conn.request("GET", f"/api/v1/GetSrc?session={gw.session}")
        answer = conn.getresponse()
        assert answer.status == 308 and b"demo" not in answer.read()  # nothing served in clear
        conn.request("GET", "/healthz")
        answer = conn.getresponse()
        assert answer.status == 200 and json.loads(answer.read())["status"] == "ok"
        conn.close()

        async def plain_socket() -> None:
            with pytest.raises(websockets.exceptions.WebSocketException):
                async with websockets.connect(
                    f"ws://{host}:{port}/api/v1/h5swsapi?token=demo&session={gw.session}", open_timeout=10
                ) as ws:
                    await ws.recv()

        asyncio.run(plain_socket())
        assert gw.ok("GetSrc")["src"][0]["strToken"] == "demo"  # over HTTPS
    finally:
        gw.stop()
