"""The writer port: how one stream's frames leave the process.

Theory of operation. A :class:`~hub.connection.Connection` decides *when* and in *what order*
its frames go (its snapshot first, its bounded outbox, merged ``counts``, 4409); a
:class:`Writer` decides *how* they reach its peer. The hub and Connection know only this
port; whoever builds the writer for a socket or a stream picks its implementation:

- :class:`AsgiWriter` (here): the portable path, through the ASGI ``send`` of any server;
- ``hub.transport.DirectWriter``: pre-framed bytes to uvicorn's WebSocket transport, and the
  fan-out's lean path ``send_now`` (in C too: hub/_fanout.c);
- ``hub.events.EventWriter`` / ``AsgiEventWriter``: the same for an event stream's response.

A frame leaves by one of two ways, never both at once, so their order is kept:

- now: while the connection's outbox is empty and :meth:`Writer.ready` says a frame written
  now goes out after everything before it, :meth:`Writer.write` hands it over at once. It
  returns False when the frame is under way but had to stop for flow control (the ASGI
  path): the connection's drain task then :meth:`Writer.finish` es it before anything else.
- queued: otherwise the frame waits in the connection's outbox, and its drain task hands it to
  :meth:`Writer.send` (which waits as flow control asks), then :meth:`Writer.end` when a
  close was asked.

:attr:`Writer.send_now` is the fan-out's lean path (None where there is none): a flush's
pre-framed bytes, sent at once when nothing stands in their way (True) or not at all (False:
the checked path, Connection.push_counts, takes over). Whether a socket may be written to
directly is decided in one place per language: ``DirectWriter.ready`` in Python and
``clear()`` in hub/_fanout.c, held together by tests/test_send_loop.py.

:meth:`Writer.buffered` is what the transport holds that the kernel has not taken (it counts
against the outbox's bound), :meth:`Writer.close` closes past flow control (a slow consumer),
where the writer can.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Awaitable, Callable, Generator
from types import CoroutineType
from typing import Any, Protocol

from hub import protocol
from hub.protocol import CloseCode, Counts

__all__ = [
    "CLOSE_REASONS", "AsgiWriter", "MergedCounts", "Outgoing", "Queued", "Writer", "frame_text",
]  # fmt: skip

log = logging.getLogger(__name__)

# An ASGI ``send`` (starlette.types.Send, without importing Starlette here).
AsgiSend = Callable[[Any], Awaitable[None]]


def frame_text(payload: bytes) -> bytes:
    """One final, unmasked text frame (RFC 6455 section 5.2) carrying ``payload``."""
    n = len(payload)
    if n < 126:
        return struct.pack("!BB", 0x81, n) + payload
    if n < 65536:
        return struct.pack("!BBH", 0x81, 126, n) + payload
    return struct.pack("!BBQ", 0x81, 127, n) + payload


class Outgoing:
    """One encoded frame, shared by every socket it is queued on; text and wire form are made
    once, on first use."""

    __slots__ = ("_text", "_wire", "data", "size")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.size = len(data)
        self._text: str | None = None
        self._wire: bytes | None = None

    @property
    def text(self) -> str:
        if self._text is None:
            self._text = self.data.decode()
        return self._text

    @property
    def wire(self) -> bytes:
        if self._wire is None:
            self._wire = frame_text(self.data)
        return self._wire


class MergedCounts:
    """The pending ``counts`` of one socket that fell behind: later values overwrite earlier."""

    __slots__ = ("counts", "online", "online_users", "seq", "size", "users")

    def __init__(self, frame: Counts, size: int) -> None:
        self.seq = frame.seq
        self.counts = dict(frame.counts)
        self.online = frame.online
        self.users = dict(frame.users)
        self.online_users = frame.online_users
        # What the outbox bound charges for this slot: the size of the frame it started from.
        self.size = size

    def merge(self, frame: Counts) -> None:
        self.seq = frame.seq
        self.counts.update(frame.counts)
        if frame.online is not None:
            self.online = frame.online
        self.users.update(frame.users)
        if frame.online_users is not None:
            self.online_users = frame.online_users

    @property
    def text(self) -> str:
        frame = Counts(self.seq, self.counts, self.online, self.users, self.online_users)
        return protocol.encode(frame).decode()


Queued = Outgoing | MergedCounts  # what waits in an outbox

# The reason sent with a close the hub decides on a live socket, where there is one to give
# (a live socket is closed 4401 only when its token expired; 1009 here only where the server
# the hub is mounted in read a frame over the hub's limit).
CLOSE_REASONS: dict[int, str] = {
    CloseCode.UNAUTHORIZED: "token expired",
    CloseCode.MESSAGE_TOO_BIG: "frame larger than the hub's limit (HUB_MAX_FRAME_BYTES)",
}


class Writer(Protocol):
    """One stream's way out (see the module's docstring for the two ways and their order)."""

    @property
    def direct(self) -> bool:
        """Whether it writes to the transport itself (not through the ASGI ``send``)."""
        ...

    @property
    def send_now(self) -> Callable[[bytes], bool] | None:
        """The fan-out's lean path for a flush's pre-framed bytes, or None."""
        ...

    def ready(self) -> bool:
        """Whether a frame written now goes out in order, after everything sent before."""
        ...

    def write(self, frame: Outgoing) -> bool:
        """Hand ``frame`` over now (asked only when :meth:`ready`); False when it had to stop
        for flow control and :meth:`finish` must complete it before anything else is sent."""
        ...

    def buffered(self) -> int:
        """Bytes written but not yet taken by the kernel."""
        ...

    def close(self, code: int, grace: float) -> bool:
        """Close now, past flow control (a peer that stopped reading never drains); one that
        has not finished closing within ``grace`` seconds is cut. False: this writer cannot
        (the connection queues its close behind the outbox instead)."""
        ...

    async def finish(self) -> None:
        """Complete the write that :meth:`write` left under way, if any."""
        ...

    async def send(self, item: Queued) -> None:
        """The queued path: one frame from the outbox, waiting as flow control asks."""
        ...

    async def end(self, code: int) -> None:
        """The queued path's last message: the close with ``code``."""
        ...


