"""One WebSocket stream as the hub sees it: a bounded outbox and two ways out.

A frame goes straight to the socket's transport when it can take it (see
:mod:`hub.transport`), else into the outbox, drained by a writer task that lives only while
there is a backlog. Pending ``counts`` of a socket that falls behind merge into one (latest
value wins); past ``max_outbox_bytes`` it is closed with 4409.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections import deque
from collections.abc import Callable, Generator, Iterable
from types import CoroutineType
from typing import Any

from starlette.types import Send

from hub import fastpaths, protocol
from hub.limits import RateLimit
from hub.metrics import Metrics
from hub.protocol import CloseCode, Counts
from hub.transport import DirectWriter, frame_text

__all__ = [
    "CLOSE_REASONS", "SLOW_CLOSE_GRACE", "Connection", "MergedCounts", "Outgoing", "send_each",
    "send_loop",
]  # fmt: skip

log = logging.getLogger(__name__)


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


# The reason sent with a close the hub decides on a live socket, where there is one to give
# (a live socket is closed 4401 only when its token expired; 1009 here only where the server
# the hub is mounted in read a frame over the hub's limit).
CLOSE_REASONS: dict[int, str] = {
    CloseCode.UNAUTHORIZED: "token expired",
    CloseCode.MESSAGE_TOO_BIG: "frame larger than the hub's limit (HUB_MAX_FRAME_BYTES)",
}

# How long a socket closed for being slow may take to flush its close before it is cut.
SLOW_CLOSE_GRACE = 5.0


class Connection:
    """One WebSocket stream of a client in a workspace, with its bounded outbox.

    Frames go out by one of two paths, never both at once, so their order is kept:

    - direct: the pre-framed bytes are written to the transport at once (when the socket has a
      :class:`~hub.transport.DirectWriter`, it is ready, and nothing is queued);
    - queued: the frame waits in the outbox, drained through the ASGI ``send`` by a writer
      task that exists only while the outbox is not empty.

    Invariant: the outbox is empty whenever no writer task is running.

    A socket is registered before it has joined; until :meth:`start` sends its snapshot it is
    not ``ready``: ``counts`` skip it (the snapshot will carry them) and other frames wait.
    """

    _ids = itertools.count(1)

    __slots__ = (
        "_close_code",
        "_direct",
        "_held",
        "_merged",
        "_queue",
        "_queued_bytes",
        "_resume",
        "_send",
        "_writer",
        "attached",
        "client_id",
        "id",
        "max_outbox_bytes",
        "expires",
        "may_watch",
        "metrics",
        "rate",
        "ready",
        "send_now",
        "snapshot_seq",
        "user",
        "watches",
        "workspace_id",
    )

    def __init__(
        self,
        workspace_id: str,
        client_id: str,
        send: Send,
        max_outbox_bytes: int,
        direct: DirectWriter | None = None,
        rate: RateLimit | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.id = f"c{next(self._ids)}"
        self.metrics = metrics
        self.rate = rate  # None: no limit
        self.workspace_id = workspace_id
        self.client_id = client_id
        self.max_outbox_bytes = max_outbox_bytes
        self.may_watch = True  # whether its grant lets it watch viewers
        self.user: str | None = None  # whose stream it is (None: anonymous)
        # When its token's exp plus the leeway passes (loop time; None: never).
        self.expires: float | None = None
        self.watches: dict[str, int] | None = None  # session -> limit, for viewers watched
        # False once the claim is gone (retired client, deleted workspace): nothing to detach.
        self.attached = True
        # The seq of the last snapshot queued: counts frames up to it carry nothing new.
        self.snapshot_seq = -1
        self.ready = False  # True once its snapshot was sent
        self._held: list[Outgoing] | None = None  # frames that came before the snapshot
        self._send = send  # the ASGI send of the socket
        self._direct = direct
        self._queue: deque[Outgoing | MergedCounts] | None = None  # made on first backlog
        self._queued_bytes = 0
        self._merged: MergedCounts | None = None  # the queue's last item when it is merged
        self._close_code: int | None = None
        self._writer: asyncio.Task[None] | None = None
        # The plain path's ASGI send that had to wait (flow control): the writer finishes it
        # before anything queued after it.
        self._resume: _Resume | None = None
        # The fan-out's lean path, set only in the steady state (ready, direct, no writer,
        # not closing): a flush hands it the shared frame, then falls back to push_counts.
        self.send_now: Callable[[bytes], bool] | None = None

    @property
    def closing(self) -> bool:
        return self._close_code is not None

    @property
    def direct(self) -> bool:
        """Whether this socket can take the direct path at all."""
        return self._direct is not None

    def start(self, snapshot: Outgoing, seq: int) -> None:
        """Send the socket's first frame, its snapshot at ``seq``, then the frames held."""
        self.ready = True
        self.snapshot_seq = seq
        held, self._held = self._held, None
        self.push(snapshot)
        for frame in held or ():
            self.push(frame)
        self._steady()

    def _steady(self) -> None:
        """The lean path is offered exactly while nothing stands in its way: ready, on the
        direct path, no writer, not closing (called after every change of one of those)."""
        direct = self._direct
        if direct is not None and self.ready and self._writer is None and self._close_code is None:
            self.send_now = direct.send_now
        else:
            self.send_now = None

    def push(self, frame: Outgoing) -> None:
        """Send one frame now if the socket can take it, else queue it (bounded)."""
        if self._close_code is not None:
            return
        if not self.ready:
            if self._held is None:
                self._held = []
            self._held.append(frame)
            return
        direct = self._direct
        if self._writer is None:
            if direct is None:
                self._send_now(frame)
                return
            if direct.ready():
                direct.write(frame.wire)
                return
        self._enqueue(frame)

    def _send_now(self, frame: Outgoing) -> None:
        """The plain path (no direct writer): the frame through the ASGI ``send`` now, in the
        caller's task, not one of its own: a ``send`` with nothing to wait for (uvicorn's,
        while its transport takes bytes; a parent app's wrapper around it) runs to its end at
        once. One that must wait (flow control) is finished by the writer, and what comes
        after it waits in the outbox behind it."""
        sending: Any = self._send({"type": "websocket.send", "text": frame.text})
        waiting = None
        if type(sending) is CoroutineType:  # else some other awaitable: the writer awaits it
            try:
                waiting = sending.send(None)
            except StopIteration:
                return
            except Exception as exc:  # the peer went away; the reader sees the disconnect
                log.debug("%s send failed: %r", self.id, exc)
                return
        self._resume = _Resume(sending, waiting)
        self._start_writer()

    def push_counts(self, frame: Counts, shared: Outgoing) -> None:
        """Send a workspace ``counts`` frame: the shared bytes when nothing is backed up, else
        merged into this socket's pending ``counts`` so a slow reader never piles them up."""
        if self._close_code is not None or frame.seq <= self.snapshot_seq or not self.ready:
            return
        if self._writer is None:
            self.push(shared)
        elif self._merged is not None:
            self._merged.merge(frame)
        else:
            self._enqueue(MergedCounts(frame, shared.size))

    def close(self, code: int) -> None:
        """Close after the frames already queued."""
        if self._close_code is None:
            self._close_code = code
            self._steady()
            self._start_writer()

    def stop(self) -> None:
        """The socket has ended: drop the outbox and stop writing."""
        self._close_code = self._close_code or CloseCode.NORMAL
        self._steady()
        if self._queue:
            self._queue.clear()
        if self._writer is not None:
            self._writer.cancel()

    def _enqueue(self, item: Outgoing | MergedCounts) -> None:
        if self._queue is None:
            self._queue = deque()
        self._queue.append(item)
        self._merged = item if isinstance(item, MergedCounts) else None
        self._queued_bytes += item.size
        pending = self._queued_bytes
        if self._direct is not None:
            pending += self._direct.buffered()
        if pending > self.max_outbox_bytes:
            self._overflow(pending)
        else:
            self._start_writer()

    def _overflow(self, pending: int) -> None:
        """Too much is waiting for this socket: drop it and close with 4409."""
        log.warning(
            "%s slow consumer: %d bytes pending, closing 4409", self.id, pending,
            extra={"conn": self.id},
        )  # fmt: skip
        if self.metrics is not None:
            self.metrics.closes.labels("slow_consumer").inc()
        assert self._queue is not None
        self._queue.clear()
        self._merged = None
        self._queued_bytes = 0
        if self._direct is not None:
            # The writer may be blocked on flow control for good: close beside it, now.
            self._close_code = CloseCode.SLOW_CONSUMER
            self._steady()
            if self._writer is not None:
                self._writer.cancel()
            self._direct.close(CloseCode.SLOW_CONSUMER, SLOW_CLOSE_GRACE)
        else:
            self.close(CloseCode.SLOW_CONSUMER)

    def _start_writer(self) -> None:
        if self._writer is None:
            self._writer = asyncio.get_running_loop().create_task(
                self._drain(), name=f"writer-{self.id}"
            )
            self._steady()

    async def _drain(self) -> None:
        """The writer: empties the outbox in order, then sends the close when one is asked."""
        try:
            resume, self._resume = self._resume, None
            if resume is not None:
                await resume
            while self._queue:
                item = self._queue.popleft()
                if item is self._merged:
                    self._merged = None
                self._queued_bytes -= item.size
                await self._send({"type": "websocket.send", "text": item.text})
            code = self._close_code
            if code is not None:
                reason = CLOSE_REASONS.get(code, "")
                await self._send({"type": "websocket.close", "code": code, "reason": reason})
        except Exception as exc:  # the peer went away mid-send; the reader sees the disconnect
            log.debug("%s writer stopped: %r", self.id, exc)
        finally:
            if self._resume is not None:  # cancelled before it began
                self._resume.close()
                self._resume = None
            self._writer = None
            self._steady()


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
            self._coro.close()
            raise
        yield from self._coro.__await__()

    def close(self) -> None:
        close = getattr(self._coro, "close", None)
        if close is not None:
            close()


