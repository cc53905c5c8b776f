"""The PresenceBackend contract, run against the memory backend and against a real Redis.

Every claim rule of docs/protocol.md section 2 that is not about one process is checked here through
the backend port, with real clocks and short timers; the Redis-only tests at the end are about
several nodes sharing one Redis (tests/test_cluster.py drives whole hub processes).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from redis.exceptions import ResponseError

from hub.backends import PresenceBackend
from hub.backends.memory import MemoryBackend
from hub.errors import ClientRetired, Forbidden, NotAttached, Unavailable, WorkspaceNotFound
from hub.presence import Diff, Presence
from hub.protocol import CloseCode
from tests.harness import eventually
from tests.services import RedisServer

GRACE = 0.4
W = "w1"
A = "00000000-0000-4000-8000-00000000000a"
B = "00000000-0000-4000-8000-00000000000b"


class Recorder:
    """The hub's side of the port: records every event."""

    def __init__(self) -> None:
        self.diffs: list[Diff] = []
        self.closes: list[tuple[str, str | None, int]] = []
        self.sessions: list[tuple[str, str, dict[str, Any]]] = []
        self.resyncs: list[str] = []

    def changed(self, diff: Diff) -> None:
        self.diffs.append(diff)

    def resync(self, workspace_id: str) -> None:
        self.resyncs.append(workspace_id)

    def session(self, workspace_id: str, op: str, session: dict[str, Any]) -> None:
        self.sessions.append((workspace_id, op, session))

    def closed(self, workspace_id: str, client_id: str | None, code: int) -> None:
        self.closes.append((workspace_id, client_id, code))


Make = Callable[..., Awaitable[tuple[PresenceBackend, Recorder]]]
KNOWN = {W, "w2"}  # what "the store" has


async def _known(workspace_id: str) -> bool:
    return workspace_id in KNOWN


@pytest.fixture(params=["memory", "redis"])
async def make(request: pytest.FixtureRequest) -> AsyncIterator[Make]:
    """Started backends (several share one Redis, like several hub processes)."""
    made: list[PresenceBackend] = []
    url = request.getfixturevalue("redis_url") if request.param == "redis" else ""
    shared = Presence(create_grace=GRACE, detach_grace=GRACE, retire_ttl=1.0)

    async def make(**options: Any) -> tuple[PresenceBackend, Recorder]:
        backend: PresenceBackend
        if request.param == "memory":
            backend = MemoryBackend(shared)
        else:
            from hub.backends.redis import RedisBackend

            backend = RedisBackend(
                url, known=_known, create_grace=GRACE, detach_grace=GRACE, retire_ttl=1.0,
                **options,
            )  # fmt: skip
        recorder = Recorder()
        await backend.start(recorder)
        made.append(backend)
        for workspace_id in KNOWN:
            await backend.add_workspace(workspace_id)
        return backend, recorder

    yield make
    for backend in made:
        await backend.close()


async def counted(backend: PresenceBackend) -> tuple[int, dict[str, int]]:
    snap = await backend.snapshot(W)
    return snap.online, snap.counts


async def test_a_client_counts_once_however_many_streams(make: Make) -> None:
    b, _ = await make()
    await b.watch(W)
    await b.attach(W, A)
    await b.attach(W, A)
    await b.set_session(W, A, "S1")
    assert await counted(b) == (1, {"S1": 1})
    await b.attach(W, B)
    await b.set_session(W, B, "S1")
    assert await counted(b) == (2, {"S1": 2})
    await b.detach(W, A)  # one of A's two streams: A still counts
    assert await counted(b) == (2, {"S1": 2})
    (claim,) = [c for c in await b.claims(W) if c.client_id == A]
    assert (claim.streams, claim.state.value) == (1, "attached")


async def test_seq_grows_by_one_per_change_and_not_on_a_no_op(make: Make) -> None:
    b, events = await make()
    await b.watch(W)
    start = (await b.snapshot(W)).seq
    first = await b.attach(W, A)
    assert (first.seq, first.online) == (start + 1, 1)  # the snapshot that includes it
    assert await b.set_session(W, A, "S1") == start + 2
    assert await b.set_session(W, A, "S1") == start + 2  # the value it has: nothing moves
    await eventually(lambda: len(events.diffs) >= 2)
    assert [d.seq for d in events.diffs] == [start + 1, start + 2]
    assert events.diffs[1].counts == {"S1": 1}


