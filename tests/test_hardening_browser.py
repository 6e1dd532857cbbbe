"""Issue #11 finding 1 in a real browser: another site's link, image, form or fetch cannot make a logged-in
administrator's Chromium delete a source, while the gateway's own console still can.

The attacking page is served from http://localhost:<port>: another site than http://127.0.0.1:<port>
(a site is the registrable domain or the IP address itself), both on loopback.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from playwright.sync_api import Browser

from tests.browser import launch, new_page
from tools.harness.gateway import ROOT, Gateway

VICTIMS = ("victimimg", "victimform", "victimlink", "victimfetch")


def evil_page(base: str) -> bytes:
    return f"""<!doctype html><html><body>
<img src="{base}/api/v1/DelSrc?token=victimimg">
<form id="f" action="{base}/api/v1/DelSrc" method="GET"><input name="token" value="victimform"></form>
<a id="l" href="{base}/api/v1/DelSrc?token=victimlink">win a prize</a>
<script>
window.fetched = fetch("{base}/api/v1/DelSrc?token=victimfetch", {{credentials: "include", mode: "no-cors"}})
  .then(() => "sent", () => "failed");
</script>
</body></html>""".encode()


@pytest.fixture
def gw(tmp_path: Path) -> Iterator[Gateway]:
    gateway = Gateway(tmp_path / "gw", extra_args=["--no-demo"], env={"H5GATE_WEBRTC": "false"}).start()
    try:
        for token in VICTIMS:
            gateway.ok("AddSrcFile", token=token, name=token, url=str(ROOT / "media" / "demo.mp4"))
        yield gateway
    finally:
        gateway.stop()


@pytest.fixture
def evil(gw: Gateway) -> Iterator[str]:
    body = evil_page(gw.base)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://localhost:{server.server_address[1]}/prize.html"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    yield from launch()


def test_another_site_cannot_act_with_the_console_session(browser: Browser, gw: Gateway, evil: str) -> None:
    for page in new_page(browser):
        page.goto(gw.base + "/console/login")
        page.fill("input[name=user]", "admin")
        page.fill("input[name=password]", "12345")
        page.click("button[type=submit]")
        page.wait_for_url(gw.base + "/console/", timeout=20_000)
        cookies = {c["name"]: c for c in page.context.cookies(gw.base)}
        assert cookies["h5gate_session"]["sameSite"] == "Strict"

        page.goto(evil)
        page.wait_for_load_state("load")
        assert page.evaluate("() => window.fetched") in ("sent", "failed")
        with page.expect_navigation():
            page.evaluate("() => document.getElementById('f').submit()")
        assert '"bStatus":false' in page.content().replace(" ", "")
        page.goto(evil)
        with page.expect_navigation():
            page.click("#l")
        assert '"bStatus":false' in page.content().replace(" ", "")

        left = {s["strToken"] for s in gw.ok("GetSrc")["src"]}
        assert set(VICTIMS) <= left, f"deleted from another site: {set(VICTIMS) - left}"

        # the gateway's own console, same browser, same session: its calls carry the session and work
        page.goto(gw.base + "/console/")
        page.wait_for_function("() => typeof h5gateApi === 'function'")
        answer = page.evaluate("() => h5gateApi('DelSrc', {token: 'victimlink'})")
        assert answer["bStatus"] is True, answer
        left = {s["strToken"] for s in gw.ok("GetSrc")["src"]}
        assert "victimlink" not in left and "victimform" in left
