"""One stream of a client as the hub sees it: its order, its bounded outbox, its writer.

A frame goes out at once through the stream's :class:`~hub.writer.Writer` when the writer
can take it and nothing is queued, else into the outbox, drained through the same writer by a
task that lives only while there is a backlog. Pending ``counts`` of a stream that falls
behind merge into one (latest value wins); past ``max_outbox_bytes`` it is closed with 4409.
How the bytes reach the peer (a WebSocket transport, the ASGI ``send``, an event stream) is
the writer's business, never this module's.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections import deque
from collections.abc import Callable, Iterable

from hub import fastpaths
from hub.limits import RateLimit
from hub.metrics import Metrics
from hub.protocol import CloseCode, Counts
from hub.writer import CLOSE_REASONS, MergedCounts, Outgoing, Queued, Writer

__all__ = [
    "CLOSE_REASONS", "SLOW_CLOSE_GRACE", "Connection", "MergedCounts", "Outgoing", "send_each",
    "send_loop",
]  # fmt: skip

log = logging.getLogger(__name__)


# How long a socket closed for being slow may take to flush its close before it is cut.
SLOW_CLOSE_GRACE = 5.0


class Connection:
    """One stream (a WebSocket, or an event stream: hub.events) of a client in a workspace,
    with its bounded outbox and its :class:`~hub.writer.Writer`.

    Frames go out by one of two paths, never both at once, so their order is kept:

    - now: the frame is handed to the writer at once (nothing is queued, and the writer is
      ``ready``);
    - queued: the frame waits in the outbox, drained through the writer by a task that exists
      only while the outbox is not empty.

    Invariant: the outbox is empty whenever no drain task is running.

    A stream is registered before it has joined; until :meth:`start` sends its snapshot it is
    not ``ready``: ``counts`` skip it (the snapshot will carry them) and other frames wait.
    """

    _ids = itertools.count(1)

    __slots__ = (
        "_close_code",
        "_held",
        "_merged",
        "_queue",
        "_queued_bytes",
        "_task",
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
        "writer",
    )

    def __init__(
        self,
        workspace_id: str,
        client_id: str,
        writer: Writer,
        max_outbox_bytes: int,
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
        self.writer = writer  # the way out (hub/_fanout.c reads this slot)
        self._queue: deque[Queued] | None = None  # made on first backlog
        self._queued_bytes = 0
        self._merged: MergedCounts | None = None  # the queue's last item when it is merged
        self._close_code: int | None = None
        self._task: asyncio.Task[None] | None = None  # the drain task
        # The fan-out's lean path, set only in the steady state (ready, no drain task, not
        # closing, a writer that has one): a flush hands it the shared frame, then falls back
        # to push_counts.
        self.send_now: Callable[[bytes], bool] | None = None

    @property
    def closing(self) -> bool:
        return self._close_code is not None

    @property
    def direct(self) -> bool:
        """Whether its writer writes to the transport itself (for the operators' stats)."""
        return self.writer.direct

    def start(self, snapshot: Outgoing, seq: int) -> None:
        """Send the stream's first frame, its snapshot at ``seq``, then the frames held."""
        self.ready = True
        self.snapshot_seq = seq
        held, self._held = self._held, None
        self.push(snapshot)
        for frame in held or ():
            self.push(frame)
        self._steady()

    def _steady(self) -> None:
        """The lean path is offered exactly while nothing of this stream stands in its way:
        ready, no drain task, not closing (called after every change of one of those); the
        writer's own checks come on top (hub.writer)."""
        if self.ready and self._task is None and self._close_code is None:
            self.send_now = self.writer.send_now
        else:
            self.send_now = None

    def push(self, frame: Outgoing) -> None:
        """Send one frame now if the writer can take it, else queue it (bounded)."""
        if self._close_code is not None:
            return
        if not self.ready:
            if self._held is None:
                self._held = []
            self._held.append(frame)
            return
        if self._task is None:
            writer = self.writer
            if writer.ready():
                if not writer.write(frame):  # under way, stopped by flow control:
                    self._start_task()  # the drain task finishes it, the rest queues
                return
        self._enqueue(frame)

    def push_counts(self, frame: Counts, shared: Outgoing) -> None:
        """Send a workspace ``counts`` frame: the shared bytes when nothing is backed up, else
        merged into this stream's pending ``counts`` so a slow reader never piles them up."""
        if self._close_code is not None or frame.seq <= self.snapshot_seq or not self.ready:
            return
        if self._task is None:
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
            self._start_task()

    def stop(self) -> None:
        """The stream has ended: drop the outbox and stop writing."""
        self._close_code = self._close_code or CloseCode.NORMAL
        self._steady()
        if self._queue:
            self._queue.clear()
        if self._task is not None:
            self._task.cancel()

    def _enqueue(self, item: Queued) -> None:
        if self._queue is None:
            self._queue = deque()
        self._queue.append(item)
        self._merged = item if isinstance(item, MergedCounts) else None
        self._queued_bytes += item.size
        pending = self._queued_bytes + self.writer.buffered()
        if pending > self.max_outbox_bytes:
            self._overflow(pending)
        else:
            self._start_task()

    def _overflow(self, pending: int) -> None:
        """Too much is waiting for this stream: drop it and close with 4409."""
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
        # The drain task may be blocked on flow control for good: where the writer can, it
        # closes beside it, now; else the close is queued (behind nothing, now).
        if self.writer.close(CloseCode.SLOW_CONSUMER, SLOW_CLOSE_GRACE):
            self._close_code = CloseCode.SLOW_CONSUMER
            self._steady()
            if self._task is not None:
                self._task.cancel()
        else:
            self.close(CloseCode.SLOW_CONSUMER)

    def _start_task(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._drain(), name=f"writer-{self.id}"
            )
            self._steady()

    async def _drain(self) -> None:
        """The drain task: finishes a write under way, empties the outbox in order, then sends
        the close when one is asked."""
        writer = self.writer
        try:
            await writer.finish()
            while self._queue:
                item = self._queue.popleft()
                if item is self._merged:
                    self._merged = None
                self._queued_bytes -= item.size
                await writer.send(item)
            code = self._close_code
            if code is not None:
                await writer.end(code)
        except Exception as exc:  # the peer went away mid-send; the reader sees the disconnect
            log.debug("%s writer stopped: %r", self.id, exc)
        finally:
            self._task = None
            self._steady()


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
