"""RTMP chunk streams: messages cut into chunks with compressed headers, read and written.

A message (type, stream id, timestamp, payload) travels as chunks of at most the sender's chunk size,
each with a basic header (format 0-3 and a chunk stream id) and a message header that is shorter the
more it repeats the previous message on the same chunk stream. Timestamps of 0xFFFFFF and more go into a
4-byte extended field, which chunks of format 3 repeat when the header they continue had one.
"""

from __future__ import annotations

import asyncio
import struct
from dataclasses import dataclass

# Message types (RTMP spec 5.4 and 7.1)
SET_CHUNK_SIZE, ABORT, ACK, USER_CONTROL, WINDOW_ACK_SIZE, SET_PEER_BANDWIDTH = 1, 2, 3, 4, 5, 6
AUDIO, VIDEO = 8, 9
DATA_AMF3, COMMAND_AMF3, DATA_AMF0, COMMAND_AMF0 = 15, 17, 18, 20
MAX_CHUNK_SIZE = 0x7FFFFFFF
MAX_MESSAGE = 16 * 1024 * 1024  # the 24-bit length field's limit
EXTENDED = 0xFFFFFF


class ChunkError(ValueError):
    """The peer broke the chunk format (a continuation with no message before it, a zero chunk size)."""


@dataclass
class Message:
    type_id: int
    stream_id: int
    timestamp: int  # milliseconds, 32 bits
    payload: bytes


@dataclass
class _Incoming:
    """What a chunk stream id remembers between chunks: the last header and a message in progress."""

    timestamp: int = 0
    delta: int = 0
    length: int = 0
    type_id: int = 0
    stream_id: int = 0
    extended: bool = False
    started: bool = False
    buffer: bytearray | None = None


class ChunkReader:
    """Reads whole messages from a peer's chunk streams."""

    def __init__(self, reader: asyncio.StreamReader) -> None:
        self.reader = reader
        self.chunk_size = 128
        self.bytes_read = 0
        self._streams: dict[int, _Incoming] = {}

    async def _read(self, n: int) -> bytes:
        data = await self.reader.readexactly(n)
        self.bytes_read += n
        return data

    async def read_message(self) -> Message:
        """The next complete message; Set Chunk Size and Abort are applied here and also returned."""
        while True:
            msg = await self._read_chunk()
            if msg is None:
                continue
            if msg.type_id == SET_CHUNK_SIZE and len(msg.payload) >= 4:
                size = struct.unpack(">I", msg.payload[:4])[0] & MAX_CHUNK_SIZE
                if size < 1:
                    raise ChunkError("chunk size 0")
                self.chunk_size = size
            elif msg.type_id == ABORT and len(msg.payload) >= 4:
                aborted = self._streams.get(struct.unpack(">I", msg.payload[:4])[0])
                if aborted is not None:
                    aborted.buffer = None
            return msg

    async def _read_chunk(self) -> Message | None:
        first = (await self._read(1))[0]
        fmt, csid = first >> 6, first & 0x3F
        if csid == 0:
            csid = 64 + (await self._read(1))[0]
        elif csid == 1:
            b = await self._read(2)
            csid = 64 + b[0] + 256 * b[1]
        st = self._streams.get(csid)
        if st is None:
            if fmt != 0:
                raise ChunkError(f"chunk stream {csid} starts without a full header")
            st = self._streams[csid] = _Incoming()
        if fmt == 0:
            head = await self._read(11)
            ts = int.from_bytes(head[0:3], "big")
            st.length = int.from_bytes(head[3:6], "big")
            st.type_id = head[6]
            st.stream_id = struct.unpack("<I", head[7:11])[0]
        elif fmt == 1:
            head = await self._read(7)
            ts = int.from_bytes(head[0:3], "big")
            st.length = int.from_bytes(head[3:6], "big")
            st.type_id = head[6]
        elif fmt == 2:
            ts = int.from_bytes(await self._read(3), "big")
        else:
            ts = -1
        if fmt < 3:
            st.extended = ts >= EXTENDED
        if st.extended:
            ext = struct.unpack(">I", await self._read(4))[0]
            if fmt < 3:
                ts = ext
        new_message = st.buffer is None
        if new_message:
            if fmt == 0:
                st.timestamp = st.delta = ts  # a following format-3 message repeats this as its delta
            elif fmt in (1, 2):
                st.delta = ts
                st.timestamp = (st.timestamp + ts) & 0xFFFFFFFF
            elif st.started:
                st.timestamp = (st.timestamp + st.delta) & 0xFFFFFFFF
            st.started = True
            st.buffer = bytearray()
        assert st.buffer is not None
        if st.length > MAX_MESSAGE:
            raise ChunkError("message too long")
        take = min(self.chunk_size, st.length - len(st.buffer))
        if take > 0:
            st.buffer += await self._read(take)
        if len(st.buffer) < st.length:
            return None
        payload, st.buffer = bytes(st.buffer), None
        return Message(st.type_id, st.stream_id, st.timestamp, payload)


def encode_message(msg: Message, chunk_size: int, csid: int = 3) -> bytes:
    """A message as chunks: a format-0 header, then format-3 continuations."""
    ts = msg.timestamp & 0xFFFFFFFF
    extended = ts >= EXTENDED
    basic = bytes([csid & 0x3F]) if csid < 64 else bytes([0, csid - 64])
    header = (
        basic
        + min(ts, EXTENDED).to_bytes(3, "big")
        + len(msg.payload).to_bytes(3, "big")
        + bytes([msg.type_id])
        + struct.pack("<I", msg.stream_id)
    )
    ext = struct.pack(">I", ts) if extended else b""
    cont = bytes([0xC0 | (csid & 0x3F)]) if csid < 64 else bytes([0xC0, csid - 64])
    parts = [header, ext]
    for pos in range(0, max(1, len(msg.payload)), chunk_size):
        if pos:
            parts += [cont, ext]
        parts.append(msg.payload[pos : pos + chunk_size])
    return b"".join(parts)


def control(type_id: int, value: int, extra: bytes = b"") -> Message:
    """A protocol control message (chunk stream 2, message stream 0)."""
    return Message(type_id, 0, 0, struct.pack(">I", value) + extra)
