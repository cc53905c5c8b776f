"""The viewer-refresh shell: who is here, kept fresh for the sockets that watch a session.

A socket's ``watch`` joins its room's :class:`~hub.watch.Watches` (the pure bookkeeping of
who watches what, and what moved); this shell does the I/O and the timing around it:

- :meth:`Viewers.watch` reads the session's viewers from the backend, answers the watcher
  with its ``viewers`` frame and sends the other groups what that read moved;
- a change that touched a watched session (:meth:`Viewers.touched`), or a resync of the
  workspace (:meth:`Viewers.touch_all`), marks it dirty; at the next coalescing point (like
  ``counts``) one task reads every dirty session once and sends each group of watchers what
  moved, one encoding per group;
- reads of one workspace run one at a time, under its lock, so a group's frames never go back
  in ``seq``; a read that fails (the backend is down) is tried again :data:`VIEWERS_RETRY`
  later.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from hub import protocol
from hub.backends import PresenceBackend
from hub.clock import Clock
from hub.connection import Connection
from hub.errors import Forbidden, TooManyWatches
from hub.protocol import Watch
from hub.room import Room
from hub.watch import Watches
from hub.writer import Outgoing

__all__ = ["MAX_WATCHES", "VIEWERS_RETRY", "Viewers"]

log = logging.getLogger(__name__)

_Room = Room[Connection, protocol.Ref]  # a room of this process's sockets
_Watches = Watches[Connection]

# Sessions one socket may watch at once (docs/protocol.md section 9).
MAX_WATCHES = 8
# How long a viewers read that failed (the backend is down) waits before it is tried again.
VIEWERS_RETRY = 1.0


class Viewers:
    """The viewers of watched sessions for the rooms of one hub (``rooms``: the hub's own,
    by workspace; ``spawn``: the hub's way to start a task it cancels on close; ``out``: its
    frames-out counters)."""

    def __init__(
        self,
        backend: PresenceBackend,
        rooms: dict[str, _Room],
        coalesce_window: float,
        spawn: Callable[[Coroutine[Any, Any, None], str], None],
        out: dict[str, int],
        clock: Callable[[], Clock],
    ) -> None:
        self.backend = backend
        self._clock = clock  # the hub's (hub.clock): its windows, here the coalescing one
        self.rooms = rooms
        self.coalesce_window = coalesce_window
        self._spawn = spawn
        self._out = out

    async def watch(self, conn: Connection, command: Watch) -> None:
        """Start (or restart, with a new limit) a socket's watch of a session's viewers: its
        ``viewers`` frame now, then a ``viewers_diff`` after every change (see hub.watch)."""
        if not conn.may_watch:
            raise Forbidden("watching viewers needs a token with the viewers scope")
        watching = conn.watches or {}
        if len(watching) >= MAX_WATCHES and command.session_id not in watching:
            raise TooManyWatches(f"a socket watches at most {MAX_WATCHES} sessions")
        room = self.rooms.get(conn.workspace_id)
        if room is None or conn not in room.conns:
            return  # the socket is leaving
        watches = room.watches
        if watches is None:
            watches = room.watches = _Watches()
            watches.lock = asyncio.Lock()
        session_id, limit = command.session_id, command.limit
        async with watches.lock:
            wanted = max(limit, watches.limit(session_id) or 0)
            try:
                viewers = await self.backend.viewers(conn.workspace_id, session_id, wanted)
            except BaseException:
                if watches.empty:
                    self._drop(room)  # nobody else watches: nothing left behind
                raise
            if conn not in room.conns or self.rooms.get(conn.workspace_id) is not room:
                return  # it left meanwhile
            room.watches = watches  # (again, if a failed read of another socket dropped it)
            self._send(watches.update(viewers))
            old = watching.get(session_id)
            if old is not None:
                watches.remove(session_id, old, conn)
            frame = watches.add(viewers, limit, conn)
            if conn.watches is None:
                conn.watches = {}
            conn.watches[session_id] = limit
            self._out["viewers"] += 1
            conn.push(Outgoing(protocol.encode(dataclasses.replace(frame, ref=command.ref))))

    def unwatch(self, conn: Connection, session_id: str) -> None:
        """End a socket's watch of one session (nothing when it does not watch it)."""
        if conn.watches is None or session_id not in conn.watches:
            return
        limit = conn.watches.pop(session_id)
        room = self.rooms.get(conn.workspace_id)
        if room is not None and room.watches is not None:
            room.watches.remove(session_id, limit, conn)
            if room.watches.empty:
                self._drop(room)

    def unwatch_all(self, room: _Room, conn: Connection) -> None:
        """End every watch of a socket that leaves ``room``."""
        watching, conn.watches = conn.watches, None
        if not watching or room.watches is None:
            return
        for session_id, limit in watching.items():
            room.watches.remove(session_id, limit, conn)
        if room.watches.empty:
            self._drop(room)

    def touched(self, room: _Room, sessions: set[str] | frozenset[str]) -> None:
        """A change touched ``sessions``: those watched are read at the next coalescing point."""
        if room.watches is not None and room.watches.touch(sessions):
            self._schedule(room.watches, room)

    def touch_all(self, room: _Room) -> None:
        """Every watched session of ``room`` may have moved unseen (a resync): read them all."""
        if room.watches is not None:
            room.watches.touch(set(room.watches.sessions))
            self._schedule(room.watches, room)

    @staticmethod
    def close(room: _Room) -> None:
        """The hub closes: no more reads for ``room``."""
        if room.watches is not None and room.watches.timer is not None:
            room.watches.timer.cancel()

    @staticmethod
    def _drop(room: _Room) -> None:
        if room.watches is not None and room.watches.empty:
            if room.watches.timer is not None:
                room.watches.timer.cancel()
            room.watches = None

    def _schedule(self, watches: _Watches, room: _Room) -> None:
        """Read the dirty sessions' viewers at the next coalescing point (like counts)."""
        if watches.timer is not None:
            return
        clock = self._clock()
        due = max(clock.time(), watches.last_flush + self.coalesce_window)
        watches.timer = clock.call_at(due, self._start, watches, room)

    def _start(self, watches: _Watches, room: _Room) -> None:
        watches.timer = None
        if room.watches is watches:
            self._spawn(self._refresh(watches, room), f"viewers-{room.workspace_id}")

    async def _refresh(self, watches: _Watches, room: _Room) -> None:
        """Read every dirty session once and send each group what moved, one read at a time
        per workspace (so a group's frames never go back in ``seq``)."""
        clock = self._clock()
        async with watches.lock:
            while watches.dirty and room.watches is watches:
                session_id = watches.dirty.pop()
                limit = watches.limit(session_id)
                if limit is None:
                    continue
                try:
                    viewers = await self.backend.viewers(room.workspace_id, session_id, limit)
                except Exception as exc:  # the backend is down: try again a little later
                    log.warning("viewers of %s failed: %s", room.workspace_id, exc)
                    watches.dirty.add(session_id)
                    watches.last_flush = clock.time() + VIEWERS_RETRY - self.coalesce_window
                    self._schedule(watches, room)
                    return
                self._send(watches.update(viewers))
            watches.last_flush = clock.time()

    def _send(self, frames: list[tuple[set[Connection], protocol.ViewersDiff]]) -> None:
        for conns, frame in frames:
            shared = Outgoing(protocol.encode(frame))
            self._out["viewers_diff"] += len(conns)
            for conn in conns:
                conn.push(shared)
