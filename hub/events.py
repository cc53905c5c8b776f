"""The event stream ``GET /v1/workspaces/{workspace_id}/events?client_id=`` (docs/protocol.md
section 12): a stream of the client exactly like a WebSocket, as Server-Sent Events.

An :class:`EventStream` is a :class:`~hub.connection.Connection` (the hub counts it, fans out to
it, merges its pending ``counts`` and closes it with 4409 past its outbox) whose frames leave as
SSE events. A flush's frame is framed once (``event:``, ``id:``, ``data:`` and, on HTTP/1.1,
the chunk around it) and the same bytes are written to every stream of the workspace
(:func:`event_bytes` keeps the last frame's encoding). The stream's writer (a
:class:`~hub.writer.Writer`, picked by :func:`event_writer`): under uvicorn's h11 protocol an
:class:`EventWriter` writes them straight to the transport when nothing is queued and flow
control allows (the direct path), else they go through the ASGI ``send`` by the drain task
that lives only while there is a backlog (:class:`AsgiEventWriter`).
Where a socket would be closed with a code, the stream gets a last ``close`` event with that
code and the response ends.

Every check, the join included, runs before the response starts, so a refusal is the REST
status and error body. The route is served before Starlette, like the socket's (``hub.app``):
the direct path needs the server's own ``send``. A plain GET to the socket's path (a proxy that
dropped the ``Upgrade`` headers) is answered 426 here, with a message that says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from starlette.requests import HTTPConnection
from starlette.types import Receive, Scope, Send

from hub import fastpaths
from hub.access import Access
from hub.auth import OriginPolicy
from hub.connection import Connection
from hub.errors import Forbidden, PeerError, TooManyWatches
from hub.hub import Hub
from hub.protocol import CloseCode, check_limit, check_session_id
from hub.viewers import MAX_WATCHES
from hub.writer import AsgiWriter, MergedCounts, Outgoing, Queued
from hub.ws import PATH as SOCKET_PATH
from hub.ws import route_path

__all__ = ["AsgiEventWriter", "EventRoute", "EventStream", "EventWriter", "event_bytes"]

log = logging.getLogger(__name__)

PATH = re.compile(r"/v1/workspaces/([^/]+)/events")

# What a stream's close event says, by code (the reason is for humans).
REASONS = {
    CloseCode.SLOW_CONSUMER: "slow consumer",
    CloseCode.SERVICE_RESTART: "server restarting",
    4404: "workspace deleted",
    4410: "client retired",
    4401: "token expired",
    4429: "too many frames",
    1000: "closed",
}

KEEPALIVE = Outgoing(b"")  # a comment line: sent to every stream each keepalive interval
_COMMENT = b": keepalive\n\n"
UPGRADE_MESSAGE = (
    "this is the WebSocket path, and this request carried no Upgrade header: a proxy between "
    "the browser and the hub probably drops the 'Upgrade' and 'Connection' headers (nginx "
    "needs 'proxy_set_header Upgrade $http_upgrade' and 'proxy_set_header Connection "
    '"upgrade"\'). Clients can use the event stream instead: GET /v1/workspaces/{id}/events'
)
# 426s are logged at most once a minute (a misconfigured proxy sends one per page load).
LOG_EVERY = 60.0


def _sse(data: bytes) -> bytes:
    """One frame's event: ``event: <type>``, ``id: <seq>`` for snapshots and counts, ``data:``.

    ``data`` is the frame as hub.protocol encodes it: ``{"type":"<t>",...}``, type first, and
    in ``snapshot`` and ``counts`` frames the first key ``"seq"`` is the frame's own (the
    fields before it are ids, whose quotes JSON escapes)."""
    if not data:
        return _COMMENT
    kind = data[9 : data.index(b'"', 9)]
    head = b"event: " + kind + b"\n"
    if kind in (b"counts", b"snapshot"):
        start = data.index(b',"seq":') + 7
        end = start
        while data[end : end + 1].isdigit():
            end += 1
        head += b"id: " + data[start:end] + b"\n"
    return head + b"data: " + data + b"\n\n"


def _chunk(event: bytes) -> bytes:
    """``event`` as one HTTP/1.1 chunk."""
    return b"%x\r\n%b\r\n" % (len(event), event)


# The last frame encoded, and its event with and without its chunk: a flush hands the same
# Outgoing to every stream in one pass, so each is framed once, not per stream.
_last: list[Any] = [None, b"", b""]


def event_bytes(frame: Outgoing, chunked: bool = False) -> bytes:
    """The SSE event of a frame (framed once per frame, shared by every stream)."""
    last = _last
    if last[0] is not frame:
        event = _sse(frame.data)
        last[0], last[1], last[2] = frame, event, None
    if not chunked:
        raw: bytes = last[1]
        return raw
    if last[2] is None:
        last[2] = _chunk(last[1])
    wire: bytes = last[2]
    return wire


def close_event(code: int) -> bytes:
    reason = REASONS.get(code, "closed")
    return b"event: close\ndata: " + orjson.dumps({"code": code, "reason": reason}) + b"\n\n"


class AsgiEventWriter(AsgiWriter):
    """An event stream's portable :class:`~hub.writer.Writer`: every event through the ASGI
    ``send`` by the stream's drain task (never now: a response body's ``send`` is not stepped
    by hand here), the close event ending the response."""

    __slots__ = ()

    def ready(self) -> bool:
        return False  # every frame waits in the outbox, for the drain task

    async def send(self, item: Queued) -> None:
        body = _sse(item.text.encode()) if isinstance(item, MergedCounts) else event_bytes(item)
        await self._send({"type": "http.response.body", "body": body, "more_body": True})

    async def end(self, code: int) -> None:
        body = close_event(code)
        await self._send({"type": "http.response.body", "body": body, "more_body": False})


class EventWriter(AsgiEventWriter):
    """Writes whole events to a response's transport under uvicorn's h11 protocol: the
    stream's direct path, used only while the response is under way and not paused (the
    queued path stays the ASGI ``send``)."""

    __slots__ = ("_cycle", "_transport", "chunked")

    direct = True

    def __init__(self, cycle: Any, chunked: bool, send: Send) -> None:
        super().__init__(send)
        self._cycle = cycle
        self._transport = cycle.transport
        self.chunked = chunked

    def ready(self) -> bool:
        cycle = self._cycle
        return not (
            cycle.flow.write_paused
            or cycle.disconnected
            or cycle.response_complete
            or self._transport.is_closing()
        )

    def write(self, frame: Outgoing) -> bool:
        self._transport.write(event_bytes(frame, self.chunked))
        return True

    def buffered(self) -> int:
        size: int = self._transport.get_write_buffer_size()
        return size

    def close(self, code: int, grace: float) -> bool:
        """End now, past flow control (a slow consumer): the close event and the response's
        end after what is buffered, then the connection; cut after ``grace`` seconds."""
        transport = self._transport
        if transport.is_closing() or self._cycle.response_complete:
            return True  # ending already
        event = close_event(code)
        transport.write(_chunk(event) + b"0\r\n\r\n" if self.chunked else event)
        transport.close()
        asyncio.get_running_loop().call_later(grace, transport.abort)
        # The stream sees its end at once, as connection_lost would show it (a reader that
        # stopped may take the whole grace to let the connection go).
        self._cycle.disconnected = True
        self._cycle.message_event.set()
        return True


def event_writer(send: Send) -> AsgiEventWriter:
    """The writer of the response behind ``send`` (after its start was sent): an
    :class:`EventWriter` when it is uvicorn's h11 cycle with a body framing known here
    (chunked, or HTTP/1.0 until close), else the portable :class:`AsgiEventWriter`."""
    cycle = getattr(send, "__self__", None)
    if cycle is None or type(cycle).__module__ != "uvicorn.protocols.http.h11_impl":
        return AsgiEventWriter(send)
    if not fastpaths.on("event_writer"):  # hub.fastpaths: its check failed, or all are off
        return AsgiEventWriter(send)
    if not all(
        hasattr(cycle, name)
        for name in (
            "transport",
            "flow",
            "disconnected",
            "response_complete",
            "conn",
            "message_event",
        )
    ):
        return AsgiEventWriter(send)
    framing = type(getattr(cycle.conn, "_writer", None)).__name__
    if framing == "ChunkedWriter":
        return EventWriter(cycle, True, send)
    if framing == "Http10Writer":
        return EventWriter(cycle, False, send)
    return AsgiEventWriter(send)


def server_send(send: Send, depth: int = 6) -> Any:
    """The server's own ``send`` behind ``send``: itself, or where a parent app's middleware
    wrapped it (a mounted hub), the one its closures hold (None when none is found). Used
    only to find the connection's protocol (its shutdown), never to write past a wrapper,
    which may transform the body."""
    seen: set[int] = set()
    layer: list[Any] = [send]
    for _ in range(depth):
        found: list[Any] = []
        for fn in layer:
            owner = getattr(fn, "__self__", None)
            if hasattr(owner, "transport") and hasattr(owner, "message_event"):
                return fn
            for cell in getattr(fn, "__closure__", None) or ():
                try:
                    value = cell.cell_contents
                except ValueError:  # an empty cell
                    continue
                if callable(value) and id(value) not in seen:
                    seen.add(id(value))
                    found.append(value)
        layer = found
    return None


class EventStream(Connection):
    """A Connection whose frames are SSE events of one HTTP response.

    Until :meth:`open` (the response's start sent, after the join) every frame waits in the
    outbox (its writer, :class:`AsgiEventWriter`, is never ready and its drain task does not
    start); then frames go out as the socket's do, through the writer :meth:`open` was given.
    Streams have no lean path of their own: the fan-out hands them the checked ``push``."""

    __slots__ = ("opened",)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.opened = False

    def open(self, writer: AsgiEventWriter) -> None:
        self.writer = writer
        self.opened = True
        if self._queue or self._close_code is not None:
            self._start_task()

    def _start_task(self) -> None:
        if self.opened:
            super()._start_task()


def _watches(conn: HTTPConnection) -> tuple[list[str], int]:
    """The sessions named by ``watch=`` (comma-separated, at most 8) and the ``limit``."""
    limit = check_limit(conn.query_params.get("limit"))
    found: list[str] = []
    for value in conn.query_params.getlist("watch"):
        for session_id in value.split(","):
            session_id = check_session_id(session_id)
            if session_id and session_id not in found:
                found.append(session_id)
    if len(found) > MAX_WATCHES:
        raise TooManyWatches(f"a stream watches at most {MAX_WATCHES} sessions")
    return found, limit


class EventRoute:
    """Serves ``GET`` :data:`PATH`, and the 426 of a plain GET to the socket's path."""

    def __init__(self, hub: Hub, access: Access, origins: OriginPolicy, keepalive: float) -> None:
        self.hub = hub
        self.access = access
        self.origins = origins
        self.keepalive = keepalive if keepalive > 0 else 20.0
        self.streams: set[EventStream] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._logged = -LOG_EVERY

    def route(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None] | None:
        """The handler (to await) for an event stream or a plain GET of the socket's path."""
        if scope["method"] != "GET":
            return None
        path = route_path(scope)
        match = PATH.fullmatch(path)
        if match is not None:
            return self.event_stream(match.group(1), scope, receive, send)
        if SOCKET_PATH.fullmatch(path) is not None:
            return self.upgrade_required(scope, receive, send)
        return None

    async def upgrade_required(self, scope: Scope, receive: Receive, send: Send) -> None:
        now = time.monotonic()
        if now - self._logged >= LOG_EVERY:
            self._logged = now
            log.warning("plain GET (no Upgrade) to the WebSocket path: %s", UPGRADE_MESSAGE)
        body = orjson.dumps({"error": "upgrade_required", "message": UPGRADE_MESSAGE})
        await send(
            {
                "type": "http.response.start",
                "status": 426,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"upgrade", b"websocket"),
                    (b"connection", b"Upgrade"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    def _cors(self, origin: str | None) -> list[tuple[bytes, bytes]]:
        if origin is None or not self.origins.allows(origin):
            return []
        return [
            (b"access-control-allow-origin", origin.encode("latin-1")),
            (b"access-control-allow-credentials", b"true"),
            (b"vary", b"Origin"),
        ]

    async def _join(self, workspace_id: str, request: HTTPConnection, send: Send) -> EventStream:
        """The checks of section 4 in their order, then the join: the stream (not yet open)."""
        self.origins.check(request.headers.get("origin"))
        grant, client_id, user = await self.access.identify(request)
        watches, limit = _watches(request)
        grant = await self.access.admit(grant, workspace_id, client_id)
        if watches and not grant.may_view:
            raise Forbidden("watching viewers needs a token with the viewers scope")
        conn = await self.hub.join(
            workspace_id,
            client_id,
            AsgiEventWriter(send),
            user=user,
            profile=grant.profile,
            may_watch=grant.may_view,
            connection=EventStream,
            expires=grant.expires if self.access.enabled else None,
        )
        assert isinstance(conn, EventStream)
        try:
            for session_id in watches:
                frame = {"type": "watch", "session_id": session_id, "limit": limit}
                await self.hub.command(conn, orjson.dumps(frame).decode())
        except BaseException:
            await self.hub.leave(conn)
            raise
        return conn

    async def event_stream(
        self, workspace_id: str, scope: Scope, receive: Receive, send: Send
    ) -> None:
        """One stream's life: check and join, start the response, wait for its end, leave."""
        request = HTTPConnection(scope)
        origin = request.headers.get("origin")
        hooked: Any = None
        try:
            conn = await self._join(workspace_id, request, send)
        except PeerError as exc:
            await self._refuse(exc, origin, send)
            return
        try:
            headers = [
                (b"content-type", b"text/event-stream; charset=utf-8"),
                (b"cache-control", b"no-cache"),
                (b"x-accel-buffering", b"no"),
                *self._cors(origin),
            ]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            # The first bytes: a comment, so the headers and the framing are under way.
            await send({"type": "http.response.body", "body": b": ok\n\n", "more_body": True})
            conn.open(event_writer(send))
            hooked = self._opened(conn, send)
            while (await receive())["type"] != "http.disconnect":
                pass
        finally:
            self.streams.discard(conn)
            if hooked is not None:  # a kept-alive connection's next request: not this stream
                with contextlib.suppress(AttributeError):
                    del hooked.shutdown
            await self.hub.leave(conn)

    async def _refuse(self, exc: PeerError, origin: str | None, send: Send) -> None:
        body = orjson.dumps({"error": exc.code, "message": exc.message})
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            *self._cors(origin),
        ]
        retry_after = exc.retry_after or (1 if exc.status == 503 else None)
        if retry_after is not None:
            headers.append((b"retry-after", str(retry_after).encode()))
        await send({"type": "http.response.start", "status": exc.status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    def _opened(self, conn: EventStream, send: Send) -> Any:
        """Keep the stream for the keepalive, and close it with 1012 when the server shuts
        down (uvicorn asks each connection's protocol to shut down, and then waits for it):
        the protocol whose ``shutdown`` was hooked, or None."""
        self.streams.add(conn)
        if self._timer is None:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(self.keepalive, self._keepalive)
        found = server_send(send) if fastpaths.on("stream_shutdown") else None
        transport = getattr(getattr(found, "__self__", None), "transport", None)
        protocol = transport.get_protocol() if transport is not None else None
        shutdown: Callable[[], None] | None = getattr(protocol, "shutdown", None)
        if protocol is not None and shutdown is not None:

            def shutting_down() -> None:
                conn.close(CloseCode.SERVICE_RESTART)
                shutdown()

            protocol.shutdown = shutting_down
            return protocol
        return None

    def _keepalive(self) -> None:
        self._timer = None
        if not self.streams:
            return
        for conn in self.streams:
            conn.push(KEEPALIVE)
        self._timer = asyncio.get_running_loop().call_later(self.keepalive, self._keepalive)
