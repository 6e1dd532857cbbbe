"""Device and stream addresses: where a device lives, and the URLs it hands out.

Why: cameras advertise stream URIs with 0.0.0.0 or loopback hosts that mean "me". Adding, stripping and
redacting credentials is workers/credentials.py's job, with one meaning for the whole gateway.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

DEFAULT_ONVIF_ADDR = "/onvif/device_service"


@dataclass(frozen=True)
class DeviceAddress:
    """Where and as whom to reach a device; the password never shows in repr()."""

    ip: str
    port: int = 80
    onvif_addr: str = DEFAULT_ONVIF_ADDR
    user: str = ""
    password: str = field(default="", repr=False)

    @property
    def label(self) -> str:
        return f"{bracket(self.ip)}:{self.port}"

    @property
    def device_url(self) -> str:
        return f"http://{self.label}{self.onvif_addr or DEFAULT_ONVIF_ADDR}"

    def secrets(self) -> tuple[str, ...]:
        return tuple(s for s in (self.user, self.password) if s)


def bracket(host: str) -> str:
    """An IPv6 literal in brackets, as a URL's host needs it; anything else unchanged."""
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def fix_stream_host(uri: str, device_ip: str) -> str:
    """Cameras sometimes advertise 0.0.0.0 or loopback in URIs; those mean 'me', i.e. the device's IP."""
    parts = urlsplit(uri)
    host = parts.hostname or ""
    loopback = host == "localhost" or is_loopback(host)
    if host in ("", "0.0.0.0") or (loopback and not is_loopback(device_ip)):
        userinfo = parts.netloc.rpartition("@")[0]  # kept as the device wrote it
        port = f":{parts.port}" if parts.port else ""
        netloc = (f"{userinfo}@" if userinfo else "") + bracket(device_ip) + port
        return urlunsplit(parts._replace(netloc=netloc))
    return uri


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return host == "localhost"
