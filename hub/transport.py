"""Direct writes of pre-framed bytes to a uvicorn WebSocket transport: the fan-out fast path.

A server-to-client WebSocket frame is not masked, so without extensions its bytes are the same
for every recipient: a flush frames its ``counts`` once and writes the same bytes to every
socket's transport, instead of framing per socket through the ASGI ``send``.

This reaches below uvicorn's public interface, so it is guarded: :func:`socket_writer` gives a
:class:`DirectWriter` (a :class:`~hub.writer.Writer`) only for uvicorn's ``websockets-sansio``
protocol class (the one tested), only when the socket negotiated no extension, and only if the
attributes it relies on are there. Otherwise (another implementation, permessage-deflate, a
future uvicorn that moved things) it gives the portable :class:`~hub.writer.AsgiWriter`.
:meth:`DirectWriter.ready` is the one rule for a direct write: the fast path is taken only
while the transport is open and not paused by flow control (and, by the connection, only
while nothing is queued on the portable path).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import email.utils
import errno
import functools
import logging
import os
import re
import socket
import sys
import time
from collections import deque
from collections.abc import Callable
from typing import Any, ClassVar

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

# The one implementation this was written and tested against.
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.datastructures import Headers
from websockets.exceptions import InvalidHeaderValue
from websockets.frames import Frame, Opcode
from websockets.http11 import Request, Response
from websockets.protocol import Protocol, State
from websockets.server import ServerProtocol
from websockets.utils import accept_key

from hub import fastpaths
from hub.admission import Admission
from hub.protocol import CloseCode
from hub.writer import AsgiWriter, Outgoing, Writer, frame_text

__all__ = [
    "STATE", "Cork", "DirectWriter", "HubHttpProtocol", "HubServer", "HubWebSocketProtocol",
    "Watched", "frame_text", "guard_accepts", "http_protocol", "listening_socket",
    "socket_writer", "watched",
]  # fmt: skip

log = logging.getLogger(__name__)

_OPEN = State.OPEN
# Every reach below another library's public interface is a row of hub.fastpaths' table,
# checked at start-up and used here only while its fast path is on (fastpaths.on(name)).
# How a send path reads a websockets connection's state: ``Protocol.state`` is a property over
# ``_state`` (read directly where that holds: no property call per socket), else ``state``.
STATE = fastpaths.state_attribute()
# asyncio's own socket transport (private; checked by type and attributes before use).
_SOCKET_TRANSPORT: Any = fastpaths.socket_transport()


# The kernel send buffer of a socket on the direct path (Linux doubles it). Fixed, instead of
# autotuned up to net.ipv4.tcp_wmem's 4 MB: it bounds kernel memory per connection, and a peer
# that stopped reading shows up in the hub's outbox (and its 4409 bound) within seconds.
SEND_BUFFER = 64 * 1024

_NEEDED = ("transport", "writable", "close_sent", "conn", "queue", "loop", "read_paused")


# Messages that may wait for the app before a socket's reads pause (uvicorn pauses after one).
INBOX_HIGH = 4

# A WebSocket handshake's request head (line and headers) at most; larger gets 431.
MAX_HEAD_BYTES = 8 * 1024
MAX_HEAD_LINES = 100
_HEAD_TOO_LARGE = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Type: text/plain\r\n"
    b"Content-Length: 35\r\nConnection: close\r\n\r\nrequest head larger than 8 KiB/100\n"
)


class _Inbox:
    """What uvicorn's protocol uses of an ``asyncio.Queue`` (one consumer: the ASGI
    ``receive``), without its three deques (memory an idle socket would keep: figures in
    docs/performance.md, "Memory per socket"): items live in a deque only while some wait, and
    ``get`` hands out a future (no coroutine frame held by an idle socket)."""

    __slots__ = ("_items", "_waiter")

    def __init__(self) -> None:
        self._items: deque[Any] | None = None
        self._waiter: asyncio.Future[Any] | None = None

    def put_nowait(self, item: Any) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():  # a reader waits: straight to it
            self._waiter = None
            waiter.set_result(item)
            return
        if self._items is None:
            self._items = deque()
        self._items.append(item)

    def get(self) -> asyncio.Future[Any]:
        """The next item, as a future (a reader cancelled while waiting loses nothing: the
        item then goes to the deque)."""
        waiter = asyncio.get_running_loop().create_future()
        items = self._items
        if items:
            waiter.set_result(items.popleft())
            if not items:
                self._items = None
        else:
            self._waiter = waiter
        return waiter

    def empty(self) -> bool:
        return not self._items

    def qsize(self) -> int:
        return len(self._items) if self._items else 0


class _Flag:
    """What uvicorn's protocol uses of an ``asyncio.Event`` (``writable``), without its deque
    of waiters until someone waits."""

    __slots__ = ("_set", "_waiters")

    def __init__(self) -> None:
        self._set = True
        self._waiters: list[asyncio.Future[None]] | None = None

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        self._set = True
        waiters, self._waiters = self._waiters, None
        for waiter in waiters or ():
            if not waiter.done():
                waiter.set_result(None)

    def clear(self) -> None:
        self._set = False

    async def wait(self) -> bool:
        if self._set:
            return True
        waiter = asyncio.get_running_loop().create_future()
        if self._waiters is None:
            self._waiters = []
        self._waiters.append(waiter)
        await waiter
        return True


class HubWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's ``websockets-sansio`` protocol with these changes.

    - Keepalive: uvicorn pings every ``ws_ping_interval`` and drops a peer that does not answer
      within ``ws_ping_timeout``, closing with 1011; the contract names 4408 for that, so a
      client knows to reconnect rather than back off for a server error.
    - Handshake size: a request head over 8 KiB or 100 lines is answered 431 and closed. (The
      websockets parser refuses such heads but uvicorn never sends its answer, leaving the
      client waiting; too many headers even trips an assertion in it.)
    - Memory: an idle socket keeps less (docs/performance.md, "Memory per socket"): its
      receive queue and ``writable`` event are the lean :class:`_Inbox` and :class:`_Flag`,
      and the handshake's request and response are dropped once the socket is accepted.
    - Connect storms: a plain handshake request that :class:`HubHttpProtocol` has read is
      handed over whole (:meth:`handshake`) and accepted by :class:`_ServerProtocol`, without
      websockets' parsers reading it again; anything else is read and answered by websockets.
    - Reads pause only while the app is :data:`INBOX_HIGH` messages behind
      (:meth:`send_receive_event_to_app`), not after every message.
    """

    # uvicorn's attributes (0.54), as slots: no instance dict per socket (its size:
    # docs/performance.md, "Memory per socket"; uvicorn's class has a dict, so one it adds
    # later still works, in a dict of its own); the compiled send loop reads ``close_sent``
    # and ``writable`` at their offsets.
    __slots__ = (
        "app", "app_state", "asgi_version", "client", "close_sent", "close_timeout",
        "close_timer", "config", "conn", "connections", "curr_msg_data_type",
        "default_headers", "disconnected", "frames", "handshake_complete",
        "handshake_initiated", "initial_response", "last_ping_rtt", "logger", "loop",
        "pending_ping_payload", "ping_interval", "ping_sent_at", "ping_timeout", "ping_timer",
        "pong_timer", "queue", "read_paused", "request", "response", "root_path", "scheme",
        "scope", "server", "tasks", "transport", "writable",
    )  # fmt: skip

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.queue = _Inbox()  # type: ignore[assignment]
        self.writable = _Flag()  # type: ignore[assignment]
        if type(self.conn) is ServerProtocol and fastpaths.on("ws_server_protocol"):
            self.conn.__class__ = _ServerProtocol

    def handshake(self, request: Request) -> None:
        """The connection's handshake request, read by :func:`_plain_request`: websockets'
        parser goes on to frames, as it does after reading a request itself, and uvicorn
        takes the request as it takes the one that parser reads."""
        conn = self.conn
        old = conn.parser
        conn.parser = Protocol.parse(conn)  # what ServerProtocol.parse runs after the request
        next(conn.parser)
        old.close()
        self.handle_connect(request)

    def adopt(self, http: H11Protocol) -> None:
        """``connection_made`` for a connection the HTTP protocol had: the same state, with
        the addresses it already looked up (two system calls less per socket)."""
        self.connections.add(self)
        self.transport = watched(http.transport)
        self.server = http.server
        self.client = http.client
        self.scheme = "wss" if http.scheme == "https" else "ws"

    def connection_made(self, transport: Any) -> None:
        super().connection_made(watched(transport))

    async def send(self, message: Any) -> None:
        await super().send(message)
        if self.handshake_complete and getattr(self, "response", None) is not None:
            self.request = self.response = None  # type: ignore[assignment]
            if type(self.conn) is _ServerProtocol:
                _fresh_parser(self.conn)

    def send_receive_event_to_app(self) -> None:
        """Queue a message for the app, pausing reads only when :data:`INBOX_HIGH` wait.

        uvicorn pauses reading after every message and resumes once the app took it: on
        asyncio's transport that is two ``epoll_ctl`` calls and the selector's bookkeeping
        for each message of a client that sends one at a time (the common case). Here reads
        pause only while the app is that many messages behind, and resume, as uvicorn does,
        once it has taken them all: the same back-pressure, a few messages later."""
        paused = self.read_paused
        self.read_paused = True  # uvicorn's method queues the message and does not pause
        super().send_receive_event_to_app()
        if paused:
            return
        if self.queue.qsize() >= INBOX_HIGH and not self.transport.is_closing():
            self.transport.pause_reading()
        else:
            self.read_paused = False

    def data_received(self, data: bytes) -> None:
        if self.conn.state is State.CONNECTING and _too_large(data):
            self.transport.write(_HEAD_TOO_LARGE)
            self.transport.close()
            return
        super().data_received(data)

    def keepalive_timeout(self) -> None:
        self.pong_timer = None
        self.pending_ping_payload = None
        if self.close_sent or self.transport.is_closing():
            return
        self.conn.send_close(CloseCode.KEEPALIVE_TIMEOUT, "keepalive timeout")
        self.transport.write(b"".join(self.conn.data_to_send()))
        self.close_sent = True
        self.transport.close()


