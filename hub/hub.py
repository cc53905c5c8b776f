"""The async shell around presence: local sockets per workspace and the coalesced fan-out.

Flow of one change: a backend call commits a :class:`~hub.presence.Diff` and hands it to
:meth:`Hub._on_change`; the workspace's :class:`Room` merges it into its pending window; the
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
    """The local sockets of one workspace and the changes waiting for the next flush."""

    __slots__ = (
        "base",
        "base_online",
        "conns",
        "flush_handle",
        "last_flush",
        "online",
        "seq",
        "values",
        "workspace_id",
    )

    def __init__(self, snapshot: Snapshot) -> None:
        self.workspace_id = snapshot.workspace_id
        self.conns: set[Connection] = set()
        # The workspace's counts as of the newest diff seen here.
        self.values: dict[str, int] = dict(snapshot.counts)
        self.online = snapshot.online
        self.seq = snapshot.seq
        # Values as of the last flush, for the sessions (and online) touched since.
        self.base: dict[str, int] = {}
        self.base_online: int | None = None
        self.flush_handle: asyncio.Handle | None = None
        self.last_flush = float("-inf")

    def merge(self, diff: Diff) -> None:
        if diff.seq <= self.seq:
            return  # already reflected (seen before this room's snapshot)
        self.seq = diff.seq
        for session_id, n in diff.counts.items():
            self.base.setdefault(session_id, self.values.get(session_id, 0))
            if n:
                self.values[session_id] = n
            else:
                self.values.pop(session_id, None)
        if diff.online is not None:
            if self.base_online is None:
                self.base_online = self.online
            self.online = diff.online

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

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        await self.backend.start(self._on_change)

    async def close(self) -> None:
        for room in self.rooms.values():
            if room.flush_handle is not None:
                room.flush_handle.cancel()
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
        await self.backend.attach(workspace_id, client_id)
        snapshot = await self.backend.snapshot(workspace_id)
        loop = asyncio.get_running_loop()
        rate = RateLimit(limits.rate, limits.burst, loop.time()) if limits.rate else None
        conn = Connection(
            workspace_id, client_id, send, self.max_outbox_bytes, direct, rate, self.metrics
        )
        self.sockets += 1
        room = self.rooms.get(workspace_id)
        if room is None:
            room = self.rooms[workspace_id] = Room(snapshot)
        room.conns.add(conn)
        self._by_client.setdefault(client_id, set()).add(conn)
        self._push_snapshot(conn, snapshot, None)
        log.info(
            "%s joined workspace=%s client=%s", conn.id, workspace_id, client_id,
            extra={"conn": conn.id},
        )  # fmt: skip
        return conn

    async def leave(self, conn: Connection) -> None:
        """Unregister a stream that ended, and detach it unless its claim is already gone."""
        conn.stop()
        self.sockets -= 1
        room = self.rooms.get(conn.workspace_id)
        if room is not None:
            room.conns.discard(conn)
            if not room.conns:
                if room.flush_handle is not None:
                    room.flush_handle.cancel()
                del self.rooms[conn.workspace_id]
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
            await self._apply(conn, command)
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
                ack = Outgoing(protocol.encode(protocol.Ack(command.ref, diff.seq)))
                self._send_one(conn, "ack", ack)
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

    # -- events from REST -------------------------------------------------------------------

    def publish_session(self, workspace_id: str, op: str, session: dict[str, Any]) -> None:
        """Tell every local socket of the workspace that a session record changed."""
        room = self.rooms.get(workspace_id)
        if room is None:
            return
        shared = Outgoing(protocol.encode(protocol.SessionEvent(op, session)))
        self._out["session"].inc(len(room.conns))
        for conn in room.conns:
            conn.push(shared)

    def close_client(self, client_id: str, code: int) -> None:
        """Close every local socket of a client whose claims are gone (retire)."""
        for conn in list(self._by_client.get(client_id, ())):
            conn.attached = False
            conn.close(code)

    def close_workspace(self, workspace_id: str, code: int) -> None:
        """Close every local socket of a workspace whose claims are gone (delete)."""
        room = self.rooms.get(workspace_id)
        for conn in list(room.conns) if room is not None else ():
            conn.attached = False
            conn.close(code)

    # -- fan-out ----------------------------------------------------------------------------

    def _on_change(self, diff: Diff) -> None:
        room = self.rooms.get(diff.workspace_id)
        if room is None:
            return  # nobody here is watching this workspace
        room.merge(diff)
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
