"""The node-to-node relay provider: a WebSocket client of another h5gate's /api/v1/h5swsapi.

A node that serves a camera it does not pull connects to the owner exactly as a browser viewer does
(same endpoint, same fMP4 messages), so the owner needs no second protocol and counts the relay as one
viewer. The session (or any other credential) travels as the caller passes it: a `session=` in the URL
built by `h5swsapi_url`, or headers (`Authorization: token <session>`); this module knows nothing of
how the cluster authenticates. Close codes of the upstream become UpstreamClosed with its reason, so
GetSrc's last error says why a relay is down ("source offline: ...", "unknown token").
"""

from __future__ import annotations

import ssl as ssl_module
from collections.abc import AsyncIterator, Mapping
from urllib.parse import urlencode, urlsplit

import websockets
from websockets.asyncio.client import connect

from workers.relay_source import Provider, UpstreamClosed

CLOSE_FORMAT_CHANGED = 4000  # h5swsapi: the stream's codec changed; reconnect for the new init at once


def h5swsapi_url(base: str, token: str, profile: str = "main", session: str = "") -> str:
    """ws(s)://host:port/api/v1/h5swsapi?token=..&profile=..[&session=..] for a node's http(s) base URL."""
    parts = urlsplit(base)
    scheme = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}.get(parts.scheme.lower())
    if scheme is None or not parts.netloc:
        raise ValueError(f"not an http(s) or ws(s) base URL: {base[:100]}")
    query = {"token": token, "profile": profile}
    if session:
        query["session"] = session
    return f"{scheme}://{parts.netloc}/api/v1/h5swsapi?{urlencode(query)}"


def ws_provider(
    url: str,
    *,
    headers: Mapping[str, str] | None = None,
    ssl: ssl_module.SSLContext | None = None,
    open_timeout: float = 10.0,
) -> Provider:
    """A provider for RelayInput: each call opens one connection to `url` and yields its binary messages.

    Text messages (none are sent by h5swsapi today) are skipped; the MIME string comes as a binary
    message and RelayInput skips it. No environment proxy is used: nodes talk to each other directly.
    """

    async def messages() -> AsyncIterator[bytes]:
        try:
            async with connect(
                url,
                additional_headers=dict(headers or {}),
                ssl=ssl if url.startswith("wss:") else None,
                open_timeout=open_timeout,
                close_timeout=2.0,  # leaving a dead upstream (a switch, a stop) must not wait 10 s
                max_size=None,
                max_queue=64,  # bounded: a slow local hub stops reading, and TCP slows the upstream's sender
                compression=None,  # fMP4 does not compress; deflate would only cost both nodes CPU
                proxy=None,
                user_agent_header="h5gate-relay",
            ) as ws:
                async for message in ws:
                    if isinstance(message, bytes):
                        yield message
                code, reason = ws.close_code, ws.close_reason
        except websockets.ConnectionClosed as e:
            code = e.rcvd.code if e.rcvd else 1006
            reason = e.rcvd.reason if e.rcvd else "connection lost"
        except websockets.InvalidStatus as e:
            raise UpstreamClosed(f"upstream refused the connection (HTTP {e.response.status_code})") from None
        except (websockets.InvalidHandshake, TimeoutError) as e:
            raise UpstreamClosed(f"upstream handshake failed: {str(e) or e.__class__.__name__}") from None
        text = f"upstream closed ({code}{': ' + reason if reason else ''})"
        raise UpstreamClosed(text, code or 0, retry_now=code == CLOSE_FORMAT_CHANGED)

    return messages
