"""Who watches whom: the viewers lists one node's sockets watch in one workspace, as a pure
state machine (docs/protocol.md section 9, "Viewers").

Theory of operation
-------------------
A socket watches a session with a ``limit``; sockets that watch the same session with the same
limit form a **group**, which remembers the list its members were last shown (the first
``limit`` identified viewers by arrival, and ``total`` and ``anonymous``). The shell marks
sessions dirty when a change touched their viewers, reads each dirty one from the backend once
(at the largest limit watched there) and hands the read to :meth:`Watches.update`, which
compares it with every group's list and returns one ``viewers_diff`` per group that moved: the
shell encodes it once and sends the same bytes to every member.

Rules (docs/people.md states them for users):

- ``joined`` are the users that entered the group's list, ``updated`` those whose profile or
  number of clients changed, both in the list's order (arrival); ``left`` those that are no
  longer in it, in the order they were shown. A group's list is a window on the first
  ``limit`` viewers: when one of them leaves, the next one by arrival joins it.
- A diff is sent when anything of the above, ``total`` or ``anonymous`` moved; a read that
  moved nothing for a group sends it nothing.
- Frames of a group carry the ``seq`` of the read; reads of one workspace run one at a time,
  so a socket never sees ``seq`` go down in its viewers frames.

No I/O, no asyncio: the shell owns the timer and the lock (``timer``, ``lock``, opaque here).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from hub.presence import Viewer, Viewers
from hub.protocol import ViewersDiff, ViewersFrame, viewer_json

__all__ = ["Watches", "diff"]

C = TypeVar("C")  # a socket as the shell knows it


@dataclass(slots=True)
class _Group(Generic[C]):
    limit: int
    conns: set[C] = field(default_factory=set)
    shown: list[Viewer] = field(default_factory=list)
    total: int = 0
    anonymous: int = 0


def diff(before: list[Viewer], after: list[Viewer]) -> tuple[list[Viewer], list[Viewer], list[str]]:
    """(joined, updated, left) from one list of viewers to the next (see the rules)."""
    old = {v.user_id: v for v in before}
    new = {v.user_id for v in after}
    joined = [v for v in after if v.user_id not in old]
    updated = [v for v in after if v.user_id in old and old[v.user_id] != v]
    left = [v.user_id for v in before if v.user_id not in new]
    return joined, updated, left


class Watches(Generic[C]):
    """The watched sessions of one workspace on this node, by session and limit."""

    __slots__ = ("dirty", "last_flush", "lock", "sessions", "timer")

    def __init__(self) -> None:
        self.sessions: dict[str, dict[int, _Group[C]]] = {}
        self.dirty: set[str] = set()
        self.last_flush = float("-inf")
        self.timer: Any = None
        self.lock: Any = None

    @property
    def empty(self) -> bool:
        return not self.sessions

    def limit(self, session_id: str) -> int | None:
        """The largest limit watched on the session (what to read), or None if unwatched."""
        groups = self.sessions.get(session_id)
        return max(groups) if groups else None

    def touch(self, sessions: set[str] | frozenset[str]) -> bool:
        """Mark the watched ones of ``sessions`` dirty; whether there was any."""
        hit = sessions & self.sessions.keys()
        self.dirty |= hit
        return bool(hit)

    def add(self, viewers: Viewers, limit: int, conn: C) -> ViewersFrame:
        """``conn`` watches ``viewers.session_id`` from this read on (call :meth:`update`
        with the same read first): the full frame to send it."""
        groups = self.sessions.setdefault(viewers.session_id, {})
        group = groups.get(limit)
        if group is None:
            group = groups[limit] = _Group(limit)
            self._show(group, viewers)
        group.conns.add(conn)
        return ViewersFrame(
            viewers.workspace_id,
            viewers.session_id,
            viewers.seq,
            group.total,
            group.anonymous,
            [viewer_json(v) for v in group.shown],
        )

    def remove(self, session_id: str, limit: int, conn: C) -> None:
        groups = self.sessions.get(session_id, {})
        group = groups.get(limit)
        if group is None:
            return
        group.conns.discard(conn)
        if not group.conns:
            del groups[limit]
            if not groups:
                del self.sessions[session_id]
                self.dirty.discard(session_id)

    def update(self, viewers: Viewers) -> list[tuple[set[C], ViewersDiff]]:
        """A fresh read of one session: the diff of every group that moved, with its members."""
        out = []
        for group in self.sessions.get(viewers.session_id, {}).values():
            before, total, anonymous = group.shown, group.total, group.anonymous
            self._show(group, viewers)
            joined, updated, left = diff(before, group.shown)
            if joined or updated or left or (total, anonymous) != (group.total, group.anonymous):
                frame = ViewersDiff(
                    viewers.session_id,
                    viewers.seq,
                    group.total,
                    group.anonymous,
                    [viewer_json(v) for v in joined],
                    [viewer_json(v) for v in updated],
                    left,
                )
                out.append((group.conns, frame))
        return out

    @staticmethod
    def _show(group: _Group[C], viewers: Viewers) -> None:
        group.shown = viewers.viewers[: group.limit]
        group.total = viewers.total
        group.anonymous = viewers.anonymous