async def test_people_two_nodes_one_user_and_profiles_that_go_with_the_last_claim(
    make: Make,
) -> None:
    """A user with a tab on each of two nodes counts once; a profile set on one node shows
    on the other, as an event that moves no seq; it goes with the user's last claim."""
    one, _ = await make()
    two, events = await make()
    for b in (one, two):
        await b.watch(W)
    await one.attach(W, A, "ana", {"name": "Ana"})
    await two.attach(W, B, "ana")
    await one.set_session(W, A, "S1")
    await two.set_session(W, B, "S1")
    for b in (one, two):
        snap = await b.snapshot(W)
        assert (snap.counts, snap.users, snap.online, snap.online_users) == (
            {"S1": 2}, {"S1": 1}, 2, 1,
        )  # fmt: skip
    seq = (await one.snapshot(W)).seq
    assert await two.set_profile(W, B, {"name": "Ana B."}) == seq  # no count moved
    await eventually(lambda: any(d.touched == {"S1"} and not d.changed for d in events.diffs))
    viewers = await one.viewers(W, "S1", 10)
    assert [(v.user_id, v.profile, v.clients) for v in viewers.viewers] == [
        ("ana", {"name": "Ana B."}, 2)
    ]
    with pytest.raises(Forbidden):
        await one.attach(W, A, "bo")  # A is ana's
    for b, client in ((one, A), (two, B)):
        await b.release(W, client)
        await b.detach(W, client)
    assert await b.claims(W) == []
    await one.attach(W, A, "ana")  # a new claim of ana: her old profile is gone
    assert (await two.viewers(W, "", 10)).viewers[0].profile is None
    await one.detach(W, A)


async def test_grace_keeps_the_session_and_counts_nowhere(make: Make) -> None:
    b, _ = await make()
    await b.attach(W, A)
    await b.set_session(W, A, "S1")
    await b.detach(W, A)
    assert await counted(b) == (0, {})
    (claim,) = await b.claims(W)
    assert (claim.state.value, claim.session_id) == ("grace", "S1")
    await b.attach(W, A)  # back within grace: counts again for the same session
    assert await counted(b) == (1, {"S1": 1})


async def test_grace_and_hold_expire_once(make: Make) -> None:
    b, _ = await make()
    await b.attach(W, A)
    await b.detach(W, A)
    await b.hold(W, B)
    states = {c.client_id: c.state.value for c in await b.claims(W)}
    assert states == {A: "grace", B: "held"}
    started = time.monotonic()
    await eventually(lambda: _empty(b))
    assert time.monotonic() - started < GRACE + 0.5  # fired near its deadline


async def _empty(b: PresenceBackend) -> bool:
    return not await b.claims(W)


async def test_hold_rules(make: Make) -> None:
    b, _ = await make()
    await b.attach(W, A)
    await b.set_session(W, A, "S1")
    await b.hold(W, A)  # attached: unchanged
    assert await counted(b) == (1, {"S1": 1})
    await b.detach(W, A)
    await b.hold(W, A)  # grace -> a fresh hold, keeping the session
    (claim,) = await b.claims(W)
    assert (claim.state.value, claim.session_id) == ("held", "S1")
    await b.attach(W, A)
    assert await counted(b) == (1, {"S1": 1})


async def test_release(make: Make) -> None:
    b, _ = await make()
    await b.hold(W, A)
    await b.release(W, A)  # no streams: gone now
    assert await b.claims(W) == []
    await b.attach(W, A)
    await b.release(W, A)  # streams open: marked, leaves without grace at its last close
    (claim,) = await b.claims(W)
    assert claim.released
    await b.hold(W, A)  # a create clears the mark
    (claim,) = await b.claims(W)
    assert not claim.released
    await b.release(W, A)
    await b.detach(W, A)
    assert await b.claims(W) == []


async def test_set_session_needs_a_live_stream(make: Make) -> None:
    b, _ = await make()
    with pytest.raises(NotAttached):
        await b.set_session(W, A, "S1")
    await b.hold(W, A)
    with pytest.raises(NotAttached):
        await b.set_session(W, A, "S1")


async def test_retire_removes_everywhere_and_refuses(make: Make) -> None:
    b, events = await make()
    for workspace_id in ("w1", "w2"):
        await b.watch(workspace_id)
        await b.attach(workspace_id, A)
        await b.set_session(workspace_id, A, "S1")
    await b.retire(A)
    assert await b.is_retired(A)
    assert await counted(b) == (0, {})
    assert await b.claims("w2") == []
    await eventually(lambda: len(events.closes) == 2)
    assert sorted(events.closes) == [("w1", A, 4410), ("w2", A, 4410)]
    for call in (b.hold(W, A), b.attach(W, A), b.set_session(W, A, "S2")):
        with pytest.raises(ClientRetired):
            await call
    await b.retire(A)  # idempotent
    await eventually(lambda: _not(b.is_retired(A)))  # retire_ttl is 1 s here
    await b.attach(W, A)


async def _not(value: Awaitable[bool]) -> bool:
    return not await value