class AsgiWriter:
    """The portable path of a WebSocket: every frame through the server's ASGI ``send``.

    A frame written now runs the ``send`` in the caller's task, not one of its own: a ``send``
    with nothing to wait for (uvicorn's, while its transport takes bytes; a parent app's
    wrapper around it) runs to its end at once. One that must wait (flow control) is finished
    by the connection's drain task (:meth:`finish`), and what comes after it waits in the
    outbox behind it."""

    __slots__ = ("_resume", "_send")

    direct = False
    send_now: Callable[[bytes], bool] | None = None

    def __init__(self, send: AsgiSend) -> None:
        self._send = send
        self._resume: _Resume | None = None  # the send that had to wait

    def ready(self) -> bool:
        return True  # the ASGI send keeps the order itself

    def write(self, frame: Outgoing) -> bool:
        sending: Any = self._send({"type": "websocket.send", "text": frame.text})
        waiting = None
        if type(sending) is CoroutineType:  # else some other awaitable: finish() awaits it
            try:
                waiting = sending.send(None)
            except StopIteration:
                return True
            except Exception as exc:  # the peer went away; the reader sees the disconnect
                log.debug("send failed: %r", exc)
                return True
        self._resume = _Resume(sending, waiting)
        return False

    def buffered(self) -> int:
        return 0  # what the server buffers is not known here

    def close(self, code: int, grace: float) -> bool:
        return False  # only through the ASGI send, behind what is queued

    async def finish(self) -> None:
        resume, self._resume = self._resume, None
        if resume is not None:
            await resume

    async def send(self, item: Queued) -> None:
        await self._send({"type": "websocket.send", "text": item.text})

    async def end(self, code: int) -> None:
        reason = CLOSE_REASONS.get(code, "")
        await self._send({"type": "websocket.close", "code": code, "reason": reason})


class _Resume:
    """Awaits a coroutine that was started by hand (``send(None)``) and stopped at
    ``waiting``, from where it stopped: the task that awaits this waits for ``waiting`` as
    the coroutine asked, then runs it on to its end (any other awaitable: from its start)."""

    __slots__ = ("_coro", "_waiting")

    def __init__(self, coro: Any, waiting: Any) -> None:
        self._coro = coro
        self._waiting = waiting

    def __await__(self) -> Generator[Any, Any, None]:
        try:
            yield self._waiting  # a future (the task waits for it) or None (a bare yield)
        except BaseException:  # cancelled meanwhile: the send is dropped with the socket
            close = getattr(self._coro, "close", None)
            if close is not None:
                close()
            raise
        yield from self._coro.__await__()
