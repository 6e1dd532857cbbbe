"""The framed protocol on the Unix socket between the supervisor and the WebRTC sidecar.

One socket carries both directions: JSON control messages (signalling, subscriptions, liveness) and, from
the supervisor, the media of each feed as the hub holds it (init segments and fMP4 fragments), so the
sidecar never opens a camera and the supervisor never parses more than box headers. A frame is a 9-byte
header (kind, channel, length) and the payload; media payloads are written without a copy.
"""

from __future__ import annotations

import asyncio
import json
import struct
from typing import Any

HEADER = struct.Struct(">BII")
CONTROL = ord("J")  # JSON object, channel 0
INIT = ord("I")  # init segment (ftyp+moov) of feed `channel`
FRAGMENT = ord("F")  # one moof+mdat of feed `channel`
PUSH = ord("P")  # sidecar -> supervisor: one FLV tag of browser push `channel` (4-byte ms, 1-byte tag type, body)
MAX_PAYLOAD = 64 * 1024 * 1024


class ProtocolError(Exception):
    """The other side sent something that is not a frame of this protocol."""


async def read_frame(reader: asyncio.StreamReader) -> tuple[int, int, bytes]:
    """The next (kind, channel, payload); IncompleteReadError at the end of the stream."""
    kind, channel, length = HEADER.unpack(await reader.readexactly(HEADER.size))
    if kind not in (CONTROL, INIT, FRAGMENT, PUSH) or length > MAX_PAYLOAD:
        raise ProtocolError(f"bad frame header: kind {kind}, length {length}")
    return kind, channel, await reader.readexactly(length)


def decode_control(payload: bytes) -> dict[str, Any]:
    try:
        message = json.loads(payload)
    except ValueError as e:
        raise ProtocolError(f"control message is not JSON: {e}") from None
    if not isinstance(message, dict) or not isinstance(message.get("op"), str):
        raise ProtocolError("control message without an op")
    return message


class Link:
    """The writing half: whole frames only, so tasks sharing the socket never interleave bytes."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer

    def send(self, op: str, **fields: Any) -> None:
        payload = json.dumps({"op": op, **fields}, separators=(",", ":")).encode()
        self.writer.write(HEADER.pack(CONTROL, 0, len(payload)) + payload)

    def send_media(self, kind: int, channel: int, data: bytes) -> None:
        self.writer.write(HEADER.pack(kind, channel, len(data)))
        self.writer.write(data)

    async def drain(self) -> None:
        await self.writer.drain()

    def close(self) -> None:
        self.writer.close()
