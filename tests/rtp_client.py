"""A minimal RTSP client for tests: interleaved RTP over TCP, reporting each packet's channel and timestamp.

ffmpeg hides RTP timestamps behind its own clamping and RTCP mapping, so to check what the fault proxy
puts on the wire a test reads the packets themselves.
"""

from __future__ import annotations

import re
import socket
import struct
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit


@dataclass
class RtpPacket:
    channel: int
    timestamp: int
    marker: bool
    arrival: float


@dataclass
class RtpCapture:
    rates: dict[int, int] = field(default_factory=dict)  # channel -> clock rate (from the SDP)
    kinds: dict[int, str] = field(default_factory=dict)  # channel -> "video" / "audio"
    packets: list[RtpPacket] = field(default_factory=list)
    sender_reports: list[tuple[int, int]] = field(default_factory=list)  # (RTP channel, RTP timestamp)

    def timestamps(self, channel: int) -> list[int]:
        """One timestamp per frame (the marker packet's), in arrival order."""
        return [p.timestamp for p in self.packets if p.channel == channel and p.marker]


class RtspReader:
    """Connects, sets up every track with interleaved=2i-2i+1, plays, and reads until told to stop."""

    def __init__(self, url: str, timeout: float = 10.0) -> None:
        parts = urlsplit(url)
        self.url = url
        self.sock = socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 554), timeout)
        self.buf = bytearray()
        self.cseq = 0
        self.session = ""
        self.capture = RtpCapture()

    def _request(self, method: str, url: str, headers: dict[str, str] | None = None) -> tuple[str, bytes]:
        self.cseq += 1
        lines = [f"{method} {url} RTSP/1.0", f"CSeq: {self.cseq}", "User-Agent: h5gate-tests"]
        if self.session:
            lines.append(f"Session: {self.session}")
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        while True:
            head = self.buf.find(b"\r\n\r\n")
            if self.buf[:1] != b"$" and head >= 0:
                m = re.search(rb"(?im)^content-length:\s*(\d+)", self.buf[:head])
                end = head + 4 + (int(m.group(1)) if m else 0)
                if len(self.buf) >= end:
                    text = bytes(self.buf[: head + 4]).decode("latin-1")
                    body = bytes(self.buf[head + 4 : end])
                    del self.buf[:end]
                    assert text.startswith("RTSP/1.0 200"), text
                    return text, body
            elif self.buf[:1] == b"$" and len(self.buf) >= 4:
                end = 4 + struct.unpack_from(">H", self.buf, 2)[0]
                if len(self.buf) >= end:
                    del self.buf[:end]
                    continue
            chunk = self.sock.recv(65536)
            assert chunk, "camera closed the connection"
            self.buf += chunk

    def start(self) -> RtspReader:
        _, sdp = self._request("DESCRIBE", self.url, {"Accept": "application/sdp"})
        base = self.url.rstrip("/") + "/"
        for i, section in enumerate(sdp.split(b"\nm=")[1:]):
            kind = section.split(b" ", 1)[0].decode()
            rate = re.search(rb"a=rtpmap:\d+ [^/\s]+/(\d+)", section)
            control = re.search(rb"a=control:(\S+)", section)
            ctrl = control.group(1).decode() if control else ""
            track_url = ctrl if ctrl.startswith("rtsp://") else base + ctrl
            text, _ = self._request(
                "SETUP", track_url, {"Transport": f"RTP/AVP/TCP;unicast;interleaved={2 * i}-{2 * i + 1}"}
            )
            m = re.search(r"(?im)^session:\s*([^;\r\n]+)", text)
            if m:
                self.session = m.group(1).strip()
            self.capture.rates[2 * i] = int(rate.group(1)) if rate else 90000
            self.capture.kinds[2 * i] = kind
        self._request("PLAY", self.url, {"Range": "npt=0.000-"})
        return self

    def read_for(self, seconds: float) -> RtpCapture:
        """Read interleaved packets for `seconds`, recording RTP timestamps and RTCP sender reports."""
        deadline = time.monotonic() + seconds
        self.sock.settimeout(0.5)
        while time.monotonic() < deadline:
            while len(self.buf) >= 4 and self.buf[0] == 0x24:
                end = 4 + struct.unpack_from(">H", self.buf, 2)[0]
                if len(self.buf) < end:
                    break
                frame = bytes(self.buf[:end])
                del self.buf[:end]
                ch = frame[1]
                if ch % 2 == 0 and len(frame) >= 16:
                    ts = struct.unpack_from(">I", frame, 8)[0]
                    self.capture.packets.append(RtpPacket(ch, ts, bool(frame[5] & 0x80), time.monotonic()))
                elif ch % 2 == 1 and len(frame) >= 24 and frame[5] == 200:
                    self.capture.sender_reports.append((ch - 1, struct.unpack_from(">I", frame, 20)[0]))
            if self.buf[:1] not in (b"", b"$"):  # an RTSP message (e.g. a keepalive answer): skip it
                head = self.buf.find(b"\r\n\r\n")
                if head >= 0:
                    del self.buf[: head + 4]
                    continue
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                continue
            if not chunk:
                break
            self.buf += chunk
        return self.capture

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass
