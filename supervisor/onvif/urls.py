"""Device and stream addresses: where a device lives, and the URLs it hands out.

Why: cameras advertise stream URIs with 0.0.0.0 or loopback hosts that mean "me"; passwords may contain
'@', ':' and '/', so userinfo is split from the right and percent-encoded when added.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from urllib.parse import quote, urlsplit, urlunsplit

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


def _split_netloc(netloc: str) -> tuple[str, str]:
    """'user:pw@host:port' -> ('user:pw', 'host:port'); rpartition because passwords may contain '@'."""
    userinfo, at, hostport = netloc.rpartition("@")
    return (userinfo if at else ""), hostport


def with_credentials(url: str, user: str, password: str) -> str:
    """The URL with user/password percent-encoded into it, replacing any it had.

    Percent-encoding (RFC 3986 userinfo) keeps '@', ':', '/' and friends in a password from being
    read as URL syntax; ffmpeg URL-decodes the userinfo before it authenticates.
    """
    if not user:
        return url
    parts = urlsplit(url)
    _, hostport = _split_netloc(parts.netloc)
    userinfo = quote(user, safe="") + (":" + quote(password, safe="") if password else "")
    return urlunsplit(parts._replace(netloc=f"{userinfo}@{hostport}"))


def strip_credentials(url: str) -> str:
    """The URL without any userinfo: what GetSrc and the logs may show."""
    parts = urlsplit(url)
    userinfo, hostport = _split_netloc(parts.netloc)
    return urlunsplit(parts._replace(netloc=hostport)) if userinfo else url


def redact_url(url: str) -> str:
    """rtsp://***@host/... : shows that credentials are there without showing them."""
    parts = urlsplit(url)
    userinfo, hostport = _split_netloc(parts.netloc)
    return urlunsplit(parts._replace(netloc=f"***@{hostport}")) if userinfo else url


def fix_stream_host(uri: str, device_ip: str) -> str:
    """Cameras sometimes advertise 0.0.0.0 or loopback in URIs; those mean 'me', i.e. the device's IP."""
    parts = urlsplit(uri)
    host = parts.hostname or ""
    loopback = host == "localhost" or is_loopback(host)
    if host in ("", "0.0.0.0") or (loopback and not is_loopback(device_ip)):
        userinfo, _ = _split_netloc(parts.netloc)
        port = f":{parts.port}" if parts.port else ""
        netloc = (f"{userinfo}@" if userinfo else "") + bracket(device_ip) + port
        return urlunsplit(parts._replace(netloc=netloc))
    return uri


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return host == "localhost"