async def test_unknown_and_removed_workspaces(make: Make) -> None:
    b, events = await make()
    for call in (b.attach("nope", A), b.hold("nope", A), b.snapshot("nope")):
        with pytest.raises(WorkspaceNotFound):
            await call
    await b.watch("w2")
    await b.attach("w2", A)
    await b.remove_workspace("w2")
    await eventually(lambda: ("w2", None, CloseCode.NOT_FOUND) in events.closes)
    KNOWN.discard("w2")
    try:
        with pytest.raises(WorkspaceNotFound):
            await b.snapshot("w2")
        await b.detach("w2", A)  # tolerant: its claim went with the workspace
    finally:
        KNOWN.add("w2")


async def test_session_events_reach_the_watchers(make: Make) -> None:
    b, events = await make()
    await b.watch(W)
    await b.publish_session(W, "created", {"id": "S1"})
    await eventually(lambda: events.sessions == [(W, "created", {"id": "S1"})])


# -- several nodes on one Redis ---------------------------------------------------------------


@pytest.fixture
async def nodes(redis_url: str) -> AsyncIterator[Callable[..., Awaitable[Any]]]:
    from hub.backends.redis import RedisBackend

    made: list[RedisBackend] = []

    async def node(**options: Any) -> tuple[RedisBackend, Recorder]:
        settings: dict[str, Any] = {"create_grace": GRACE, "detach_grace": GRACE, **options}
        backend = RedisBackend(redis_url, known=_known, **settings)
        recorder = Recorder()
        await backend.start(recorder)
        made.append(backend)
        return backend, recorder

    yield node
    for backend in made:
        await backend.close()


async def test_two_nodes_count_a_client_once_and_share_its_session(nodes: Any) -> None:
    (a, events_a), (b, events_b) = await nodes(), await nodes()
    for node in (a, b):
        await node.watch(W)
        await node.attach(W, A)
    await a.set_session(W, A, "S1")
    assert (await b.snapshot(W)).counts == {"S1": 1}
    await b.set_session(W, A, "S2")  # applies to A's streams on both nodes
    assert (await a.snapshot(W)).counts == {"S2": 1}
    await a.detach(W, A)
    assert (await b.snapshot(W)).online == 1  # A still has a stream on b
    # The same feed in the same order on both (b subscribed after a's first change).
    seqs = [d.seq for d in events_a.diffs]
    await eventually(lambda: [d.seq for d in events_b.diffs][-1:] == seqs[-1:])
    seen_by_b = [d.seq for d in events_b.diffs]
    assert len(seen_by_b) >= len(seqs) - 1 and seqs[-len(seen_by_b) :] == seen_by_b


async def test_a_dead_node_is_cleared_by_a_survivor(nodes: Any) -> None:
    survivor, _ = await nodes(heartbeat=0.2, node_ttl=0.6)
    doomed, _ = await nodes(heartbeat=0.2, node_ttl=0.6)
    await doomed.attach(W, A)
    await doomed.set_session(W, A, "S1")
    await survivor.attach(W, B)
    assert (await survivor.snapshot(W)).online == 2
    # As if killed: its loops stop (no more heartbeats) and it says no goodbye.
    await doomed.stop_loops()
    started = time.monotonic()

    async def one_online() -> bool:
        return await _online(survivor) == 1

    await eventually(one_online, within=5)
    assert time.monotonic() - started < 4.0  # TTL 0.6 s + a heartbeat, with room for load
    claims = {c.client_id: c for c in await survivor.claims(W)}
    assert claims[A].state.value == "grace"  # grace rules apply
    assert claims[B].state.value == "attached"


async def _online(backend: Any) -> int:
    return int((await backend.snapshot(W)).online)


async def test_an_emptied_redis_gets_each_nodes_streams_back(
    nodes: Any, redis_server: RedisServer
) -> None:
    a, events = await nodes(heartbeat=0.2)
    await a.watch(W)
    await a.attach(W, A)
    await a.set_session(W, A, "S1")
    before = (await a.snapshot(W)).seq
    redis_server.flush()  # Redis lost everything
    deadline = time.monotonic() + 5
    while True:
        try:
            snap = await a.snapshot(W)
            if snap.counts == {"S1": 1}:
                break
        except Exception:
            pass
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    assert snap.seq > before  # seq never goes back, even from an empty Redis
    assert W in events.resyncs


# The backends against the pure core, on random histories: tests/test_replay.py.


def test_every_workspace_key_is_in_one_cluster_slot() -> None:
    """Each workspace script runs on the keys of one Redis Cluster slot (the hash tag), and
    names no key it was not given."""
    from redis.crc import key_slot

    from hub.backends.redis.scripts import WORKSPACE_SCRIPTS, channel, lua, workspace_keys

    for workspace_id in ("w", "0b6e1f0c-a5d3-4c1e-9a53-9f7a3c1d2e4f"):
        keys = [*workspace_keys(workspace_id), channel(workspace_id)]
        assert len({key_slot(k.encode()) for k in keys}) == 1
    for name in ("_lib", *WORKSPACE_SCRIPTS):
        code = re.sub(r"--.*", "", lua(name))  # without comments
        assert "hub:{" not in code.replace("'hub:{' .. W .. '}:ch'", ""), name


