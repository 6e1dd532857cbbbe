"""HTTPS served by h5gate itself, and the plain-HTTP port beside it that can redirect there.

With `https_port` set (or `tls_cert` and `tls_key`, which default it to 8443), uvicorn serves the app over
TLS on that port with that certificate and key (every WebSocket
route is then wss://, as the console's player picks the scheme from the page). The plain `port` stays
open: with `http_redirect` (the default) it answers every request with a 308 to the same path on HTTPS,
and refuses WebSockets (a player must not carry its session in the clear); without it, it serves the
app too, for clients on a trusted network that cannot do TLS. Both listeners share uvicorn's server
state (so a shutdown closes both) and the same connection protocols (deadlines, the per-client cap).
"""

from __future__ import annotations

import asyncio
import functools
import ssl
from pathlib import Path
from typing import Any

import uvicorn

from supervisor.config import Settings

ASGIReceive = Any
ASGISend = Any


DEFAULT_HTTPS_PORT = 8443  # when tls_cert and tls_key are given without https_port


def https_port(settings: Settings) -> int:
    """The HTTPS port, or 0 when HTTPS is off."""
    if settings.https_port:
        return settings.https_port
    return DEFAULT_HTTPS_PORT if settings.tls_cert and settings.tls_key else 0


def tls_files(settings: Settings) -> tuple[Path, Path]:
    """The certificate and key: as set, or the data directory's certificate/server.crt and .key."""
    folder = settings.data_dir / "certificate"
    cert = Path(settings.tls_cert).expanduser() if settings.tls_cert else folder / "server.crt"
    key = Path(settings.tls_key).expanduser() if settings.tls_key else folder / "server.key"
    return cert, key


def tls_enabled(settings: Settings) -> bool:
    return https_port(settings) > 0


def check_tls(settings: Settings) -> str | None:
    """Why the certificate and key cannot be used, or None: said before anything starts."""
    cert, key = tls_files(settings)
    try:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as e:
        return f"HTTPS on port {https_port(settings)} needs a certificate and key: {cert} / {key}: {e}"
    return None


def redirect_app(port_https: int) -> Any:
    """An ASGI app that sends every request to the same host and path on HTTPS (308 keeps the method)."""

    async def app(scope: dict[str, Any], receive: ASGIReceive, send: ASGISend) -> None:
        if scope["type"] == "lifespan":
            return
        if scope["type"] == "websocket":  # no session in the clear: a ws:// player is told to use wss://
            await send({"type": "websocket.close", "code": 1008, "reason": "use wss:// (HTTPS)"})
            return
        headers = dict(scope.get("headers") or [])
        host = headers.get(b"host", b"").decode("latin-1") or str(scope["server"][0])
        if host.startswith("["):
            name = host[: host.index("]") + 1] if "]" in host else host
        else:
            name = host.rsplit(":", 1)[0]
        path = scope.get("raw_path") or scope["path"].encode()
        query = scope.get("query_string") or b""
        port = "" if port_https == 443 else f":{port_https}"
        location = f"https://{name}{port}".encode() + path + (b"?" + query if query else b"")
        await send(
            {
                "type": "http.response.start",
                "status": 308,
                "headers": [(b"location", location), (b"content-length", b"0"), (b"cache-control", b"no-store")],
            }
        )
        await send({"type": "http.response.body", "body": b""})

    return app


async def add_plain_listener(server: uvicorn.Server, sock: Any, settings: Settings) -> asyncio.Server:
    """Serve the plain-HTTP socket beside uvicorn's TLS one: redirecting, or the app itself."""
    config = server.config
    if settings.http_redirect:
        config = uvicorn.Config(
            redirect_app(https_port(settings)),
            lifespan="off",
            http=server.config.http,
            ws=server.config.ws,
            timeout_keep_alive=server.config.timeout_keep_alive,
            log_level=server.config.log_level,
            access_log=False,
            proxy_headers=False,
        )
        config.load()
    factory = functools.partial(
        config.http_protocol_class,  # type: ignore[call-arg]
        config=config,
        server_state=server.server_state,
        app_state=server.lifespan.state,
    )
    listener = await asyncio.get_running_loop().create_server(factory, sock=sock, backlog=config.backlog)
    server.servers.append(listener)
    return listener
