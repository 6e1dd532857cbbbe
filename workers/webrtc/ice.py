"""ICE set up the way H5Stream's server is: local addresses, a UDP port range, a public address to advertise.

aiortc/aioice have no such options, so the sidecar adapts them in three small places: which addresses
aioice gathers host candidates on (it never offers loopback, which leaves a box whose only interface is
`lo` with no candidate at all), an event loop that binds ICE sockets inside the port range, and the offer
SDP, where the public IP is added as a server-reflexive candidate for each host port (a NAT that forwards
the port range then reaches us). STUN/TURN servers are for the browser only: the sidecar asks none.
"""

from __future__ import annotations

import asyncio
import errno
import re
from collections.abc import Callable
from typing import Any

import aioice.ice

CANDIDATE_RE = re.compile(r"^a=candidate:(\S+) (\d+) (udp|UDP) (\d+) (\d{1,3}(?:\.\d{1,3}){3}) (\d+) typ host\b")

_original_host_addresses = aioice.ice.get_host_addresses


def use_host_addresses(configured: list[str]) -> None:
    """Host candidates on the configured addresses; by default every interface's, loopback if nothing else."""

    def host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        if configured:
            return [a for a in configured if (":" in a and use_ipv6) or (":" not in a and use_ipv4)]
        found = _original_host_addresses(use_ipv4=use_ipv4, use_ipv6=use_ipv6)
        return found or (["127.0.0.1"] if use_ipv4 else [])

    aioice.ice.get_host_addresses = host_addresses


class PortRangeLoop(asyncio.SelectorEventLoop):
    """An event loop whose UDP sockets asked for 'any port' get one from [low, high] instead."""

    def __init__(self, low: int, high: int) -> None:
        super().__init__()
        self.ports = range(low, high + 1) if 0 < low <= high else range(0)
        self._next = 0

    async def create_datagram_endpoint(
        self,
        protocol_factory: Callable[[], Any],
        local_addr: Any = None,
        remote_addr: Any = None,
        **kwargs: Any,
    ) -> Any:
        if not self.ports or local_addr is None or local_addr[1] != 0:
            return await super().create_datagram_endpoint(protocol_factory, local_addr, remote_addr, **kwargs)
        for _ in range(len(self.ports)):
            port = self.ports[self._next % len(self.ports)]
            self._next += 1
            try:
                return await super().create_datagram_endpoint(
                    protocol_factory, (local_addr[0], port), remote_addr, **kwargs
                )
            except OSError as e:
                if e.errno != errno.EADDRINUSE:
                    raise
        raise OSError(errno.EADDRINUSE, f"no free UDP port in {self.ports.start}-{self.ports.stop - 1}")


def advertise_public_ip(sdp: str, public_ip: str) -> str:
    """Add a srflx candidate on public_ip for every IPv4 host candidate's port (H5Stream's cloud mode)."""
    if not public_ip:
        return sdp
    out = []
    for line in sdp.splitlines():
        out.append(line)
        m = CANDIDATE_RE.match(line)
        if m and m.group(5) != public_ip:
            foundation, component, proto, priority, ip, port = m.groups()
            out.append(
                f"a=candidate:p{foundation} {component} {proto} {int(priority) - 1} {public_ip} {port} "
                f"typ srflx raddr {ip} rport {port}"
            )
    return "\r\n".join(out) + "\r\n"
