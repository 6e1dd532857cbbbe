"""AMF0, the encoding of RTMP's command and data messages (connect, publish, onStatus, onMetaData).

Only what an RTMP publisher sends and what we answer: numbers, booleans, strings, objects, ECMA and
strict arrays, null/undefined and dates. An unknown marker ends decoding with AmfError, and the caller
drops the message rather than guessing at the bytes that follow.
"""

from __future__ import annotations

import struct
from typing import Any

NUMBER, BOOLEAN, STRING, OBJECT, NULL, UNDEFINED, ECMA_ARRAY, OBJECT_END, STRICT_ARRAY, DATE, LONG_STRING = (
    0,
    1,
    2,
    3,
    5,
    6,
    8,
    9,
    10,
    11,
    12,
)
MAX_DEPTH = 16


class AmfError(ValueError):
    """Bytes that are not AMF0 this module reads."""


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise AmfError("AMF0 value cut short")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def short_string(self) -> str:
        (n,) = struct.unpack(">H", self.take(2))
        return self.take(n).decode("utf-8", "replace")

    def properties(self, depth: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        while True:
            key = self.short_string()
            if not key and self.data[self.pos : self.pos + 1] == bytes([OBJECT_END]):
                self.pos += 1
                return out
            out[key] = self.value(depth + 1)

    def value(self, depth: int = 0) -> Any:
        if depth > MAX_DEPTH:
            raise AmfError("AMF0 nested too deep")
        marker = self.take(1)[0]
        if marker == NUMBER:
            return struct.unpack(">d", self.take(8))[0]
        if marker == BOOLEAN:
            return self.take(1)[0] != 0
        if marker == STRING:
            return self.short_string()
        if marker == LONG_STRING:
            (n,) = struct.unpack(">I", self.take(4))
            return self.take(n).decode("utf-8", "replace")
        if marker == OBJECT:
            return self.properties(depth)
        if marker == ECMA_ARRAY:
            self.take(4)  # an approximate count: the object-end marker is what ends it
            return self.properties(depth)
        if marker == STRICT_ARRAY:
            (n,) = struct.unpack(">I", self.take(4))
            if n > len(self.data):
                raise AmfError("AMF0 array longer than its message")
            return [self.value(depth + 1) for _ in range(n)]
        if marker in (NULL, UNDEFINED):
            return None
        if marker == DATE:
            millis = struct.unpack(">d", self.take(8))[0]
            self.take(2)  # time zone, unused by the format's own definition
            return millis
        raise AmfError(f"AMF0 marker {marker} not supported")


def decode(data: bytes) -> list[Any]:
    """Every value in a message body, in order."""
    reader = _Reader(data)
    values = []
    while reader.pos < len(data):
        values.append(reader.value())
    return values


def _string_body(text: str) -> bytes:
    raw = text.encode("utf-8")
    return struct.pack(">H", len(raw)) + raw


def encode_value(value: Any) -> bytes:
    if value is None:
        return bytes([NULL])
    if isinstance(value, bool):
        return bytes([BOOLEAN, int(value)])
    if isinstance(value, int | float):
        return bytes([NUMBER]) + struct.pack(">d", float(value))
    if isinstance(value, str):
        raw = value.encode("utf-8")
        if len(raw) > 0xFFFF:
            return bytes([LONG_STRING]) + struct.pack(">I", len(raw)) + raw
        return bytes([STRING]) + _string_body(value)
    if isinstance(value, dict):
        body = b"".join(_string_body(str(k)) + encode_value(v) for k, v in value.items())
        return bytes([OBJECT]) + body + b"\x00\x00" + bytes([OBJECT_END])
    if isinstance(value, list | tuple):
        return bytes([STRICT_ARRAY]) + struct.pack(">I", len(value)) + b"".join(encode_value(v) for v in value)
    raise TypeError(f"cannot encode {type(value).__name__} as AMF0")


def encode_ecma_array(props: dict[str, Any]) -> bytes:
    """An ECMA array, the form onMetaData takes in FLV files."""
    body = b"".join(_string_body(k) + encode_value(v) for k, v in props.items())
    return bytes([ECMA_ARRAY]) + struct.pack(">I", len(props)) + body + b"\x00\x00" + bytes([OBJECT_END])


def encode(*values: Any) -> bytes:
    return b"".join(encode_value(v) for v in values)
