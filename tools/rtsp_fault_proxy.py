#!/usr/bin/env python3
"""Fault-injecting TCP proxy in front of a test camera (stdlib only, asyncio).

Real cameras freeze, die mid-stream and refuse connections; the gateway's reconnect
logic must be tested against exactly that, so this proxy sits between client and
camera and switches behaviour at runtime over a tiny HTTP control endpoint:

    GET /mode              -> {"mode": ..., "connections": ..., "accepted": ...}
    GET /mode?set=normal   -> forward bytes both ways
    GET /mode?set=freeze   -> keep sockets open, forward nothing (silent camera)
    GET /mode?set=drop     -> close every current connection, then act as normal
    GET /mode?set=refuse   -> accept new connections and close them at once

A camera's clock misbehaving (reboot, NTP step, a restarted pipeline) is simulated by rewriting RTP
timestamps in flight, in the interleaved ($-framed) RTP and the RTCP sender reports beside it, on every
connection (and on later ones), for all RTP channels or for one (``&channel=N``, N = the interleaved RTP
channel, e.g. 0 for video and 2 for audio), so audio and video can jump separately:

    GET /mode?set=jump_back[&channel=N]     -> the channel's clock goes back 10 s (one-shot, stays shifted)
    GET /mode?set=jump_forward[&channel=N]  -> the channel's clock goes forward 1 h (one-shot, stays shifted)
    GET /mode?set=wrap[&channel=N]          -> shift so the 32-bit timestamp wraps 3 s later; a connection
                                               made afterwards starts 3 s before the wrap (no jump)
    GET /mode?set=jitter[&channel=N]        -> every frame's timestamp moves by up to ±8 ms (same value for
                                               all packets of one frame); ``set=normal`` stops the jitter
                                               but keeps the shifts, as a camera's clock would

The clock rate of each channel comes from the SDP (a=rtpmap) and the SETUP exchange (interleaved=).

RTSP works through it with interleaved transport only (``-rtsp_transport tcp``).
``--silent`` instead runs a server that accepts TCP and never answers (for client
``-timeout`` tests). Everything binds to loopback only.

Prints ``READY listen=HOST:PORT control=HOST:PORT upstream=HOST:PORT`` (or
``READY silent=HOST:PORT``) once listening.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import json
import random
import re
import signal
import socket
import struct
import sys
from collections.abc import Callable, Iterator
from urllib.parse import parse_qs, urlsplit

MODES = ("normal", "freeze", "drop", "refuse", "jump_back", "jump_forward", "wrap", "jitter")
JUMPS = {"jump_back": -10.0, "jump_forward": 3600.0}  # seconds added to a channel's clock
WRAP_AFTER = 3.0  # seconds before the 32-bit wrap that `wrap` puts a channel's timestamps
JITTER = 0.008  # seconds, either way
CHUNK = 65536
ALL = -1  # "every channel" in the per-channel tables


def parse_hostport(text: str) -> tuple[str, int]:
    """'127.0.0.1:8554' -> ('127.0.0.1', 8554); refuses non-loopback hosts on purpose."""
    host, sep, port = text.rpartition(":")
    if not sep or not host:
        raise ValueError(f"expected HOST:PORT, got {text!r}")
    host = host.strip("[]")
    if host != "localhost" and not ipaddress.ip_address(host).is_loopback:
        raise ValueError(f"{host} is not a loopback address; test tools stay on 127.0.0.1")
    return host, int(port)


def _abort(writer: asyncio.StreamWriter, reset: bool = False) -> None:
    """Close now without flushing; with reset=True send RST like a dead host's stack."""
    sock = writer.get_extra_info("socket")
    if reset and sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


def _track(handlers: set[asyncio.Task[None]]) -> None:
    """Remember the running connection handler so close() can wait for it."""
    task = asyncio.current_task()
    if task is not None:
        handlers.add(task)
        task.add_done_callback(handlers.discard)


async def _finish(handlers: set[asyncio.Task[None]], timeout: float = 2.0) -> None:
    if handlers:
        await asyncio.wait(list(handlers), timeout=timeout)


class _Conn:
    """One client<->upstream pair and its two pump tasks."""

    def __init__(self, client: asyncio.StreamWriter, proxy: RtspFaultProxy) -> None:
        self.client = client
        self.upstream: asyncio.StreamWriter | None = None
        self.tasks: list[asyncio.Task[None]] = []
        self.rtp = _RtpRewriter(proxy)

    def close(self) -> None:
        for t in self.tasks:
            t.cancel()
        _abort(self.client)
        if self.upstream is not None:
            _abort(self.upstream)


