"""The RTSP re-serve's request grammar: a request's header block, and what its URL names.

Kept apart from the server so the parsing a malformed request meets is small and read on its own: every
reason it returns becomes a 4xx reply, never an exception.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import parse_qsl, unquote, urlsplit

TRACK_RE = re.compile(r"/?trackID=(\d+)", re.IGNORECASE)


@dataclass
class Request:
    method: str
    url: str
    headers: dict[str, str]
    cseq: str

    def header(self, name: str) -> str:
        return self.headers.get(name.lower(), "")


@dataclass
class Target:
    """What a request URL names: the source token, profile, a session id and a track."""

    token: str
    profile: str
    session: str
    track: int | None


def parse_target(url: str) -> Target | None:
    """`rtsp://h:p/<token>`, `/live/<token>`, `?profile=sub`, `?session=`, `/trackID=N` (before or after
    the query: clients join the control URL either way); None when no token can be read."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    if parts.scheme and parts.scheme.lower() not in ("rtsp", "rtspu"):
        return None
    text = parts.path + ("?" + parts.query if parts.query else "")
    track = None
    m = TRACK_RE.search(text)
    if m:
        track = int(m.group(1)) if len(m.group(1)) < 3 else 999
        text = text[: m.start()] + text[m.end() :]
    path, _, query = text.partition("?")
    segments = [unquote(s) for s in path.split("/") if s]
    if segments[:1] == ["live"]:
        segments = segments[1:]
    if len(segments) != 1:
        return None
    params = dict(parse_qsl(query, keep_blank_values=True))
    profile = params.get("profile", "main") or "main"
    return Target(segments[0], profile, params.get("session", ""), track)


def parse_request(head: bytes) -> Request | str:
    """A request from its header block, or the reason it is malformed."""
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return "request is not UTF-8"
    lines = text.split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("RTSP/"):
        return "malformed request line"
    method, url, version = parts
    if version != "RTSP/1.0":
        return "unsupported RTSP version"
    if not method or not method.isupper() or not url:
        return "malformed request line"
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep or not name.strip() or name != name.strip():
            return "malformed header line"
        headers[name.strip().lower()] = value.strip()
    cseq = headers.get("cseq", "")
    if not cseq.isdigit() or len(cseq) > 10:
        return "missing or bad CSeq"
    return Request(method, url, headers, cseq)