def _fresh_parser(conn: Any) -> None:
    """websockets' server parser keeps the handshake request (its headers; what they cost an
    idle socket: docs/performance.md, "Memory per socket") in its frame for the connection's
    whole life. Once the handshake is done, while the parser waits at the
    top of its frame loop (nothing of a frame read yet), a fresh frame parser takes its place:
    the same state, without the request. Anywhere else, or on another websockets, as it was."""
    old = conn.parser
    if getattr(old, "gi_code", None) is _FRAME_PARSER:
        return  # already one (HubWebSocketProtocol.handshake)
    inner = old
    while getattr(inner, "gi_yieldfrom", None) is not None:
        inner = inner.gi_yieldfrom
    waiting = getattr(getattr(inner, "gi_code", None), "co_name", "") == "at_eof"
    if inner is old or not waiting or conn.reader.buffer or conn.reader.eof:
        return
    fresh = Protocol.parse(conn)
    next(fresh)  # runs to the same place: at_eof, waiting for data
    conn.parser = fresh
    old.close()


# What websockets' parser reads the same way (RFC 9110 tokens and field values), and a path
# of visible ASCII only.
_TOKEN = rb"[-!#$%&\'*+.^_`|~0-9a-zA-Z]+"
# A header line in one match: its name (a token) and its value (visible, obs-text, tabs and
# spaces; websockets strips the spaces and tabs around it).
_FIELD = re.compile(rb"(" + _TOKEN + rb"):([\x09\x20-\x7e\x80-\xff]*)")
_PATH = re.compile(rb"[\x21-\x7e]+")
_TOKEN_STR = re.compile(_TOKEN.decode())  # the same rule, for decoded headers
_FRAME_PARSER = Protocol.parse.__code__


