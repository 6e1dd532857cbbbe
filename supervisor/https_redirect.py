"""The plain HTTP port sending browsers to HTTPS (setting `http_redirect`, or the consoles' bForceHTTPS).

With HTTPS on, a production box should not serve sessions and video in clear text, yet people type the
plain address and old bookmarks keep it. So the plain listener answers every request with a permanent
redirect to the same path on the HTTPS port, and refuses WebSocket upgrades (a socket cannot follow a
redirect, and sending its session in clear is what the redirect is for). `/healthz` still answers on the
plain port: health checkers on the box itself probe it there. The lifespan passes through, because the
plain server is the one that runs it.
"""

from __future__ import annotations

from starlette.datastructures import URL, Headers
from starlette.types import ASGIApp, Receive, Scope, Send

PASS_THROUGH = ("/healthz",)


class HttpsRedirect:
    """ASGI app for the plain listener: 308 to https://<host>:<https_port><path>?<query>."""

    def __init__(self, app: ASGIApp, https_port: int) -> None:
        self.app = app
        self.https_port = https_port

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan" or (scope["type"] == "http" and scope["path"] in PASS_THROUGH):
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008, "reason": "use wss:// on the HTTPS port"})
            return
        url = URL(scope=scope)
        host = (url.hostname or Headers(scope=scope).get("host", "localhost")).strip("[]")
        netloc = f"[{host}]" if ":" in host else host
        target = url.replace(scheme="https", netloc=f"{netloc}:{self.https_port}")
        body = b"moved to HTTPS\n"
        await send(
            {
                "type": "http.response.start",
                "status": 308,
                "headers": [
                    (b"location", str(target).encode()),
                    (b"content-type", b"text/plain"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
