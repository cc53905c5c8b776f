"""Connections that must finish: a bound on the time to a complete request head, and a cap on
how many connections may wait for theirs.

A connection is *waiting* from the moment it is accepted (and again after each response on a
kept-alive connection) until its request head, a WebSocket handshake or any HTTP request, is
complete. A waiting connection holds a descriptor and gives nothing, so without a bound a peer
that sends nothing, half a request line, or one header line every few seconds holds it forever.

:class:`Admission` keeps every waiting connection in one dict, in the order they started to
wait. The bound is the same for all, so that is also the order of their deadlines: one timer
(``loop.call_at``) for the oldest deadline closes whatever has expired when it fires and is set
again for the next. A connection costs a dict entry while it waits, removed when its head is
complete; nothing at all once it is joined (no task and no timer handle per connection). The
deadline runs from the start of the wait and is never moved by the bytes that arrive.

Past the cap, the connection that has waited longest is closed to make room for the new one
(oldest-first rather than newest-refused): a legitimate client sends its head within a round
trip of connecting, so under a flood of silent or trickling connections it still gets in,
while the flood's connections are the ones that go.
"""

from __future__ import annotations

import asyncio
import logging
import resource
from typing import Protocol

__all__ = ["Admission", "Waiter", "default_pending_cap"]

log = logging.getLogger(__name__)


class Waiter(Protocol):
    """What Admission needs of a connection: to be closed when its wait is over."""

    def head_timeout(self) -> None:
        """The head was not complete in time (or the connection is evicted): close it."""


def default_pending_cap() -> int:
    """``HUB_MAX_PENDING_CONNECTIONS=0``: a quarter of the process's descriptor limit (soft
    ``RLIMIT_NOFILE``), at least 16: three quarters stay for joined sockets, REST and the
    hub's own files and connections."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft <= 0:
        soft = 1 << 20
    return max(16, soft // 4)


class Admission:
    """The connections waiting for their request head, with one timer for all of them.

    ``timeout`` is the bound in seconds (0: none, only the cap holds); ``cap`` the number of
    connections that may wait at once. ``expired`` and ``evicted`` count the connections
    closed by each."""

    __slots__ = ("_loop", "_timer", "_waiting", "cap", "evicted", "expired", "timeout")

    def __init__(self, timeout: float, cap: int) -> None:
        self.timeout = timeout
        self.cap = max(1, cap)
        self._waiting: dict[Waiter, float] = {}  # connection -> deadline, oldest first
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.expired = 0
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._waiting)

    def __contains__(self, conn: object) -> bool:
        return conn in self._waiting

    def wait(self, conn: Waiter, loop: asyncio.AbstractEventLoop) -> None:
        """``conn`` starts waiting for a request head now (its deadline: now + timeout)."""
        waiting = self._waiting
        waiting.pop(conn, None)
        while len(waiting) >= self.cap:  # make room: the one that waited longest goes
            oldest = next(iter(waiting))
            del waiting[oldest]
            self.evicted += 1
            _close(oldest)
        self._loop = loop
        deadline = loop.time() + self.timeout
        waiting[conn] = deadline
        if self.timeout and self._timer is None:
            self._timer = loop.call_at(deadline, self._expire)

    def done(self, conn: Waiter) -> None:
        """``conn``'s head is complete, or it is gone: it waits no more. (The timer stays: when
        it fires it finds nothing expired and is set for the next deadline.)"""
        self._waiting.pop(conn, None)

    def _expire(self) -> None:
        """Close every connection whose deadline has passed; set the timer for the next."""
        self._timer = None
        loop = self._loop
        assert loop is not None
        waiting = self._waiting
        now = loop.time()
        while waiting:
            conn = next(iter(waiting))
            deadline = waiting[conn]
            if deadline > now:
                self._timer = loop.call_at(deadline, self._expire)
                return
            del waiting[conn]
            self.expired += 1
            _close(conn)


def _close(conn: Waiter) -> None:
    """Close a connection whose wait is over; one that fails to close must not stop the
    others' (noted at debug level only: a flood must not become a flood of log lines)."""
    try:
        conn.head_timeout()
    except Exception:
        log.debug("closing a connection past its head deadline failed", exc_info=True)
