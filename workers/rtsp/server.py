"""RtspServer: re-serve hub streams over RTSP (RFC 2326) to VMS software, ffmpeg, GStreamer and players.

The data plane only: requests, sessions, RTP over TCP (interleaved) or UDP, minimal RTCP. Who may watch
what, and which hub a path names, is the supervisor's (a `Gate`, supervisor/rtsp_serve.py). Paths are
`/<token>` and `/live/<token>`, with `?profile=sub`; the session may come as `?session=`.

Every client is a cursor on the shared hub: it starts at the newest keyframe (the GOP cache, so its first
picture comes at once), gets the feed's shared packets (workers/rtsp/feed.py), and one that falls behind
is skipped to the newest keyframe by its cursor or, if its socket stops draining for `send_timeout`,
disconnected: it never slows the source or another client. A malformed request gets a 4xx answer (and,
when the byte stream can no longer be framed, the connection is closed), never an exception out of here.

UDP goes from one shared RTP/RTCP port pair to the address the RTSP connection came from (never to a
`destination=` a client names: no reflection). A session lives as long as its RTSP connection.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
import re
import secrets
import socket
import struct
import time
from dataclasses import dataclass, field
from typing import Protocol

from workers.hub import HubClosed, StreamHub
from workers.rtsp.digest import DigestGuard, parse_params
from workers.rtsp.feed import AUDIO, VIDEO, RtpFeed, RtpFrame, Unsupported, sdp, sender_report
from workers.rtsp.request import Request, Target, parse_request, parse_target
from workers.rtsp.udp import UdpPair

log = logging.getLogger("h5gate.rtsp.serve")

SERVER = "h5gate"
MAX_HEAD = 16 * 1024
MAX_BODY = 64 * 1024
SESSION_TIMEOUT = 60
READY_TIMEOUT = 8.0
SR_INTERVAL = 2.0  # seconds between RTCP sender reports per track
HIGH_WATER = 256 * 1024  # bytes queued in a TCP client's socket before we wait for it to drain
# The GOP cache goes to a UDP client in bursts of this many bytes, UDP_PAUSE apart (about 50 Mbit/s): at
# loopback speed a whole GOP overflows the client's socket buffer, and UDP has no flow control to stop us.
UDP_BURST = 64 * 1024
UDP_PAUSE = 0.01
BAD_AUTH_DELAY = 1.0  # a wrong password is answered this much later (slows guessing)
METHODS = ("OPTIONS", "DESCRIBE", "SETUP", "PLAY", "PAUSE", "TEARDOWN", "GET_PARAMETER", "SET_PARAMETER")
KNOWN = (*METHODS, "ANNOUNCE", "RECORD", "REDIRECT")
REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    413: "Request Entity Too Large",
    415: "Unsupported Media Type",
    454: "Session Not Found",
    455: "Method Not Valid in This State",
    459: "Aggregate Operation Not Allowed",
    461: "Unsupported Transport",
    503: "Service Unavailable",
}


Headers = dict[str, str] | list[tuple[str, str]]
Answer = tuple[int, Headers, bytes]


class Refused(Exception):
    """A request the gate turns down: its RTSP status and the reason logged."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class OpenStream(Protocol):
    """A stream the gate opened for a client; release() when the client is done with it."""

    hub: StreamHub
    name: str  # token/profile, for log lines

    def release(self) -> None: ...

    def offline_reason(self) -> str: ...


class Gate(Protocol):
    """What the supervisor decides: who the client is, and which stream a path opens for them."""

    def basic_allowed(self, peer: str) -> bool: ...

    async def digest_ha1(self, user: str) -> str | None: ...

    async def check_basic(self, user: str, password: str) -> bool: ...

    async def check_session(self, session: str) -> str | None: ...

    async def open(self, user: str, token: str, profile: str) -> OpenStream: ...


@dataclass
class TrackOut:
    """Where one track of a session goes: an interleaved channel, or a UDP address pair."""

    index: int
    url: str
    channel: int = -1  # TCP: interleaved RTP channel (RTCP on channel + 1)
    rtp_addr: tuple[str, int] | None = None  # UDP
    rtcp_addr: tuple[str, int] | None = None
    packets: int = 0
    octets: int = 0
    last_ts: int = 0
    last_media: float = 0.0
    sent: bool = False


