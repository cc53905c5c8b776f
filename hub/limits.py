"""Per-socket frame rate limit: a token bucket, pure (time is an argument).

``rate`` frames a second on average and ``burst`` at once. A refused frame gets a
``rate_limited`` error frame; a peer refused without a break (no pause of a second or more
between refusals) for ``close_after`` seconds is closed with 4429.
"""

from __future__ import annotations

__all__ = ["RateLimit"]


class RateLimit:
    __slots__ = ("_last_refused", "_refusing_since", "_stamp", "_tokens", "burst", "rate")

    # Refusals closer together than this are one unbroken stretch.
    BREAK = 1.0

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self._tokens = float(burst)
        self._stamp = now
        self._refusing_since: float | None = None
        self._last_refused = 0.0

    def allow(self, now: float) -> bool:
        """Take one token if there is one; False means the frame is refused."""
        tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now
        if tokens >= 1:
            self._tokens = tokens - 1
            return True
        self._tokens = tokens
        if self._refusing_since is None or now - self._last_refused >= self.BREAK:
            self._refusing_since = now
        self._last_refused = now
        return False

    def refusing_for(self, now: float) -> float:
        """How long the peer has been refused without a break (0 when it is not)."""
        if self._refusing_since is None or now - self._last_refused >= self.BREAK:
            return 0.0
        return now - self._refusing_since
