"""The hub shell in-process: coalescing, encode-once fan-out and bounded outboxes.

Sockets are recording fakes here (the transport is not what is under test); the loop, the
memory backend, the timers and the hub are the real ones.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, MutableMapping
from typing import Any

import pytest

from hub.backends.memory import MemoryBackend
from hub.connection import Connection
from hub.hub import Hub
from hub.presence import Presence
from hub.writer import AsgiWriter
from tests.harness import run_on

W = "w"
A, B = "client-a", "client-b"
WINDOW = 0.2


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


async def new_hub() -> Hub:
    presence = Presence(create_grace=5, detach_grace=5)
    presence.add_workspace(W)
    h = Hub(MemoryBackend(presence), coalesce_window=WINDOW, max_outbox_bytes=2000)
    await h.start()
    return h


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
    _, watcher = await join(hub, A)
    await join(hub, B)
    await asyncio.sleep(2 * WINDOW + 0.05)  # quiet: the joins' flush may itself wait a window
    await hub.backend.set_session(W, B, "S1")
    await settle()
    before = watcher.of("counts")[-1]
    assert before["counts"] == {"S1": 1}
    # Two changes inside the window after that flush: one frame, and they cancel out.
    await hub.backend.set_session(W, B, "S2")
    await hub.backend.set_session(W, B, "S1")
    await settle()
    assert watcher.of("counts")[-1] == before  # nothing yet: the window is still open
    await asyncio.sleep(WINDOW + 0.1)
    last = watcher.of("counts")[-1]
    assert last == {"type": "counts", "seq": before["seq"] + 2, "counts": {}, "users": {}}


async def test_one_encoded_frame_is_shared_by_every_socket(hub: Hub) -> None:
    socks = [await join(hub, f"client-{i}") for i in range(5)]
    await asyncio.sleep(2 * WINDOW + 0.05)
    await hub.backend.set_session(W, "client-0", "S1")
    await settle()
    last = {sock.raw[-1] for _, sock in socks}
    assert len(last) == 1


async def test_a_slow_reader_gets_its_pending_counts_merged(hub: Hub) -> None:
    _, slow = await join(hub, A)
    await join(hub, B)
    await asyncio.sleep(WINDOW)
    slow.gate.clear()  # the reader stops reading
    for i in range(20):
        await hub.backend.set_session(W, B, f"S{i}")
        await asyncio.sleep(WINDOW + 0.01)
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
    await asyncio.sleep(0.05)
    assert wsock.of("viewers")[-1]["viewers"] == []
    backend = hub.backend
    assert isinstance(backend, MemoryBackend)
    backend.presence.attach(W, B, 0, user="bo")  # no event reaches the hub
    backend.presence.set_session(W, B, "S1", 0)
    await asyncio.sleep(WINDOW + 0.1)
    assert not wsock.of("viewers_diff")  # nothing heard, nothing sent
    hub.resync(W)
    await asyncio.sleep(WINDOW + 0.1)
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
    await asyncio.sleep(WINDOW + 0.1)
    wsock.frames.clear()
    room = hub.rooms[W]
    room.cost = 10.0  # as if the last flush took 10 s of CPU: an online-only flush waits 40 s
    other, _ = await join(hub, B)  # online moves: due in 40 s
    await asyncio.sleep(WINDOW + 0.1)
    assert not wsock.of("counts")
    await hub.backend.set_session(W, B, "S1")  # a session count: due on the window
    await asyncio.sleep(WINDOW + 0.1)
    (frame,) = wsock.of("counts")
    assert (frame["counts"], frame["online"]) == ({"S1": 1}, 2)
    assert watcher is not None and other is not None