def _too_large(head: bytes) -> bool:
    """Whether a handshake's first bytes are over the head's limits (answered 431)."""
    return len(head) > MAX_HEAD_BYTES or head.count(b"\n") > MAX_HEAD_LINES


def _plain_request(data: bytes, line: bytes, fields: list[bytes]) -> Request | None:
    """A handshake request (``data``, whole; ``line``: its request line; ``fields``: its
    header lines) as websockets' parser reads it (``Request.parse``) from the same head with
    its header names lower-cased, when it is a plain GET of HTTP/1.1 within the hub's limits;
    None for anything else, which websockets then reads and answers itself."""
    if _too_large(data):
        return None  # answered 431 (HubWebSocketProtocol.data_received)
    method, _, rest = line.partition(b" ")
    path, _, protocol = rest.partition(b" ")
    if method != b"GET" or protocol != b"HTTP/1.1" or _PATH.fullmatch(path) is None:
        return None
    headers = Headers()
    for field in fields:
        match = _FIELD.fullmatch(field)
        if match is None:
            return None
        name, value = match.groups()
        headers.set_insecure(name.lower().decode("ascii"), value.strip(b" \t").decode("latin-1"))
    if "transfer-encoding" in headers or "content-length" in headers:
        return None
    return Request(path.decode("ascii"), headers)


class _ServerProtocol(ServerProtocol):
    """websockets' server side, accepting a plain handshake without its header parsers.

    A plain handshake: GET over HTTP/1.1, a ``Connection`` of tokens that include
    ``upgrade``, one ``Upgrade: websocket``, one valid ``Sec-WebSocket-Key``, one
    ``Sec-WebSocket-Version: 13``, at most one ``Origin``, no ``Sec-WebSocket-Protocol``, on a
    protocol with no origins, extensions or subprotocols to choose from (as uvicorn runs it
    here). Its response is the one :meth:`ServerProtocol.accept` makes; any other request goes
    to that method (tests/test_handshake.py holds the two side by side).

    Two answers of RFC 6455 that websockets 17 gives otherwise, on every handshake path (the
    direct one and websockets' own parser), since every server connection is of this class:

    - A handshake with one ``Sec-WebSocket-Version`` other than 13 is answered 426 with
      ``Sec-WebSocket-Version: 13`` (section 4.2.2), so that a client can retry with a version
      the server speaks; websockets answers 400.
    - A close frame between the fragments of a message is answered with the close echo, as
      anywhere else (section 5.4: control frames may be injected between fragments; the
      unfinished message is dropped); websockets fails the connection with 1002."""

    def accept(self, request: Request) -> Response:
        versions = request.headers.get_all("sec-websocket-version")
        if len(versions) == 1 and versions[0] != "13":
            return self._wrong_version(versions[0])
        key = self._plain_key(request)
        if key is None:
            return super().accept(request)
        self.accept_called = True
        self.origin = request.headers.get("origin")  # type: ignore[assignment]
        self.extensions = []
        self.subprotocol = None
        headers = Headers()
        headers["Date"] = _http_date()
        headers["Upgrade"] = "websocket"
        headers["Connection"] = "Upgrade"
        headers["Sec-WebSocket-Accept"] = accept_key(key)
        return Response(101, "Switching Protocols", headers)

    def _wrong_version(self, version: str) -> Response:
        """The answer to a handshake of another WebSocket version: 426, naming 13."""
        self.accept_called = True
        self.handshake_exc = InvalidHeaderValue("Sec-WebSocket-Version", version)
        response = self.reject(
            426, "Failed to open a WebSocket connection: this server speaks WebSocket version 13.\n"
        )
        response.headers["Sec-WebSocket-Version"] = "13"
        return response

    def recv_frame(self, frame: Frame) -> None:
        if frame.opcode is Opcode.CLOSE and self.current_size is not None:
            self.current_size = None  # the unfinished message is dropped; the close echoed
        super().recv_frame(frame)

    def _plain_key(self, request: Request) -> str | None:
        """The request's key when it is a plain handshake, else None."""
        if (
            request.method != "GET"
            or request.protocol != "HTTP/1.1"
            or self.origins is not None
            or self.available_extensions
            or self.available_subprotocols
            or "select_subprotocol" in vars(self)
        ):
            return None
        headers = request.headers
        tokens = [t.strip() for v in headers.get_all("connection") for t in v.split(",")]
        if not all(_TOKEN_STR.fullmatch(t) for t in tokens):
            return None
        if "upgrade" not in (t.lower() for t in tokens):
            return None
        upgrade = headers.get_all("upgrade")
        if len(upgrade) != 1 or upgrade[0].lower() != "websocket":
            return None
        keys = headers.get_all("sec-websocket-key")
        if headers.get_all("sec-websocket-version") != ["13"] or len(keys) != 1:
            return None
        if len(headers.get_all("origin")) > 1 or "sec-websocket-protocol" in headers:
            return None
        try:
            if len(base64.b64decode(keys[0].encode(), validate=True)) != 16:
                return None
        except (binascii.Error, UnicodeEncodeError):
            return None
        return keys[0]


