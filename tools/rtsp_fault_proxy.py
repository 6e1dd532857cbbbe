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
import signal
import socket
import struct
import sys
from urllib.parse import parse_qs, urlsplit

MODES = ("normal", "freeze", "drop", "refuse")
CHUNK = 65536


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

    def __init__(self, client: asyncio.StreamWriter) -> None:
        self.client = client
        self.upstream: asyncio.StreamWriter | None = None
        self.tasks: list[asyncio.Task[None]] = []

    def close(self) -> None:
        for t in self.tasks:
            t.cancel()
        _abort(self.client)
        if self.upstream is not None:
            _abort(self.upstream)


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

    @property
    def connections(self) -> int:
        return len(self._conns)

    def status(self) -> dict[str, object]:
        return {"mode": self.mode, "connections": self.connections, "accepted": self.accepted}

    def set_mode(self, mode: str) -> None:
        """Switch behaviour; 'drop' is a one-shot action that leaves the proxy in 'normal'."""
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}")
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
        conn = _Conn(writer)
        self._conns.add(conn)
        try:
            try:
                up_reader, conn.upstream = await asyncio.open_connection(*self.upstream_addr)
            except OSError:
                return  # upstream down: the client just sees the connection close
            conn.tasks = [
                asyncio.create_task(self._pump(reader, conn.upstream)),
                asyncio.create_task(self._pump(up_reader, writer)),
            ]
            # Either side closing ends the pair, like a real TCP hop would.
            await asyncio.wait(conn.tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            conn.close()
            self._conns.discard(conn)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Copy until EOF; while frozen, hold the data (TCP backpressure stalls the sender)."""
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while True:
                await self._flowing.wait()
                data = await reader.read(CHUNK)
                if not data:
                    return
                await self._flowing.wait()
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
        wanted = parse_qs(url.query).get("set")
        if not wanted:
            return 200, "application/json", json.dumps(self.status()) + "\n"
        if wanted[0] not in MODES:
            return 400, "text/plain", f"mode must be one of {', '.join(MODES)}\n"
        self.set_mode(wanted[0])
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
