"""Where the cluster's Redis is and who this node is: the startup settings, overlaid by the console's values.

The config file/environment (redis_* and node_* settings) say how a node starts; SetRedisConf and
SetEnableRedis store the vendor console's values (ConfStore section "redis"), and once stored those win,
as every other settings page does. One frozen value, so a change is a new object compared as a whole.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import asdict, dataclass, replace
from typing import Any

from supervisor.config import Settings

NODE_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
HOST_NAME = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,62})(\.[A-Za-z0-9]([A-Za-z0-9-]{0,62}))*$")
STORED = "redis"  # the ConfStore section SetRedisConf/SetEnableRedis write


@dataclass(frozen=True)
class ClusterConf:
    enable: bool
    host: str  # the Redis server
    port: int
    ssl: bool
    password: str  # Redis AUTH; never shown by GetRedisConf
    node_id: str
    node_name: str
    node_ip: str  # where other nodes reach this node's HTTP port, "IP" or "IP:PORT" ("" = http_host)
    http_host: str  # this node's own HTTP listen address and port, the fallback for node_ip
    http_port: int
    lease_seconds: float

    @classmethod
    def effective(cls, settings: Settings, stored: dict[str, Any] | None, host_id: str) -> ClusterConf:
        """The settings with the console's stored values over them (only keys it stored, each checked again)."""
        listen = settings.host if settings.host not in ("0.0.0.0", "::", "") else "127.0.0.1"
        conf = cls(
            enable=settings.redis_enable,
            host=settings.redis_host,
            port=settings.redis_port,
            ssl=settings.redis_ssl,
            password=settings.redis_password,
            node_id=settings.node_id or host_id,
            node_name=settings.node_name,
            node_ip=settings.node_ip,
            http_host=listen,
            http_port=settings.port,
            lease_seconds=settings.cluster_lease_seconds,
        )
        changes: dict[str, Any] = {}
        for key, value in (stored or {}).items():
            if key in ("enable", "ssl") and isinstance(value, bool):
                changes[key] = value
            elif key == "port" and isinstance(value, int) and 1 <= value <= 65535:
                changes[key] = value
            elif key in ("host", "node_id", "node_name", "node_ip") and isinstance(value, str):
                changes[key] = value
        conf = replace(conf, **changes)
        if not conf.node_id:
            conf = replace(conf, node_id=host_id)
        return conf

    @property
    def name(self) -> str:
        return self.node_name or self.node_id

    @property
    def address(self) -> str:
        """host:port other nodes open for this node's HTTP/WebSocket API."""
        if not self.node_ip:
            return f"{self.http_host}:{self.http_port}"
        host, port = split_address(self.node_ip)
        host = f"[{host}]" if ":" in host else host
        return f"{host}:{port or self.http_port}"

    def console(self) -> dict[str, Any]:
        """GetRedisConf's fields, as h5sweb's cluster page binds them (no password)."""
        return {
            "strServerIp": self.host,
            "nServerPort": self.port,
            "strNodeId": self.node_id,
            "strNodeName": self.name,
            "strNodeIp": self.node_ip,
            "bSSL": self.ssl,
            "enable": self.enable,
        }

    def stored(self) -> dict[str, Any]:
        """What SetRedisConf/SetEnableRedis keep (the connection's values; not the password or the lease)."""
        data = asdict(self)
        return {k: data[k] for k in ("enable", "host", "port", "ssl", "node_id", "node_name", "node_ip")}

    def same_link(self, other: ClusterConf) -> bool:
        """Whether `other` talks to the same Redis as the same node (no reconnect needed)."""
        keys = ("host", "port", "ssl", "password", "node_id")
        return all(getattr(self, k) == getattr(other, k) for k in keys)


def split_address(text: str) -> tuple[str, int]:
    """ "IP", "IP:PORT", "[v6]:PORT" or "name[:PORT]" -> (host, port or 0); ValueError when malformed."""
    text = text.strip()
    port = 0
    host = text
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ValueError("unclosed [")
        host, rest = text[1:end], text[end + 1 :]
        if rest:
            if not rest.startswith(":"):
                raise ValueError("junk after ]")
            port = _port(rest[1:])
        ipaddress.IPv6Address(host)
        return host, port
    if text.count(":") == 1:
        host, tail = text.split(":")
        port = _port(tail)
    elif text.count(":") > 1:
        ipaddress.IPv6Address(text)
        return text, 0
    if not host:
        raise ValueError("empty host")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if not HOST_NAME.match(host):
            raise ValueError("not an IP address or host name") from None
    return host, port


def _port(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise ValueError("port must be 1-65535")
    return int(text)
