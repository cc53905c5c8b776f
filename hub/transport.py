"""Direct writes of pre-framed bytes to a uvicorn WebSocket transport: the fan-out fast path.

A server-to-client WebSocket frame is not masked, so without extensions its bytes are the same
for every recipient: a flush frames its ``counts`` once and writes the same bytes to every
socket's transport, instead of framing per socket through the ASGI ``send``.

This reaches below uvicorn's public interface, so it is guarded: :func:`direct_writer` returns
a writer only for uvicorn's ``websockets-sansio`` protocol class (the one tested), only when the
socket negotiated no extension, and only if the attributes it relies on are there. Otherwise
(another implementation, permessage-deflate, a future uvicorn that moved things) it returns
``None`` and the connection uses the portable ASGI path. :meth:`DirectWriter.ready` is checked
before every write: the fast path is taken only while the transport is open and not paused by
flow control, and nothing is queued on the portable path.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Callable
from typing import Any

# The one implementation this was written and tested against.
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.protocol import State

__all__ = ["DirectWriter", "direct_writer", "frame_text"]

_OPEN = State.OPEN

# The kernel send buffer of a socket on the direct path (Linux doubles it). Fixed, instead of
# autotuned up to net.ipv4.tcp_wmem's 4 MB: it bounds kernel memory per connection, and a peer
# that stopped reading shows up in the hub's outbox (and its 4409 bound) within seconds.
SEND_BUFFER = 64 * 1024

_NEEDED = ("transport", "writable", "close_sent", "conn", "queue", "loop", "read_paused")


def frame_text(payload: bytes) -> bytes:
    """One final, unmasked text frame (RFC 6455 section 5.2) carrying ``payload``."""
    n = len(payload)
    if n < 126:
        return struct.pack("!BB", 0x81, n) + payload
    if n < 65536:
        return struct.pack("!BBH", 0x81, 126, n) + payload
    return struct.pack("!BBQ", 0x81, 127, n) + payload


class DirectWriter:
    """Writes whole frames to one connection's transport, bypassing per-socket framing."""

    __slots__ = ("_proto",)

    def __init__(self, proto: Any) -> None:
        self._proto = proto

    def ready(self) -> bool:
        """True while a frame written now goes out in order after everything sent before."""
        proto = self._proto
        return (
            proto.writable.is_set()
            and not proto.close_sent
            and proto.conn.state is _OPEN
            and not proto.transport.is_closing()
        )

    def write(self, wire: bytes) -> None:
        self._proto.transport.write(wire)

    def buffered(self) -> int:
        """Bytes written but not yet taken by the kernel."""
        size: int = self._proto.transport.get_write_buffer_size()
        return size

    def close(self, code: int, grace: float) -> None:
        """Close now, without waiting for flow control, as uvicorn's own ``websocket.close`` does.

        The close frame goes after the bytes already buffered; the application sees the
        disconnect at once; a peer that has not completed the closing handshake within
        ``grace`` seconds (one that stopped reading never will) is cut.
        """
        proto = self._proto
        if proto.close_sent or proto.transport.is_closing():
            return
        proto.conn.send_close(code)
        proto.transport.write(b"".join(proto.conn.data_to_send()))
        proto.close_sent = True
        proto.queue.put_nowait({"type": "websocket.disconnect", "code": code})
        if proto.read_paused:
            proto.read_paused = False
            proto.transport.resume_reading()
        proto.close_timer = proto.loop.call_later(grace, proto.transport.abort)


def direct_writer(asgi_send: Callable[..., Any] | None) -> DirectWriter | None:
    """A DirectWriter for the connection behind an ASGI ``send``, when that is safe."""
    proto = getattr(asgi_send, "__self__", None)
    if type(proto) is not WebSocketsSansIOProtocol:
        return None
    if not all(hasattr(proto, name) for name in _NEEDED):
        return None
    if getattr(proto.conn, "extensions", None) != []:
        return None
    sock = proto.transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
    return DirectWriter(proto)
