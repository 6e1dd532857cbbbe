"""Request paths as the vendor's clients write them, mended before routing (no redirect).

The vendor consoles build every URL as `protocol//host + pathname + "/api/v1/Name"`, so served at `/`
they call `//api/v1/Name` (and a few `//api/v1//GetSrcCamera`); the 2018 manual writes status URLs as
`/api/v1/h5swsapi/Status&session=...`. A redirect would break WebSockets and double every call, so the
path is rewritten in place: repeated slashes collapse to one, and an `&name=value` tail of an /api/
path (with no `?`) moves to the query string.

Requests in the consoles' double-slash form are marked (`scope[VENDOR_FORM]`): their clients treat any
status but 200 and 401 as a failed transport (axios rejects the promise and the page shows nothing), so
api.common answers them with 200 and `bStatus: false`, as the vendor's server does.
"""

from __future__ import annotations

import re
from typing import Any

VENDOR_FORM = "h5gate.vendor_form"
_SLASHES = re.compile(r"/{2,}")

Scope = dict[str, Any]


def mend(path: str, query: bytes) -> tuple[str, bytes, bool]:
    """(path, query, vendor_form): repeated slashes collapsed, an `&a=b` path tail moved into the query."""
    collapsed = _SLASHES.sub("/", path)
    vendor = collapsed != path
    if "&" in collapsed and collapsed.startswith("/api/"):
        head, _, tail = collapsed.partition("&")
        collapsed = head
        query = tail.encode("latin-1") + (b"&" + query if query else b"")
    return collapsed, query, vendor


class VendorPaths:
    """ASGI middleware: mends HTTP and WebSocket paths before Starlette routes them."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] in ("http", "websocket"):
            path, query, vendor = mend(scope["path"], scope.get("query_string", b""))
            if path != scope["path"] or vendor:
                scope = dict(scope)
                scope["path"] = path
                scope["raw_path"] = path.encode("utf-8")
                scope["query_string"] = query
                scope[VENDOR_FORM] = vendor
        await self.app(scope, receive, send)
