"""The async shell around presence: local sockets per workspace and the coalesced fan-out.

Flow of one change: a backend call commits a :class:`~hub.presence.Diff` and hands it to
:meth:`Hub.changed` (the hub is the backend's :class:`~hub.backends.Events`); the workspace's
:class:`~hub.room.Room` (a pure state machine with its rules in its docstring) merges it in
``seq`` order and says when to flush. A flush encodes one ``counts`` frame and hands the same
bytes to every ready socket of the workspace (:class:`~hub.connection.Connection`, which sends
them at once or keeps them in its bounded outbox). The hub also applies the commands a socket
sends, and the limits on sockets per process and per client.

Viewers (who is here) are kept fresh by :class:`~hub.viewers.Viewers`, the viewer-refresh
shell, told of every ``watch``, ``unwatch``, change and resync here.

A joining socket is registered with its room before the join's first await, so every event
that lands while it joins (a retire, a delete, a change flushed to the others) reaches it:
closes close it, and its first frame is the room's view, at least as new as its own snapshot.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

from hub import protocol
from hub.auth import Auth
from hub.backends import PresenceBackend
from hub.clock import Clock, Timer
from hub.connection import Connection, Outgoing, send_each
from hub.deadlines import Deadlines
from hub.errors import (
    Forbidden,
    OverCapacity,
    PeerError,
    RateLimited,
    UnsupportedFrame,
)
from hub.limits import RateLimit
from hub.metrics import Metrics
from hub.multimap import MultiMap
from hub.presence import Diff, Profile, Snapshot
from hub.protocol import (
    CloseCode,
    Command,
    Ping,
    Pong,
    Refresh,
    SetProfile,
    SetSession,
    Sync,
    Unwatch,
    Watch,
)
from hub.room import Room
from hub.viewers import Viewers
from hub.writer import Writer

__all__ = ["Hub", "Limits"]

log = logging.getLogger(__name__)

_Room = Room[Connection, protocol.Ref]  # a room of this process's sockets

# How long a parked ack waits for its change to come through the backend's feed before the
# room re-reads the snapshot (a feed that lags or was silently lost never leaves it unanswered).
ACK_WAIT = 1.0


_RATE_LIMITED = Outgoing(
    protocol.encode(protocol.Error.of(RateLimited("too many frames: slow down")))
)
_BINARY_REFUSED = Outgoing(
    protocol.encode(protocol.Error.of(UnsupportedFrame("binary frames are not supported")))
)
# Metric labels of frames in and out.
_KIND = {
    SetSession: "set_session", Sync: "sync", Ping: "ping", SetProfile: "set_profile",
    Watch: "watch", Unwatch: "unwatch", Refresh: "refresh",
}  # fmt: skip
_IN = (*_KIND.values(), "invalid", "binary", "rate_limited")
_OUT = ("counts", "session", "snapshot", "ack", "error", "pong", "viewers", "viewers_diff")


@dataclass(frozen=True, slots=True)
class Limits:
    """What one process and one socket may take (see the HUB_* settings of the same names)."""

    max_sockets: int = 50_000
    max_streams: int = 8  # per client per workspace
    rate: float = 20.0  # frames a second per socket; 0: no limit
    burst: int = 50
    rate_close_after: float = 5.0


def _expiry_stands(deadline: float, conn: Connection) -> bool:
    """An expiry entry counts while its socket is open and it is the socket's latest."""
    return conn.expires == deadline and not conn.closing