# -- the fan-out's send loop ------------------------------------------------------------------


def _send_each_python(conns: Iterable[Connection], wire: bytes, seq: int) -> list[Connection]:
    """Send a flush's frame ``wire`` (at ``seq``) on every lean path that can take it now;
    return the other connections, for the fully checked path (``push_counts``)."""
    slow = []
    for conn in conns:
        send_now = conn.send_now
        if send_now is None or seq <= conn.snapshot_seq or not send_now(wire):
            slow.append(conn)
    return slow


def _compiled() -> Callable[[Iterable[Connection], bytes, int], list[Connection]] | None:
    """The same loop compiled (hub/_fanout.c), or None where it was not built or its check
    (hub.fastpaths, "compiled_loop": ``setup`` finds every slot it reads) failed: the same
    checks, with Connection's, DirectWriter's and HubWebSocketProtocol's slots read at their
    offsets instead of by the interpreter, socket by socket."""
    return fastpaths.compiled_send_each()


def send_each(conns: Iterable[Connection], wire: bytes, seq: int) -> list[Connection]:
    """The fan-out's send loop: compiled where its fast path is on, else in Python (or when
    HUB_PURE_PYTHON asks for it)."""
    compiled = fastpaths.compiled_send_each()
    if compiled is not None:
        return compiled(conns, wire, seq)  # type: ignore[no-any-return]
    return _send_each_python(conns, wire, seq)


def send_loop() -> str:
    """Which loop this process runs: "compiled" or "python" (logged by ``hub serve``)."""
    return "compiled" if fastpaths.compiled_send_each() is not None else "python"