async def by_hand(nodes: Any, **options: Any) -> Any:
    """A node whose loops (heartbeat, sweep, feed) are stopped: the test runs its steps."""
    node, _ = await nodes(node_ttl=60.0, **options)
    await node.stop_loops()
    return node


async def test_a_node_that_returns_while_a_survivor_clears_it_is_counted_and_registered(
    nodes: Any,
) -> None:
    """Fault: node a's heartbeat lapsed (a pause); survivor b starts clearing it, and a comes
    back and re-asserts its streams in the middle of b's clearing. Truth: a's client counts
    once a has beaten again, a is in the registry, and when a really dies later its client is
    cleared (no ghost)."""
    from hub.backends.redis.scripts import NODES, node_key

    a, b = await by_hand(nodes), await by_hand(nodes)
    await a.attach(W, A)
    await a.set_session(W, A, "S1")
    await a.beat()
    await b.beat()
    await a.redis.delete(node_key(a.node))  # a's heartbeat lapsed
    real = b.scripts["set_streams"]

    async def clear_while_a_returns(keys: list[str], args: list[Any]) -> Any:
        await a.beat()  # a notices it was forgotten and writes its streams back ...
        return await real(keys=keys, args=args)  # ... and b's clearing lands after it

    b.scripts["set_streams"] = clear_while_a_returns
    await b.beat()  # b clears a (b itself has nothing to write back)
    b.scripts["set_streams"] = real
    for _ in range(2):  # a's next heartbeats
        await a.beat()
    assert (await b.snapshot(W)).counts == {"S1": 1}
    assert a.node in await b.redis.smembers(NODES)
    await a.redis.delete(node_key(a.node))  # a dies for good: no goodbye
    await b.beat()
    snapshot = await b.snapshot(W)
    assert (snapshot.online, snapshot.counts) == (0, {})


async def test_a_set_session_that_finds_its_claim_cleared_writes_the_streams_back(
    nodes: Any,
) -> None:
    """Fault: node a was taken for dead (its streams detached by a survivor) while its socket
    stayed open, and that socket's set_session arrives before a's next heartbeat. Truth: the
    frame is applied, not refused with not_attached."""
    a, b = await by_hand(nodes), await by_hand(nodes)
    await a.attach(W, A)
    await a.set_session(W, A, "S1")
    await b.clear_node_in(W, a.node)  # a survivor cleared a
    assert (await b.snapshot(W)).online == 0
    await a.set_session(W, A, "S2")
    snapshot = await b.snapshot(W)
    assert (snapshot.online, snapshot.counts) == (1, {"S2": 1})


# -- claims that cannot go back in time (hardening: randomized fault schedules found these) --


async def _claims(node: Any) -> dict[str, tuple[str, bool, int]]:
    return {c.client_id: (c.session_id, c.released, c.streams) for c in await node.claims(W)}


async def test_an_acked_set_session_is_not_rolled_back_by_a_node_that_missed_it(
    nodes: Any,
) -> None:
    """Fault: a's socket of A views S2; S4 is acknowledged through b while a misses the news
    (paused: its feed unread); a is taken for dead and A's grace runs out. Truth: when a
    re-asserts, A counts on S4, not the S2 that a remembered."""
    a, b = await by_hand(nodes), await by_hand(nodes)
    await a.attach(W, A, "ana")
    await a.set_session(W, A, "S2")
    await b.set_session(W, A, "S4")  # acked through b; a's feed is not read
    assert a.remembered(W, A).session_id == "S2"
    await b.clear_node_in(W, a.node)  # a taken for dead: A in grace
    await asyncio.sleep(GRACE + 0.05)
    await b.sweep()  # the grace ran out: A's claim is gone, its tombstone stays
    assert await _claims(b) == {}
    await a.reassert(W)
    assert (await b.snapshot(W)).counts == {"S4": 1}
    assert await _claims(b) == {A: ("S4", False, 1)}
    assert a.remembered(W, A).session_id == "S4"  # and a learned it back


async def test_a_fresh_claim_after_redis_lost_its_data_does_not_win_over_the_node_s_memory(
    nodes: Any, redis_server: RedisServer
) -> None:
    """Fault: Redis restarted empty; A's second socket opens on b before a re-asserts (a
    fresh claim at session ""). Truth: A's session is the S4 acked before, on both sockets."""
    a, b = await by_hand(nodes), await by_hand(nodes)
    await a.attach(W, A, "ana")
    await a.set_session(W, A, "S4")
    redis_server.flush()
    await b.add_workspace(W)
    await b.attach(W, A, "ana")
    assert await _claims(b) == {A: ("", False, 1)}
    await a.reassert(W)
    assert await _claims(b) == {A: ("S4", False, 2)}
    snapshot = await b.snapshot(W)
    assert (snapshot.online, snapshot.counts, snapshot.online_users) == (1, {"S4": 1}, 1)


