"""Connection hygiene below the app: request-head deadlines, idle keep-alive, a cap per client address.

uvicorn holds a connection that sends half a request, or nothing, for ever, and every such socket is an
open file: a few hundred of them from one client stopped a server limited to 256 files from answering
anyone. These protocol classes (uvicorn's `http=` and `ws=`) close a connection whose request head (and
body) has not arrived within `request_timeout` seconds, let uvicorn close idle keep-alive connections
after `idle_timeout`, and refuse a client address more than `max_connections_per_client` open
connections at once (by default a quarter of the open-files limit, so one address can never take them
all). A WebSocket upgrade keeps its place in the count until the socket closes.

It is also where forwarded headers are decided: uvicorn believes X-Forwarded-For from 127.0.0.1 unless
told otherwise, which let any local client pick the address the login lockout counts; here only the
addresses in `trusted_proxies` (none by default) are believed.
"""

from __future__ import annotations

import asyncio
import logging
import resource
from collections import Counter
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from supervisor.config import Settings
from supervisor.ws_protocol import media_ws_protocol

log = logging.getLogger("h5gate.connections")


def per_client_cap(setting: int) -> int:
    """The per-address cap: the setting, or (0) a quarter of this process's open-files limit."""
    if setting > 0:
        return setting
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        soft = 65536
    return max(16, soft // 4)


class ClientCounter:
    """Open connections per client address, keyed by transport so an upgraded socket is counted once."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.by_host: Counter[str] = Counter()
        self._hosts: dict[int, str] = {}
        self.refused = 0

    def admit(self, transport: asyncio.BaseTransport) -> bool:
        peer = transport.get_extra_info("peername")
        host = str(peer[0]) if isinstance(peer, tuple) and peer else "?"
        if self.by_host[host] >= self.cap:
            self.refused += 1
            if self.refused == 1 or self.refused % 100 == 0:
                log.warning("client %s at its cap of %d connections: refused (%d so far)", host, self.cap, self.refused)
            return False
        self.by_host[host] += 1
        self._hosts[id(transport)] = host
        return True

    def release(self, transport: asyncio.BaseTransport) -> None:
        host = self._hosts.pop(id(transport), None)
        if host is not None:
            self.by_host[host] -= 1
            if self.by_host[host] <= 0:
                del self.by_host[host]


def protocol_classes(settings: Settings) -> tuple[type[HttpToolsProtocol], type[WebSocketsSansIOProtocol]]:
    """uvicorn's `http=` and `ws=` classes for these settings, sharing one ClientCounter."""
    counter = ClientCounter(per_client_cap(settings.max_connections_per_client))
    request_timeout = settings.request_timeout
    media_ws = media_ws_protocol(settings.ws_send_buffer)

    class GuardedHttpProtocol(HttpToolsProtocol):
        _deadline: asyncio.TimerHandle | None = None
        _counted = False

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            if not counter.admit(transport):
                transport.abort()  # no answer: a client over its cap gets its socket closed at once
                return
            self._counted = True
            self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            if self._counted:
                counter.release(self.transport)
            super().connection_lost(exc)

        def _arm(self) -> None:
            self._disarm()
            self._deadline = self.loop.call_later(request_timeout, self._too_slow)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _too_slow(self) -> None:
            self._deadline = None
            if not self.transport.is_closing():
                log.debug("closing a connection from %s: no complete request in %.0fs", self.client, request_timeout)
                self.transport.abort()

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._arm()  # the next request on a keep-alive connection: its head has the same deadline

        def on_headers_complete(self) -> None:
            has_body = self.parser.get_method() not in (b"GET", b"HEAD") and not self.parser.should_upgrade()
            if not has_body:
                self._disarm()
            super().on_headers_complete()

        def on_message_complete(self) -> None:
            self._disarm()
            super().on_message_complete()

        def handle_websocket_upgrade(self) -> None:
            self._disarm()
            super().handle_websocket_upgrade()

    class GuardedWebSocketProtocol(media_ws):  # type: ignore[misc, valid-type]
        def connection_lost(self, exc: Exception | None) -> None:
            counter.release(self.transport)
            super().connection_lost(exc)

    GuardedHttpProtocol.counter = counter  # type: ignore[attr-defined]
    return GuardedHttpProtocol, GuardedWebSocketProtocol


def trusted_proxies(settings: Settings) -> list[str]:
    return [a.strip() for a in settings.trusted_proxies.split(",") if a.strip()]


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """The connection-level keyword arguments for uvicorn.Config: protocols, timeouts, forwarded headers."""
    http, ws = protocol_classes(settings)
    proxies = trusted_proxies(settings)
    return {
        "http": http,
        "ws": ws,
        "timeout_keep_alive": settings.idle_timeout,
        "proxy_headers": bool(proxies),
        "forwarded_allow_ips": proxies or [],
    }
