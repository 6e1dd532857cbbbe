"""The edge's own app, called in-process: what the centre forwards runs exactly as a local request would.

A forwarded call or channel goes through the edge's whole ASGI stack (middleware, parameter checks,
roles, error answers), so the edge validates the centre's requests as it validates anyone's and no
API logic is repeated here. No socket is opened: the edge may listen only on an address the link
process cannot assume, or only on HTTPS. The request carries the edge's own session (`Authorization:
token`), made for one of its Administrators when the link comes up.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

from supervisor.cloud.link import Channel, ChannelClosed
from supervisor.cloud.protocol import Reply, control

log = logging.getLogger("h5gate.cloud")

ASGIApp = Callable[..., Any]
CLIENT = ("127.0.0.1", 0)  # how the edge's logs show a request that came over the link


def _scope(kind: str, path: str, query: list[tuple[str, str]], session: str) -> dict[str, Any]:
    return {
        "type": kind,
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "ws" if kind == "websocket" else "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": urlencode(query).encode(),
        "headers": [(b"host", b"127.0.0.1"), (b"authorization", f"token {session}".encode())],
        "client": CLIENT,
        "server": ("127.0.0.1", 0),
        "subprotocols": [],
        "state": {},
    }


async def http_get(app: ASGIApp, path: str, query: list[tuple[str, str]], session: str) -> Reply:
    """GET `path` on the app; the status, content type and whole body it answered."""
    received = False
    status = 500
    content_type = ""
    body: list[bytes] = []

    async def receive() -> dict[str, Any]:
        nonlocal received
        if not received:
            received = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await asyncio.Event().wait()  # a handler waiting for the client to leave: it never does
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status, content_type
        if message["type"] == "http.response.start":
            status = int(message["status"])
            for name, value in message.get("headers", []):
                if name.lower() == b"content-type":
                    content_type = value.decode("latin-1")
        elif message["type"] == "http.response.body":
            body.append(message.get("body", b""))

    await app(_scope("http", path, query, session), receive, send)
    return Reply(status, content_type, b"".join(body))


async def http_stream(app: ASGIApp, channel: Channel, path: str, query: list[tuple[str, str]], session: str) -> None:
    """GET `path` into a channel: a text message {status, type} first, then the body in chunks, then close.

    For files (a recording downloaded by its strPath): streamed as the app sends them, never whole in memory.
    """
    started = requested = False
    await channel.link.send(control("opened", ch=channel.ident))

    async def receive() -> dict[str, Any]:
        """The request once; then (a response listening for the client leaving) the centre's end closing."""
        nonlocal requested
        if not requested:
            requested = True
            return {"type": "http.request", "body": b"", "more_body": False}
        while not isinstance(await channel.receive(), ChannelClosed):
            pass
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        nonlocal started
        if channel.closed is not None:
            raise OSError("the centre's end of the channel closed")
        if message["type"] == "http.response.start":
            started = True
            headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in message.get("headers", [])}
            head = {"status": int(message["status"]), "type": headers.get("content-type", "")}
            await channel.send(json.dumps({**head, "length": headers.get("content-length", "")}))
        elif message["type"] == "http.response.body" and message.get("body"):
            await channel.send(bytes(message["body"]))

    try:
        await app(_scope("http", path, query, session), receive, send)
    except OSError:
        return
    except Exception:
        log.exception("%s: streamed %s failed", channel.link.name, path)
    await channel.close(1000 if started else 1011, "")


async def websocket(app: ASGIApp, channel: Channel, path: str, query: list[tuple[str, str]], session: str) -> None:
    """Serve a channel from the app's WebSocket at `path`: messages both ways, closes both ways."""
    incoming: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    incoming.put_nowait({"type": "websocket.connect"})
    accepted = False
    closed = False

    async def pump_in() -> None:
        """Messages from the centre's end into the app, until that end closes."""
        while True:
            message = await channel.receive()
            if isinstance(message, ChannelClosed):
                incoming.put_nowait({"type": "websocket.disconnect", "code": message.code})
                return
            key = "text" if isinstance(message, str) else "bytes"
            incoming.put_nowait({"type": "websocket.receive", key: message})

    async def receive() -> dict[str, Any]:
        return await incoming.get()

    async def send(message: dict[str, Any]) -> None:
        nonlocal accepted, closed
        kind = message["type"]
        if kind == "websocket.accept":
            accepted = True
            await channel.link.send(control("opened", ch=channel.ident))
        elif kind == "websocket.send":
            if channel.closed is not None:
                raise OSError("the centre's end of the channel closed")  # the app treats it as a gone client
            text = message.get("text")
            await channel.send(text if text is not None else message.get("bytes") or b"")
        elif kind == "websocket.close":
            closed = True
            await channel.close(int(message.get("code", 1000)), str(message.get("reason") or ""))
        elif kind == "websocket.http.response.start":  # refused before accepting
            closed = True
            await channel.close(4403, f"refused by the edge ({message.get('status')})")

    reader = asyncio.create_task(pump_in())
    try:
        await app(_scope("websocket", path, query, session), receive, send)
    except Exception:
        log.exception("%s: tunnelled socket %s failed", channel.link.name, path)
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
        if not closed:
            await channel.close(1000 if accepted else 1011, "")
