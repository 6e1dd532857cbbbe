"""An RTMP server for publishers: encoders (OBS, ffmpeg -f flv) push a live stream into h5gate.

It speaks the simple handshake (C0/C1/C2 answered by S0/S1/S2 with S2 echoing C1, which ffmpeg, OBS
and librtmp accept for publishing), chunk streams (workers/rtmp/chunks.py) and the AMF0 commands of a
publish: connect, releaseStream, FCPublish, createStream, publish, and at the end FCUnpublish and
deleteStream. Who may publish where is not decided here: `authorize` (the supervisor's) gets the
application, stream name, its query and the peer, and returns the Publisher the media goes to, or raises
Refused. Playing is not offered: viewers use h5gate's other outputs (WebSocket, HLS, HTTP-FLV, WebRTC).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import parse_qsl

from workers.rtmp import amf0
from workers.rtmp.chunks import (
    ACK,
    AUDIO,
    COMMAND_AMF0,
    COMMAND_AMF3,
    DATA_AMF0,
    DATA_AMF3,
    SET_CHUNK_SIZE,
    SET_PEER_BANDWIDTH,
    USER_CONTROL,
    VIDEO,
    WINDOW_ACK_SIZE,
    ChunkError,
    ChunkReader,
    Message,
    control,
    encode_message,
)

log = logging.getLogger("h5gate.rtmp")

HANDSHAKE_SIZE = 1536
OUT_CHUNK_SIZE = 4096
WINDOW = 2_500_000
STREAM_ID = 1  # the one message stream createStream hands out
MAX_CONNECTIONS = 64


class Refused(Exception):
    """A publish the server will not take; `code` is the NetStream status the encoder is sent."""

    def __init__(self, reason: str, code: str = "NetStream.Publish.BadName") -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code


@dataclass
class PublishRequest:
    app: str  # the application, without any query ("live")
    stream: str  # the stream name without its query (the source token)
    query: dict[str, str] = field(default_factory=dict)  # the stream name's query, then the tcUrl's/app's
    tc_url: str = ""
    peer: str = ""


class Publisher(Protocol):
    """Where one publish's media goes; the server calls these in the order the encoder sent them."""

    def on_metadata(self, meta: dict[str, Any]) -> None: ...
    def on_video(self, timestamp: int, body: bytes) -> None: ...
    def on_audio(self, timestamp: int, body: bytes) -> None: ...
    def on_bytes(self, count: int) -> None: ...
    def end(self, why: str) -> None: ...


# authorize(request, kick) -> Publisher, or raises Refused; `kick()` ends the connection (source deleted)
Authorize = Callable[[PublishRequest, Callable[[], None]], Publisher]


def split_query(text: str) -> tuple[str, dict[str, str]]:
    """'name?a=1&b=2' -> ('name', {'a': '1', 'b': '2'})."""
    name, _, query = text.partition("?")
    return name, dict(parse_qsl(query, keep_blank_values=True))


class _Closed(Exception):
    """The connection is over; `why` says how, for the publisher's last error."""

    def __init__(self, why: str) -> None:
        super().__init__(why)
        self.why = why