_date: tuple[int, str] = (0, "")


def _http_date() -> str:
    """The ``Date`` of a response (RFC 9110), formatted once a second."""
    global _date
    now = int(time.time())
    if _date[0] != now:
        _date = (now, email.utils.formatdate(now, usegmt=True))
    return _date[1]


_WS_PATH = b"GET /v1/workspaces/"
_UPGRADE_WS = re.compile(rb"\r\nupgrade:[ \t]*websocket[ \t]*(?:\r\n|$)")
_CONNECTION_UPGRADE = re.compile(rb"\r\nconnection:[^\r\n]*\bupgrade\b")


class HubHttpProtocol(H11Protocol):
    """uvicorn's h11 protocol, with two changes.

    - A presence socket's handshake that arrives whole as the connection's first bytes goes to
      the WebSocket protocol at once, as uvicorn's own upgrade does, without h11 parsing it
      first (websockets parses and checks it either way): less CPU per socket in a connect
      storm (docs/performance.md). Anything else takes h11's path, unchanged.
    - Connections that must finish (:mod:`hub.admission`): while the connection waits for a
      request head (from accept, and again after each response on a kept-alive connection)
      it is in :attr:`admission`, which closes it once its deadline passes or to make room
      past its cap. A head that is complete takes it out; so does the hand-over to the
      WebSocket protocol. ``http_protocol`` makes the class with the server's settings.
    """

    admission: ClassVar[Admission | None] = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if self.admission is not None:
            self.admission.wait(self, self.loop)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.admission is not None:
            self.admission.done(self)
        super().connection_lost(exc)

    def head_timeout(self) -> None:
        """Its head was not complete in time, or it made room for a newer connection: closed;
        with a 408 when part of a head arrived (a silent connection is closed as it came)."""
        transport = self.transport
        if transport.is_closing():
            return
        if self.conn.trailing_data[0]:
            transport.write(_HEAD_TIMEOUT)
        transport.close()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._note_wait()

    def _note_wait(self) -> None:
        """Waiting for a request head is both sides of h11 idle (a request, or the next one on
        a kept-alive connection, not yet read) on a connection still this protocol's; the
        deadline of a wait under way stays where it is, however many bytes arrived."""
        admission = self.admission
        if admission is None:
            return
        conn = self.conn
        if (
            conn.their_state is h11.IDLE
            and conn.our_state is h11.IDLE
            and not self.transport.is_closing()
            and self.transport.get_protocol() is self
        ):
            if self not in admission:
                admission.wait(self, self.loop)
        else:
            admission.done(self)

    def data_received(self, data: bytes) -> None:
        if (
            self.ws_protocol_class is not None
            and data.startswith(_WS_PATH)
            and self.conn.their_state is h11.IDLE
            and self.cycle is None
            and not self.conn.trailing_data[0]
        ):
            head, end, rest = data.partition(b"\r\n\r\n")
            lower = head.lower()
            if end and _UPGRADE_WS.search(lower) and _CONNECTION_UPGRADE.search(lower):
                line, *fields = head.split(b"\r\n")
                self.connections.discard(self)
                if self.admission is not None:
                    self.admission.done(self)  # its head is complete
                protocol = self.ws_protocol_class(
                    config=self.config, server_state=self.server_state, app_state=self.app_state
                )
                if isinstance(protocol, HubWebSocketProtocol):
                    protocol.adopt(self)  # no second look-up of the addresses
                else:
                    protocol.connection_made(self.transport)
                self.transport.set_protocol(protocol)
                request = None
                if (
                    isinstance(protocol, HubWebSocketProtocol)
                    and type(protocol.conn) is _ServerProtocol
                    and not rest
                ):
                    request = _plain_request(data, line, fields)
                if request is not None:
                    protocol.handshake(request)
                else:  # header names lower-cased, as h11 gives them (the ASGI scope needs so)
                    protocol.data_received(b"\r\n".join([line, *_lowered(fields)]) + end + rest)
                return
        super().data_received(data)
        self._note_wait()


