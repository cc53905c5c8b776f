"""The suite's one unit of time, its waits, and a clock that moves only when told.

``T``
    One second of the suite: every bound a test waits up to for something to happen is a
    multiple of it (``viewer.expect("ack", within=2 * T)``, ``eventually(check, 5 * T)``).
    It is ``HUB_TEST_TIME_SCALE`` (default 1.0): on a loaded machine (CI on two cores shared
    with other jobs) set it to 2 or 3 and every such bound stretches with it, while a test
    that passes still takes as long as the thing it waits for, not the bound. What is not a
    wait is not scaled: a hub's own settings (a grace, a delay) and a bound a test asserts
    the hub keeps (a webhook within its delay, "within 10 s of the fault") stay what they
    are, because they are the behaviour under test.

``eventually`` / ``wait_until``
    Poll a condition until it holds, failing after a scaled bound: the async one for tests
    on an event loop, the blocking one for threads. A wait for an event never sleeps a fixed
    time; a check that something did *not* happen waits for a later event that must come
    after it (a ``pong``, an ``ack``) instead of sleeping and looking.

``FakeClock``
    A :class:`hub.clock.Clock` for in-process hubs: ``advance(seconds)`` moves it and runs the
    calls that came due, so a test walks through the hub's windows (coalescing, retries,
    token expiry, the rate limit) in no time, and can stop just short of one.
"""

from __future__ import annotations

import asyncio
import heapq
import inspect
import itertools
import os
import time
from collections.abc import Callable
from typing import Any

__all__ = ["SCALE", "T", "FakeClock", "eventually", "wait_until"]

SCALE = float(os.environ.get("HUB_TEST_TIME_SCALE", "1") or 1)
if SCALE <= 0:
    raise ValueError(f"HUB_TEST_TIME_SCALE must be positive, not {SCALE}")
T = SCALE  # seconds: one second of the suite's bounds

POLL = 0.02  # between two looks at a condition (not scaled: it costs little, it is not a bound)


async def eventually(
    check: Callable[[], Any], within: float = 5.0, message: str = "condition not met in time"
) -> None:
    """Wait until ``check()`` (a bool, or an awaitable of one) holds; fail after ``within``
    seconds of the suite (scaled by ``T``)."""
    deadline = time.monotonic() + within * T
    while True:
        result = check()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        assert time.monotonic() < deadline, message
        await asyncio.sleep(POLL)


def wait_until(
    check: Callable[[], object], within: float = 5.0, message: str = "condition not met in time"
) -> None:
    """The blocking twin of :func:`eventually`, for code off any event loop."""
    deadline = time.monotonic() + within * T
    while not check():
        assert time.monotonic() < deadline, message
        time.sleep(POLL)


class _Call:
    """A call scheduled on a :class:`FakeClock` (a hub.clock.Timer)."""

    __slots__ = ("args", "callback", "cancelled", "due")

    def __init__(self, due: float, callback: Callable[..., object], args: tuple[Any, ...]) -> None:
        self.due = due
        self.callback = callback
        self.args = args
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True

    def when(self) -> float:
        return self.due

    def run(self) -> None:
        if not self.cancelled:
            self.cancelled = True  # (runs once)
            self.callback(*self.args)


class FakeClock:
    """A clock that stands still until :meth:`advance`. A call scheduled at or before the
    current time runs on the next turn of the running loop, as on a real loop; later ones run
    inside ``advance``, in order of their times (ties in the order scheduled), each with the
    clock reading its own time, then the clock reads the end of the advance."""

    def __init__(self, start: float = 1000.0) -> None:
        self._now = start
        self._calls: list[tuple[float, int, _Call]] = []
        self._order = itertools.count()

    def time(self) -> float:
        return self._now

    def call_at(self, when: float, callback: Callable[..., object], *args: Any) -> _Call:
        call = _Call(when, callback, args)
        if when <= self._now:
            asyncio.get_running_loop().call_soon(call.run)
        else:
            heapq.heappush(self._calls, (when, next(self._order), call))
        return call

    def call_later(self, delay: float, callback: Callable[..., object], *args: Any) -> _Call:
        return self.call_at(self._now + delay, callback, *args)

    def advance(self, seconds: float) -> None:
        """Move the clock ``seconds`` on, running every call that comes due on the way."""
        assert seconds >= 0, "a clock does not go back"
        end = self._now + seconds
        while self._calls and self._calls[0][0] <= end:
            when, _, call = heapq.heappop(self._calls)
            self._now = max(self._now, when)
            call.run()
        self._now = end

    @property
    def pending(self) -> int:
        """Calls still to come (cancelled ones excluded)."""
        return sum(1 for *_, call in self._calls if not call.cancelled)