@dataclass(eq=False)
class Session:
    id: str
    stream: OpenStream
    feed: RtpFeed
    tracks: dict[int, TrackOut] = field(default_factory=dict)
    task: asyncio.Task[None] | None = None
    last_seen: float = field(default_factory=time.monotonic)
    udp: bool = False


@dataclass
class Stats:
    connections: int = 0
    sessions: int = 0
    playing: int = 0
    total: int = 0
    slow_disconnects: int = 0
    refused: int = 0
    bad_requests: int = 0


class RtspServer:
    def __init__(
        self,
        gate: Gate,
        realm: str,
        send_timeout: float = 10.0,
        slow_seconds: float = 4.0,
        send_buffer: int = 262144,
    ) -> None:
        self.gate = gate
        self.send_buffer = send_buffer  # kernel send buffer per TCP client: bounds what a stuck one holds
        self.digest = DigestGuard(realm)
        self.realm = realm
        self.send_timeout = send_timeout
        self.slow_seconds = slow_seconds
        self.stats = Stats()
        self.by_token: dict[str, int] = {}
        self._server: asyncio.base_events.Server | None = None
        self._udp = UdpPair(self._rtcp_in)
        self._feeds: dict[int, RtpFeed] = {}  # id(hub) -> feed
        self._conns: set[_Connection] = set()
        self._sweeper: asyncio.Task[None] | None = None
        self.host = ""
        self.port = 0

    async def start(self, host: str, port: int) -> None:
        self._server = await asyncio.start_server(self._accept, host, port, limit=MAX_HEAD, reuse_address=True)
        try:
            await self._udp.open(host)
        except OSError:
            self._server.close()
            raise
        self.host, self.port = host, port
        self._sweeper = asyncio.create_task(self._sweep())
        log.info("RTSP re-serve listening on rtsp://%s:%d (RTP/RTCP over UDP on %d-%d)", host, port, *self._udp.ports)

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self._server is not None:
            self._server.close()
        for conn in list(self._conns):
            conn.close()
        if self._conns:
            await asyncio.wait([c.task for c in self._conns if c.task], timeout=3)
        self._udp.close()
        log.info("RTSP re-serve stopped")

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.send_buffer)
        writer.transport.set_write_buffer_limits(high=HIGH_WATER)
        conn = _Connection(self, reader, writer)
        conn.task = asyncio.current_task()
        self._conns.add(conn)
        self.stats.connections += 1
        try:
            await conn.run()
        finally:
            self._conns.discard(conn)
            self.stats.connections -= 1

    # -- feeds ------------------------------------------------------------------------------------------
    def feed_for(self, hub: StreamHub) -> RtpFeed:
        feed = self._feeds.get(id(hub))
        if feed is None or feed.broken or feed.hub is not hub:
            assert hub.init is not None
            feed = RtpFeed(hub, hub.init, hub.gen)
            self._feeds[id(hub)] = feed
        feed.users += 1
        return feed

    def feed_done(self, feed: RtpFeed) -> None:
        feed.users -= 1
        if feed.users <= 0 and self._feeds.get(id(feed.hub)) is feed:
            del self._feeds[id(feed.hub)]

    # -- UDP --------------------------------------------------------------------------------------------
    def _rtcp_in(self, addr: tuple[str, int]) -> None:
        now = time.monotonic()
        for conn in self._conns:
            s = conn.session
            if s is not None and s.udp and any(t.rtcp_addr == addr for t in s.tracks.values()):
                s.last_seen = now

    async def _sweep(self) -> None:
        """End UDP sessions whose client stopped talking (no request, no receiver report) for the timeout."""
        while True:
            await asyncio.sleep(5.0)
            now = time.monotonic()
            for conn in list(self._conns):
                s = conn.session
                if s is not None and s.udp and now - s.last_seen > SESSION_TIMEOUT:
                    log.info("%s: RTSP session %s of %s timed out", s.stream.name, s.id, conn.peer)
                    conn.close()

    def udp_send(self, packets: list[bytes], addr: tuple[str, int]) -> None:
        transport = self._udp.rtp
        if transport is None:
            return
        for p in packets:
            transport.sendto(p, addr)

    def udp_rtcp(self, data: bytes, addr: tuple[str, int]) -> None:
        if self._udp.rtcp is not None:
            self._udp.rtcp.sendto(data, addr)

    @property
    def udp_ports(self) -> tuple[int, int]:
        return self._udp.ports


class _BadRequest(Exception):
    def __init__(self, status: int, reason: str, close: bool = False) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.close = close


