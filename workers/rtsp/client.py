"""RtspClient: one RTSP session with a camera, its RTP delivered to callbacks as packets arrive.

One TCP connection carries the RTSP requests and, with TCP transport, the RTP interleaved with the
responses (RFC 2326 §10.12); a single protocol object parses both out of the byte stream, so a packet
is handed on the moment its last byte is read. With UDP transport each stream gets an RTP/RTCP port
pair on the address the TCP connection came from (loopback in tests), never a wildcard.

Errors are raised as RtspError with the message GetSrc shows (`strLastError`), worded as the ffmpeg
path words them: "connection refused", "authentication failed (401 Unauthorized)", timeouts.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, cast
from urllib.parse import unquote, urlsplit, urlunsplit

from workers.rtsp.auth import Authenticator
from workers.rtsp.sdp import Media, Sdp, control_url, parse_sdp

log = logging.getLogger("h5gate.rtsp")

USER_AGENT = "h5gate"
MAX_HEADER = 64 * 1024
MAX_BODY = 1024 * 1024
STATUS_HINTS = {
    401: "authentication failed (401 Unauthorized)",
    403: "access denied (403 Forbidden)",
    404: "stream not found (404 Not Found)",
}
OS_HINTS = {
    errno.ECONNREFUSED: "connection refused",
    errno.EHOSTUNREACH: "no route to host",
    errno.ENETUNREACH: "network unreachable",
    errno.ECONNRESET: "connection reset by source",
    errno.ETIMEDOUT: "connection timed out",
}

PacketHandler = Callable[[int, bytes, float], None]  # (stream index, packet, arrival time.monotonic())


class RtspError(Exception):
    """A failure with the words GetSrc reports; `status` is the RTSP status code where there was one."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class Response:
    status: int
    reason: str
    headers: dict[str, list[str]] = field(default_factory=dict)
    body: bytes = b""

    def get(self, name: str, default: str = "") -> str:
        values = self.headers.get(name.lower())
        return values[0] if values else default


def split_url(url: str) -> tuple[str, str, str, str, int]:
    """(URL without credentials, user, password, host, port) of an rtsp:// URL."""
    parts = urlsplit(url)
    if parts.scheme.lower() != "rtsp" or not parts.hostname:
        raise RtspError("not an rtsp:// URL")
    host = parts.hostname
    netloc = (f"[{host}]" if ":" in host else host) + (f":{parts.port}" if parts.port else "")
    clean = urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, ""))
    return clean, unquote(parts.username or ""), unquote(parts.password or ""), host, parts.port or 554


def parse_rtp_info(value: str, urls: list[str]) -> dict[int, int]:
    """RTP-Info (RFC 2326 §12.33): each stream's rtptime at PLAY, by the index of its SETUP URL.

    Streams are matched by URL (cameras write it absolute or as the control attribute), else by order.
    """
    out: dict[int, int] = {}
    for order, entry in enumerate(e for e in value.split(",") if e.strip()):
        fields = dict(p.strip().partition("=")[::2] for p in entry.split(";"))
        if "rtptime" not in fields:
            continue
        try:
            rtptime = int(fields["rtptime"]) & 0xFFFFFFFF
        except ValueError:
            continue
        url = fields.get("url", "")
        index = next((i for i, u in enumerate(urls) if url and (u == url or u.endswith("/" + url.lstrip("/")))), order)
        if index < len(urls):
            out[index] = rtptime
    return out


