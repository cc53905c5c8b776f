"""Deadlines with lazy cancellation: the timer heap of the pure state machines.

An entry is ``(deadline, key)``; whether it still stands is the owner's to say (``live``):
re-arming or cancelling a timer is just changing the owner's state, and the old entry is
skipped when it comes up. When the heap has doubled since it was last compacted, only the
live entries are kept: amortized O(1) per push, never more than twice the live timers. No
clock, no I/O: deadlines are numbers the caller chose.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

__all__ = ["Deadlines"]

K = TypeVar("K")


class Deadlines(Generic[K]):
    """A heap of ``(deadline, key)``; ``live(deadline, key)`` says whether an entry stands.
    Entries of one deadline come out in the order they were pushed."""

    def __init__(self, live: Callable[[float, K], bool]) -> None:
        self._live = live
        self._heap: list[tuple[float, int, K]] = []
        self._pushed = 0  # tiebreak: the order of pushes
        self._compacted = 0  # heap size after the last compaction

    def push(self, deadline: float, key: K) -> None:
        self._pushed += 1
        heapq.heappush(self._heap, (deadline, self._pushed, key))
        if len(self._heap) > 2 * self._compacted + 64:
            self._heap = [e for e in self._heap if self._live(e[0], e[2])]
            heapq.heapify(self._heap)
            self._compacted = len(self._heap)

    def next(self) -> float | None:
        """The earliest live deadline, or None."""
        heap = self._heap
        while heap and not self._live(heap[0][0], heap[0][2]):
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def due(self, now: float) -> Iterator[K]:
        """The keys of the live entries due at ``now``, earliest first; each is removed as it
        is yielded (the owner's state changes before the next one is checked)."""
        heap = self._heap
        while heap and heap[0][0] <= now:
            deadline, _, key = heapq.heappop(heap)
            if self._live(deadline, key):
                yield key

    def __len__(self) -> int:
        return len(self._heap)
