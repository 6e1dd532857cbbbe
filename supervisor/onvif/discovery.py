"""WS-Discovery: our own asyncio probe, sent to configured targets, and the parsing of its answers.

Why our own: the WSDiscovery package can only multicast, and tests (and locked-down hosts) must probe a
responder on loopback by unicast; on a real LAN the target is the multicast group 239.255.255.250:3702.
Answers are untrusted datagrams: parsed without entities or network access, and only if they answer
one of our own probes.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import re
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from lxml import etree

from supervisor.onvif.text import short
from supervisor.onvif.urls import DEFAULT_ONVIF_ADDR, is_loopback

log = logging.getLogger("h5gate.onvif")

DISCOVERY_PORT = 3702
_XML = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False, remove_comments=True)
_PROBE = """<?xml version="1.0" encoding="UTF-8"?>
<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope" \
xmlns:a="http://schemas.xmlsoap.org/ws/2004/08/addressing" \
xmlns:d="http://schemas.xmlsoap.org/ws/2005/04/discovery" \
xmlns:dn="http://www.onvif.org/ver10/network/wsdl" xmlns:tds="http://www.onvif.org/ver10/device/wsdl">
<s:Header><a:Action s:mustUnderstand="1">http://schemas.xmlsoap.org/ws/2005/04/discovery/Probe</a:Action>
<a:MessageID>{mid}</a:MessageID>
<a:ReplyTo><a:Address>http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous</a:Address></a:ReplyTo>
<a:To s:mustUnderstand="1">urn:schemas-xmlsoap-org:ws:2005:04:discovery</a:To></s:Header>
<s:Body><d:Probe><d:Types>{types}</d:Types></d:Probe></s:Body></s:Envelope>"""


@dataclass(frozen=True)
class DiscoveryTarget:
    host: str
    port: int
    interface: str = ""  # local address to send from (multicast: the outgoing interface)

    @property
    def multicast(self) -> bool:
        return ipaddress.ip_address(self.host).is_multicast


@dataclass(frozen=True)
class DiscoveredDevice:
    """One device that answered a probe: where its device service is, and what its scopes call it."""

    ip: str
    port: int
    onvif_addr: str
    model: str = ""
    name: str = ""


def parse_targets(text: str) -> list[DiscoveryTarget]:
    """'239.255.255.250:3702[@<local ip>]' (comma-separated for several); IPv4 literals only."""
    targets = []
    for item in filter(None, (t.strip() for t in text.split(","))):
        hostport, _, iface = item.partition("@")
        host, _, port = hostport.rpartition(":") if ":" in hostport else (hostport, "", str(DISCOVERY_PORT))
        try:
            ipaddress.IPv4Address(host)
            if iface:
                ipaddress.IPv4Address(iface)
            port_n = int(port)
        except ValueError:
            raise ValueError(f"invalid ONVIF discovery target {item!r}: use IPv4:PORT[@LOCAL_IPv4]") from None
        if not 0 < port_n < 65536:
            raise ValueError(f"invalid port in ONVIF discovery target {item!r}")
        targets.append(DiscoveryTarget(host, port_n, iface))
    if not targets:
        raise ValueError("no ONVIF discovery target configured")
    return targets


class _Collector(asyncio.DatagramProtocol):
    def __init__(self, sink: Callable[[bytes, tuple[str, int]], None]) -> None:
        self.sink = sink

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.sink(data, addr)

    def error_received(self, exc: Exception) -> None:
        log.debug("onvif discovery: socket error %s", exc)


def parse_probe_matches(data: bytes, sender: str, message_ids: set[str]) -> list[DiscoveredDevice]:
    """ProbeMatches -> the devices in it; junk, or an answer to someone else's probe, gives []."""
    try:
        root = etree.fromstring(data, _XML)
    except etree.XMLSyntaxError:
        return []
    relates = root.xpath("//*[local-name()='RelatesTo']/text()")
    if relates and relates[0].strip() not in message_ids:
        return []
    out = []
    for match in root.xpath("//*[local-name()='ProbeMatch']"):
        xaddrs = " ".join(match.xpath("./*[local-name()='XAddrs']/text()")).split()
        scopes = " ".join(match.xpath("./*[local-name()='Scopes']/text()")).split()
        chosen = _choose_xaddr(xaddrs, sender)
        if chosen is None:
            continue
        parts = urlsplit(chosen)
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            continue
        out.append(
            DiscoveredDevice(
                ip=parts.hostname or sender,
                port=port,
                onvif_addr=parts.path or DEFAULT_ONVIF_ADDR,
                model=_scope(scopes, "hardware"),
                name=_scope(scopes, "name"),
            )
        )
    return out


def _choose_xaddr(xaddrs: list[str], sender: str) -> str | None:
    """Prefer the address the answer came from, then any IPv4 http(s) address."""
    usable = [x for x in xaddrs if x.lower().startswith(("http://", "https://"))]
    for x in usable:
        if urlsplit(x).hostname == sender:
            return x
    for x in usable:
        host = urlsplit(x).hostname or ""
        if re.fullmatch(r"[0-9.]+", host):
            return x
    return usable[0] if usable else None


def _scope(scopes: list[str], kind: str) -> str:
    prefix = f"onvif://www.onvif.org/{kind}/"
    for s in scopes:
        if s.lower().startswith(prefix):
            return short(unquote(s[len(prefix) :]), 80)
    return ""


async def discover(target: str, timeout: float) -> list[DiscoveredDevice]:
    """Send WS-Discovery Probes to the configured target(s) and collect answers for `timeout` seconds."""
    targets = parse_targets(target)
    loop = asyncio.get_running_loop()
    found: dict[tuple[str, int, str], DiscoveredDevice] = {}
    message_ids: set[str] = set()
    transports: list[asyncio.DatagramTransport] = []

    def sink(data: bytes, addr: tuple[str, int]) -> None:
        for dev in parse_probe_matches(data, addr[0], message_ids):
            found.setdefault((dev.ip, dev.port, dev.onvif_addr), dev)

    started = time.monotonic()
    try:
        for t in targets:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
            try:
                sock.setblocking(False)
                if t.multicast:
                    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
                    if t.interface:
                        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(t.interface))
                sock.bind((t.interface or ("127.0.0.1" if is_loopback(t.host) else "0.0.0.0"), 0))
                transport, _ = await loop.create_datagram_endpoint(lambda: _Collector(sink), sock=sock)
            except OSError:
                sock.close()
                raise
            transports.append(transport)
        # Two probe types (cameras answer NetworkVideoTransmitter, some NVRs only Device), sent twice:
        # UDP may drop one, and WS-Discovery expects senders to repeat.
        for attempt in range(2):
            for t, transport in zip(targets, transports, strict=True):
                for types in ("dn:NetworkVideoTransmitter", "tds:Device"):
                    mid = f"urn:uuid:{uuid.uuid4()}"
                    message_ids.add(mid)
                    transport.sendto(_PROBE.format(mid=mid, types=types).encode(), (t.host, t.port))
            if attempt == 0:
                await asyncio.sleep(min(0.5, timeout / 4))
        await asyncio.sleep(max(0.0, timeout - (time.monotonic() - started)))
    finally:
        for transport in transports:
            transport.close()
    devices = sorted(found.values(), key=lambda d: (d.ip, d.port))
    log.info("onvif search via %s: %d device(s) in %.1f s", target, len(devices), time.monotonic() - started)
    return devices
