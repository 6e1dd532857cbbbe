"""The RTSP re-serve's UDP side: one shared RTP/RTCP port pair for every UDP client.

Datagrams go only to the address a client's SETUP came from; RTCP receiver reports arriving on the RTCP
port are a UDP client's sign of life (the server ends sessions that show none).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable


class _RtcpIn(asyncio.DatagramProtocol):
    """Receiver reports on the server's RTCP port: a UDP client's sign of life."""

    def __init__(self, on_rtcp: Callable[[tuple[str, int]], None]) -> None:
        self.on_rtcp = on_rtcp

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.on_rtcp((addr[0], addr[1]))


class UdpPair:
    """The server's shared RTP/RTCP ports (an even port and the one above it)."""

    def __init__(self, on_rtcp: Callable[[tuple[str, int]], None]) -> None:
        self.rtp: asyncio.DatagramTransport | None = None
        self.rtcp: asyncio.DatagramTransport | None = None
        self.ports = (0, 0)
        self.on_rtcp = on_rtcp

    async def open(self, host: str) -> None:
        loop = asyncio.get_running_loop()
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        for _ in range(64):
            rtp_sock = socket.socket(family, socket.SOCK_DGRAM)
            rtcp_sock = socket.socket(family, socket.SOCK_DGRAM)
            try:
                rtp_sock.bind((host, 0))
                port = rtp_sock.getsockname()[1]
                if port % 2 or port >= 65535:
                    raise OSError("odd port")
                rtcp_sock.bind((host, port + 1))
            except OSError:
                rtp_sock.close()
                rtcp_sock.close()
                continue
            rtp_sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
            self.rtp, _ = await loop.create_datagram_endpoint(asyncio.DatagramProtocol, sock=rtp_sock)
            self.rtcp, _ = await loop.create_datagram_endpoint(lambda: _RtcpIn(self.on_rtcp), sock=rtcp_sock)
            self.ports = (port, port + 1)
            return
        raise OSError("no free UDP port pair for RTP/RTCP")

    def close(self) -> None:
        for t in (self.rtp, self.rtcp):
            if t is not None:
                t.close()