class _Connection:
    def __init__(
        self,
        server: RtmpServer,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        self.server = server
        self.reader = reader
        self.writer = writer
        peer = writer.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else "?"
        self.chunks = ChunkReader(reader)
        self.app = ""
        self.app_query: dict[str, str] = {}
        self.tc_url = ""
        self.publisher: Publisher | None = None
        self.what = ""  # the token being published, for log lines
        self.peer_window = 0
        self.acked = 0
        self.kicked = ""

    # -- writing -------------------------------------------------------------------------------------------
    def send(self, msg: Message, csid: int = 3) -> None:
        self.writer.write(encode_message(msg, OUT_CHUNK_SIZE, csid))

    def command(self, name: str, txn: float, *args: Any, stream_id: int = 0) -> None:
        body = amf0.encode(name, txn, *args)
        self.send(Message(COMMAND_AMF0, stream_id, 0, body), csid=3 if stream_id == 0 else 5)

    def status(self, level: str, code: str, description: str) -> None:
        info = {"level": level, "code": code, "description": description}
        self.command("onStatus", 0, None, info, stream_id=STREAM_ID)

    def kick(self, why: str = "source stopped") -> None:
        """End this connection from outside (the source was deleted or stopped)."""
        self.kicked = why
        self.writer.close()

    # -- the connection's life ------------------------------------------------------------------------------
    async def run(self) -> None:
        why = "encoder closed the connection"
        try:
            await asyncio.wait_for(self._handshake(), self.server.handshake_timeout)
            while True:
                timeout = self.server.stall_timeout if self.publisher else self.server.handshake_timeout * 2
                try:
                    msg = await asyncio.wait_for(self.chunks.read_message(), timeout)
                except TimeoutError:
                    if self.publisher is None:
                        raise _Closed("no publish within the time allowed") from None
                    raise _Closed(f"no data from encoder for {timeout:.0f}s (stalled)") from None
                await self._message(msg)
                self._ack()
                await self.writer.drain()
        except _Closed as e:
            why = e.why
        except TimeoutError:
            why = "handshake timed out"
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            why = self.kicked or "encoder closed the connection"
        except (ChunkError, amf0.AmfError, ValueError) as e:
            why = f"protocol error: {e}"
        finally:
            if self.publisher is not None:
                publisher, self.publisher = self.publisher, None
                publisher.end(self.kicked or why)
                log.info("%s: RTMP publisher %s ended: %s", self.what, self.peer, self.kicked or why)
            elif why.startswith(("protocol", "handshake", "no publish")):
                log.info("RTMP connection from %s ended: %s", self.peer, why)
            self.writer.close()
            with contextlib.suppress(Exception):
                await self.writer.wait_closed()

    async def _handshake(self) -> None:
        c0c1 = await self.reader.readexactly(1 + HANDSHAKE_SIZE)
        if c0c1[0] != 3:
            raise _Closed(f"protocol error: RTMP version {c0c1[0]} (not 3: RTMPE/RTMPT are not served)")
        s1 = struct.pack(">II", int(time.monotonic() * 1000) & 0xFFFFFFFF, 0) + os.urandom(HANDSHAKE_SIZE - 8)
        self.writer.write(b"\x03" + s1 + c0c1[1:])
        await self.writer.drain()
        await self.reader.readexactly(HANDSHAKE_SIZE)  # C2: the echo of S1, nothing to learn from it

    def _ack(self) -> None:
        """Acknowledge received bytes when the encoder asked for it (Window Acknowledgement Size)."""
        if self.peer_window and self.chunks.bytes_read - self.acked >= self.peer_window:
            self.acked = self.chunks.bytes_read
            self.send(control(ACK, self.acked & 0xFFFFFFFF), csid=2)

    async def _message(self, msg: Message) -> None:
        t = msg.type_id
        if t == VIDEO or t == AUDIO:
            if self.publisher is not None:
                self.publisher.on_bytes(len(msg.payload))
                if t == VIDEO:
                    self.publisher.on_video(msg.timestamp, msg.payload)
                else:
                    self.publisher.on_audio(msg.timestamp, msg.payload)
        elif t in (COMMAND_AMF0, COMMAND_AMF3):
            payload = msg.payload[1:] if t == COMMAND_AMF3 and msg.payload[:1] == b"\x00" else msg.payload
            await self._command(amf0.decode(payload))
        elif t in (DATA_AMF0, DATA_AMF3):
            payload = msg.payload[1:] if t == DATA_AMF3 and msg.payload[:1] == b"\x00" else msg.payload
            self._data(amf0.decode(payload))
        elif t == WINDOW_ACK_SIZE and len(msg.payload) >= 4:
            self.peer_window = struct.unpack(">I", msg.payload[:4])[0]

    def _data(self, values: list[Any]) -> None:
        if values and values[0] == "@setDataFrame":
            values = values[1:]
        if len(values) >= 2 and values[0] == "onMetaData" and isinstance(values[1], dict):
            if self.publisher is not None:
                self.publisher.on_metadata(values[1])

    async def _command(self, values: list[Any]) -> None:
        if not values or not isinstance(values[0], str):
            return
        name = values[0]
        txn = values[1] if len(values) > 1 and isinstance(values[1], float) else 0.0
        args = values[3:]
        if name == "connect":
            props = values[2] if len(values) > 2 and isinstance(values[2], dict) else {}
            self.app, self.app_query = split_query(str(props.get("app", "")).strip("/"))
            self.tc_url = str(props.get("tcUrl", ""))
            _, tc_query = split_query(self.tc_url)
            self.app_query = {**tc_query, **self.app_query}
            self.send(control(WINDOW_ACK_SIZE, WINDOW), csid=2)
            self.send(control(SET_PEER_BANDWIDTH, WINDOW, b"\x02"), csid=2)
            self.send(control(SET_CHUNK_SIZE, OUT_CHUNK_SIZE), csid=2)
            self.command(
                "_result",
                txn,
                {"fmsVer": "FMS/3,0,1,123", "capabilities": 31},
                {
                    "level": "status",
                    "code": "NetConnection.Connect.Success",
                    "description": "Connection succeeded.",
                    "objectEncoding": 0,
                },
            )
        elif name == "createStream":
            self.command("_result", txn, None, STREAM_ID)
        elif name == "publish":
            self._publish(str(args[0]) if args else "")
        elif name in ("play", "play2"):
            self.status("error", "NetStream.Play.Failed", "this server takes publishers only")
            await self.writer.drain()
            raise _Closed("refused: playing is not offered")
        elif name in ("deleteStream", "closeStream"):
            if self.publisher is not None:
                raise _Closed("encoder stopped publishing")
        elif txn:  # releaseStream, FCPublish, FCUnpublish ...: a plain answer keeps every client going
            self.command("_result", txn, None)

    def _publish(self, raw: str) -> None:
        if self.publisher is not None:
            raise _Closed("protocol error: a second publish on one connection")
        stream, query = split_query(raw)
        request = PublishRequest(self.app, stream, {**self.app_query, **query}, self.tc_url, self.peer)
        self.what = stream[:64] or "?"
        try:
            self.publisher = self.server.authorize(request, self.kick)
        except Refused as e:
            log.warning("%s: RTMP publish from %s refused: %s", self.what, self.peer, e.reason)
            self.status("error", e.code, e.reason)
            raise _Closed(f"refused: {e.reason}") from None
        # Stream Begin, then the status the encoder waits for before it sends media
        self.send(Message(USER_CONTROL, 0, 0, struct.pack(">HI", 0, STREAM_ID)), csid=2)
        self.status("status", "NetStream.Publish.Start", f"{stream} is now published")
        log.info("%s: RTMP publisher %s started (app %s)", self.what, self.peer, self.app)


class RtmpServer:
    """Accepts RTMP connections on one port; each publish goes where `authorize` says."""

    def __init__(self, authorize: Authorize, *, stall_timeout: float = 10.0, handshake_timeout: float = 5.0) -> None:
        self.authorize = authorize
        self.stall_timeout = stall_timeout
        self.handshake_timeout = handshake_timeout
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._connections: set[_Connection] = set()

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self, host: str, port: int) -> None:
        self._server = await asyncio.start_server(self._accept, host or None, port, reuse_address=True)
        log.info("RTMP publish listening on %s:%d", host, self.port)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self._connections) >= MAX_CONNECTIONS:
            log.warning("RTMP connection refused: %d connections already", len(self._connections))
            writer.close()
            return
        conn = _Connection(self, reader, writer)
        self._connections.add(conn)
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            await conn.run()
        finally:
            self._connections.discard(conn)
            if task is not None:
                self._tasks.discard(task)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for conn in list(self._connections):
                conn.kick("server stopping")
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await self._server.wait_closed()
            self._server = None