class Hub:
    """Local connections per workspace, and the fan-out of backend changes to them."""

    def __init__(
        self,
        backend: PresenceBackend,
        *,
        coalesce_window: float,
        max_outbox_bytes: int,
        limits: Limits | None = None,
        metrics: Metrics | None = None,
        auth: Auth | None = None,
        clock: Clock | None = None,
    ) -> None:
        """``clock`` times every window (hub.clock); None: the running loop's own."""
        self.backend = backend
        self.auth = auth  # verifies the tokens of refresh frames
        self.metrics = metrics or Metrics()
        m = self.metrics
        self._in = m.frames_in.track(_IN)  # frames counted by type: += on plain ints
        self._out = m.frames_out.track(_OUT)
        self.coalesce_window = coalesce_window
        self.max_outbox_bytes = max_outbox_bytes
        self.limits = limits or Limits()
        self.sockets = 0  # local sockets joined and not yet left
        self.rooms: dict[str, _Room] = {}
        self._by_client: MultiMap[Connection] = MultiMap()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._given_clock = clock
        self.clock: Clock  # set by start(): the given clock, else the loop
        self._tasks: set[asyncio.Task[None]] = set()  # resyncs and viewers reads
        # Token expiry of every local stream: one heap and one loop timer for the process
        # (an entry stands while the socket is open and its deadline has not moved).
        self._expiry: Deadlines[Connection] = Deadlines(_expiry_stands)
        self._expiry_timer: Timer | None = None
        self._expiry_at = 0.0
        self.viewers = Viewers(
            backend, self.rooms, coalesce_window, self._spawn, self._out, lambda: self.clock
        )

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.clock = self._given_clock or self._loop
        await self.backend.start(self)

    async def close(self) -> None:
        if self._expiry_timer is not None:
            self._expiry_timer.cancel()
            self._expiry_timer = None
        for room in self.rooms.values():
            if room.timer is not None:
                room.timer.cancel()
            Viewers.close(room)
        for task in list(self._tasks):
            task.cancel()
        await self.backend.close()

    # -- sockets ----------------------------------------------------------------------------

    async def join(
        self,
        workspace_id: str,
        client_id: str,
        writer: Writer,
        *,
        user: str | None = None,
        profile: Profile | None = None,
        may_watch: bool = True,
        connection: type[Connection] = Connection,
        expires: float | None = None,
    ) -> Connection:
        """Attach a new stream (of ``user``, None: anonymous) and queue its snapshot as its
        first frame; ``may_watch``: whether its grant allows watching viewers; ``connection``:
        the stream's class (an event stream's, hub.events); ``expires``: its token's ``exp``
        (Unix seconds), after which, plus the leeway, it is closed with 4401 "token expired"
        unless a ``refresh`` frame moved it. ``writer``: the stream's way out, picked by its
        endpoint (hub.ws, hub.events).

        Raises a PeerError (over capacity, unknown workspace, retired client, a client bound
        to another user) before anything is attached; a stream whose claim goes away while it
        joins comes back closed.
        """
        limits = self.limits
        if self.sockets >= limits.max_sockets:
            raise OverCapacity(f"this server holds its maximum of {limits.max_sockets} sockets")
        mine = self._by_client.get(client_id)
        if sum(1 for c in mine if c.workspace_id == workspace_id) >= limits.max_streams:
            raise OverCapacity(f"client has {limits.max_streams} sockets in this workspace")
        rate = RateLimit(limits.rate, limits.burst, self.clock.time()) if limits.rate else None
        conn = connection(
            workspace_id, client_id, writer, self.max_outbox_bytes, rate, self.metrics
        )
        conn.may_watch = may_watch
        conn.user = user
        room = self._register(conn)  # before the first await: no event can pass it by
        try:
            snapshot = await self._attach(workspace_id, client_id, user, profile)
        except BaseException:
            self._unregister(conn)
            raise
        if not conn.closing:  # else its claim went meanwhile (retired, deleted): closed
            self._rebase(room, snapshot)
            self._start(conn, room.view())
            self._expire_at(conn, expires)
        log.info(
            "%s joined workspace=%s client=%s", conn.id, workspace_id, client_id,
            extra={"conn": conn.id},
        )  # fmt: skip
        return conn

    async def _attach(
        self, workspace_id: str, client_id: str, user: str | None, profile: Profile | None
    ) -> Snapshot:
        """Watch the workspace and attach the stream; the snapshot that includes it (changes
        committed after it reach the room through the backend)."""
        await self.backend.watch(workspace_id)
        try:
            return await self.backend.attach(workspace_id, client_id, user, profile)
        except BaseException:
            self.backend.unwatch(workspace_id)
            raise

    def _register(self, conn: Connection) -> _Room:
        room = self.rooms.get(conn.workspace_id)
        if room is None:
            room = self.rooms[conn.workspace_id] = _Room(conn.workspace_id, self.coalesce_window)
        room.conns.add(conn)
        self._by_client.add(conn.client_id, conn)
        self.sockets += 1
        return room

    def _unregister(self, conn: Connection) -> None:
        conn.stop()
        self.sockets -= 1
        room = self.rooms.get(conn.workspace_id)
        if room is not None:
            room.conns.discard(conn)
            self.viewers.unwatch_all(room, conn)
            if room.idle:
                if room.timer is not None:
                    room.timer.cancel()
                del self.rooms[conn.workspace_id]
        self._by_client.discard(conn.client_id, conn)

    async def leave(self, conn: Connection) -> None:
        """Unregister a stream that ended, and detach it unless its claim is already gone."""
        self._unregister(conn)
        self.backend.unwatch(conn.workspace_id)
        if conn.attached:
            conn.attached = False
            await self.backend.detach(conn.workspace_id, conn.client_id)
        log.info("%s left", conn.id, extra={"conn": conn.id})

    async def command(self, conn: Connection, text: str) -> None:
        """Handle one text frame from a socket; peer errors become error frames."""
        rate = conn.rate
        if rate is not None:
            now = self.clock.time()
            if not rate.allow(now):
                self._in["rate_limited"] += 1
                if rate.refusing_for(now) >= self.limits.rate_close_after:
                    self.metrics.closes.labels("rate_limit").inc()
                    conn.close(CloseCode.RATE_LIMITED)
                else:
                    self._send_one(conn, "error", _RATE_LIMITED)
                return
        try:
            command = protocol.parse(text)
            self._in[_KIND[type(command)]] += 1
            try:
                await self._apply(conn, command)
            except PeerError as exc:  # refused by presence (e.g. unavailable): echo the ref
                exc.ref = command.ref if exc.ref is None else exc.ref
                raise
        except PeerError as exc:
            self._in["invalid"] += 1
            self._send_one(conn, "error", Outgoing(protocol.encode(protocol.Error.of(exc))))

    def refuse_binary(self, conn: Connection) -> None:
        """A binary frame: the contract has none; answered with ``unsupported_frame``."""
        self._in["binary"] += 1
        self._send_one(conn, "error", _BINARY_REFUSED)

    def _send_one(self, conn: Connection, kind: str, frame: Outgoing) -> None:
        self._out[kind] += 1
        conn.push(frame)

    async def _apply(self, conn: Connection, command: Command) -> None:
        if isinstance(command, SetSession):
            seq = await self.backend.set_session(
                conn.workspace_id, conn.client_id, command.session_id
            )
            if command.ref is not None:
                self._acknowledge(conn, command.ref, seq)
        elif isinstance(command, SetProfile):
            seq = await self.backend.set_profile(conn.workspace_id, conn.client_id, command.profile)
            if command.ref is not None:
                self._acknowledge(conn, command.ref, seq)
        elif isinstance(command, Watch):
            await self.viewers.watch(conn, command)
        elif isinstance(command, Unwatch):
            self.viewers.unwatch(conn, command.session_id)
            room = self.rooms.get(conn.workspace_id)
            if command.ref is not None:
                self._ack(conn, command.ref, room.seq if room is not None else 0)
        elif isinstance(command, Sync):
            snapshot = await self.backend.snapshot(conn.workspace_id)
            room = self.rooms.get(conn.workspace_id)
            if room is not None:  # never older than what the socket was shown
                self._rebase(room, snapshot)
                snapshot = room.view()
            self._push_snapshot(conn, snapshot, command.ref)
        elif isinstance(command, Ping):
            self._send_one(conn, "pong", Outgoing(protocol.encode(Pong(command.ref))))
        elif isinstance(command, Refresh):
            await self._refresh(conn, command)

    # -- token expiry (docs/protocol.md section 13) ---------------------------------------------

    async def _refresh(self, conn: Connection, command: Refresh) -> None:
        """A fresh token for a live stream: valid, and for the same user, client and
        workspace, it moves the stream's expiry (and its viewers scope); any other token is
        refused (``unauthorized`` / ``forbidden``) and changes nothing."""
        auth = self.auth
        if auth is not None and auth.enabled:
            grant = await auth.authenticate(command.token)
            if grant.user != conn.user:
                raise Forbidden("the token is for another user than this stream's")
            grant.check_client(conn.client_id)
            grant = await auth.authorize(grant, conn.workspace_id, conn.client_id)
            if conn.closing:
                return
            conn.may_watch = grant.may_view
            self._expire_at(conn, grant.expires)
        if command.ref is not None:
            room = self.rooms.get(conn.workspace_id)
            self._ack(conn, command.ref, room.seq if room is not None else 0)

    def _expire_at(self, conn: Connection, expires: float | None) -> None:
        """Close ``conn`` with 4401 once ``expires`` (Unix seconds) plus the leeway passed."""
        if expires is None:
            conn.expires = None
            return
        clock = self.clock
        leeway = self.auth.leeway if self.auth is not None else 0.0
        deadline = clock.time() + (expires + leeway - time.time())
        conn.expires = deadline
        self._expiry.push(deadline, conn)
        self._arm_expiry(clock)

    def _arm_expiry(self, clock: Clock) -> None:
        """One loop timer, at the earliest expiry of any stream."""
        due = self._expiry.next()
        timer = self._expiry_timer
        if timer is not None:
            if due is not None and self._expiry_at <= due:
                return  # it fires first, and arms the next one
            timer.cancel()
            self._expiry_timer = None
        if due is not None:
            self._expiry_at = due
            self._expiry_timer = clock.call_at(due, self._expire, clock)

    def _expire(self, clock: Clock) -> None:
        self._expiry_timer = None
        for conn in list(self._expiry.due(clock.time() + 0.001)):
            conn.expires = None
            log.info("%s token expired: closing 4401", conn.id, extra={"conn": conn.id})
            self.metrics.closes.labels("token_expired").inc()
            conn.close(CloseCode.UNAUTHORIZED)
        self._arm_expiry(clock)

    def _acknowledge(self, conn: Connection, ref: protocol.Ref, seq: int) -> None:
        """Ack a change committed at ``seq``: once the room has applied it (rule 4 of
        :mod:`hub.room`), or after a re-read if the backend's feed lags."""
        room = self.rooms.get(conn.workspace_id)
        if room is None:
            self._ack(conn, ref, seq)
        elif room.park(seq, conn, ref):  # sent when the change is here ...
            self.clock.call_later(ACK_WAIT, self._ack_overdue, room, seq)  # ... or re-read
        else:
            self._ack(conn, ref, room.seq)

    def _snapshot_frame(
        self, conn: Connection, snapshot: Snapshot, ref: protocol.Ref | None
    ) -> Outgoing:
        self._out["snapshot"] += 1
        frame = protocol.SnapshotFrame(
            snapshot.workspace_id,
            conn.client_id,
            snapshot.seq,
            snapshot.online,
            snapshot.counts,
            snapshot.users,
            snapshot.online_users,
            ref,
        )
        return Outgoing(protocol.encode(frame))

    def _start(self, conn: Connection, snapshot: Snapshot) -> None:
        """A joined socket's first frame: its snapshot; then what waited for it."""
        conn.start(self._snapshot_frame(conn, snapshot, None), snapshot.seq)

    def _push_snapshot(
        self, conn: Connection, snapshot: Snapshot, ref: protocol.Ref | None
    ) -> None:
        conn.push(self._snapshot_frame(conn, snapshot, ref))
        conn.snapshot_seq = snapshot.seq

    # -- events from the backend -----------------------------------------------------------

    def session(self, workspace_id: str, op: str, session: dict[str, Any]) -> None:
        """Tell every local socket of the workspace that a session record changed."""
        room = self.rooms.get(workspace_id)
        if room is None:
            return
        shared = Outgoing(protocol.encode(protocol.SessionEvent(op, session)))
        self._out["session"] += len(room.conns)
        for conn in room.conns:
            conn.push(shared)

    def closed(self, workspace_id: str, client_id: str | None, code: int) -> None:
        """Close the local sockets whose claims are gone (retired client, deleted workspace)."""
        room = self.rooms.get(workspace_id)
        for conn in list(room.conns) if room is not None else ():
            if client_id is None or conn.client_id == client_id:
                conn.attached = False
                conn.close(code)

    def resync(self, workspace_id: str) -> None:
        """Re-read a workspace whose changes may have been missed (once at a time), and the
        viewers of every session watched there."""
        room = self.rooms.get(workspace_id)
        if room is not None:
            self.viewers.touch_all(room)
        if room is None or room.resyncing or not room.synced:
            return
        room.resyncing = True
        self._spawn(self._resync(room), f"resync-{workspace_id}")

    def _spawn(self, job: Any, name: str) -> None:
        loop = self._loop
        assert loop is not None
        task = loop.create_task(job, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _resync(self, room: _Room) -> None:
        self.metrics.resyncs.inc()
        try:
            snapshot = await self.backend.snapshot(room.workspace_id)
        except Exception as exc:  # the backend is down: the next reconnect resyncs again
            log.warning("resync of %s failed: %s", room.workspace_id, exc)
            room.resyncing = False
            return
        room.resyncing = False
        if self.rooms.get(room.workspace_id) is room:
            self._rebase(room, snapshot)

    def _rebase(self, room: _Room, snapshot: Snapshot) -> None:
        room.rebase(snapshot)
        if room.pending:
            self._schedule_flush(room)
        self._release_acks(room)
        if room.missed:
            self.resync(room.workspace_id)

    # -- fan-out ----------------------------------------------------------------------------

    def changed(self, diff: Diff) -> None:
        room = self.rooms.get(diff.workspace_id)
        if room is None:
            return  # nobody here is watching this workspace
        self.viewers.touched(room, diff.viewed)
        if not diff.changed:
            return
        if not room.merge(diff):
            self.resync(room.workspace_id)
            return
        if room.synced:
            self._schedule_flush(room)
            self._release_acks(room)

    def _ack(self, conn: Connection, ref: protocol.Ref, seq: int) -> None:
        """An ack with the room's seq, which includes the change: with a shared backend the
        room may already be past the change's own seq, and no socket sees seq go down."""
        self._send_one(conn, "ack", Outgoing(protocol.encode(protocol.Ack(ref, seq))))

    def _ack_overdue(self, room: _Room, seq: int) -> None:
        if room.seq < seq and self.rooms.get(room.workspace_id) is room:
            self.resync(room.workspace_id)

    def _release_acks(self, room: _Room) -> None:
        for conn, ref in room.ready_acks():
            self._ack(conn, ref, room.seq)

    def _schedule_flush(self, room: _Room) -> None:
        loop = self._loop
        assert loop is not None
        now = self.clock.time()
        due = room.flush_at(now)
        if room.timer is not None:
            self.metrics.coalesced.inc()
            # A timer's due time (asyncio's and uvloop's timers both tell it; uvloop's are not
            # asyncio.TimerHandle), else a call_soon: due now.
            when = room.timer.when() if hasattr(room.timer, "when") else now
            if when <= due:
                return  # a flush is already due; it will carry this change
            room.timer.cancel()  # an online-only flush, due later than this change may wait
        if due <= now:
            room.timer = loop.call_soon(self._flush, room)
        else:
            room.timer = self.clock.call_at(due, self._flush, room)

    def _flush(self, room: _Room) -> None:
        room.timer = None
        started = time.perf_counter()
        cpu = time.thread_time()  # the room's cost rule counts CPU, not a preemption
        frame = room.take(self.clock.time())
        shared = Outgoing(protocol.encode(frame))
        # The steady state first (one check, one send), else every check of push_counts.
        for conn in send_each(room.conns, shared.wire, frame.seq):
            conn.push_counts(frame, shared)
        self._out["counts"] += len(room.conns)
        room.cost = time.thread_time() - cpu
        self.metrics.fanout.observe(time.perf_counter() - started)
