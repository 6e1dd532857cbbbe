"""Network namespaces for tests of servers that must not reach each other both ways (cloud edges behind NAT).

`NatNetwork(edges=2)` makes, with `ip netns` and veth pairs, private addresses only:

    centre ns  192.0.2.1/24 ──── 192.0.2.254 router ns (NAT: nft masquerade)  10.N.0.1/24 ──── 10.N.0.2/24  edge N ns
                                                                              (one veth pair per edge)

An edge's packets to the centre leave the router from 192.0.2.254, so the centre sees the router and has
no route at all to 10.N.0.0/24: it cannot open a connection to an edge, as with an edge behind a NAT.
`enter(name)` moves the calling thread (and every process it starts) into a namespace and back.
Needs root, iproute2 and nftables; nothing is routed to any real network.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import subprocess
from collections.abc import Iterator
from types import TracebackType
from typing import Self

CLONE_NEWNET = 0x40000000
CENTRE_IP = "192.0.2.1"
ROUTER_IP = "192.0.2.254"


def edge_ip(n: int) -> str:
    return f"10.{n}.0.2"


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


class NatNetwork:
    def __init__(self, edges: int = 2) -> None:
        self.prefix = f"h5n{os.getpid() % 100000}"
        self.centre = f"{self.prefix}c"
        self.router = f"{self.prefix}r"
        self.edges = [f"{self.prefix}e{n}" for n in range(1, edges + 1)]
        self._made: list[str] = []

    def __enter__(self) -> Self:
        try:
            self._build()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def _ns(self, name: str) -> None:
        _ip("netns", "add", name)
        self._made.append(name)
        _ip("-n", name, "link", "set", "lo", "up")

    def _pair(self, a_ns: str, a: str, a_addr: str, b_ns: str, b: str, b_addr: str) -> None:
        _ip("link", "add", a, "type", "veth", "peer", "name", b)
        for ns, dev, addr in ((a_ns, a, a_addr), (b_ns, b, b_addr)):
            _ip("link", "set", dev, "netns", ns)
            _ip("-n", ns, "addr", "add", addr, "dev", dev)
            _ip("-n", ns, "link", "set", dev, "up")

    def _build(self) -> None:
        p = self.prefix
        for name in (self.centre, self.router, *self.edges):
            self._ns(name)
        self._pair(self.centre, f"{p}c0", f"{CENTRE_IP}/24", self.router, f"{p}r0", f"{ROUTER_IP}/24")
        for n, edge in enumerate(self.edges, start=1):
            self._pair(self.router, f"{p}r{n}", f"10.{n}.0.1/24", edge, f"{p}e{n}", f"{edge_ip(n)}/24")
            _ip("-n", edge, "route", "add", "default", "via", f"10.{n}.0.1")
        subprocess.run(
            ["ip", "netns", "exec", self.router, "sysctl", "-qw", "net.ipv4.ip_forward=1"], check=True, timeout=10
        )
        chain = f'type nat hook postrouting priority 100;\n  oifname "{p}r0" masquerade'
        rules = f"table ip nat {{\n chain post {{\n  {chain}\n }}\n}}\n"
        subprocess.run(
            ["ip", "netns", "exec", self.router, "nft", "-f", "-"], input=rules.encode(), check=True, timeout=10
        )

    def close(self) -> None:
        for name in reversed(self._made):
            subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=10)
        self._made.clear()

    def link(self, edge: int, up: bool) -> None:
        """Cut (or restore) edge N's cable: its packets and the centre's to it vanish without a reset."""
        _ip("-n", self.edges[edge - 1], "link", "set", f"{self.prefix}e{edge}", "up" if up else "down")
        if up:
            _ip("-n", self.edges[edge - 1], "route", "replace", "default", "via", f"10.{edge}.0.1")

    @contextlib.contextmanager
    def enter(self, name: str) -> Iterator[None]:
        """Run the calling thread in namespace `name` (a socket keeps the namespace it was made in)."""
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        back = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        target = os.open(f"/run/netns/{name}", os.O_RDONLY)
        try:
            if libc.setns(target, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), f"setns to {name} failed (needs root)")
            try:
                yield
            finally:
                if libc.setns(back, CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), "setns back failed")
        finally:
            os.close(target)
            os.close(back)