def _messages(buf: bytearray) -> Iterator[tuple[bool, bytes]]:
    """Cut complete pieces off an RTSP-over-TCP byte stream: (True, $-frame) or (False, RTSP message)."""
    while buf:
        if buf[0] == 0x24:
            if len(buf) < 4:
                return
            end = 4 + struct.unpack_from(">H", buf, 2)[0]
            if len(buf) < end:
                return
            yield True, bytes(buf[:end])
        else:
            head = buf.find(b"\r\n\r\n")
            if head < 0:
                if len(buf) > CHUNK:  # not RTSP at all: pass it on untouched
                    end = len(buf)
                    yield False, bytes(buf[:end])
                    del buf[:end]
                return
            m = re.search(rb"(?im)^content-length:\s*(\d+)", buf[:head])
            end = head + 4 + (int(m.group(1)) if m else 0)
            if len(buf) < end:
                return
            yield False, bytes(buf[:end])
        del buf[:end]


class _RtpRewriter:
    """Per connection: learns each interleaved channel's clock rate and rewrites its RTP/RTCP timestamps."""

    def __init__(self, proxy: RtspFaultProxy) -> None:
        self.proxy = proxy
        self.down = bytearray()  # camera -> client, not yet complete
        self.up = bytearray()  # client -> camera
        self.controls: list[tuple[str, int]] = []  # (a=control, clock rate) per SDP media section
        self.setups: dict[str, str] = {}  # CSeq -> SETUP url
        self.rates: dict[int, int] = {}  # RTP channel -> clock rate
        self.wrap_seen: dict[int, int] = {}  # RTP channel -> wrap requests already applied
        self.extra: dict[int, int] = {}  # RTP channel -> ticks from `wrap`
        self.last_ts: dict[int, int] = {}  # RTP channel -> last timestamp as sent

    def from_client(self, data: bytes) -> None:
        """Watch the requests: a SETUP's URL is paired with its response by CSeq."""
        self.up += data
        for frame, msg in _messages(self.up):
            if frame:
                continue
            lines = msg.split(b"\r\n")
            if lines[0].upper().startswith(b"SETUP "):
                m = re.search(rb"(?im)^cseq:\s*(\d+)", msg)
                if m:
                    self.setups[m.group(1).decode()] = lines[0].split()[1].decode("latin-1")

    def from_camera(self, data: bytes) -> bytes:
        """The bytes to forward: complete pieces, timestamps rewritten; a partial piece waits for the rest."""
        self.down += data
        out = bytearray()
        for frame, msg in _messages(self.down):
            out += self._frame(msg) if frame else self._response(msg)
        return bytes(out)

    def _response(self, msg: bytes) -> bytes:
        body = msg.split(b"\r\n\r\n", 1)[1] if b"\r\n\r\n" in msg else b""
        if b"m=" in body:  # the SDP of DESCRIBE
            self.controls = []
            for section in body.split(b"\nm=")[1:]:
                rate = re.search(rb"a=rtpmap:\d+ [^/\s]+/(\d+)", section)
                control = re.search(rb"a=control:(\S+)", section)
                self.controls.append(
                    (control.group(1).decode("latin-1") if control else "", int(rate.group(1)) if rate else 90000)
                )
        cseq = re.search(rb"(?im)^cseq:\s*(\d+)", msg)
        ch = re.search(rb"(?i)interleaved=(\d+)", msg)
        if cseq and ch and cseq.group(1).decode() in self.setups:
            url = self.setups.pop(cseq.group(1).decode())
            clock = next((r for c, r in self.controls if c and (url == c or url.endswith("/" + c))), 90000)
            self.rates[int(ch.group(1))] = clock
        return msg

    def _shift(self, channel: int, ts: int, rate: int) -> int:
        """Ticks to add to this channel's timestamps now (jumps and wrap; jitter is added per frame)."""
        p = self.proxy
        ticks = round((p.shift.get(ALL, 0.0) + p.shift.get(channel, 0.0)) * rate)
        wraps = p.wraps.get(ALL, 0) + p.wraps.get(channel, 0)
        if wraps != self.wrap_seen.get(channel, 0):
            self.wrap_seen[channel] = wraps
            current = (ts + ticks + self.extra.get(channel, 0)) & 0xFFFFFFFF
            self.extra[channel] = self.extra.get(channel, 0) + ((1 << 32) - round(WRAP_AFTER * rate) - current)
        return ticks + self.extra.get(channel, 0)

    def _frame(self, frame: bytes) -> bytes:
        channel = frame[1]
        rtp = channel - (channel & 1)
        rate = self.rates.get(rtp)
        if rate is None or len(frame) < 12:
            return frame
        if channel & 1:  # RTCP: the sender report's RTP timestamp moves with its stream's clock
            if frame[5] != 200 or len(frame) < 24:
                return frame
            ts = struct.unpack_from(">I", frame, 20)[0]
            new = (ts + self._shift(rtp, ts, rate)) & 0xFFFFFFFF
            return frame[:20] + struct.pack(">I", new) + frame[24:]
        ts = struct.unpack_from(">I", frame, 8)[0]
        new = ts + self._shift(rtp, ts, rate)
        if self.proxy.jitter.get(ALL) or self.proxy.jitter.get(rtp):
            spread = round(JITTER * rate)
            new += random.Random(ts).randint(-spread, spread)  # seeded by the timestamp: one value per frame
        new &= 0xFFFFFFFF
        self.last_ts[rtp] = new
        self.proxy.rewritten += new != ts
        return frame[:8] + struct.pack(">I", new) + frame[12:]


