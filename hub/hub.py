"""The async shell around presence: local sockets per workspace and the coalesced fan-out.

Flow of one change: a backend call commits a :class:`~hub.presence.Diff` and hands it to
:meth:`Hub.changed` (the hub is the backend's :class:`~hub.backends.Events`); the workspace's
:class:`Room` merges it into its pending window, in ``seq`` order (a gap means changes were
missed: the room re-reads the snapshot instead). The
first change after a quiet period is flushed on the next loop turn, later ones within
``coalesce_window`` of the previous flush wait for it. A flush encodes one ``counts`` frame and
hands the same bytes to every socket of the workspace (:class:`~hub.connection.Connection`,
which sends them at once or keeps them in its bounded outbox). The hub also applies the
commands a socket sends, and the limits on sockets per process and per client.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

from starlette.types import Send

from hub import protocol
from hub.backends import PresenceBackend
from hub.connection import Connection, Outgoing
from hub.errors import OverCapacity, PeerError, RateLimited, UnsupportedFrame
from hub.limits import RateLimit
from hub.metrics import Metrics
from hub.presence import Diff, Snapshot
from hub.protocol import CloseCode, Command, Counts, Ping, Pong, SetSession, Sync
from hub.transport import DirectWriter

__all__ = ["Hub", "Limits", "Room"]

log = logging.getLogger(__name__)


_RATE_LIMITED = Outgoing(
    protocol.encode(protocol.Error.of(RateLimited("too many frames: slow down")))
)
_BINARY_REFUSED = Outgoing(
    protocol.encode(protocol.Error.of(UnsupportedFrame("binary frames are not supported")))
)
# Metric labels of frames in and out.
_KIND = {SetSession: "set_session", Sync: "sync", Ping: "ping"}
_IN = (*_KIND.values(), "invalid", "binary", "rate_limited")
_OUT = ("counts", "session", "snapshot", "ack", "error", "pong")


@dataclass(frozen=True, slots=True)
class Limits:
    """What one process and one socket may take (see the HUB_* settings of the same names)."""

    max_sockets: int = 50_000
    max_streams: int = 8  # per client per workspace
    rate: float = 20.0  # frames a second per socket; 0: no limit
    burst: int = 50
    rate_close_after: float = 5.0


class Room:
    """The local sockets of one workspace, its counts as last seen, and the changes waiting for
    the next flush.

    A room starts unsynced: diffs that arrive before its first snapshot wait in ``early``. From
    the snapshot on, diffs apply in ``seq`` order; a diff that skips a seq reveals missed
    changes, and the hub re-reads the snapshot (``rebase``) instead of guessing.
    """

    __slots__ = (
        "acks",
        "base",
        "base_online",
        "behind",
        "conns",
        "early",
        "flush_handle",
        "joining",
        "last_flush",
        "online",
        "resyncing",
        "seq",
        "synced",
        "values",
        "workspace_id",
    )

    def __init__(self, workspace_id: str) -> None:
        self.workspace_id = workspace_id
        self.conns: set[Connection] = set()
        self.joining = 0  # joins in progress (the room stays while > 0)
        self.synced = False
        self.early: list[Diff] = []
        # The workspace's counts as of the newest change seen here.
        self.values: dict[str, int] = {}
        self.online = 0
        self.seq = -1
        # Values as of the last flush, for the sessions (and online) touched since.
        self.base: dict[str, int] = {}
        self.base_online: int | None = None
        self.flush_handle: asyncio.Handle | None = None
        self.last_flush = float("-inf")
        self.resyncing = False
        self.behind = -1  # the highest seq seen but not applied (missed changes before it)
        # Acks for changes this room has not seen yet: (seq, socket, ref), sent once it has,
        # so that no socket hears of a seq before the counts that lead to it.
        self.acks: list[tuple[int, Connection, protocol.Ref]] = []

    @property
    def idle(self) -> bool:
        return not self.conns and not self.joining

    def merge(self, diff: Diff) -> bool:
        """Apply a diff; False when it revealed missed changes (a resync is due)."""
        if not self.synced:
            self.early.append(diff)
            return True
        if diff.seq <= self.seq:
            return True  # already reflected (seen before this room's snapshot)
        if diff.seq > self.seq + 1:
            self.behind = max(self.behind, diff.seq)
            return False
        self.seq = diff.seq
        for session_id, n in diff.counts.items():
            self._set(session_id, n)
        if diff.online is not None:
            self._set_online(diff.online)
        return True

    def rebase(self, snapshot: Snapshot) -> bool:
        """Take a snapshot (the first one, or one newer than what the room has); True when
        changes wait for a flush."""
        if not self.synced:
            self.synced = True
            self.values = dict(snapshot.counts)
            self.online = snapshot.online
            self.seq = snapshot.seq
            early, self.early = self.early, []
            for diff in early:
                self.merge(diff)
        elif snapshot.seq > self.seq:
            self.seq = snapshot.seq
            for session_id in self.values.keys() | snapshot.counts.keys():
                self._set(session_id, snapshot.counts.get(session_id, 0))
            self._set_online(snapshot.online)
        return bool(self.base) or self.base_online is not None

    @property
    def missed(self) -> bool:
        """Whether changes were seen that could not be applied (a resync is due)."""
        return self.behind > self.seq

    def _set(self, session_id: str, n: int) -> None:
        self.base.setdefault(session_id, self.values.get(session_id, 0))
        if n:
            self.values[session_id] = n
        else:
            self.values.pop(session_id, None)

    def _set_online(self, online: int) -> None:
        if self.base_online is None:
            self.base_online = self.online
        self.online = online

    def take(self) -> Counts:
        """The frame for everything merged since the last flush; changes that cancelled out
        leave ``counts`` empty but still advance ``seq``."""
        counts = {
            sid: self.values.get(sid, 0)
            for sid, before in self.base.items()
            if self.values.get(sid, 0) != before
        }
        online = self.online if self.base_online not in (None, self.online) else None
        self.base = {}
        self.base_online = None
        return Counts(self.seq, counts, online)


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
    ) -> None:
        self.backend = backend
        self.metrics = metrics or Metrics()
        m = self.metrics
        self._in = {k: m.frames_in.labels(k) for k in _IN}
        self._out = {k: m.frames_out.labels(k) for k in _OUT}
        self.coalesce_window = coalesce_window
        self.max_outbox_bytes = max_outbox_bytes
        self.limits = limits or Limits()
        self.sockets = 0  # local sockets joined and not yet left
        self.rooms: dict[str, Room] = {}
        self._by_client: dict[str, set[Connection]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._resyncs: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        await self.backend.start(self)

    async def close(self) -> None:
        for room in self.rooms.values():
            if room.flush_handle is not None:
                room.flush_handle.cancel()
        for task in list(self._resyncs):
            task.cancel()
        await self.backend.close()

    # -- sockets ----------------------------------------------------------------------------

    async def join(
        self,
        workspace_id: str,
        client_id: str,
        send: Send,
        direct: DirectWriter | None = None,
    ) -> Connection:
        """Attach a new stream and queue its snapshot as its first frame.

        Raises a PeerError (over capacity, unknown workspace, retired client) before anything
        is attached or registered.
        """
        limits = self.limits
        if self.sockets >= limits.max_sockets:
            raise OverCapacity(f"this server holds its maximum of {limits.max_sockets} sockets")
        mine = self._by_client.get(client_id, ())
        if sum(1 for c in mine if c.workspace_id == workspace_id) >= limits.max_streams:
            raise OverCapacity(f"client has {limits.max_streams} sockets in this workspace")
        room = self.rooms.get(workspace_id)
        if room is None:
            room = self.rooms[workspace_id] = Room(workspace_id)
        room.joining += 1
        try:
            snapshot = await self._attach(workspace_id, client_id)
        except BaseException:
            room.joining -= 1
            if room.idle:
                self._drop_room(room)
            raise
        room.joining -= 1
        loop = asyncio.get_running_loop()
        rate = RateLimit(limits.rate, limits.burst, loop.time()) if limits.rate else None
        conn = Connection(
            workspace_id, client_id, send, self.max_outbox_bytes, direct, rate, self.metrics
        )
        self.sockets += 1
        self._rebase(room, snapshot)
        room.conns.add(conn)
        self._by_client.setdefault(client_id, set()).add(conn)
        self._push_snapshot(conn, snapshot, None)
        log.info(
            "%s joined workspace=%s client=%s", conn.id, workspace_id, client_id,
            extra={"conn": conn.id},
        )  # fmt: skip
        return conn

    async def _attach(self, workspace_id: str, client_id: str) -> Snapshot:
        """Watch the workspace, attach the stream, and read the snapshot that the room and the
        socket start from (changes committed after it reach the room through the backend)."""
        await self.backend.watch(workspace_id)
        try:
            await self.backend.attach(workspace_id, client_id)
        except BaseException:
            self.backend.unwatch(workspace_id)
            raise
        try:
            return await self.backend.snapshot(workspace_id)
        except BaseException:
            await self.backend.detach(workspace_id, client_id)
            self.backend.unwatch(workspace_id)
            raise

    def _drop_room(self, room: Room) -> None:
        if room.flush_handle is not None:
            room.flush_handle.cancel()
        if self.rooms.get(room.workspace_id) is room:
            del self.rooms[room.workspace_id]

    async def leave(self, conn: Connection) -> None:
        """Unregister a stream that ended, and detach it unless its claim is already gone."""
        conn.stop()
        self.sockets -= 1
        self.backend.unwatch(conn.workspace_id)
        room = self.rooms.get(conn.workspace_id)
        if room is not None:
            room.conns.discard(conn)
            if room.idle:
                self._drop_room(room)
        conns = self._by_client.get(conn.client_id)
        if conns is not None:
            conns.discard(conn)
            if not conns:
                del self._by_client[conn.client_id]
        if conn.attached:
            conn.attached = False
            await self.backend.detach(conn.workspace_id, conn.client_id)
        log.info("%s left", conn.id, extra={"conn": conn.id})

    async def command(self, conn: Connection, text: str) -> None:
        """Handle one text frame from a socket; peer errors become error frames."""
        rate = conn.rate
        if rate is not None:
            now = asyncio.get_running_loop().time()
            if not rate.allow(now):
                self._in["rate_limited"].inc()
                if rate.refusing_for(now) >= self.limits.rate_close_after:
                    self.metrics.closes.labels("rate_limit").inc()
                    conn.close(CloseCode.RATE_LIMITED)
                else:
                    self._send_one(conn, "error", _RATE_LIMITED)
                return
        try:
            command = protocol.parse(text)
            self._in[_KIND[type(command)]].inc()
            try:
                await self._apply(conn, command)
            except PeerError as exc:  # refused by presence (e.g. unavailable): echo the ref
                exc.ref = command.ref if exc.ref is None else exc.ref
                raise
        except PeerError as exc:
            self._in["invalid"].inc()
            self._send_one(conn, "error", Outgoing(protocol.encode(protocol.Error.of(exc))))

    def refuse_binary(self, conn: Connection) -> None:
        """A binary frame: the contract has none; answered with ``unsupported_frame``."""
        self._in["binary"].inc()
        self._send_one(conn, "error", _BINARY_REFUSED)

    def _send_one(self, conn: Connection, kind: str, frame: Outgoing) -> None:
        self._out[kind].inc()
        conn.push(frame)

    async def _apply(self, conn: Connection, command: Command) -> None:
        if isinstance(command, SetSession):
            diff = await self.backend.set_session(
                conn.workspace_id, conn.client_id, command.session_id
            )
            if command.ref is not None:
                room = self.rooms.get(conn.workspace_id)
                if room is None:
                    self._ack(conn, command.ref, diff.seq)
                elif room.seq < diff.seq:
                    room.acks.append((diff.seq, conn, command.ref))  # when the change is here
                else:
                    self._ack(conn, command.ref, room.seq)
        elif isinstance(command, Sync):
            snapshot = await self.backend.snapshot(conn.workspace_id)
            self._push_snapshot(conn, snapshot, command.ref)
        elif isinstance(command, Ping):
            self._send_one(conn, "pong", Outgoing(protocol.encode(Pong(command.ref))))

    def _push_snapshot(
        self, conn: Connection, snapshot: Snapshot, ref: protocol.Ref | None
    ) -> None:
        frame = protocol.SnapshotFrame(
            snapshot.workspace_id,
            conn.client_id,
            snapshot.seq,
            snapshot.online,
            snapshot.counts,
            ref,
        )
        self._send_one(conn, "snapshot", Outgoing(protocol.encode(frame)))
        conn.snapshot_seq = snapshot.seq

    # -- events from the backend -----------------------------------------------------------

    def session(self, workspace_id: str, op: str, session: dict[str, Any]) -> None:
        """Tell every local socket of the workspace that a session record changed."""
        room = self.rooms.get(workspace_id)
        if room is None:
            return
        shared = Outgoing(protocol.encode(protocol.SessionEvent(op, session)))
        self._out["session"].inc(len(room.conns))
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
        """Re-read a workspace whose changes may have been missed (once at a time)."""
        room = self.rooms.get(workspace_id)
        if room is None or room.resyncing or not room.synced:
            return
        room.resyncing = True
        loop = self._loop
        assert loop is not None
        task = loop.create_task(self._resync(room), name=f"resync-{workspace_id}")
        self._resyncs.add(task)
        task.add_done_callback(self._resyncs.discard)

    async def _resync(self, room: Room) -> None:
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

    def _rebase(self, room: Room, snapshot: Snapshot) -> None:
        if room.rebase(snapshot):
            self._schedule_flush(room)
        if room.acks:
            self._release_acks(room)
        if room.missed:
            self.resync(room.workspace_id)

    # -- fan-out ----------------------------------------------------------------------------

    def changed(self, diff: Diff) -> None:
        room = self.rooms.get(diff.workspace_id)
        if room is None:
            return  # nobody here is watching this workspace
        if not room.merge(diff):
            self.resync(room.workspace_id)
            return
        if room.synced:
            self._schedule_flush(room)
            if room.acks:
                self._release_acks(room)

    def _ack(self, conn: Connection, ref: protocol.Ref, seq: int) -> None:
        """An ack with the room's seq, which includes the change: with a shared backend the
        room may already be past the change's own seq, and no socket sees seq go down."""
        self._send_one(conn, "ack", Outgoing(protocol.encode(protocol.Ack(ref, seq))))

    def _release_acks(self, room: Room) -> None:
        waiting = []
        for seq, conn, ref in room.acks:
            if seq <= room.seq:
                self._ack(conn, ref, room.seq)
            else:
                waiting.append((seq, conn, ref))
        room.acks = waiting

    def _schedule_flush(self, room: Room) -> None:
        if room.flush_handle is not None:
            self.metrics.coalesced.inc()
            return  # a flush is already due; it will carry this change
        loop = self._loop
        assert loop is not None
        due = room.last_flush + self.coalesce_window
        if loop.time() >= due:
            room.flush_handle = loop.call_soon(self._flush, room)
        else:
            room.flush_handle = loop.call_at(due, self._flush, room)

    def _flush(self, room: Room) -> None:
        loop = self._loop
        assert loop is not None
        room.flush_handle = None
        room.last_flush = loop.time()
        started = time.perf_counter()
        frame = room.take()
        shared = Outgoing(protocol.encode(frame))
        for conn in room.conns:
            conn.push_counts(frame, shared)
        self._out["counts"].inc(len(room.conns))
        self.metrics.fanout.observe(time.perf_counter() - started)