class _Connection:
    """One RTSP connection: its requests, at most one session, and that session's sender."""

    def __init__(self, server: RtspServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.server = server
        self.reader = reader
        self.writer = writer
        peer = writer.get_extra_info("peername") or ("?", 0)
        self.peer = str(peer[0])
        self.peer_label = f"{peer[0]}:{peer[1]}" if len(peer) > 1 else str(peer[0])
        self.user: str | None = None
        self.stream: OpenStream | None = None
        self.target: Target | None = None
        self.session: Session | None = None
        self.task: asyncio.Task[None] | None = None
        self.closing = False
        self._desc_feed: RtpFeed | None = None

    def close(self) -> None:
        self.closing = True
        self.writer.close()

    async def run(self) -> None:
        reader = self.reader
        try:
            while not self.closing:
                first = await reader.readexactly(1)
                if first == b"$":  # interleaved RTCP from the client (receiver reports): a sign of life
                    head = await reader.readexactly(3)
                    await reader.readexactly(struct.unpack_from(">H", head, 1)[0])
                    if self.session is not None:
                        self.session.last_seen = time.monotonic()
                    continue
                if first in b"\r\n":
                    continue
                try:
                    head = first + await reader.readuntil(b"\r\n\r\n")
                except asyncio.LimitOverrunError:
                    self._answer_error(None, 400, "request header too large")
                    return
                await self._one(head)
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            pass
        except Exception:  # a bug must cost one connection, never the server
            log.exception("RTSP connection from %s failed", self.peer_label)
        finally:
            await self._end_session()
            self._release()
            with contextlib.suppress(Exception):
                self.writer.close()

    async def _one(self, head: bytes) -> None:
        parsed = parse_request(head)
        if isinstance(parsed, str):
            self._answer_error(None, 400, parsed)
            self.close()  # the byte stream cannot be trusted to be framed any more
            return
        req = parsed
        length_text = req.header("content-length") or "0"
        if not length_text.isdigit():
            self._answer_error(req, 400, "bad Content-Length")
            self.close()
            return
        length = int(length_text)
        if length > MAX_BODY:
            self._answer_error(req, 413, "request body too large")
            self.close()
            return
        if length:
            await self.reader.readexactly(length)
        if self.session is not None:
            self.session.last_seen = time.monotonic()
        try:
            status, headers, body = await self._handle(req)
        except _BadRequest as e:
            self._answer_error(req, e.status, e.reason)
            if e.close:
                self.close()
            return
        except Refused as e:
            self.server.stats.refused += 1
            log.info("RTSP %s %s from %s refused: %s", req.method, _clean(req.url), self.peer_label, e.reason)
            self._answer(req, e.status, {})
            return
        self._answer(req, status, headers, body)

    def _answer(self, req: Request | None, status: int, headers: Headers, body: bytes = b"") -> None:
        lines = [f"RTSP/1.0 {status} {REASONS.get(status, 'Error')}"]
        if req is not None:
            lines.append(f"CSeq: {req.cseq}")
        lines.append(f"Server: {SERVER}")
        for k, v in headers.items() if isinstance(headers, dict) else headers:
            lines.append(f"{k}: {v}")
        if body:
            lines.append(f"Content-Length: {len(body)}")
        message = ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8") + body
        if not self.writer.is_closing():
            self.writer.write(message)

    def _answer_error(self, req: Request | None, status: int, reason: str) -> None:
        self.server.stats.bad_requests += 1
        log.info("RTSP bad request from %s: %d %s", self.peer_label, status, reason)
        self._answer(req, status, {})

    # -- requests ---------------------------------------------------------------------------------------
    async def _handle(self, req: Request) -> Answer:
        method = req.method
        if method not in KNOWN:
            raise _BadRequest(405, f"unknown method {method[:32]}")
        if method not in METHODS:
            return 405, {"Allow": ", ".join(METHODS)}, b""
        if method == "OPTIONS":
            return 200, {"Public": ", ".join(METHODS)}, b""
        if method in ("DESCRIBE", "SETUP"):
            target = parse_target(req.url)
            if target is None:
                raise _BadRequest(404 if req.url.lower().startswith("rtsp") else 400, "no stream in the URL")
            if method == "DESCRIBE" and target.track is not None:
                raise _BadRequest(404, "DESCRIBE names a track")
            user = await self._authenticate(req, target)
            if user is None:
                return 401, self._challenge(), b""
            if method == "DESCRIBE":
                return await self._describe(req, user, target)
            return await self._setup(req, user, target)
        # The rest act on the session.
        session = self.session
        given = req.header("session").split(";", 1)[0].strip()
        if method in ("GET_PARAMETER", "SET_PARAMETER") and not given:
            return 200, {}, b""  # a keep-alive before or without a session
        if session is None or given != session.id:
            raise _BadRequest(454, "no such session")
        headers = {"Session": f"{session.id};timeout={SESSION_TIMEOUT}"}
        if method == "PLAY":
            if VIDEO not in session.tracks and AUDIO not in session.tracks:
                raise _BadRequest(455, "PLAY before SETUP")
            if session.task is None or session.task.done():
                headers.update(self._play(session))
            return 200, headers, b""
        if method == "PAUSE":
            await self._stop_sender(session)
            return 200, headers, b""
        if method == "TEARDOWN":
            await self._end_session()
            return 200, {}, b""
        return 200, headers, b""  # GET_PARAMETER / SET_PARAMETER: keep-alive

    def _challenge(self) -> Headers:
        challenges = [("WWW-Authenticate", self.server.digest.challenge())]
        if self.server.gate.basic_allowed(self.peer):
            # A header each: not every client's parser reads two challenges out of one header.
            challenges.append(("WWW-Authenticate", f'Basic realm="{self.server.realm}"'))
        return challenges

    async def _authenticate(self, req: Request, target: Target) -> str | None:
        if self.user is not None:
            return self.user
        gate = self.server.gate
        value = req.header("authorization")
        scheme, _, rest = value.partition(" ")
        user: str | None = None
        tried = ""
        if scheme.lower() == "digest":
            params = parse_params(rest)
            name = params.get("username", "")
            tried = name
            ha1 = await gate.digest_ha1(name) if name else None
            if ha1 is not None and self.server.digest.verify(params, req.method, ha1):
                user = name
        elif scheme.lower() == "basic" and gate.basic_allowed(self.peer):
            try:
                name, _, password = base64.b64decode(rest.strip(), validate=True).decode("utf-8").partition(":")
            except (binascii.Error, UnicodeDecodeError):
                name, password = "", ""
            tried = name or "?"
            if name and await gate.check_basic(name, password):
                user = name
        if user is None and target.session:
            user = await gate.check_session(target.session)
            tried = tried or "session"
        if user is None:
            if tried:
                log.info("%s: RTSP authentication of %s from %s failed", target.token, tried[:64], self.peer_label)
                await asyncio.sleep(BAD_AUTH_DELAY)
            return None
        self.user = user
        return user

    async def _open(self, user: str, target: Target) -> OpenStream:
        """The stream of the target, held by this connection (re-used by SETUP after DESCRIBE)."""
        if self.stream is not None and self.target is not None:
            if (self.target.token, self.target.profile) == (target.token, target.profile):
                return self.stream
            if self.session is not None:
                raise _BadRequest(459, "one stream per session")
            self._release()
        stream = await self.server.gate.open(user, target.token, target.profile)
        self.stream, self.target = stream, target
        try:
            ready = await stream.hub.wait_ready(READY_TIMEOUT)
        except HubClosed:
            ready = False
        if not ready:
            self._release()
            raise Refused(503, f"source offline: {stream.offline_reason() or 'no data yet'}")
        return stream

    def _release(self) -> None:
        if self._desc_feed is not None:
            self.server.feed_done(self._desc_feed)
            self._desc_feed = None
        if self.stream is not None:
            stream, self.stream, self.target = self.stream, None, None
            stream.release()

    async def _describe(self, req: Request, user: str, target: Target) -> Answer:
        stream = await self._open(user, target)
        if self._desc_feed is None:
            try:
                self._desc_feed = self.server.feed_for(stream.hub)
            except Unsupported as e:
                raise Refused(415, f"{stream.name}: {e}") from None
        local = self.writer.get_extra_info("sockname") or ("0.0.0.0", 0)
        text = sdp(self._desc_feed.desc, f"h5gate {target.token}", str(local[0]))
        base = req.url.split("?", 1)[0].rstrip("/") + "/"
        query = req.url.partition("?")[2]
        if query:
            base = req.url.rstrip("/") + "/"
        log.info("%s: RTSP DESCRIBE by %s from %s", stream.name, user, self.peer_label)
        return 200, {"Content-Type": "application/sdp", "Content-Base": base}, text.encode("utf-8")

    async def _setup(self, req: Request, user: str, target: Target) -> Answer:
        if target.track is None:
            raise _BadRequest(459, "SETUP of the whole session: name a track (trackID=N)")
        stream = await self._open(user, target)
        session = self.session
        given = req.header("session").split(";", 1)[0].strip()
        if session is not None and given and given != session.id:
            raise _BadRequest(454, "no such session")
        if session is None:
            if self._desc_feed is None:
                try:
                    self._desc_feed = self.server.feed_for(stream.hub)
                except Unsupported as e:
                    raise Refused(415, f"{stream.name}: {e}") from None
            feed, self._desc_feed = self._desc_feed, None  # the session owns it now
            session = Session(secrets.token_hex(8), stream, feed)
        feed = session.feed
        index = target.track
        if index not in (VIDEO, AUDIO) or (index == AUDIO and feed.desc.audio is None):
            raise _BadRequest(404, f"no track {index}")
        out = self._transport(req.header("transport"), index, req.url, session)
        if self.session is None:
            self.session = session
            self.server.stats.sessions += 1
        session.tracks[index] = out
        if out.channel >= 0:
            transport = f"RTP/AVP/TCP;unicast;interleaved={out.channel}-{out.channel + 1}"
        else:
            assert out.rtp_addr is not None and out.rtcp_addr is not None
            rtp, rtcp = self.server.udp_ports
            transport = f"RTP/AVP;unicast;client_port={out.rtp_addr[1]}-{out.rtcp_addr[1]};server_port={rtp}-{rtcp}"
        transport += f";ssrc={feed.ssrc(index):08X}"
        return 200, {"Transport": transport, "Session": f"{session.id};timeout={SESSION_TIMEOUT}"}, b""

    def _transport(self, header: str, index: int, url: str, session: Session) -> TrackOut:
        """The first transport of the client's list that we serve: TCP interleaved or UDP unicast."""
        for spec in header.split(","):
            parts = [p.strip() for p in spec.split(";") if p.strip()]
            if not parts:
                continue
            proto = parts[0].upper()
            params: dict[str, str] = {}
            for p in parts[1:]:
                k, _, v = p.partition("=")
                params[k.lower()] = v
            if "multicast" in params:
                continue
            if proto == "RTP/AVP/TCP":
                if session.tracks and any(t.channel < 0 for t in session.tracks.values()):
                    continue  # one transport per session
                channel = _pair(params.get("interleaved", ""))
                if channel is None:
                    channel = 2 * index
                if channel > 253 or any(t.channel in (channel, channel + 1) for t in session.tracks.values()):
                    continue
                return TrackOut(index, url, channel=channel)
            if proto in ("RTP/AVP", "RTP/AVP/UDP"):
                if session.tracks and any(t.channel >= 0 for t in session.tracks.values()):
                    continue
                port = _pair(params.get("client_port", ""))
                if port is None or not 0 < port < 65535:
                    continue
                session.udp = True
                return TrackOut(index, url, rtp_addr=(self.peer, port), rtcp_addr=(self.peer, port + 1))
        raise _BadRequest(461, "no supported transport (RTP/AVP/TCP interleaved or RTP/AVP unicast UDP)")

    # -- playing ----------------------------------------------------------------------------------------
    def _play(self, session: Session) -> dict[str, str]:
        hub = session.stream.hub
        feed = session.feed
        start = hub.keyframe_seq if hub.keyframe_seq is not None else hub.next_seq
        first = hub.get(start)
        start_media = 0.0
        infos: list[str] = []
        key = feed.frame(first) if first is not None else None
        if key is not None:
            start_media = key.media
        for index, out in sorted(session.tracks.items()):
            frame = key if index == VIDEO else self._first_audio(session, start, start_media)
            if frame is not None:
                infos.append(f"url={out.url};seq={frame.first_seq};rtptime={frame.timestamp}")
            else:
                infos.append(f"url={out.url};seq={feed.next_packet_seq(index)}")
        session.task = asyncio.create_task(self._send(session, start, start_media))
        self.server.stats.playing += 1
        self.server.stats.total += 1
        token = self.target.token if self.target else "?"
        self.server.by_token[token] = self.server.by_token.get(token, 0) + 1
        kind = "UDP" if session.udp else "TCP"
        log.info("%s: RTSP client %s (%s) playing over %s", session.stream.name, self.peer_label, self.user, kind)
        return {"RTP-Info": ",".join(infos), "Range": "npt=now-"}

    def _first_audio(self, session: Session, start: int, start_media: float) -> RtpFrame | None:
        hub = session.stream.hub
        for seq in range(start, hub.next_seq):
            frag = hub.get(seq)
            if frag is None or frag.video:
                continue
            frame = session.feed.frame(frag)
            if frame is not None and frame.track == AUDIO and frame.media >= start_media - 0.001:
                return frame
        return None

    async def _send(self, session: Session, start: int, start_media: float) -> None:
        """The hot loop: this client's cursor on the hub, the feed's shared packets out to its transport."""
        server = self.server
        hub = session.stream.hub
        feed = session.feed
        cursor = hub.cursor()
        cursor.seq = start
        cursor.slow_seconds = server.slow_seconds
        writer = self.writer
        transport = writer.transport
        tracks = session.tracks
        next_sr = 0.0
        burst = 0
        why = ""
        try:
            while True:
                frag = cursor.next_nowait()
                if frag is None:
                    frag = await cursor.next()
                    if frag is None:
                        continue
                frame = feed.frame(frag)
                if feed.broken:
                    why = "stream format changed"
                    break
                if frame is None:
                    continue
                out = tracks.get(frame.track)
                if out is None or (frame.track == AUDIO and frame.media < start_media - 0.001):
                    continue
                if out.channel >= 0:
                    writer.write(frame.interleaved(out.channel))
                    if transport.get_write_buffer_size() > HIGH_WATER:
                        try:
                            await asyncio.wait_for(writer.drain(), server.send_timeout)
                        except TimeoutError:
                            server.stats.slow_disconnects += 1
                            why = f"stopped reading for {server.send_timeout:.0f}s"
                            break
                else:
                    assert out.rtp_addr is not None
                    server.udp_send(frame.packets, out.rtp_addr)
                    if hub.get(cursor.seq) is not None:  # catching up from the ring (the GOP cache): pace it
                        burst += frame.octets
                        if burst >= UDP_BURST:
                            burst = 0
                            await asyncio.sleep(UDP_PAUSE)
                    else:
                        burst = 0
                out.packets += len(frame.packets)
                out.octets += frame.octets
                out.last_ts, out.last_media = frame.timestamp, frame.media
                first = not out.sent
                out.sent = True
                now = time.monotonic()
                if first or now >= next_sr:
                    if not first:
                        next_sr = now + SR_INTERVAL
                    for t in tracks.values():
                        if t.sent:
                            self._report(session, t)
        except HubClosed:
            why = "source deleted"
        except (ConnectionError, OSError):
            why = "connection lost"
        if why:
            log.info("%s: RTSP client %s disconnected: %s", session.stream.name, self.peer_label, why)
            self.close()

    def _report(self, session: Session, out: TrackOut) -> None:
        feed = session.feed
        data = sender_report(feed.ssrc(out.index), feed.ntp_of(out.last_media), out.last_ts, out.packets, out.octets)
        if out.channel >= 0:
            self.writer.write(bytes([0x24, out.channel + 1]) + len(data).to_bytes(2, "big") + data)
        elif out.rtcp_addr is not None:
            self.server.udp_rtcp(data, out.rtcp_addr)

    async def _stop_sender(self, session: Session) -> None:
        task, session.task = session.task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if task is not None:
            self.server.stats.playing -= 1
            token = self.target.token if self.target else "?"
            left = self.server.by_token.get(token, 0) - 1
            if left > 0:
                self.server.by_token[token] = left
            else:
                self.server.by_token.pop(token, None)

    async def _end_session(self) -> None:
        session, self.session = self.session, None
        if session is None:
            return
        await self._stop_sender(session)
        self.server.feed_done(session.feed)
        self.server.stats.sessions -= 1
        log.info("%s: RTSP session of %s ended", session.stream.name, self.peer_label)


def _pair(text: str) -> int | None:
    """The first number of `a-b` (interleaved=0-1, client_port=5000-5001)."""
    first = text.split("-", 1)[0].strip()
    if not first.isdigit() or len(first) > 5:
        return None
    return int(first)


def _clean(url: str) -> str:
    """A URL for a log line: without a session id in its query."""
    return re.sub(r"(session=)[^&/]*", r"\1***", url)[:200]