class _Wire(asyncio.Protocol):
    """Parses the TCP byte stream into RTSP responses and interleaved $-frames."""

    def __init__(self, client: RtspClient) -> None:
        self.client = client
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not asyncio.Transport subclasses

    def data_received(self, data: bytes) -> None:
        now = time.monotonic()
        buf = self.buf
        buf += data
        pos, n = 0, len(buf)
        client = self.client
        while pos < n:
            if buf[pos] == 0x24:  # '$': channel, 16-bit length, packet
                if n - pos < 4:
                    break
                size = (buf[pos + 2] << 8) | buf[pos + 3]
                if n - pos < 4 + size:
                    break
                client._interleaved(buf[pos + 1], bytes(buf[pos + 4 : pos + 4 + size]), now)
                pos += 4 + size
                continue
            end = buf.find(b"\r\n\r\n", pos)
            if end < 0:
                if n - pos > MAX_HEADER:
                    client._fail(RtspError("invalid data from source"))
                    del buf[:]
                    return
                if buf[pos] not in b"RrGgSsOoPpAa":  # not the start of a message: resynchronise on '$'
                    nxt = buf.find(b"$", pos + 1)
                    pos = nxt if nxt >= 0 else n
                    continue
                break
            head = bytes(buf[pos:end]).decode("utf-8", "replace")
            length = 0
            for line in head.split("\r\n")[1:]:
                k, _, v = line.partition(":")
                if k.strip().lower() == "content-length":
                    try:
                        length = int(v.strip())
                    except ValueError:
                        length = 0
            if length > MAX_BODY:
                client._fail(RtspError("invalid data from source"))
                del buf[:]
                return
            if n - (end + 4) < length:
                break
            body = bytes(buf[end + 4 : end + 4 + length])
            pos = end + 4 + length
            client._message(head, body)
        del buf[:pos]

    def connection_lost(self, exc: Exception | None) -> None:
        if isinstance(exc, OSError) and exc.errno in OS_HINTS:
            self.client._fail(RtspError(OS_HINTS[exc.errno]))
        else:
            self.client._fail(RtspError("source closed the connection"))


class _Datagrams(asyncio.DatagramProtocol):
    def __init__(self, client: RtspClient, channel: int) -> None:
        self.client = client
        self.channel = channel

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        self.client._interleaved(self.channel, data, time.monotonic())


