"""One workspace's view as a node's sockets see it: a pure state machine, like the core.

Theory of operation
-------------------
A room holds what this process has shown, or will show, to its sockets of one workspace: the
counts and ``online`` (and the same for distinct users, ``users`` and ``online_users``) as of
the newest change applied (``seq``), and what moved since the last flush. The shell
(:mod:`hub.hub`) feeds it changes and snapshots from the backend, asks it when to flush, and
sends what :meth:`Room.take` returns to every ready socket. No I/O, no asyncio, no clock
reads: time comes in as ``now``.

Rules:

1. **Unsynced until the first snapshot.** Diffs that arrive before it wait in ``early`` and are
   applied after it (those it already includes are dropped by rule 2).
2. **In ``seq`` order.** A diff at or below ``seq`` is already reflected and is ignored; the
   next one (``seq + 1``) applies; one that skips a seq reveals missed changes: the room keeps
   the highest seq it saw in ``behind`` (``missed`` is then true) and the shell re-reads the
   snapshot, which the room takes only if it is newer (:meth:`Room.rebase`). Values never go
   back to an older version.
3. **Coalescing.** The first change after a quiet period may flush at once; later ones wait
   until ``window`` after the previous flush (:meth:`Room.flush_at`). When only ``online``
   moved (sockets joined or left, no session count), the wait is at least
   ``ONLINE_COST_FACTOR`` times the CPU the previous flush took: in a connect storm, where
   every join moves ``online`` and ``online`` goes to every socket, fan-out then takes at
   most a thirty-third of the process and cannot starve the joins themselves. Session counts
   always go on ``window``; a change of one brings a later-scheduled flush forward. A flush
   carries the new absolute value of every session (and ``online``) that moved since the last
   one; changes that cancelled out still advance ``seq`` with an empty ``counts``.
4. **Acks after their change.** An ack for a change the room has not applied yet is parked
   and released once ``seq`` reaches it. An ack always carries the room's ``seq``, which
   includes the change, so no socket sees ``seq`` go down. It does not wait for the flush: a
   socket usually hears of a seq in its ack before the ``counts`` frame that brings it there,
   which follows at the next flush, within the window (docs/protocol.md section 8, rule 4).
5. **A joiner starts from the room.** A socket that joins a synced room gets the room's own
   view (:meth:`Room.view`) as its snapshot: the room is at least as new as the snapshot the
   join read, and what was already flushed to the others is in it. The view may include
   changes not flushed yet; the next flush then carries those sessions even if they moved
   back meanwhile (the others need no frame for a change that cancelled out, the joiner
   does: it was shown the value in between).
"""

from __future__ import annotations

from typing import Any, Generic, TypeVar

from hub.presence import Diff, Snapshot
from hub.protocol import Counts

__all__ = ["ONLINE_COST_FACTOR", "Room"]

# A flush that carries only ``online`` waits at least this many times the last flush's CPU
# (rule 3): the fan-out of joins and leaves takes at most a thirty-third of the process.
ONLINE_COST_FACTOR = 32.0

C = TypeVar("C")  # a socket as the shell knows it
R = TypeVar("R")  # what the shell needs to send an ack (the frame's ref)


