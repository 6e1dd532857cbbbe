"""Recording playback over WebRTC: the WebSocket playback handler, run against a stand-in WebSocket.

workers/playback.py plays recordings to "a WebSocket": it reads the player's commands from it and writes
the MIME string, init segments, fragments and progress events to it. PlaybackPipe is that WebSocket
for a WebRTC viewer: commands come from the signalling socket, media goes to the viewer's own feed in
the sidecar, events go back to the signalling socket as text. So playback has one implementation of its
query, its index walk, pacing and commands, whatever carries the pictures.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

from workers.webrtc import wire

MediaSink = Callable[[int, bytes], Awaitable[None]]  # (wire.INIT | wire.FRAGMENT, data)
TextSink = Callable[[str], Awaitable[None]]


class PlaybackPipe:
    """Duck-types the parts of starlette's WebSocket that the playback handler uses."""

    def __init__(self, app: Any, query_params: Any) -> None:
        self.app = app
        self.query_params = query_params
        self.mime: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self.closed: asyncio.Future[tuple[int, str]] = asyncio.get_running_loop().create_future()
        self._commands: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self._media: MediaSink | None = None
        self._text: TextSink | None = None
        self._pending: list[tuple[int, bytes]] = []  # media made before the viewer's feed existed

    async def attach(self, media: MediaSink, text: TextSink) -> None:
        """The viewer's feed and signalling socket are there: deliver to them from now on."""
        self._media, self._text = media, text
        pending, self._pending = self._pending, []
        for kind, data in pending:
            await media(kind, data)

    def command(self, cmd: dict[str, Any]) -> None:
        """A playback command from the viewer (H5_START, H5_PAUSE, H5_SEEK, ...)."""
        self._commands.put_nowait(cmd)

    def end(self) -> None:
        """The viewer has gone: the handler sees a disconnect."""
        self._commands.put_nowait(None)

    # -- what the playback handler calls ---------------------------------------------------------------
    async def accept(self) -> None:
        return None

    async def close(self, code: int = 1000, reason: str = "") -> None:
        if not self.closed.done():
            self.closed.set_result((code, reason))

    async def receive(self) -> dict[str, Any]:
        cmd = await self._commands.get()
        if cmd is None:
            self._commands.put_nowait(None)
            return {"type": "websocket.disconnect", "code": 1000}
        return {"type": "websocket.receive", "text": json.dumps(cmd)}

    async def send_bytes(self, data: bytes) -> None:
        if not self.mime.done():  # the first binary message is the MIME string, as for a live viewer
            self.mime.set_result(data.decode("ascii", "replace"))
            return
        kind = wire.INIT if data[4:8] == b"ftyp" else wire.FRAGMENT
        if self._media is None:
            self._pending.append((kind, data))
        else:
            await self._media(kind, data)

    async def send_text(self, text: str) -> None:
        if self._text is not None:
            await self._text(text)
