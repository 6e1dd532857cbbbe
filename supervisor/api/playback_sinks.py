"""The two ways a playback leaves the server: the live player's WebSocket, and a WebRTC viewer.

workers/playback.py plays recordings to a `PlaybackSink`: it sends the MIME string, init segments,
fragments and progress events, and reads the player's commands. Over h5swsapi all of it is one
WebSocket (media as binary messages, events as JSON text). Over WebRTC the media goes to the viewer's
own feed in the sidecar, events and commands travel on the signalling socket. Both adapters live here,
in the HTTP/WebSocket layer, so the playback engine knows neither Starlette nor the sidecar.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Coroutine, Mapping

from starlette.websockets import WebSocket

from supervisor.auth import User
from workers.playback import Command, Event, PlaybackSink
from workers.webrtc import wire

# What serves one playback request (supervisor/api/records.py): the sink, the request's query, its user.
PlaybackServer = Callable[[PlaybackSink, Mapping[str, str], User], Coroutine[object, object, None]]
MediaOut = Callable[[int, bytes], Awaitable[None]]  # (wire.INIT | wire.FRAGMENT, data)
TextOut = Callable[[str], Awaitable[None]]


class WebSocketSink:
    """Playback over the live player's WebSocket: the socket must be accepted already."""

    def __init__(self, ws: WebSocket) -> None:
        self.ws = ws

    async def send_mime(self, mime: str) -> None:
        await self.ws.send_bytes(mime.encode("ascii"))  # the first binary message, as for a live viewer

    async def send_init(self, data: bytes) -> None:
        await self.ws.send_bytes(data)

    async def send_fragment(self, data: bytes) -> None:
        await self.ws.send_bytes(data)

    async def send_event(self, event: Event) -> None:
        await self.ws.send_text(json.dumps(event))

    async def receive_command(self) -> Command | None:
        """The next JSON object the player sends; keepalives and anything else are passed over."""
        while True:
            message = await self.ws.receive()
            if message["type"] == "websocket.disconnect":
                return None
            text = message.get("text")
            if not text or text.strip() == "keepalive":
                continue
            try:
                cmd = json.loads(text)
            except ValueError:
                continue
            if isinstance(cmd, dict):
                return cmd

    async def close(self, code: int, reason: str) -> None:
        await self.ws.close(code=code, reason=reason[:120])


class WebRTCSink:
    """Playback to a WebRTC viewer: media to its sidecar feed, events and commands on its signalling socket.

    The feed can only be made once the MIME string tells the codec, so media sent before `attach` waits
    in memory (the init and the first fragments).
    """

    def __init__(self) -> None:
        loop = asyncio.get_running_loop()
        self.mime: asyncio.Future[str] = loop.create_future()
        self.closed: asyncio.Future[tuple[int, str]] = loop.create_future()
        self._commands: asyncio.Queue[Command | None] = asyncio.Queue()
        self._media: MediaOut | None = None
        self._text: TextOut | None = None
        self._pending: list[tuple[int, bytes]] = []  # media made before the viewer's feed existed

    async def attach(self, media: MediaOut, text: TextOut) -> None:
        """The viewer's feed and signalling socket are there: deliver to them from now on."""
        self._media, self._text = media, text
        pending, self._pending = self._pending, []
        for kind, data in pending:
            await media(kind, data)

    def command(self, cmd: Command) -> None:
        """A playback command from the viewer (H5_START, H5_PAUSE, H5_SEEK, ...)."""
        self._commands.put_nowait(cmd)

    def end(self) -> None:
        """The viewer has gone: playback sees no more commands."""
        self._commands.put_nowait(None)

    # -- the sink -----------------------------------------------------------------------------------------
    async def send_mime(self, mime: str) -> None:
        if not self.mime.done():
            self.mime.set_result(mime)

    async def send_init(self, data: bytes) -> None:
        await self._deliver(wire.INIT, data)

    async def send_fragment(self, data: bytes) -> None:
        await self._deliver(wire.FRAGMENT, data)

    async def send_event(self, event: Event) -> None:
        if self._text is not None:
            await self._text(json.dumps(event))

    async def receive_command(self) -> Command | None:
        cmd = await self._commands.get()
        if cmd is None:
            self._commands.put_nowait(None)  # every later call sees the end too
        return cmd

    async def close(self, code: int, reason: str) -> None:
        if not self.closed.done():
            self.closed.set_result((code, reason))

    async def _deliver(self, kind: int, data: bytes) -> None:
        if self._media is None:
            self._pending.append((kind, data))
        else:
            await self._media(kind, data)
