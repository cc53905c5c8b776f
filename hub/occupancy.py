"""Occupied and vacated (docs/protocol.md section 10), as a pure state machine over presence diffs.

Theory of operation
-------------------
Each session of a workspace, and the workspace itself, is in one of three states as far as a
back end is told:

    vacant     nothing announced (the start, and after a vacated event)
    occupied   an occupied event was sent; its count is >= 1, or went to 0 moments ago
    vacating   occupied, but its count is 0 since ``deadline`` - delay

Rules, applied to the final values a :class:`~hub.presence.Diff` carries (``counts`` for
``attached_clients(S)``, ``online`` for the workspace), so that a change that moves a count
away and back within one transition is no change at all:

    vacant   --count >= 1-->  occupied    and sends  <kind>_occupied
    occupied --count 0---->   vacating    (deadline = now + delay; sends nothing yet)
    vacating --count >= 1-->  occupied    (a return within the delay: sends nothing)
    vacating --deadline--->   vacant      and sends  <kind>_vacated

An event carries the workspace ``seq`` it was decided at: an occupied event the seq of the
change that made it, a vacated event the workspace's seq when its delay ended (the count has
been 0 since, so that seq still shows it at 0). A workspace's events are therefore produced in
``seq`` order. Within one change, ``workspace_occupied`` comes before the sessions' occupied
events; vacated events of one instant come sessions first, the workspace last.

Time is an argument (``now``), as in :mod:`hub.presence`; the shell asks
:meth:`Occupancy.next_deadline` when to call :meth:`Occupancy.expire`. The Redis backend's
scripts implement the same rules in Lua, on the same timers as holds and graces.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hub.deadlines import Deadlines
from hub.presence import Diff

__all__ = ["Event", "Occupancy"]

WORKSPACE = None  # the key of the workspace's own state, beside its sessions'


@dataclass(frozen=True, slots=True)
class Event:
    """One webhook event: ``session_occupied``, ``session_vacated``, ``workspace_occupied`` or
    ``workspace_vacated`` (``session_id`` None for the workspace ones)."""

    name: str
    workspace_id: str
    session_id: str | None
    seq: int


@dataclass(slots=True)
class _Space:
    seq: int = 0
    occupied: set[str | None] = field(default_factory=set)  # occupied or vacating
    vacating: dict[str | None, float] = field(default_factory=dict)  # key -> deadline


class Occupancy:
    """Occupancy of every workspace seen, and the vacated timers."""

    def __init__(self, delay: float = 5.0) -> None:
        self.delay = delay
        self._spaces: dict[str, _Space] = {}
        self._timers: Deadlines[tuple[str, str | None]] = Deadlines(self._live)

    def apply(self, diff: Diff, now: float) -> list[Event]:
        """The events a committed change causes now (vacated ones come later, from
        :meth:`expire`)."""
        if not diff.changed:
            space = self._spaces.get(diff.workspace_id)
            if space is not None:
                space.seq = max(space.seq, diff.seq)
            return []
        space = self._spaces.setdefault(diff.workspace_id, _Space())
        space.seq = max(space.seq, diff.seq)
        events: list[Event] = []
        if diff.online is not None:
            self._move(diff, space, WORKSPACE, diff.online, now, events)
        for session_id in sorted(diff.counts):
            self._move(diff, space, session_id, diff.counts[session_id], now, events)
        if diff.online == 0:  # the workspace's timer after its sessions': it fires after them
            self._arm(diff.workspace_id, space, WORKSPACE, now)
        return events

    def next_deadline(self) -> float | None:
        """When :meth:`expire` next has something to do, or None."""
        return self._timers.next()

    def expire(self, now: float) -> list[Event]:
        """The vacated events whose delay has ended at ``now``; each once, a workspace's
        sessions before the workspace itself (as the Redis scripts send them: a workspace
        vacated, occupied again and vacated again at one instant has timers whose order in
        the heap says nothing of that)."""
        events: list[Event] = []
        last: list[Event] = []  # the workspaces' own, after every session's
        for workspace_id, key in self._timers.due(now):
            space = self._spaces[workspace_id]
            del space.vacating[key]
            space.occupied.discard(key)
            event = _event("vacated", workspace_id, key, space.seq)
            (last if key is WORKSPACE else events).append(event)
            if not space.occupied:
                del self._spaces[workspace_id]
        return events + last

    def forget(self, workspace_id: str) -> None:
        """A deleted workspace: nothing more is sent for it."""
        self._spaces.pop(workspace_id, None)

    def _move(
        self, diff: Diff, space: _Space, key: str | None, n: int, now: float, events: list[Event]
    ) -> None:
        if n > 0:
            if key in space.occupied:
                space.vacating.pop(key, None)  # a return within the delay
            else:
                space.occupied.add(key)
                events.append(_event("occupied", diff.workspace_id, key, diff.seq))
        elif key is not WORKSPACE:
            self._arm(diff.workspace_id, space, key, now)

    def _arm(self, workspace_id: str, space: _Space, key: str | None, now: float) -> None:
        if key not in space.occupied or key in space.vacating:
            return
        deadline = space.vacating[key] = now + self.delay
        self._timers.push(deadline, (workspace_id, key))

    def _live(self, deadline: float, timer: tuple[str, str | None]) -> bool:
        workspace_id, key = timer
        space = self._spaces.get(workspace_id)
        return space is not None and space.vacating.get(key) == deadline


def _event(what: str, workspace_id: str, key: str | None, seq: int) -> Event:
    kind = "workspace" if key is WORKSPACE else "session"
    return Event(f"{kind}_{what}", workspace_id, key, seq)