# What a connection whose request head was not complete in time is told before it is closed.
_HEAD_TIMEOUT = (
    b"HTTP/1.1 408 Request Timeout\r\nContent-Type: text/plain\r\nContent-Length: 34\r\n"
    b"Connection: close\r\n\r\nrequest head not complete in time\n"
)


def http_protocol(head_timeout: float, max_pending: int) -> type[HubHttpProtocol]:
    """:class:`HubHttpProtocol` for one server: its connections' request heads are bounded by
    ``head_timeout`` seconds (0: no bound), and at most ``max_pending`` wait at once."""
    admission = Admission(head_timeout, max_pending)
    return type("HubHttpProtocol", (HubHttpProtocol,), {"admission": admission})


def _lowered(fields: list[bytes]) -> list[bytes]:
    """Header lines with their names lower-cased."""
    out = []
    for field in fields:
        name, colon, value = field.partition(b":")
        out.append(name.lower() + colon + value)
    return out


class Watched:
    """A transport as the WebSocket protocol sees it, with every write through it noted.

    The lean path must not send while bytes wait in the transport (they would be overtaken).
    asyncio's own transport shows its buffer as an attribute, read for every frame; any other
    (uvloop's) answers ``get_write_buffer_size()``, and on uvloop that call reads libuv's handle,
    a cache miss per socket and frame (it made uvloop's fan-out cost more CPU per frame than
    asyncio's, and ``perf`` put the difference in that call: docs/performance.md). A
    transport's buffer only grows by
    a write, so the lean path asks only after a write went through (``wrote``), and notes each
    time it saw the buffer empty. Every writer goes through this object: uvicorn's protocol
    holds it as its transport, and :class:`DirectWriter` writes through it whatever it does not
    send itself (the compiled loop too: hub/_fanout.c)."""

    __slots__ = ("transport", "wrote")

    def __init__(self, transport: Any) -> None:
        self.transport = transport
        self.wrote = True  # not known to be empty yet

    def write(self, data: Any) -> None:
        self.wrote = True
        self.transport.write(data)

    def writelines(self, lines: Any) -> None:
        self.wrote = True
        self.transport.writelines(lines)

    def is_closing(self) -> bool:  # asked before every send: not through __getattr__
        closing: bool = self.transport.is_closing()
        return closing

    def __getattr__(self, name: str) -> Any:
        return getattr(self.transport, name)


def watched(transport: Any) -> Any:
    """The transport a WebSocket protocol holds: asyncio's own socket transport as it is (the
    lean path reads its buffer), any other :class:`Watched`."""
    if transport is None or type(transport) is _SOCKET_TRANSPORT or type(transport) is Watched:
        return transport
    return Watched(transport)


# The protocol classes the direct path was written and tested against.
_TESTED = (WebSocketsSansIOProtocol, HubWebSocketProtocol)


