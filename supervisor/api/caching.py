"""Cache-Control for what an HTTP cache or CDN in front of the nodes may keep, and for whom.

The rule that makes shared caching safe here: a shared cache keys a response on its URL, so it may keep
one only when the URL alone carries the authority the request was served under. That holds when the
session came in the query (`?session=`, which every URI of our playlists carries) or when there was no
credential at all (anonymous view: anyone may fetch it). It does not hold when the session came in the
console's cookie or an `Authorization` header: the same URL fetched by another user would be served the
first user's answer, so such answers are `private` (only that browser keeps them) and say `Vary: Cookie,
Authorization` for caches that look at it.

- Playlists change with every part: `no-cache` (a cache must ask again every time).
- HLS segments, parts and init segments have names that are never reused (a packager run id made of the
  clock and a random suffix, a sequence number; v1 TS numbers start at the microsecond clock), so they are
  immutable for a day: far longer than any live window, without filling a CDN for good.
- Recording files grow while they are written and are renamed never: `private, no-cache` with the file's
  ETag and Last-Modified, so a browser revalidates and gets a 304 while nothing changed.
- API answers (JSON) are `no-store`: a session's answers must never be replayed to anyone.
"""

from __future__ import annotations

from starlette.requests import HTTPConnection

SEGMENT_MAX_AGE = 86_400  # seconds; segment names never repeat, so this only bounds what a cache holds
NO_STORE = {"Cache-Control": "no-store"}
_VARY = "Cookie, Authorization"


def url_carries_authority(conn: HTTPConnection) -> bool:
    """Whether the URL alone says who may have this answer: ?session=, or no credential at all (anonymous)."""
    if conn.query_params.get("session"):
        return True
    return not conn.headers.get("authorization") and "h5gate_session" not in conn.cookies


def _scoped(conn: HTTPConnection, directives: str) -> dict[str, str]:
    if url_carries_authority(conn):
        return {"Cache-Control": directives}
    return {"Cache-Control": f"private, {directives}", "Vary": _VARY}


def playlist(conn: HTTPConnection) -> dict[str, str]:
    """A live playlist: any cache must come back for the next one."""
    return _scoped(conn, "no-cache")


def segment(conn: HTTPConnection) -> dict[str, str]:
    """An HLS segment, part or init segment, whose name is never reused: immutable."""
    if url_carries_authority(conn):
        return {"Cache-Control": f"public, max-age={SEGMENT_MAX_AGE}, immutable"}
    return {"Cache-Control": f"private, max-age={SEGMENT_MAX_AGE}, immutable", "Vary": _VARY}


def recording() -> dict[str, str]:
    """A recording (or snapshot, export) file: only the user's own browser keeps it, and revalidates."""
    return {"Cache-Control": "private, no-cache", "Vary": _VARY}