class Room(Generic[C, R]):
    """The view of one workspace, its sockets, and what waits for the next flush."""

    __slots__ = (
        "acks",
        "base",
        "base_online",
        "base_online_users",
        "base_users",
        "behind",
        "conns",
        "cost",
        "early",
        "forced",
        "forced_online",
        "forced_online_users",
        "forced_users",
        "last_flush",
        "online",
        "online_users",
        "resyncing",
        "seq",
        "synced",
        "timer",
        "users",
        "values",
        "watches",
        "window",
        "workspace_id",
    )

    def __init__(self, workspace_id: str, window: float) -> None:
        self.workspace_id = workspace_id
        self.window = window
        self.conns: set[C] = set()
        self.synced = False
        self.early: list[Diff] = []
        # The workspace's counts as of the newest change applied here.
        self.values: dict[str, int] = {}
        self.online = 0
        self.users: dict[str, int] = {}  # the same for distinct users (docs/protocol.md section 9)
        self.online_users = 0
        self.seq = -1
        # Values as of the last flush, for the sessions (and online) touched since.
        self.base: dict[str, int] = {}
        self.base_online: int | None = None
        self.base_users: dict[str, int] = {}
        self.base_online_users: int | None = None
        # What the next flush sends even if it moved back meanwhile: what moved before a view
        # was taken (rule 5), since that view showed a value the others were not sent.
        self.forced: set[str] = set()
        self.forced_users: set[str] = set()
        self.forced_online = False
        self.forced_online_users = False
        self.last_flush = float("-inf")
        self.cost = 0.0  # the CPU seconds the last flush took (measured by the shell)
        self.behind = -1  # the highest seq seen but not applied (missed changes before it)
        self.resyncing = False
        self.acks: list[tuple[int, C, R]] = []
        self.timer: Any = None  # the shell's scheduled flush, opaque here
        self.watches: Any = None  # the shell's viewers watches, opaque here (None: none)

    @property
    def idle(self) -> bool:
        return not self.conns

    @property
    def pending(self) -> bool:
        """Whether something moved since the last flush."""
        return bool(self.base) or self.base_online is not None or bool(self.base_users)

    @property
    def missed(self) -> bool:
        """Whether changes were seen that could not be applied (a resync is due)."""
        return self.behind > self.seq

    def merge(self, diff: Diff) -> bool:
        """Apply a diff (rule 2); False when it revealed missed changes."""
        if not self.synced:
            self.early.append(diff)
            return True
        if diff.seq <= self.seq:
            return True
        if diff.seq > self.seq + 1:
            self.behind = max(self.behind, diff.seq)
            return False
        self.seq = diff.seq
        for session_id, n in diff.counts.items():
            _put(self.values, self.base, session_id, n)
        if diff.online is not None:
            self._set_online(diff.online)
        for session_id, n in diff.users.items():
            _put(self.users, self.base_users, session_id, n)
        if diff.online_users is not None:
            self._set_online_users(diff.online_users)
        return True

    def rebase(self, snapshot: Snapshot) -> None:
        """Take a snapshot: the first one (rule 1), or one newer than the room."""
        if not self.synced:
            self.synced = True
            self.values = dict(snapshot.counts)
            self.online = snapshot.online
            self.users = dict(snapshot.users)
            self.online_users = snapshot.online_users
            self.seq = snapshot.seq
            early, self.early = self.early, []
            for diff in early:
                self.merge(diff)
        elif snapshot.seq > self.seq:
            self.seq = snapshot.seq
            for session_id in self.values.keys() | snapshot.counts.keys():
                _put(self.values, self.base, session_id, snapshot.counts.get(session_id, 0))
            self._set_online(snapshot.online)
            for session_id in self.users.keys() | snapshot.users.keys():
                _put(self.users, self.base_users, session_id, snapshot.users.get(session_id, 0))
            self._set_online_users(snapshot.online_users)

    def view(self) -> Snapshot:
        """The room's view as a snapshot (rule 5). It may show values not flushed yet: the
        next flush sends each of those sessions (and ``online``) even if it moved back to the
        value of the last flush meanwhile, which the sockets with this view need."""
        self.forced.update(self.base)
        self.forced_users.update(self.base_users)
        self.forced_online = self.forced_online or self.base_online is not None
        self.forced_online_users = self.forced_online_users or self.base_online_users is not None
        return Snapshot(
            self.workspace_id,
            self.seq,
            self.online,
            dict(self.values),
            dict(self.users),
            self.online_users,
        )

    def flush_at(self, now: float) -> float:
        """When the next flush may run (rule 3): ``now`` after a quiet period."""
        window = self.window
        if not self.base and not self.base_users:  # only online moved (joins and leaves)
            window = max(window, ONLINE_COST_FACTOR * self.cost)
        return max(now, self.last_flush + window)

    def take(self, now: float) -> Counts:
        """The frame for everything merged since the last flush, which happens at ``now``."""
        self.last_flush = now
        counts = _moved(self.values, self.base)
        online = self.online if self.base_online not in (None, self.online) else None
        users = _moved(self.users, self.base_users)
        online_users = (
            self.online_users if self.base_online_users not in (None, self.online_users) else None
        )
        if self.forced or self.forced_users or self.forced_online or self.forced_online_users:
            for session_id in self.forced:
                counts[session_id] = self.values.get(session_id, 0)
            for session_id in self.forced_users:
                users[session_id] = self.users.get(session_id, 0)
            if self.forced_online:
                online = self.online
            if self.forced_online_users:
                online_users = self.online_users
            self.forced, self.forced_users = set(), set()
            self.forced_online = self.forced_online_users = False
        self.base = {}
        self.base_online = None
        self.base_users = {}
        self.base_online_users = None
        return Counts(self.seq, counts, online, users, online_users)

    def park(self, seq: int, conn: C, ref: R) -> bool:
        """Park an ack for the change at ``seq`` (rule 4); False when it may go now."""
        if seq <= self.seq:
            return False
        self.acks.append((seq, conn, ref))
        return True

    def ready_acks(self) -> list[tuple[C, R]]:
        """The parked acks whose change the room has applied, in the order they came."""
        if not self.acks:
            return []
        ready = [(conn, ref) for seq, conn, ref in self.acks if seq <= self.seq]
        self.acks = [a for a in self.acks if a[0] > self.seq]
        return ready

    def _set_online(self, online: int) -> None:
        if self.base_online is None:
            self.base_online = self.online
        self.online = online

    def _set_online_users(self, online_users: int) -> None:
        if self.base_online_users is None:
            self.base_online_users = self.online_users
        self.online_users = online_users


def _put(values: dict[str, int], base: dict[str, int], session_id: str, n: int) -> None:
    """Set one session's value, remembering the one of the last flush."""
    base.setdefault(session_id, values.get(session_id, 0))
    if n:
        values[session_id] = n
    else:
        values.pop(session_id, None)


def _moved(values: dict[str, int], base: dict[str, int]) -> dict[str, int]:
    """The sessions whose value differs from the last flush's, with their new values."""
    return {sid: values.get(sid, 0) for sid, before in base.items() if values.get(sid, 0) != before}