async def test_a_release_through_another_node_survives_a_clear_and_an_empty_redis(
    nodes: Any, redis_server: RedisServer
) -> None:
    """Fault: A released through b while its socket lives on a; a is cleared, then Redis
    restarts empty. Truth: A stays released (its last close skips the grace)."""
    a, _ = await nodes(node_ttl=60.0)
    b = await by_hand(nodes)
    await a.watch(W)
    await a.attach(W, A)
    await b.release(W, A)
    await eventually(lambda: bool(a.remembered(W, A).released), within=5)  # from the feed
    await b.clear_node_in(W, a.node)  # released, no stream left: ended at once
    assert await _claims(b) == {}
    await a.reassert(W)  # from its tombstone
    assert await _claims(b) == {A: ("", True, 1)}
    redis_server.flush()
    await b.add_workspace(W)
    await a.reassert(W)  # from a's memory
    assert await _claims(b) == {A: ("", True, 1)}
    await a.detach(W, A)
    assert await _claims(b) == {}  # no grace


async def test_a_release_answered_before_the_re_assertion_after_an_empty_redis_is_kept(
    nodes: Any, redis_server: RedisServer
) -> None:
    """Fault (found by scripts/chaos.py, seed 1, Redis restarted empty): A's socket lives on a;
    Redis restarts empty and b re-makes the workspace; A is released through b (204) before a
    re-asserts, so the release finds no claim. Truth: once a re-asserts, A is released (its
    last close skips the grace), not re-created unreleased from a's older memory."""
    a, b = await by_hand(nodes), await by_hand(nodes)
    await a.attach(W, A, "ana")
    await a.set_session(W, A, "S1")
    redis_server.flush()
    await b.add_workspace(W)
    await b.release(W, A)  # acknowledged, with no claim in Redis
    await a.reassert(W)
    assert await _claims(b) == {A: ("S1", True, 1)}
    await a.detach(W, A)
    assert await _claims(b) == {}  # no grace


async def test_a_retire_after_redis_lost_its_data_closes_the_re_asserted_socket(
    nodes: Any, redis_server: RedisServer
) -> None:
    """Fault: Redis restarted empty and a re-asserted A's claim; then A is retired through b.
    Truth: A's claim is removed and its socket on a is closed with 4410."""
    a, events = await nodes(node_ttl=60.0)
    b = await by_hand(nodes)
    await a.watch(W)
    await a.attach(W, A)
    redis_server.flush()
    await b.add_workspace(W)
    await a.reassert(W)
    assert await _claims(b) == {A: ("", False, 1)}
    await b.retire(A)
    assert await _claims(b) == {}
    await eventually(lambda: (W, A, CloseCode.RETIRED) in events.closes, within=5)


async def test_a_re_asserted_client_that_was_retired_meanwhile_is_closed(
    nodes: Any, redis_server: RedisServer
) -> None:
    """Fault: A is retired while Redis had lost its claim (the workspace's record of the
    retirement went with it). Truth: a's re-assertion does not bring A back; its socket
    closes with 4410."""
    a, events = await nodes(node_ttl=60.0)
    b = await by_hand(nodes)
    await a.watch(W)
    await a.attach(W, A)
    redis_server.flush()
    await b.retire(A)  # finds no claim anywhere
    await b.add_workspace(W)
    await a.reassert(W)
    assert await _claims(b) == {}
    assert (W, A, CloseCode.RETIRED) in events.closes


async def test_a_re_assertion_finishes_when_the_feed_forgets_a_client_meanwhile(
    nodes: Any, redis_server: RedisServer
) -> None:
    """Fault (found by scripts/chaos.py, seed 101: "RuntimeError: dictionary changed size
    during iteration" out of a set_session's re-assertion): a's re-assertion iterated the
    node's own live record of its streams across its awaits, and the feed removed a client
    from it meanwhile (B retired through b while a closes A, retired while Redis had lost its
    claim). Truth: the re-assertion finishes; A and B are closed with 4410; C counts."""
    a, events = await nodes(node_ttl=60.0)
    b = await by_hand(nodes)
    await a.watch(W)
    c = "00000000-0000-4000-8000-00000000000c"
    for client in (A, B, c):
        await a.attach(W, client)
    redis_server.flush()
    await b.retire(A)  # finds no claim anywhere
    await b.add_workspace(W)
    real = a.scripts["retire"]  # what a runs when its re-assertion finds A retired

    async def b_retires_b_meanwhile(keys: list[str], args: list[Any]) -> Any:
        await b.retire(B)
        await eventually(lambda: B not in a.truth.streams(W), within=5)  # a's feed heard it
        return await real(keys=keys, args=args)

    a.scripts["retire"] = b_retires_b_meanwhile
    await asyncio.wait_for(a.reassert(W), 5)
    a.scripts["retire"] = real
    assert {(W, A, CloseCode.RETIRED), (W, B, CloseCode.RETIRED)} <= set(events.closes)
    assert await _claims(b) == {c: ("", False, 1)}


