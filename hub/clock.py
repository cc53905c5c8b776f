"""The hub's clock: what time it is, and a call at a later time, as one small port.

Every window of the hub shell (the coalescing of counts and of viewers reads, the viewers
read's retry, a parked ack's wait, token expiry, the per-socket rate limit) is read from
one :class:`Clock` and timed by it. The running event loop is one already (``time()``,
``call_at``, ``call_later`` are its own methods, on asyncio and uvloop alike), so it is the
default and the production path has no wrapper. A test passes a clock it advances by hand,
which runs the calls that came due, so it drives a window without sleeping through it
(tests/timing.py ``FakeClock``).

Why not a bare callable returning seconds: a callable can say what time it is, but a window
also needs something to happen when it closes (the coalesced flush); a fake that moves time
without firing those calls would leave every window open forever.

Times are seconds on the clock's own monotonic scale, not Unix time: a token's ``exp`` is
converted once, when it is armed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

__all__ = ["Clock", "Timer"]


class Timer(Protocol):
    """A scheduled call (what ``call_at`` returns); asyncio's and uvloop's handles are ones."""

    def cancel(self) -> None: ...

    def when(self) -> float: ...


class Clock(Protocol):
    """What time it is, and calls at later times: the subset of the event loop the hub's
    windows use."""

    def time(self) -> float: ...

    def call_at(self, when: float, callback: Callable[..., object], *args: Any) -> Timer: ...

    def call_later(self, delay: float, callback: Callable[..., object], *args: Any) -> Timer: ...