class DirectWriter(AsgiWriter):
    """A WebSocket's :class:`~hub.writer.Writer` on uvicorn's transport: whole frames written
    to the transport now, bypassing per-socket framing, and the fan-out's lean path
    (``send_now``: a flush's frame to the kernel at once); its queued path is the ASGI ``send``
    (:class:`~hub.writer.AsgiWriter`), which waits for flow control.

    Whether a frame may be written directly is decided once, by :meth:`ready`; the lean path
    asks it too, after checking that nothing is buffered ahead. hub/_fanout.c (``clear()``)
    reads the same facts in the same way, socket by socket (tests/test_send_loop.py holds the
    two side by side)."""

    __slots__ = (
        "_buffer", "_conn", "_fd", "_proto", "_raw", "_transport", "_watch", "send_now",
    )  # fmt: skip

    direct = True

    def __init__(self, proto: Any, send: Callable[..., Any]) -> None:
        super().__init__(send)
        self._proto = proto
        transport = proto.transport
        # Any transport but asyncio's own is Watched by the protocol (see Watched): the lean
        # path asks its buffer's size only after a write went through it.
        self._watch: Watched | None = transport if type(transport) is Watched else None
        if self._watch is not None:
            transport = self._watch.transport
        # asyncio's own socket transport: what is buffered ahead is read from its attribute,
        # not asked of it (hub.fastpaths, "raw_send"); any other (uvloop, TLS) is asked.
        raw = (
            fastpaths.on("raw_send")
            and type(transport) is _SOCKET_TRANSPORT
            and all(hasattr(transport, name) for name in ("_buffer", "_closing"))
            and STATE == "_state"
        )
        # The transport, kept (a protocol's never changes) and used by every method: one
        # look-up less per socket and frame; ``_raw`` says how the lean path reads what is
        # buffered ahead (asyncio's attribute, or the transport's method).
        self._transport: Any = transport
        self._raw = raw
        # asyncio 3.11's transport makes its write buffer once and changes it in place: the
        # compiled loop reads its length, not the transport's attribute (None: it reads that).
        buffer = transport._buffer if raw else None
        self._buffer: bytearray | None = (
            buffer if type(buffer) is bytearray and sys.version_info < (3, 12) else None
        )
        self._conn = proto.conn
        # The socket's descriptor, written to directly on a plain TCP transport (never under
        # TLS, where the socket carries ciphertext): by the lean path, here and compiled.
        sock = transport.get_extra_info("socket")
        plain = transport.get_extra_info("ssl_object") is None and (
            type(transport) is _SOCKET_TRANSPORT or fastpaths.on("uvloop_transport")
        )
        self._fd: int = sock.fileno() if sock is not None and plain else -1
        # send_now(wire) -> bool: a flush's frame for this socket, sent now when nothing
        # stands in its way (False: nothing was written, the caller takes the checked path).
        # A slot holding the bound method: Connection.send_now is this very object, which is
        # how the compiled loop knows the writer is one it may read.
        self.send_now: Callable[[bytes], bool] | None = self._send_now

    def ready(self) -> bool:
        """The rule: a frame may be written to this socket now, and goes out in order after
        everything sent before, while its transport is open (not closing), no close frame was
        sent, the WebSocket is OPEN and flow control does not hold writes back. (The lean
        path's send(2) also needs nothing buffered ahead, which it checks first; the compiled
        loop reads the same, hub/_fanout.c ``clear()``.)"""
        proto = self._proto
        return (
            proto.writable.is_set()
            and not proto.close_sent
            and self._conn.state is _OPEN
            and not self._transport.is_closing()
        )

    def _send_now(self, wire: bytes) -> bool:
        """The lean path: a flush's pre-framed ``wire`` to the kernel now, when nothing is
        buffered ahead (a send(2) would overtake it) and the socket is :meth:`ready`; the
        bytes the kernel did not take wait in the transport, in order. False: nothing was
        written (the checked path takes over)."""
        transport = self._transport
        if self._raw:
            if transport._buffer:
                return False
        else:  # asked only after a write went through it (see Watched)
            watch = self._watch
            if watch is None or watch.wrote:
                if transport.get_write_buffer_size():
                    return False
                if watch is not None:
                    watch.wrote = False  # seen empty, and nothing written since
        if not self.ready():
            return False
        if self._fd < 0:
            (self._watch or transport).write(wire)
            return True
        try:  # the transport is open, so the descriptor is still this connection's
            n = os.write(self._fd, wire)
        except OSError:  # full (EAGAIN) or broken: the transport's own write handles it
            return False
        if n != len(wire):
            (self._watch or transport).write(wire[n:])  # the rest waits, in order
        return True

    def write(self, frame: Outgoing) -> bool:
        """Queue the frame's wire bytes in the transport, after everything written before
        (noted, see Watched)."""
        (self._watch or self._transport).write(frame.wire)
        return True

    def buffered(self) -> int:
        """Bytes written but not yet taken by the kernel."""
        size: int = self._transport.get_write_buffer_size()
        return size

    def close(self, code: int, grace: float) -> bool:
        """Close now, without waiting for flow control, as uvicorn's own ``websocket.close`` does.

        The close frame goes after the bytes already buffered; the application sees the
        disconnect at once; a peer that has not completed the closing handshake within
        ``grace`` seconds (one that stopped reading never will) is cut.
        """
        proto, transport = self._proto, self._transport
        if proto.close_sent or transport.is_closing():
            return True  # closing already
        proto.conn.send_close(code)
        (self._watch or transport).write(b"".join(proto.conn.data_to_send()))
        proto.close_sent = True
        proto.queue.put_nowait({"type": "websocket.disconnect", "code": code})
        if proto.read_paused:
            proto.read_paused = False
            transport.resume_reading()
        proto.close_timer = proto.loop.call_later(grace, transport.abort)
        return True


def socket_writer(asgi_send: Callable[..., Any]) -> Writer:
    """The writer of the WebSocket behind an ASGI ``send``: a :class:`DirectWriter` when that
    is safe (uvicorn's tested protocol, no extension, the attributes it relies on there, its
    fast path on), else the portable :class:`~hub.writer.AsgiWriter`."""
    proto = getattr(asgi_send, "__self__", None)
    if proto is None or type(proto) not in _TESTED or not fastpaths.on("direct_writer"):
        return AsgiWriter(asgi_send)
    if not all(hasattr(proto, name) for name in _NEEDED):
        return AsgiWriter(asgi_send)
    if getattr(proto.conn, "extensions", None) != []:
        return AsgiWriter(asgi_send)
    sock = proto.transport.get_extra_info("socket")
    if sock is not None and not _listeners_bound:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
    return DirectWriter(proto, asgi_send)