async def test_a_join_while_a_node_is_taken_for_dead_does_not_roll_back_what_it_missed(
    nodes: Any,
) -> None:
    """Fault (the family scripts/chaos.py found in seed 104, round 10): A's socket lives on
    a; S3 and a release are acknowledged through b while a misses the news (its feed unread);
    a is taken for dead, so A's released claim ends (its tombstone keeps S3 and the mark); A
    opens a second socket, on b, before a re-asserts. Truth: A never lost its socket on a, so
    its claim is S3 and released, with two streams."""
    a, b = await by_hand(nodes), await by_hand(nodes)
    await a.attach(W, A, "ana")
    await a.set_session(W, A, "S2")
    await b.set_session(W, A, "S3")  # acked through b; a's feed is not read
    await b.release(W, A)
    await b.clear_node_in(W, a.node)  # a taken for dead: A released, no stream: ended
    assert await _claims(b) == {}
    await b.attach(W, A, "ana")  # A's second socket, on b: a claim made anew
    await a.reassert(W)
    assert await _claims(b) == {A: ("S3", True, 2)}


async def test_two_re_assertions_of_a_node_let_no_write_between_them(nodes: Any) -> None:
    """Fault (scripts/chaos.py seeds 402, 302 and 218: a join missing from every count, a
    ghost after a close, a client with two sockets counted as one): node a, taken for dead
    and back, re-asserts all its streams at its heartbeat while a frame that found its claim
    gone re-asserts one workspace. The second re-assertion, done first, opened the gate for
    writes while the first still had to write back what it had read of a's streams: a close
    and a join let in then were undone by it. Truth: A closed (in grace, counted nowhere), B
    joined (one stream), on every count."""
    a, b = await by_hand(nodes), await by_hand(nodes)
    await a.attach(W, A)
    await b.clear_node_in(W, a.node)  # a taken for dead: both re-assertions have work
    known, slow = a._known, [0.3]

    async def slow_known(workspace_id: str) -> bool:  # the store, slow once
        if slow:
            await asyncio.sleep(slow.pop())
        return bool(await known(workspace_id))

    a._known = slow_known

    async def close_and_join() -> None:
        await asyncio.sleep(0.05)  # both re-assertions are under way
        await asyncio.gather(a.detach(W, A), a.attach(W, B))

    await asyncio.wait_for(asyncio.gather(a.reassert(), a.reassert(W), close_and_join()), 5)
    assert a.truth.streams(W) == {B: 1}
    assert await _claims(b) == {A: ("", False, 0), B: ("", False, 1)}
    assert (await b.snapshot(W)).online == 1


async def test_the_gate_lets_a_re_assertion_run_alone_whatever_wakes_first() -> None:
    """The rule under the test above, in every order of wake-ups: while a re-assertion runs,
    no write runs and no other re-assertion does; writes run side by side."""
    from hub.backends.redis.backend import _Gate

    gate, alone, writes, side_by_side = _Gate(), [0], [0], [0]
    wrong: list[str] = []

    async def reassert() -> None:
        async with gate.alone():
            alone[0] += 1
            for _ in range(2):
                if alone[0] != 1 or writes[0]:
                    wrong.append(f"re-assertion beside {alone[0] - 1} others, {writes[0]} writes")
                await asyncio.sleep(0.01)
            alone[0] -= 1

    async def write() -> None:
        async with gate.write():
            writes[0] += 1
            side_by_side[0] = max(side_by_side[0], writes[0])
            for _ in range(2):
                if alone[0]:
                    wrong.append("a write beside a re-assertion")
                await asyncio.sleep(0.005)
            writes[0] -= 1

    jobs = [reassert() if i % 3 == 0 else write() for i in range(30)]
    await asyncio.wait_for(asyncio.gather(*jobs), 10)
    assert wrong == []
    assert side_by_side[0] > 1


async def test_a_stream_write_that_arrives_after_its_node_gave_up_is_refused(
    nodes: Any,
) -> None:
    """Fault: a's attach timed out (a stalled link) and a moved on; the script then reaches
    Redis late. Truth: it counts no stream (a stream without a socket is a ghost)."""
    from hub.backends.redis.scripts import script_keys

    a, b = await by_hand(nodes), await by_hand(nodes)
    await a.attach(W, B)
    given_up = a.standing.generation
    a.standing.suspect()  # what a timeout does
    await a.detach(W, B)  # a writes under its new generation
    late = [W, A, a.node, "", "", given_up]  # the attach a gave up on, as it reaches Redis
    with pytest.raises(ResponseError, match="HUB stale"):
        await a.scripts["attach"](keys=script_keys("attach", W, A, a.node, False), args=late)
    assert (await b.snapshot(W)).online == 0
    assert await _claims(b) == {B: ("", False, 0)}  # B in grace, A never made