class RtspClient:
    """One session: `await start(choose)`, then packets flow to `on_packet`; `closed` ends with the cause."""

    def __init__(
        self,
        url: str,
        on_packet: PacketHandler,
        *,
        transport: str = "tcp",
        timeout: float = 5.0,
        on_rtcp: PacketHandler | None = None,
        require: str = "",
    ) -> None:
        self.url, user, password, self.host, self.port = split_url(url)
        self.auth = Authenticator(user, password)
        self.transport_kind = transport
        self.timeout = timeout
        self.on_packet = on_packet
        self.on_rtcp = on_rtcp
        self.require = require  # a Require header for DESCRIBE, SETUP and PLAY (the ONVIF back-channel's)
        self.session = ""
        self.session_timeout = 60.0
        self.public: set[str] = set()
        self.base = self.url  # Content-Base: what control URLs are relative to
        self.aggregate = self.url  # the session's own control URL: PLAY, TEARDOWN, keep-alive
        self.sdp: Sdp | None = None
        self.chosen: list[Media] = []
        self.closed: asyncio.Future[RtspError] = asyncio.get_running_loop().create_future()
        self._wire: _Wire | None = None
        self._cseq = 0
        self._pending: dict[int, asyncio.Future[Response]] = {}
        self._udp: list[asyncio.DatagramTransport] = []
        self._keepalive: asyncio.Task[None] | None = None
        self.packets = 0
        self.bytes_in = 0
        self.setup_urls: list[str] = []
        self.rtp_info: dict[int, int] = {}  # stream index -> RTP timestamp at the start of PLAY

    # -- the session ----------------------------------------------------------------------------------
    async def start(self, choose: Callable[[Sdp], list[Media]]) -> Sdp:
        """Connect, DESCRIBE, SETUP the streams `choose` picks from the SDP, PLAY."""
        await self._connect()
        try:
            resp = await self.request("OPTIONS", self.url)
            self.public = {m.strip().upper() for m in resp.get("public").split(",") if m.strip()}
        except RtspError as e:
            if e.status in (401, 403, 404) or not e.status:
                raise  # some cameras refuse OPTIONS without harm; these answers are not that
        describe = {"Accept": "application/sdp"}
        if self.require:
            describe["Require"] = self.require
        resp = await self.request("DESCRIBE", self.url, describe)
        self.base = resp.get("content-base") or resp.get("content-location") or self.url
        self.sdp = sdp = parse_sdp(resp.body.decode("utf-8", "replace"))
        self.aggregate = control_url(self.base, sdp.control)
        self.chosen = choose(sdp)
        if not self.chosen:
            raise RtspError("no usable stream in the camera's SDP")
        for index, media in enumerate(self.chosen):
            await self._setup(index, media)
        play = {"Range": "npt=0.000-"}
        if self.require:
            play["Require"] = self.require
        resp = await self.request("PLAY", self.aggregate, play)
        self.rtp_info = parse_rtp_info(resp.get("rtp-info"), self.setup_urls)
        self._keepalive = asyncio.create_task(self._keep_alive(), name=f"rtsp-keepalive:{self.host}")
        return sdp

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.timeout):
                _, wire = await loop.create_connection(lambda: _Wire(self), self.host, self.port)
        except TimeoutError:
            raise RtspError(f"connection timed out after {self.timeout:.0f}s") from None
        except socket.gaierror:
            raise RtspError("unknown host") from None
        except OSError as e:
            raise RtspError(OS_HINTS.get(e.errno or 0, f"cannot connect: {e.strerror or e}")) from None
        self._wire = wire
        sock = wire.transport.get_extra_info("socket") if wire.transport else None
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    async def _setup(self, index: int, media: Media) -> None:
        url = control_url(self.base, media.control)
        self.setup_urls.append(url)
        if self.transport_kind == "udp":
            rtp_port = await self._bind_udp(index)
            spec = f"RTP/AVP;unicast;client_port={rtp_port}-{rtp_port + 1}"
        else:
            spec = f"RTP/AVP/TCP;unicast;interleaved={2 * index}-{2 * index + 1}"
        headers = {"Transport": spec}
        if self.require:
            headers["Require"] = self.require
        if self.session:
            headers["Session"] = self.session
        resp = await self.request("SETUP", url, headers)
        session = resp.get("session")
        if session:
            sid, _, params = session.partition(";")
            self.session = sid.strip()
            for param in params.split(";"):
                k, _, v = param.strip().partition("=")
                if k.lower() == "timeout":
                    try:
                        self.session_timeout = max(5.0, float(v))
                    except ValueError:
                        pass
        answer = resp.get("transport").lower()
        if self.transport_kind == "tcp" and "interleaved=" in answer:
            pass  # GStreamer and most cameras keep the channels we asked for; if not, we still map by order
        if self.transport_kind == "udp" and "/tcp" in answer:
            raise RtspError("camera refused UDP transport")

    async def _bind_udp(self, index: int) -> int:
        """An even/odd local port pair on the address that reaches the camera."""
        assert self._wire is not None and self._wire.transport is not None
        local = self._wire.transport.get_extra_info("sockname")[0]
        loop = asyncio.get_running_loop()
        for _ in range(50):
            probe = socket.socket(socket.AF_INET6 if ":" in local else socket.AF_INET, socket.SOCK_DGRAM)
            probe.bind((local, 0))
            port: int = probe.getsockname()[1] & ~1
            probe.close()
            socks = []
            try:
                for p in (port, port + 1):
                    s = socket.socket(socket.AF_INET6 if ":" in local else socket.AF_INET, socket.SOCK_DGRAM)
                    socks.append(s)
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
                    s.bind((local, p))
            except OSError:
                for s in socks:
                    s.close()
                continue
            for offset, s in enumerate(socks):
                channel = 2 * index + offset
                tr, _ = await loop.create_datagram_endpoint(partial(_Datagrams, self, channel), sock=s)
                self._udp.append(tr)
            return port
        raise RtspError("no free UDP port pair")

    async def _keep_alive(self) -> None:
        """GET_PARAMETER (or OPTIONS where the camera lacks it) well within the session timeout."""
        method = "GET_PARAMETER" if "GET_PARAMETER" in self.public else "OPTIONS"
        interval = max(2.0, self.session_timeout / 2 - 1)
        while True:
            await asyncio.sleep(interval)
            try:
                await self.request(method, self.aggregate, wait=False)
            except RtspError:
                return

    def send_interleaved(self, index: int, packet: bytes) -> bool:
        """Write one RTP packet to the camera on stream `index`'s interleaved channel (TCP transport only).

        False when the connection is gone or its send buffer is over 256 kB (a camera that stopped reading):
        the packet is dropped rather than queued without bound.
        """
        wire = self._wire
        if self.closed.done() or wire is None or wire.transport is None or wire.transport.is_closing():
            return False
        if wire.transport.get_write_buffer_size() > 256 * 1024:
            return False
        wire.transport.write(bytes([0x24, 2 * index]) + len(packet).to_bytes(2, "big") + packet)
        return True

    async def close(self) -> None:
        """TEARDOWN (briefly: a dead camera must not hold us up), then close every socket."""
        if self._keepalive is not None:
            self._keepalive.cancel()
        if self.session and not self.closed.done():
            try:
                await asyncio.wait_for(self.request("TEARDOWN", self.aggregate), 1.0)
            except (RtspError, TimeoutError):
                pass
        for tr in self._udp:
            tr.close()
        if self._wire is not None and self._wire.transport is not None:
            self._wire.transport.close()
        if not self.closed.done():
            self.closed.set_result(RtspError("closed"))

    # -- requests -------------------------------------------------------------------------------------
    async def request(
        self, method: str, url: str, headers: dict[str, str] | None = None, *, wait: bool = True
    ) -> Response:
        """One request; a 401 is answered once with credentials. Raises RtspError for any non-2xx."""
        resp = await self._send(method, url, headers or {}, wait)
        if resp.status == 401 and self.auth.challenge(resp.headers.get("www-authenticate", [])):
            resp = await self._send(method, url, headers or {}, wait)
        if not 200 <= resp.status < 300:
            if not wait and resp.status == 0:
                return resp
            message = STATUS_HINTS.get(resp.status, f"camera answered {resp.status} {resp.reason} to {method}")
            raise RtspError(message, resp.status)
        return resp

    async def _send(self, method: str, url: str, headers: dict[str, str], wait: bool) -> Response:
        if self.closed.done():
            raise self.closed.result()
        wire = self._wire
        assert wire is not None and wire.transport is not None
        self._cseq += 1
        cseq = self._cseq
        lines = [f"{method} {url} RTSP/1.0", f"CSeq: {cseq}", f"User-Agent: {USER_AGENT}"]
        authorization = self.auth.header(method, url)
        if authorization:
            lines.append(f"Authorization: {authorization}")
        if self.session and "Session" not in headers:
            lines.append(f"Session: {self.session}")
        lines += [f"{k}: {v}" for k, v in headers.items()]
        fut: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
        self._pending[cseq] = fut
        wire.transport.write(("\r\n".join(lines) + "\r\n\r\n").encode("utf-8"))
        if not wait:
            fut.add_done_callback(lambda f: f.exception() if not f.cancelled() else None)
            return Response(0, "")
        try:
            async with asyncio.timeout(self.timeout):
                waiters: set[asyncio.Future[Any]] = {fut, self.closed}
                done, _ = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        except TimeoutError:
            raise RtspError(f"source did not answer within {self.timeout:.0f}s (timed out)") from None
        finally:
            self._pending.pop(cseq, None)
        if fut in done:
            return fut.result()
        raise self.closed.result()

    # -- from the wire --------------------------------------------------------------------------------
    def _message(self, head: str, body: bytes) -> None:
        lines = head.split("\r\n")
        first = lines[0].split(" ", 2)
        if not first[0].upper().startswith("RTSP/"):
            return  # a request from the camera (ANNOUNCE, GET_PARAMETER): nothing we must do
        try:
            status = int(first[1])
        except (IndexError, ValueError):
            self._fail(RtspError("invalid data from source"))
            return
        headers: dict[str, list[str]] = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            headers.setdefault(k.strip().lower(), []).append(v.strip())
        try:
            cseq = int(headers.get("cseq", ["-1"])[0])
        except ValueError:
            cseq = -1
        fut = self._pending.pop(cseq, None)
        if fut is not None and not fut.done():
            fut.set_result(Response(status, first[2] if len(first) > 2 else "", headers, body))

    def _interleaved(self, channel: int, packet: bytes, now: float) -> None:
        index, rtcp = divmod(channel, 2)
        if index >= len(self.chosen) and self.chosen:
            return
        if rtcp:
            if self.on_rtcp is not None:
                self.on_rtcp(index, packet, now)
            return
        self.packets += 1
        self.bytes_in += len(packet)
        self.on_packet(index, packet, now)

    def _fail(self, error: RtspError) -> None:
        if not self.closed.done():
            self.closed.set_result(error)
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(error)
        self._pending.clear()