class RtspFaultProxy:
    """Byte-level proxy with switchable faults; usable in-process or via the CLI."""

    def __init__(self, listen: tuple[str, int], upstream: tuple[str, int], control: tuple[str, int]) -> None:
        self.listen_addr = listen
        self.upstream_addr = upstream
        self.control_addr = control
        self.mode = "normal"
        self.accepted = 0
        self._conns: set[_Conn] = set()
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._servers: list[asyncio.Server] = []
        self._handlers: set[asyncio.Task[None]] = set()
        self.shift: dict[int, float] = {}  # channel (or ALL) -> seconds added to its clock
        self.wraps: dict[int, int] = {}  # channel (or ALL) -> wrap requests
        self.jitter: dict[int, bool] = {}  # channel (or ALL) -> jitter on
        self.rewritten = 0  # RTP packets whose timestamp was changed

    @property
    def connections(self) -> int:
        return len(self._conns)

    def status(self) -> dict[str, object]:
        def names(table: dict[int, object]) -> dict[str, object]:
            return {("all" if k == ALL else str(k)): v for k, v in table.items()}

        return {
            "mode": self.mode,
            "connections": self.connections,
            "accepted": self.accepted,
            "shift": names(dict(self.shift)),
            "wraps": names(dict(self.wraps)),
            "jitter": names(dict(self.jitter)),
            "rewritten": self.rewritten,
        }

    def set_mode(self, mode: str, channel: int | None = None) -> None:
        """Switch behaviour; 'drop' and the clock jumps are one-shot actions that leave the mode as it was."""
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}")
        key = ALL if channel is None else channel
        if mode in JUMPS:
            self.shift[key] = self.shift.get(key, 0.0) + JUMPS[mode]
            return
        if mode == "wrap":
            self.wraps[key] = self.wraps.get(key, 0) + 1
            return
        if mode == "jitter":
            self.jitter[key] = True
            mode = "normal"
        elif mode == "normal":
            self.jitter.clear()
        if mode == "drop":
            for conn in list(self._conns):
                conn.close()
            self._conns.clear()
            mode = "normal"
        self.mode = mode
        if mode == "freeze":
            self._flowing.clear()
        else:
            self._flowing.set()

    async def start(self) -> None:
        proxy = await asyncio.start_server(self._on_client, *self.listen_addr)
        control = await asyncio.start_server(self._on_control, *self.control_addr)
        self._servers = [proxy, control]
        self.listen_addr = proxy.sockets[0].getsockname()[:2]
        self.control_addr = control.sockets[0].getsockname()[:2]

    async def close(self) -> None:
        """Stop listening, cut every pair and let the handlers finish (no cancelled-task noise)."""
        for srv in self._servers:
            srv.close()
        for conn in list(self._conns):
            conn.close()
        self._conns.clear()
        await _finish(self._handlers)
        for srv in self._servers:
            await srv.wait_closed()

    async def _on_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        _track(self._handlers)
        self.accepted += 1
        if self.mode == "refuse":
            _abort(writer, reset=True)
            return
        conn = _Conn(writer, self)
        self._conns.add(conn)
        try:
            try:
                up_reader, conn.upstream = await asyncio.open_connection(*self.upstream_addr)
            except OSError:
                return  # upstream down: the client just sees the connection close
            conn.tasks = [
                asyncio.create_task(self._pump(reader, conn.upstream, conn.rtp.from_client)),
                asyncio.create_task(self._pump(up_reader, writer, conn.rtp.from_camera)),
            ]
            # Either side closing ends the pair, like a real TCP hop would.
            await asyncio.wait(conn.tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            conn.close()
            self._conns.discard(conn)

    async def _pump(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        through: Callable[[bytes], bytes | None],
    ) -> None:
        """Copy until EOF; while frozen, hold the data (TCP backpressure stalls the sender).

        `through` sees every chunk: it returns the bytes to send instead (RTP timestamps rewritten), or
        None to send the chunk as it is (it only watches).
        """
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while True:
                await self._flowing.wait()
                data = await reader.read(CHUNK)
                if not data:
                    return
                changed = through(data)
                data = data if changed is None else changed
                await self._flowing.wait()
                if data:
                    writer.write(data)
                    await writer.drain()

    async def _on_control(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            method, target, _ = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ", 2)
            code, ctype, body = self._control(method, target)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ValueError):
            code, ctype, body = 400, "text/plain", "bad request\n"
        reason = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed"}[code]
        payload = body.encode()
        writer.write(
            f"HTTP/1.1 {code} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {len(payload)}\r\n"
            f"Connection: close\r\n\r\n".encode()
            + payload
        )
        with contextlib.suppress(OSError):
            await writer.drain()
        writer.close()

    def _control(self, method: str, target: str) -> tuple[int, str, str]:
        url = urlsplit(target)
        if url.path != "/mode":
            return 404, "text/plain", "not found\n"
        if method != "GET":
            return 405, "text/plain", "GET only\n"
        query = parse_qs(url.query)
        wanted = query.get("set")
        if not wanted:
            return 200, "application/json", json.dumps(self.status()) + "\n"
        if wanted[0] not in MODES:
            return 400, "text/plain", f"mode must be one of {', '.join(MODES)}\n"
        channel = None
        if "channel" in query:
            text = query["channel"][0]
            if not text.isdigit() or int(text) > 254 or int(text) % 2:
                return 400, "text/plain", "channel must be an even interleaved RTP channel, 0-254\n"
            channel = int(text)
        self.set_mode(wanted[0], channel)
        return 200, "text/plain", f"mode {self.mode}\n"


class SilentServer:
    """Accepts TCP and never answers: a camera whose port is open but whose firmware hangs."""

    def __init__(self, listen: tuple[str, int]) -> None:
        self.listen_addr = listen
        self.accepted = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._handlers: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._on_client, *self.listen_addr)
        self.listen_addr = self._server.sockets[0].getsockname()[:2]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for w in list(self._writers):
            _abort(w)
        await _finish(self._handlers)
        if self._server is not None:
            await self._server.wait_closed()

    async def _on_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        _track(self._handlers)
        self.accepted += 1
        self._writers.add(writer)
        try:
            while await reader.read(CHUNK):  # swallow requests, never reply
                pass
        except OSError:
            pass
        finally:
            self._writers.discard(writer)
            writer.close()