async def test_a_write_answered_unavailable_that_reaches_redis_late_is_refused(
    nodes: Any, redis_url: str
) -> None:
    """Fault: a's link to Redis stalls while it sends A's set_session S3; a answers it
    unavailable at its timeout; S2 is then acknowledged through b; the link resumes and the
    held S3 reaches Redis (chaos seeds 105 and 109). Truth: A views S2, the acknowledged
    write, and the S3 the client was told had failed is done nowhere."""
    from hub.backends.redis import RedisBackend
    from tests.faultproxy import FaultProxy

    b = await by_hand(nodes)
    proxy = await FaultProxy(int(redis_url.rsplit(":", 1)[1].split("/")[0])).start()
    a = RedisBackend(proxy.url, known=_known, node_ttl=60.0, timeout=0.5)
    await a.start(Recorder())
    await a.stop_loops()
    try:
        await a.attach(W, A)
        await a.set_session(W, A, "S1")
        proxy.stall()
        with pytest.raises(Unavailable):
            await a.set_session(W, A, "S3")
        await b.set_session(W, A, "S2")
        proxy.resume()
        # The held S3 has had every chance to land: a write behind it on the same link is
        # answered, and Redis runs commands in the order they arrive.
        await eventually(lambda: _answers(a), 5, "a's link carries writes again")
        assert await _claims(b) == {A: ("S2", False, 1)}
        assert (await b.snapshot(W)).counts == {"S2": 1}
    finally:
        await a.close()
        await proxy.close()


async def _answers(node: Any) -> bool:
    try:
        await node.snapshot(W)
    except Exception:
        return False
    return True


async def test_a_join_records_its_user_before_its_script_runs(nodes: Any) -> None:
    """A re-assertion never sees a stream without its user: it would re-create the claim as
    anonymous, and the user's next socket would be refused 4403."""
    a = await by_hand(nodes)
    seen: list[Any] = []
    real = a.scripts["attach"]

    async def look(keys: list[str], args: list[Any]) -> Any:
        seen.append(a.remembered(W, A))
        return await real(keys=keys, args=args)

    a.scripts["attach"] = look
    await a.attach(W, A, "ana", {"name": "Ana"})
    assert seen and seen[0].user == "ana" and seen[0].profile == {"name": "Ana"}


@pytest.fixture
async def records(tmp_path: Any) -> AsyncIterator[Any]:
    """A real records store (SQLite on a file), where retirements outlive Redis."""
    from hub.store import open_store

    store = open_store(f"sqlite:///{tmp_path / 'hub.db'}")
    await store.open()
    yield store
    await store.close()


async def test_a_retire_outlives_a_redis_restarted_empty(
    nodes: Any, redis_server: RedisServer, records: Any
) -> None:
    """Fault: Redis restarts empty after A was retired through b (its socket on a closed).
    Truth: once the nodes re-assert, A is refused again everywhere (never undone)."""
    a, events = await nodes(node_ttl=60.0, retired=records)
    b, _ = await nodes(node_ttl=60.0, retired=records)
    await a.watch(W)
    await a.attach(W, A)
    await b.retire(A)
    await eventually(lambda: (W, A, CloseCode.RETIRED) in events.closes, within=5)
    redis_server.flush()
    assert not await b.is_retired(A)  # what Redis alone would say
    await b.reassert()
    assert await b.is_retired(A)
    with pytest.raises(ClientRetired):
        await a.attach(W, A)


async def test_a_retired_client_that_joined_while_redis_forgot_is_closed_at_re_assertion(
    nodes: Any, redis_server: RedisServer, records: Any
) -> None:
    """Fault: Redis restarted empty; a retired client joins through a before any node
    re-asserts (Redis alone cannot refuse it). Truth: a's re-assertion restores the
    retirement and closes that socket with 4410; it counts nowhere."""
    a, events = await nodes(node_ttl=60.0, retired=records)
    await a.stop_loops()  # no heartbeat re-asserts before the join
    await a.retire(A)
    redis_server.flush()
    await a.add_workspace(W)
    await a.attach(W, A)
    await a.reassert()
    assert (W, A, CloseCode.RETIRED) in events.closes
    assert await _claims(a) == {}
    assert (await a.snapshot(W)).online == 0


async def test_the_memory_backend_keeps_retirements_across_a_restart(records: Any) -> None:
    """Fault: the process restarts (presence in memory is gone). Truth: A is still refused."""
    first = MemoryBackend(Presence(retire_ttl=60.0), known=_known, retired=records)
    await first.start(Recorder())
    await first.retire(A)
    await first.close()
    second = MemoryBackend(Presence(retire_ttl=60.0), known=_known, retired=records)
    await second.start(Recorder())
    try:
        assert await second.is_retired(A)
        with pytest.raises(ClientRetired):
            await second.attach(W, A)
    finally:
        await second.close()