# Linux's TCP_CORK (None elsewhere: Cork then does nothing); the kernel refuses it on anything
# but a TCP socket (EOPNOTSUPP, ENOPROTOOPT), which Cork takes as "nothing to cork".
_TCP_CORK: int | None = getattr(socket, "TCP_CORK", None)


class Cork:
    """Holds a new socket's first bytes (the handshake's 101, then the snapshot or the close
    frame of a refusal) in the kernel until :meth:`release`, so that they leave in one TCP
    segment, not one each: in a connect storm, a loopback segment costs the server a whole
    pass through both ends' TCP stacks (``TCP_CORK``: Linux holds at most 200 ms, then sends
    anyway). Where there is no TCP socket to cork (another platform, a transport without one)
    it does nothing; bytes are never lost or reordered by it, only sent together."""

    __slots__ = ("_sock", "_transport")

    def __init__(self, asgi_send: Callable[..., Any]) -> None:
        proto = getattr(asgi_send, "__self__", None)
        transport: Any = getattr(proto, "transport", None)
        sock = transport.get_extra_info("socket") if transport is not None else None
        self._transport: Any = transport
        self._sock: Any = None
        if sock is not None and _TCP_CORK is not None and fastpaths.on("cork"):
            try:
                sock.setsockopt(socket.IPPROTO_TCP, _TCP_CORK, 1)
                self._sock = sock
            except OSError:  # closed already, or not a TCP socket
                pass

    def release(self) -> None:
        """Send what is held now (once; on a closing transport, its own close sends it)."""
        sock, self._sock = self._sock, None
        if sock is None or self._transport.is_closing():
            return  # a closed socket's descriptor may be another connection's by now
        try:
            sock.setsockopt(socket.IPPROTO_TCP, _TCP_CORK, 0)
        except OSError:
            pass


# Whether this process's listening sockets carry SEND_BUFFER themselves (listening_socket):
# an accepted socket inherits it, and is spared a system call of its own.
_listeners_bound = False


def listening_socket(config: Any) -> socket.socket:
    """The listening socket of a uvicorn ``config``, bound, with the send buffer every
    accepted socket inherits (serve it with ``server.run(sockets=[...])``)."""
    global _listeners_bound
    sock: socket.socket = config.bind_socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
    _listeners_bound = True
    return sock


# Out of descriptors. asyncio's selector loop (seen on 3.11; CPython issue #151615 reports
# the same in later versions), when ``accept()`` fails with EMFILE/ENFILE/ENOBUFS/ENOMEM, logs
# the error with its traceback, stops reading the listening socket and schedules a retry in a
# second, and then goes on trying: its loop runs up to ``backlog`` times (uvicorn's 2,048) in
# the same call, so every second at the limit it logs 2,048 tracebacks and schedules 2,048
# retries (the log lines it made at the limit, issue 30: docs/performance.md).
# guard_accepts gives a loop an accept that stops at the first such failure, retries after
# ACCEPT_RETRY, and logs one line per REFUSED_LOG_INTERVAL with the count.
#
# This reaches into asyncio's private selector loop (``_accept_connection``,
# ``_accept_connection2``, ``_start_serving``, ``_remove_reader``), so it is guarded: only an
# asyncio selector loop whose methods have the parameters it was written against (3.11's)
# gets it. Anywhere else (a Python that changed them, as later ones added ``context``)
# asyncio's own accept stays, and its log records of the failure are folded into the same one
# line per interval by a logging filter (_RefusedFilter). uvloop needs neither: libuv closes
# the connections it cannot take (its "EMFILE trick") and logs nothing.
ACCEPT_RETRY = 0.1
REFUSED_LOG_INTERVAL = 10.0
_OUT_OF_DESCRIPTORS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
_SELECTOR_LOOP: Any = fastpaths.selector_loop()
# asyncio's default exception handler's first line for such a failure.
_REFUSED_MESSAGE = "socket.accept() out of system resource"


# Whether this Python's selector loop is the one the guarded accept was written against
# (hub.fastpaths' check "accept_guard").
_ACCEPT_GUARDABLE = fastpaths.check_one("accept_guard") is None


