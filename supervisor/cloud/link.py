"""One edge link, as either end sees it: forwarded calls and tunnelled channels over one WebSocket.

Both ends read their socket in one loop and hand every message to `Link.dispatch`; what to send goes
through `Link.send`, which one lock serialises (the WebSocket libraries on either side must not have two
sends interleave). The centre makes calls and opens channels; the edge answers them (its handlers are
set by edge.py). When the socket ends, `Link.close` fails the calls in flight and ends every channel
with the offline close code, so a waiting caller or viewer learns at once rather than at a timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from supervisor.cloud import protocol
from supervisor.cloud.protocol import DATA, REPLY, TEXT, ProtocolError, Reply

log = logging.getLogger("h5gate.cloud")

CLOSE_OFFLINE = 1013  # what a viewer gets when the link goes: the same "try again later" as an offline source
Send = Callable[[str | bytes], Awaitable[None]]


class LinkDown(Exception):
    """The link ended (or was never up) while a call or channel needed it."""


@dataclass
class ChannelClosed:
    code: int
    reason: str


@dataclass(eq=False)
class Channel:
    """A tunnelled WebSocket: messages from the far end come out of `receive`, `send` goes to it."""

    link: Link
    ident: int
    inbox: asyncio.Queue[str | bytes | ChannelClosed] = field(default_factory=asyncio.Queue)
    closed: ChannelClosed | None = None
    opened: asyncio.Future[None] = field(default_factory=lambda: asyncio.get_running_loop().create_future())

    async def receive(self) -> str | bytes | ChannelClosed:
        return await self.inbox.get()

    async def send(self, message: str | bytes) -> None:
        if self.closed is not None:
            raise LinkDown(self.closed.reason)
        kind = TEXT if isinstance(message, str) else DATA
        data = message.encode() if isinstance(message, str) else message
        await self.link.send(protocol.frame(kind, self.ident, data))

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Close from this end: the far end is told, and nothing more is delivered here."""
        if self.closed is not None:
            return
        self._ended(code, reason)
        with contextlib.suppress(LinkDown):
            await self.link.send(protocol.control("close", ch=self.ident, code=code, reason=reason[:120]))

    def _ended(self, code: int, reason: str) -> None:
        if self.closed is None:
            self.closed = ChannelClosed(code, reason)
            self.inbox.put_nowait(self.closed)
            self.link.channels.pop(self.ident, None)
            if not self.opened.done():
                self.opened.set_exception(LinkDown(reason or f"closed with {code}"))


CallHandler = Callable[[str, list[tuple[str, str]]], Awaitable[Reply]]
OpenHandler = Callable[[Channel, str, list[tuple[str, str]]], Awaitable[None]]
ControlHandler = Callable[[dict[str, Any]], Awaitable[None]]


class Link:
    def __init__(self, name: str, send: Send) -> None:
        self.name = name  # the edge's servertoken, for log lines
        self._send = send
        self._lock = asyncio.Lock()
        self._ids = itertools.count(1)
        self.calls: dict[int, asyncio.Future[Reply]] = {}
        self.channels: dict[int, Channel] = {}
        self.down: str | None = None  # why the link ended; None while it is up
        self.on_call: CallHandler | None = None  # the edge serves calls
        self.on_open: OpenHandler | None = None  # the edge serves channels
        self.on_control: ControlHandler | None = None  # anything else (ping, sources ...)
        self._tasks: set[asyncio.Task[Any]] = set()

    async def send(self, message: str | bytes) -> None:
        if self.down is not None:
            raise LinkDown(self.down)
        try:
            async with self._lock:
                await self._send(message)
        except LinkDown:
            raise
        except Exception as e:  # the socket library's own errors: the link is gone
            raise LinkDown(f"send failed: {e}") from None

    # -- the centre's side ---------------------------------------------------------------------------
    async def call(self, path: str, query: list[tuple[str, str]], timeout: float = 30.0) -> Reply:
        """Have the edge carry out an API call; its answer, or LinkDown/TimeoutError."""
        ident = next(self._ids)
        future: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        self.calls[ident] = future
        try:
            await self.send(protocol.control("call", id=ident, path=path, query=[list(p) for p in query]))
            async with asyncio.timeout(timeout):
                return await future
        finally:
            self.calls.pop(ident, None)

    async def open(self, path: str, query: list[tuple[str, str]], timeout: float = 15.0) -> Channel:
        """A channel to the edge's WebSocket at `path`, once the edge's app accepted it."""
        channel = Channel(self, next(self._ids))
        self.channels[channel.ident] = channel
        try:
            await self.send(protocol.control("open", ch=channel.ident, path=path, query=[list(p) for p in query]))
            async with asyncio.timeout(timeout):
                await asyncio.shield(channel.opened)
        except BaseException:
            await channel.close(1000, "gave up waiting")
            raise
        return channel

    # -- both sides ----------------------------------------------------------------------------------
    async def dispatch(self, message: str | bytes) -> None:
        """One message read from the socket; ProtocolError when it breaks the format."""
        if isinstance(message, bytes):
            kind, ident, payload = protocol.parse_frame(message)
            if kind == REPLY:
                future = self.calls.get(ident)
                if future is not None and not future.done():
                    future.set_result(protocol.parse_reply(payload))
                return
            channel = self.channels.get(ident)
            if channel is not None and channel.closed is None:
                channel.inbox.put_nowait(payload if kind == DATA else payload.decode("utf-8", "replace"))
            return
        msg = protocol.parse_control(message)
        kind_name = msg["t"]
        if kind_name == "opened":
            channel = self.channels.get(_int(msg, "ch"))
            if channel is not None and not channel.opened.done():
                channel.opened.set_result(None)
        elif kind_name == "close":
            channel = self.channels.get(_int(msg, "ch"))
            if channel is not None:
                channel._ended(_int(msg, "code"), str(msg.get("reason", ""))[:120])
        elif kind_name == "call" and self.on_call is not None:
            self._spawn(self._answer(_int(msg, "id"), str(msg.get("path", "")), protocol.query_pairs(msg.get("query"))))
        elif kind_name == "open" and self.on_open is not None:
            channel = Channel(self, _int(msg, "ch"))
            self.channels[channel.ident] = channel
            handler = self.on_open(channel, str(msg.get("path", "")), protocol.query_pairs(msg.get("query")))
            self._spawn(handler)
        elif self.on_control is not None:
            await self.on_control(msg)

    async def _answer(self, ident: int, path: str, query: list[tuple[str, str]]) -> None:
        assert self.on_call is not None
        try:
            reply = await self.on_call(path, query)
        except Exception as e:
            log.exception("%s: forwarded call %s failed", self.name, path)
            body = json.dumps({"bStatus": False, "strCode": f"the edge failed: {e}"}).encode()
            reply = Reply(500, "application/json", body)
        with contextlib.suppress(LinkDown):
            await self.send(protocol.reply_frame(ident, reply))

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def close(self, reason: str) -> None:
        """The socket ended: fail what waits on it, end every channel as offline."""
        if self.down is not None:
            return
        self.down = reason
        for future in self.calls.values():
            if not future.done():
                future.set_exception(LinkDown(reason))
        for channel in list(self.channels.values()):
            channel._ended(CLOSE_OFFLINE, f"source offline: {reason}")
        for task in list(self._tasks):
            task.cancel()


def _int(message: dict[str, Any], name: str) -> int:
    value = message.get(name)
    if not isinstance(value, int) or isinstance(value, bool):
        raise ProtocolError(f"{message.get('t')} message without a numeric {name}")
    return value
