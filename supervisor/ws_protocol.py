"""uvicorn's sans-io WebSocket protocol with a bounded socket send buffer, for media sockets.

Linux grows a loopback or LAN socket's send buffer to megabytes, which hides a viewer that stopped
reading for tens of seconds (and adds that much latency to a slow one). With the buffer bounded, a
stalled viewer's send blocks within about a second of video, so the hub's skip-to-keyframe and the
send timeout act promptly. The sans-io protocol also does the least work per send: frame, write,
and wait only when the transport is over its high-water mark.
"""

from __future__ import annotations

import asyncio
import socket

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol


def media_ws_protocol(send_buffer: int) -> type[WebSocketsSansIOProtocol]:
    """The protocol class for uvicorn's `ws=` with the kernel send buffer set to `send_buffer` bytes."""

    class MediaWebSocketProtocol(WebSocketsSansIOProtocol):
        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            sock = transport.get_extra_info("socket")
            if sock is not None and send_buffer > 0:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, send_buffer)
                transport.set_write_buffer_limits(high=send_buffer // 2)
            super().connection_made(transport)

    return MediaWebSocketProtocol