class _Refused:
    """Accepts refused for want of descriptors (or kernel memory), told in at most one log
    line per :data:`REFUSED_LOG_INTERVAL`: at once when the first comes after a quiet
    interval, else when the interval is over; each line says whether accepting is still
    refused or works again, and how many accepts were refused since the line before. Flapping
    at the limit, or a flood that lasts, stays one line per interval."""

    __slots__ = ("count", "errno", "logged_at", "paused", "reported", "timer")

    def __init__(self) -> None:
        self.count = 0  # refused since the last line
        self.errno = errno.EMFILE
        self.logged_at = -REFUSED_LOG_INTERVAL
        self.paused = False  # the last accept was refused
        self.reported = False  # what the last line said of it
        self.timer: asyncio.TimerHandle | None = None

    def refused(self, exc: OSError, loop: asyncio.AbstractEventLoop | None) -> str | None:
        """One more refused accept; the line to log now, if it is time for one (else, on a
        loop, one is logged when the interval is over)."""
        self.count += 1
        self.errno = exc.errno or errno.EMFILE
        self.paused = True
        return self._due(loop)

    def accepted(self, loop: asyncio.AbstractEventLoop) -> str | None:
        """An accept worked after refusals: the line to log now, if it is time for one."""
        self.paused = False
        return self._due(loop)

    def _due(self, loop: asyncio.AbstractEventLoop | None) -> str | None:
        if time.monotonic() - self.logged_at >= REFUSED_LOG_INTERVAL:
            return self._line()
        if loop is not None and self.timer is None:
            self.timer = loop.call_at(
                loop.time() + REFUSED_LOG_INTERVAL - (time.monotonic() - self.logged_at),
                self._flush,
            )
        return None

    def _flush(self) -> None:
        self.timer = None
        if self.count or self.paused != self.reported:
            log.warning(self._line())

    def _line(self) -> str:
        self.logged_at = time.monotonic()
        count, self.count = self.count, 0
        self.reported = self.paused
        why = os.strerror(self.errno)
        if self.paused:
            return (
                f"cannot accept connections ({why}): see RLIMIT_NOFILE and "
                f"HUB_MAX_PENDING_CONNECTIONS; {count} accept(s) refused since the last such "
                f"line; new connections wait in the listen queue, joined sockets are served, "
                f"accepting is retried every {ACCEPT_RETRY} s"
            )
        return f"accepting connections again; {count} accept(s) refused ({why}) since the last line"


def _guarded_accept(
    loop: Any,
    refused: _Refused,
    protocol_factory: Any,
    sock: socket.socket,
    sslcontext: Any = None,
    server: Any = None,
    backlog: int = 100,
    *timeouts: Any,
) -> None:
    """asyncio's ``_accept_connection`` (the same accepts, the same connection set-up by its
    ``_accept_connection2``), but out of descriptors it stops at the first refusal: the
    listening socket is not read until a retry :data:`ACCEPT_RETRY` later."""
    for _ in range(backlog):
        try:
            conn, addr = sock.accept()
            conn.setblocking(False)
        except (BlockingIOError, InterruptedError, ConnectionAbortedError):
            return  # nothing more waits
        except OSError as exc:
            if exc.errno not in _OUT_OF_DESCRIPTORS:
                raise  # the loop logs it, as asyncio's own accept does
            loop._remove_reader(sock.fileno())
            loop.call_later(
                ACCEPT_RETRY, _accept_again, loop, protocol_factory, sock, sslcontext, server,
                backlog, *timeouts,
            )  # fmt: skip
            line = refused.refused(exc, loop)
            if line is not None:
                log.warning(line)
            return
        if refused.paused:
            line = refused.accepted(loop)
            if line is not None:
                log.warning(line)
        loop.create_task(
            loop._accept_connection2(
                protocol_factory, conn, {"peername": addr}, sslcontext, server, *timeouts
            )
        )


def _accept_again(loop: Any, protocol_factory: Any, sock: socket.socket, *args: Any) -> None:
    """Read the listening socket again, unless its server was closed meanwhile."""
    server = args[1] if len(args) > 1 else None
    if sock.fileno() < 0 or (server is not None and not server.is_serving()):
        return
    loop._start_serving(protocol_factory, sock, *args)


class _RefusedFilter(logging.Filter):
    """Where asyncio's own accept stays: its records of a refused accept (a traceback each, up
    to thousands a second) folded into the lines of :class:`_Refused`."""

    def __init__(self) -> None:
        super().__init__()
        self.refused = _Refused()

    def filter(self, record: logging.LogRecord) -> bool:
        if not str(record.msg).startswith(_REFUSED_MESSAGE):
            return True
        exc = record.exc_info[1] if record.exc_info else None
        if not isinstance(exc, OSError):
            exc = OSError(errno.EMFILE, "")
        line = self.refused.refused(exc, None)
        if line is None:
            return False
        record.msg, record.args, record.exc_info, record.exc_text = line, (), None, None
        return True


_refused_filter: _RefusedFilter | None = None


def guard_accepts(loop: asyncio.AbstractEventLoop) -> str:
    """Out of descriptors, make ``loop`` stop accepting for a moment and say so in one line
    per interval (see above). Call before the server starts listening on it. What it did:
    "accept" (the guarded accept), "filter" (asyncio's accept, its log folded), or "none"
    (not an asyncio selector loop: uvloop's needs nothing)."""
    global _refused_filter
    if _SELECTOR_LOOP is None or not isinstance(loop, _SELECTOR_LOOP):
        return "none"
    if _ACCEPT_GUARDABLE and fastpaths.on("accept_guard"):
        # An instance attribute shadows the method: asyncio's _start_serving looks it up
        # on the loop each time it starts reading a listening socket.
        loop._accept_connection = functools.partial(_guarded_accept, loop, _Refused())
        return "accept"
    if _refused_filter is None:
        _refused_filter = _RefusedFilter()
        logging.getLogger("asyncio").addFilter(_refused_filter)
    return "filter"


class HubServer(uvicorn.Server):
    """uvicorn's server, with :func:`guard_accepts` on its loop before it listens."""

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        guard_accepts(asyncio.get_running_loop())
        await super().startup(sockets)