# -- releases outlive Redis: the node that acknowledged one writes it back ---------------------


@pytest.mark.parametrize("first", ["holder", "releaser"])
async def test_a_release_the_holding_node_missed_survives_a_redis_restarted_empty(
    nodes: Any, redis_server: RedisServer, first: str
) -> None:
    """Fault (found by scripts/chaos.py, seed 105): A's socket lives on a; A is released
    through b (204) while a misses the news (its feed cut); then Redis restarts empty. Truth:
    once both nodes re-assert, in either order, A is released (its last close skips the
    grace), not re-created unreleased from a's memory."""
    a, b = await by_hand(nodes), await by_hand(nodes)
    await a.attach(W, A, "ana")
    await a.set_session(W, A, "S3")
    await b.release(W, A)  # acknowledged through b; a's feed is not read
    assert not a.remembered(W, A).released
    redis_server.flush()
    order = (a, b) if first == "holder" else (b, a)
    for node in order:
        await node.reassert()
    assert await _claims(b) == {A: ("S3", True, 1)}
    await a.detach(W, A)
    assert await _claims(b) == {}  # no grace


@pytest.mark.parametrize("first", ["holder", "releaser"])
@pytest.mark.parametrize("anew", ["join", "join and set", "create"])
async def test_a_claim_made_anew_after_a_release_is_not_released_by_its_write_back(
    nodes: Any, redis_server: RedisServer, first: str, anew: str
) -> None:
    """Fault: A is released through b while its socket lives on a (a misses the news); then
    the claim is made anew, after the release: A closes and joins again on a (versions 0, or
    a session set since), or a create holds it again through c (a newer version of the mark,
    which a misses too); then Redis restarts empty. Truth: b's write-back of its older
    release does not release the newer claim."""
    a, b, c = await by_hand(nodes), await by_hand(nodes), await by_hand(nodes)
    await a.attach(W, A, "ana")
    await a.set_session(W, A, "S3")
    await b.release(W, A)  # a's feed is not read
    session = "S3"
    if anew == "create":
        await c.hold(W, A)  # clears the mark, at a newer version
    else:
        await a.detach(W, A)  # released: ended at once
        assert await _claims(b) == {}
        await a.attach(W, A, "ana")  # a claim made anew, at versions 0
        session = ""
        if anew == "join and set":
            await a.set_session(W, A, "S1")
            session = "S1"
    redis_server.flush()
    order = (a, b, c) if first == "holder" else (c, b, a)
    for node in order:
        await node.reassert()
    assert await _claims(b) == {A: (session, False, 1)}


async def test_a_session_mark_written_back_into_a_claim_never_released_reaches_every_socket(
    nodes: Any, redis_server: RedisServer
) -> None:
    """Fault (scripts/chaos.py seed 501, round 4: Redis restarted empty while a node paused):
    A's S1, set through b (which holds no stream of A), was lost with Redis's data and came
    back with b's kept marks into the claim that a re-asserted. The feed message said A's
    released mark without its version (A was never released), no node could read it, and
    every socket kept the counts before it at the newest seq. Truth: the change reaches the
    nodes' rooms as a change, with S1 counted."""
    a, b = await by_hand(nodes), await by_hand(nodes)
    c, events = await nodes(node_ttl=60.0)  # its feed runs: it tells its rooms
    await c.watch(W)
    await a.attach(W, A)
    await b.set_session(W, A, "S1")  # acknowledged through b; a's feed is not read
    redis_server.flush()
    await a.reassert()  # A's claim comes back from a's memory: no session, never released
    await eventually(lambda: any(d.online == 1 for d in events.diffs), within=5)
    events.resyncs.clear()
    events.diffs.clear()
    await b.reassert()  # b writes back its kept mark: S1
    await eventually(lambda: any(d.counts.get("S1") == 1 for d in events.diffs), within=5)
    assert events.resyncs == []  # heard as a change, not re-read after an unreadable message


def test_an_unreadable_feed_message_makes_the_node_re_read_its_workspace() -> None:
    """A message the node cannot parse (a script's bug, a version skew) is logged and its
    workspace re-read from Redis, instead of being dropped with its change."""
    from hub.backends.redis import scripts
    from hub.backends.redis.feed import Feed

    resynced: list[str] = []
    feed = Feed(
        "n1", heartbeat=1.0, timeout=1.0, stopping=asyncio.Event(), heard=lambda m: None,
        resync=resynced.append, lost=lambda exc: asyncio.sleep(0),
    )  # fmt: skip
    message = {"type": "message", "channel": scripts.channel(W), "data": b'{"r": {"x": [0]}}'}
    feed.dispatch(message)
    assert resynced == [W]
