"""The hub shell in-process: coalescing, encode-once fan-out and bounded outboxes.

Sockets are recording fakes here (the transport is not what is under test); the loop, the
memory backend and the hub are the real ones. Time is a :class:`~tests.timing.FakeClock`: a
test walks through a window with ``clock.advance`` (and can stop just short of it) instead of
sleeping through it, and a check that nothing was sent ends on a ``pong`` barrier.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, MutableMapping
from typing import Any

import pytest

from hub.backends.memory import MemoryBackend
from hub.connection import Connection
from hub.hub import Hub, Limits
from hub.presence import Presence
from hub.writer import AsgiWriter
from tests.harness import run_on
from tests.timing import FakeClock

W = "w"
A, B = "client-a", "client-b"
WINDOW = 0.25  # and steps of 1/16 s: sums of them on the fake clock are exact in binary


class FakeSocket:
    def __init__(self) -> None:
        self.frames: list[dict[str, Any]] = []
        self.raw: list[str] = []
        self.closed: int | None = None
        self.gate = asyncio.Event()
        self.gate.set()

    async def send(self, message: MutableMapping[str, Any]) -> None:
        """An ASGI send: a text frame waits while the gate is closed (a peer not reading)."""
        if message["type"] == "websocket.close":
            self.closed = message["code"]
            return
        await self.gate.wait()
        self.raw.append(message["text"])
        self.frames.append(json.loads(message["text"]))

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [f for f in self.frames if f["type"] == kind]


@pytest.fixture
async def hub() -> AsyncIterator[Hub]:
    h = await new_hub()
    yield h
    await h.close()


async def new_hub(limits: Limits | None = None) -> Hub:
    presence = Presence(create_grace=5, detach_grace=5)
    presence.add_workspace(W)
    h = Hub(
        MemoryBackend(presence),
        coalesce_window=WINDOW,
        max_outbox_bytes=2000,
        limits=limits,
        clock=FakeClock(),
    )
    await h.start()
    return h


async def advance(hub: Hub, seconds: float) -> None:
    """Move the hub's clock on (its timers that came due run) and let what they started
    settle."""
    clock = hub.clock
    assert isinstance(clock, FakeClock)
    clock.advance(seconds)
    await settle()


async def nothing_more(hub: Hub, conn: Connection, sock: FakeSocket, since: int) -> None:
    """Barrier: a ping's pong is the first frame the socket got since ``since`` frames, so
    nothing was sent before it (the hub answers frames in order, after what was queued)."""
    await hub.command(conn, json.dumps({"type": "ping", "ref": "barrier"}))
    await settle()
    assert sock.frames[since:] == [{"type": "pong", "ref": "barrier"}]
    del sock.frames[since:], sock.raw[since:]


async def join(hub: Hub, client: str) -> tuple[Connection, FakeSocket]:
    sock = FakeSocket()
    conn = await hub.join(W, client, AsgiWriter(sock.send))
    assert not conn.direct  # fakes have no transport: the portable, queued path
    await settle()
    return conn, sock


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_first_change_after_quiet_goes_out_on_the_next_loop_turn(hub: Hub) -> None:
    _, sock = await join(hub, A)
    assert [f["type"] for f in sock.frames] == ["snapshot"]
    await hub.backend.set_session(W, A, "S1")
    await settle()  # no timer involved: no sleep of the window
    assert sock.of("counts")[-1]["counts"] == {"S1": 1}


async def test_changes_in_the_window_merge_and_a_cancel_out_still_advances_seq(
    hub: Hub,
) -> None:
    conn, watcher = await join(hub, A)
    await join(hub, B)
    await advance(hub, 2 * WINDOW)  # quiet: the joins' flush may itself wait a window
    await hub.backend.set_session(W, B, "S1")
    await settle()
    before = watcher.of("counts")[-1]
    assert before["counts"] == {"S1": 1}
    # Two changes inside the window after that flush: one frame, and they cancel out.
    since = len(watcher.frames)
    await hub.backend.set_session(W, B, "S2")
    await hub.backend.set_session(W, B, "S1")
    await advance(hub, WINDOW - 1 / 16)
    await nothing_more(hub, conn, watcher, since)  # the window is still open
    await advance(hub, 1 / 16)
    last = watcher.of("counts")[-1]
    assert last == {"type": "counts", "seq": before["seq"] + 2, "counts": {}, "users": {}}


async def test_one_encoded_frame_is_shared_by_every_socket(hub: Hub) -> None:
    socks = [await join(hub, f"client-{i}") for i in range(5)]
    await advance(hub, 2 * WINDOW)
    await hub.backend.set_session(W, "client-0", "S1")
    await settle()
    last = {sock.raw[-1] for _, sock in socks}
    assert len(last) == 1


async def test_a_slow_reader_gets_its_pending_counts_merged(hub: Hub) -> None:
    _, slow = await join(hub, A)
    await join(hub, B)
    await advance(hub, WINDOW)
    slow.gate.clear()  # the reader stops reading
    for i in range(20):
        await hub.backend.set_session(W, B, f"S{i}")
        await advance(hub, WINDOW)
    frames_before = len(slow.frames)
    slow.gate.set()
    await settle()
    merged = slow.frames[frames_before:]
    # One frame was in flight when the gate closed; every later change merged into a single
    # per-socket frame.
    assert len(merged) == 2
    final = merged[-1]
    assert final["counts"]["S19"] == 1 and final["counts"]["S18"] == 0
    seqs = [f["seq"] for f in slow.frames if "seq" in f]
    assert seqs == sorted(seqs)
    assert slow.closed is None


async def test_past_the_outbox_bound_the_socket_is_closed_with_4409(hub: Hub) -> None:
    conn, slow = await join(hub, A)
    slow.gate.clear()
    for i in range(40):  # session frames never merge: they pile up
        hub.session(W, "updated", {"id": f"S{i}", "title": "x" * 100})
    assert conn.closing
    slow.gate.set()
    await settle()
    assert slow.closed == 4409


async def test_a_resync_reads_the_watched_viewers_again(hub: Hub) -> None:
    """Fault: a change the hub never heard of (a shared backend's lost feed, simulated by
    changing the core behind the hub's back). Bound: the next resync. Truth: the core's list."""
    watcher, wsock = await join(hub, A)
    await hub.command(watcher, json.dumps({"type": "watch", "session_id": "S1"}))
    await settle()
    assert wsock.of("viewers")[-1]["viewers"] == []
    backend = hub.backend
    assert isinstance(backend, MemoryBackend)
    backend.presence.attach(W, B, 0, user="bo")  # no event reaches the hub
    backend.presence.set_session(W, B, "S1", 0)
    await advance(hub, 2 * WINDOW)
    await nothing_more(hub, watcher, wsock, len(wsock.frames))  # nothing heard, nothing sent
    hub.resync(W)
    await advance(hub, WINDOW)
    (diff,) = wsock.of("viewers_diff")
    assert [v["user_id"] for v in diff["joined"]] == ["bo"] and diff["total"] == 1


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_a_session_change_brings_a_stretched_online_flush_forward(loop: str) -> None:
    """A join in a costly room waits (online only); a session change after it does not, on
    both event loops (uvloop's timers are not asyncio.TimerHandle: its due time is read all
    the same)."""

    async def run() -> None:
        h = await new_hub()
        try:
            await stretched_online_flush_comes_forward(h)
        finally:
            await h.close()

    run_on(loop, run())


async def stretched_online_flush_comes_forward(hub: Hub) -> None:
    watcher, wsock = await join(hub, A)
    await hub.backend.set_session(W, A, "S0")  # a first flush
    await advance(hub, WINDOW)
    wsock.frames.clear()
    room = hub.rooms[W]
    room.cost = 10.0  # as if the last flush took 10 s of CPU: an online-only flush waits 320 s
    other, _ = await join(hub, B)  # online moves: due in 320 s
    await advance(hub, WINDOW)
    await nothing_more(hub, watcher, wsock, 0)
    await hub.backend.set_session(W, B, "S1")  # a session count: due on the window, now
    await settle()
    (frame,) = wsock.of("counts")
    assert (frame["counts"], frame["online"]) == ({"S1": 1}, 2)
    assert watcher is not None and other is not None


async def test_a_peer_refused_without_a_break_for_the_window_is_closed_with_4429() -> None:
    """The rate limit's windows on the hub's clock: a burst, then one frame a second; a peer
    that keeps sending four times that is refused without a break (refusals closer than a
    second), and closed once that has lasted ``rate_close_after``."""
    hub = await new_hub(Limits(rate=1.0, burst=2, rate_close_after=1.0))
    try:
        conn, sock = await join(hub, A)
        ping = json.dumps({"type": "ping"})
        kinds = []
        for _ in range(12):  # every quarter of a second for three seconds
            await hub.command(conn, ping)
            await advance(hub, 0.25)
            kinds.append(sock.frames[-1]["type"] if sock.closed is None else "closed")
        refused = kinds.index("error")
        assert kinds[:refused] == ["pong", "pong"]  # the burst
        # Refused since the third frame: closed at the first refusal a second or more later
        # (one in four frames still finds a token and is answered meanwhile).
        assert kinds[refused : refused + 4].count("error") == 3
        assert kinds.index("closed") == refused + 4 and sock.closed == 4429
    finally:
        await hub.close()