def _fmt(addr: tuple[str, int]) -> str:
    return f"{addr[0]}:{addr[1]}"


async def _run(args: argparse.Namespace) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    server: RtspFaultProxy | SilentServer
    if args.silent:
        server = SilentServer(parse_hostport(args.listen))
        await server.start()
        print(f"READY silent={_fmt(server.listen_addr)}", flush=True)
    else:
        server = RtspFaultProxy(
            parse_hostport(args.listen), parse_hostport(args.upstream), parse_hostport(args.control)
        )
        await server.start()
        print(
            f"READY listen={_fmt(server.listen_addr)} control={_fmt(server.control_addr)}"
            f" upstream={_fmt(server.upstream_addr)}",
            flush=True,
        )
    await stop.wait()
    await server.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--listen", default="127.0.0.1:0", help="HOST:PORT clients connect to (0 = any free)")
    p.add_argument("--upstream", help="HOST:PORT of the real camera")
    p.add_argument("--control", default="127.0.0.1:0", help="HOST:PORT of the HTTP control endpoint")
    p.add_argument("--silent", action="store_true", help="accept TCP and never answer; no upstream")
    args = p.parse_args(argv)
    if not args.silent and not args.upstream:
        p.error("--upstream is required unless --silent")
    try:
        for value in (args.listen, args.control, args.upstream):
            if value:
                parse_hostport(value)
    except ValueError as exc:
        p.error(str(exc))
    asyncio.run(_run(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
