"""The link's framing: JSON text frames for control, binary frames for bodies and channel data.

Control (text, one JSON object with "t"):
  edge -> centre  hello {user, password (MD5, as Login takes it), servertoken, servername, keepalive, version}
  centre -> edge  welcome {} | refused {reason}
  edge -> centre  ping {} (every keepalive seconds; the centre answers pong), sources {src: [...]}
  centre -> edge  call {id, path, query: [[k, v], ...]}; open {ch, path, query}
  either way      close {ch, code, reason}; edge -> centre opened {ch}
Binary: one byte kind, four bytes id (big endian), then
  REPLY  (edge -> centre): four bytes header length, the JSON header {status, type}, then the body
  DATA   (either way): a channel's binary message
  TEXT   (either way): a channel's text message, UTF-8
Bodies travel as bytes (a JPEG from GetImage, a JSON answer) without base64, and channel data is the
tunnelled WebSocket's own messages, so a live fragment crosses the link with five bytes added.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from typing import Any

REPLY = 1
DATA = 2
TEXT = 3
KINDS = (REPLY, DATA, TEXT)
LINK_PATH = "/api/v1/cloudlink"  # the centre's WebSocket that edges connect to


class ProtocolError(ValueError):
    """A frame that does not follow this module's format: the link is dropped."""


@dataclass(frozen=True)
class Reply:
    """An edge's answer to a forwarded call: the HTTP status, content type and body its own API gave."""

    status: int
    content_type: str
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def control(kind: str, **fields: Any) -> str:
    return json.dumps({"t": kind, **fields}, separators=(",", ":"))


def parse_control(text: str) -> dict[str, Any]:
    try:
        message = json.loads(text)
    except ValueError as e:
        raise ProtocolError(f"unreadable control message: {e}") from None
    if not isinstance(message, dict) or not isinstance(message.get("t"), str):
        raise ProtocolError("control message without a type")
    return message


def frame(kind: int, ident: int, payload: bytes) -> bytes:
    return struct.pack(">BI", kind, ident) + payload


def reply_frame(ident: int, reply: Reply) -> bytes:
    header = json.dumps({"status": reply.status, "type": reply.content_type}).encode()
    return struct.pack(">BII", REPLY, ident, len(header)) + header + reply.body


def parse_frame(data: bytes) -> tuple[int, int, bytes]:
    """(kind, id, payload) of a binary frame."""
    if len(data) < 5 or data[0] not in KINDS:
        raise ProtocolError("binary frame too short or of an unknown kind")
    kind, ident = struct.unpack_from(">BI", data)
    return kind, ident, data[5:]


def parse_reply(payload: bytes) -> Reply:
    if len(payload) < 4:
        raise ProtocolError("reply frame too short")
    (size,) = struct.unpack_from(">I", payload)
    try:
        header = json.loads(payload[4 : 4 + size])
        return Reply(int(header["status"]), str(header.get("type", "")), payload[4 + size :])
    except (ValueError, KeyError, TypeError) as e:
        raise ProtocolError(f"unreadable reply header: {e}") from None


def query_pairs(value: Any) -> list[tuple[str, str]]:
    """A query as sent in call/open messages: a list of [name, value] string pairs."""
    if not isinstance(value, list):
        raise ProtocolError("query must be a list of pairs")
    pairs: list[tuple[str, str]] = []
    for item in value:
        if not (isinstance(item, list) and len(item) == 2 and all(isinstance(x, str) for x in item)):
            raise ProtocolError("query pair must be two strings")
        pairs.append((item[0], item[1]))
    return pairs
