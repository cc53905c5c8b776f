"""Races between a socket joining and events from other nodes, on real Redis presence.

Each test opens a precise window with a wrapper around the joining node's backend: the other
node's event lands after the join's attach committed and before the join returned. The truth
is the counting rule over the sockets the test holds; every socket must end up agreeing with it.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any

import pytest

from hub.backends.redis import RedisBackend
from hub.hub import Hub
from hub.presence import Snapshot
from hub.protocol import CloseCode
from hub.writer import AsgiWriter
from tests.harness import eventually

W = "w-race"
A = "00000000-0000-4000-8000-00000000000a"
B = "00000000-0000-4000-8000-00000000000b"
V = "00000000-0000-4000-8000-00000000000c"


class Socket:
    """A recording ASGI ``send``."""

    def __init__(self) -> None:
        self.frames: list[dict[str, Any]] = []
        self.closed: int | None = None

    async def send(self, message: MutableMapping[str, Any]) -> None:
        if message["type"] == "websocket.close":
            self.closed = message["code"]
        else:
            self.frames.append(json.loads(message["text"]))

    def view(self) -> tuple[int, dict[str, int]]:
        """(online, counts) after applying every frame by seq, as a UI does."""
        seq, online, counts = -1, 0, {}
        for f in self.frames:
            if f["type"] == "snapshot":
                seq, online, counts = f["seq"], f["online"], dict(f["counts"])
            elif f["type"] == "counts" and f["seq"] > seq:
                seq = f["seq"]
                online = f.get("online", online)
                for sid, n in f["counts"].items():
                    if n:
                        counts[sid] = n
                    else:
                        counts.pop(sid, None)
        return online, counts


async def _known(workspace_id: str) -> bool:
    return workspace_id == W


@pytest.fixture
async def two_hubs(redis_url: str) -> AsyncIterator[tuple[Hub, Hub]]:
    hubs = []
    for _ in range(2):
        backend = RedisBackend(redis_url, known=_known, heartbeat=0.2, node_ttl=0.6)
        hub = Hub(backend, coalesce_window=0.02, max_outbox_bytes=1 << 20)
        await hub.start()
        hubs.append(hub)
    await hubs[0].backend.add_workspace(W)
    yield hubs[0], hubs[1]
    for hub in hubs:
        await hub.close()


def wrap_attach(hub: Hub, after: Callable[[], Awaitable[None]]) -> None:
    """Run ``after`` once, between the backend's attach and the end of the hub's join."""
    backend = hub.backend
    real = backend.attach
    done = False

    async def attach(workspace_id: str, client_id: str, *person: Any) -> Snapshot:
        nonlocal done
        result = await real(workspace_id, client_id, *person)
        if not done:
            done = True
            await after()
        return result

    backend.attach = attach  # type: ignore[method-assign,assignment]


async def test_a_retire_that_lands_while_a_socket_joins_closes_it_with_4410(
    two_hubs: tuple[Hub, Hub],
) -> None:
    """Fault: client A is retired on another node while A's socket is joining. Truth: A has
    no claim anywhere and its socket is closed with 4410."""
    joining, other = two_hubs
    closes: list[str | None] = []
    real_closed = joining.closed

    def closed(workspace_id: str, client_id: str | None, code: int) -> None:
        closes.append(client_id)
        real_closed(workspace_id, client_id, code)

    joining.closed = closed  # type: ignore[method-assign]

    async def retire_elsewhere() -> None:
        await other.backend.retire(A)
        await eventually(lambda: A in closes)  # the close reached the joining node

    wrap_attach(joining, retire_elsewhere)
    sock = Socket()
    try:
        await joining.join(W, A, AsgiWriter(sock.send))
    except Exception as exc:  # refusing the join outright is as good
        assert getattr(exc, "close_code", None) == CloseCode.RETIRED
        return
    await eventually(lambda: sock.closed == CloseCode.RETIRED)
    assert await joining.backend.claims(W) == []


async def test_a_joiner_whose_snapshot_is_older_than_its_room_gets_the_change(
    two_hubs: tuple[Hub, Hub],
) -> None:
    """Fault: a change from another node is flushed to the room while a socket joins with an
    older snapshot. Truth: the joiner's view shows the change (B viewing S1)."""
    joining, other = two_hubs
    watcher = Socket()
    await joining.join(W, V, AsgiWriter(watcher.send))  # the room exists and is synced
    await other.join(W, B, AsgiWriter(Socket().send))
    await eventually(lambda: watcher.view()[0] == 2)

    async def change_elsewhere() -> None:
        await other.backend.set_session(W, B, "S1")
        await eventually(lambda: watcher.view()[1] == {"S1": 1})  # flushed to the room

    real_attach = joining.backend.attach

    async def stale_attach(workspace_id: str, client_id: str, *person: Any) -> Snapshot:
        before = await joining.backend.snapshot(workspace_id)
        await real_attach(workspace_id, client_id, *person)
        await change_elsewhere()
        # The join goes on with a snapshot older than the room (as if read before the change).
        return Snapshot(workspace_id, before.seq + 1, before.online + 1, before.counts)

    joining.backend.attach = stale_attach  # type: ignore[method-assign,assignment]
    joiner = Socket()
    await joining.join(W, A, AsgiWriter(joiner.send))
    await eventually(lambda: joiner.view() == (3, {"S1": 1}))
    assert watcher.view() == (3, {"S1": 1})


async def test_a_reassertion_never_brings_a_retired_client_back(
    two_hubs: tuple[Hub, Hub],
) -> None:
    """Fault: A is retired while its node's change feed is down (the node never hears of it),
    then the node re-asserts its streams. Truth: A has no claim, counts nowhere, and its
    socket is closed with 4410."""
    holder, other = two_hubs
    sock = Socket()
    await holder.join(W, A, AsgiWriter(sock.send))
    backend = holder.backend
    assert isinstance(backend, RedisBackend)
    await backend.set_session(W, A, "S1")
    await backend.stop_loops()  # its feed unread (and no heartbeat: the test re-asserts)
    await other.backend.retire(A)
    await backend.reassert()
    snapshot = await other.backend.snapshot(W)
    assert (snapshot.online, snapshot.counts) == (0, {})
    assert await other.backend.claims(W) == []
    await eventually(lambda: sock.closed == CloseCode.RETIRED)
