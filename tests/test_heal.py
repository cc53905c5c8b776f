"""Random histories of nodes taken for dead, Redis losing its data and re-assertions, on three
Redis nodes: after every heal, the truth.

:mod:`tests.test_replay` holds the Redis scripts to the pure core, step by step; this file
holds both to what a client sees, at the one moment the contract promises it: once every node
has written its streams back (a heal). A history is a list of steps: clients attach and detach
streams on nodes, set their session on a socket (through a node holding one of their streams)
or over REST (through any node), are released or retired through any node; a survivor clears
a node taken for dead (``clear``), Redis restarts empty (``flush``), a node re-asserts on its
own (``reassert``, as a heartbeat or a frame makes it do), a node re-asserts while another
step runs through another node (``race``: their calls to Redis interleave), a node re-asserts
everything while a frame makes it re-assert one workspace and another step runs through it
(``race_here``: what a node taken for dead meets when it comes back) and every node
re-asserts, in an order the history picks (``heal``).

The truth is the counting rule over the streams the history holds open and the operations that
were acknowledged: after a heal every node answers, for each client with streams open, one
claim with exactly that many streams, the last session acknowledged in the claim's life and its
released mark; a client whose claim ended (released at its last close, or retired) has none;
the counts are those claims'. This is what ``scripts/chaos.py`` checks over real processes and
faulty links, here without the timing: each step runs to its end, so a history that breaks a
promise is found in seconds and shrunk to a few steps.

Time does not pass (the graces are longer than a history), so no claim ends but by a release
or a retire. The nodes' loops are not started: what a heartbeat does is the history's
``reassert`` (the full one: retirements, kept marks, then streams in every workspace). The
records store of retirements is :class:`Retirements` (the SQL stores are tested on their own).
"""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hub.backends.redis import RedisBackend, scripts
from hub.errors import ClientRetired, NotAttached
from tests.services import RedisServer

NODES = 3
CLIENTS = [f"00000000-0000-4000-8000-00000000000{c}" for c in "abcd"]
USER = {CLIENTS[0]: "ana", CLIENTS[1]: "ana", CLIENTS[2]: "bo", CLIENTS[3]: None}
SESSIONS = ["S1", "S2", "S3"]
ORDERS = list(itertools.permutations(range(NODES)))
# Steps of a history, some several times to weigh them: a retire takes a client out for good
# (rarely), a heal checks (often enough that a history has several).
OPS = (
    ["attach"] * 4 + ["detach"] * 3 + ["set_session"] * 3 + ["rest_session"] * 2
    + ["release"] * 2
    + ["clear"] * 3 + ["flush", "reassert", "reassert", "retire"] + ["heal"] * 2
    + ["race"] * 3 + ["race_here"] * 2
)  # fmt: skip
# What a ``race`` runs on the next node while a node re-asserts (its order picks one).
RACING = ["attach", "detach", "set_session", "rest_session", "release", "clear", "reassert"]
Op = tuple[str, int, int, str, int]  # (operation, client, node, session, order of a heal)
STEPS = st.tuples(
    st.sampled_from(OPS),
    st.integers(0, len(CLIENTS) - 1),
    st.integers(0, NODES - 1),
    st.sampled_from(SESSIONS),
    st.integers(0, len(ORDERS) - 1),
)
HISTORIES = st.lists(STEPS, min_size=5, max_size=40).map(lambda ops: [*ops, ("heal", 0, 0, "", 0)])


class Retirements:
    """The records store's retirements (hub.store.Store's part of the RetiredRecords port)."""

    def __init__(self) -> None:
        self.until: dict[str, float] = {}

    async def retire_client(self, client_id: str, until: float) -> None:
        self.until[client_id] = until

    async def retirements(self, now: float) -> dict[str, float]:
        return {c: u for c, u in self.until.items() if u > now}


@dataclass
class Truth:
    """What one client did, as the history acknowledged it."""

    alive: bool = False  # it has a claim (attached, or in its reconnect grace)
    session: str = ""
    released: bool = False
    retired: bool = False


class Heal:
    """One history on three nodes of one Redis, checked against the truth after each heal."""

    def __init__(self, redis: RedisServer) -> None:
        self.redis = redis
        self.workspace = "00000000-0000-4000-8000-0000000000ff"
        self.retired = Retirements()
        self.nodes: list[RedisBackend] = []
        self.streams: Counter[tuple[int, str]] = Counter()  # (node, client) -> streams open
        self.truth = {c: Truth() for c in CLIENTS}
        self.forgot_retired = False  # Redis lost its data and no node re-asserted since
        self.log: list[str] = []
        self.ran: Counter[str] = Counter()

    async def run(self, ops: list[Op]) -> Counter[str]:
        async def known(workspace_id: str) -> bool:
            await asyncio.sleep(0.002)  # the records store answers on its own time (a thread)
            return workspace_id == self.workspace

        self.nodes = [
            RedisBackend(self.redis.url, known=known, detach_grace=3600, retired=self.retired)
            for _ in range(NODES)
        ]
        try:
            await self.nodes[0].add_workspace(self.workspace)
            for op in ops:
                self.log.append(" ".join(map(str, op)))
                await self.step(*op)
        except BaseException as exc:
            exc.add_note("history:\n  " + "\n  ".join(self.log))
            raise
        finally:
            for node in self.nodes:
                await node.close()
        return self.ran

    def total(self, client: str) -> int:
        return sum(self.streams[i, client] for i in range(NODES))

    async def step(self, op: str, index: int, i: int, session: str, order: int) -> None:
        client, node, w = CLIENTS[index], self.nodes[i], self.workspace
        truth = self.truth[client]
        self.ran[op] += 1
        if op == "attach":
            try:
                await node.attach(w, client, USER[client])
            except ClientRetired:
                assert truth.retired, f"{client} refused as retired"
                return
            # Redis restarted empty forgets retirements until a node writes them back from
            # the store (at its re-assertion, which closes such a socket with 4410).
            assert not truth.retired or self.forgot_retired, f"retired {client} attached"
            if not truth.alive and not truth.retired:  # a claim made anew
                truth.alive, truth.session, truth.released = True, "", False
            self.streams[i, client] += 1
        elif op == "detach":
            if not self.streams[i, client]:
                return  # a node detaches only a stream it holds
            self.streams[i, client] -= 1
            await node.detach(w, client)
            if not self.total(client) and truth.released:
                truth.alive = False  # a release leaves without grace
        elif op == "set_session":
            if not self.streams[i, client]:
                return  # a frame comes on a socket the node holds
            await node.set_session(w, client, session)
            truth.session = session
        elif op == "rest_session":
            # POST .../current-session through any node: 409 when the store has no attached
            # claim (Redis lost it, or the node holding its stream was cleared)
            try:
                await node.set_session(w, client, session)
            except NotAttached:
                return
            except ClientRetired:
                assert truth.retired, f"{client} refused as retired"
                return
            assert self.total(client), f"{client} set a session with no stream open"
            truth.session = session
        elif op == "release":
            await node.release(w, client)
            if truth.alive and not self.total(client):
                truth.alive = False  # its grace ends now
            elif truth.alive:
                truth.released = True
        elif op == "retire":
            await node.retire(client)
            truth.retired, truth.alive = True, False
            # Every node closes the client's sockets (told by the feed, which does not run
            # here: closing is a detach, and the claim is gone already).
            for j in range(NODES):
                for _ in range(self.streams.pop((j, client), 0)):
                    await self.nodes[j].detach(w, client)
        elif op == "clear":
            survivor = self.nodes[(i + 1) % NODES]
            await survivor.clear_node_in(w, node.node)
        elif op == "flush":
            self.redis.flush()
            self.forgot_retired = True
        elif op == "reassert":
            await self.reassert(i)
        elif op == "race":
            # A node re-asserts while another step runs through the next node: their calls to
            # Redis interleave wherever either waits (the steps of a re-assertion are many).
            other = RACING[(order + index) % len(RACING)]
            racer = self.step(other, index, (i + 1) % NODES, session, order)
            await asyncio.gather(self.reassert(i), racer)
        elif op == "race_here":
            # Node i re-asserts everything (its heartbeat) and one workspace (a frame that
            # found its claim gone) while a step runs through it: a join, a close, a frame.
            other = RACING[(order + index) % len(RACING)]
            racer = self.step(other, index, i, session, order)
            await asyncio.gather(self.reassert(i), node.reassert(w), racer)
            if other != "clear":  # nobody took node i for dead meanwhile
                await self.holds_its_streams(i)
        else:
            assert op == "heal"
            for j in ORDERS[order]:
                await self.reassert(j)
            await self.check()

    async def reassert(self, i: int) -> None:
        """Node ``i`` writes its streams back (the retirements first): it closes the sockets
        of clients retired meanwhile."""
        await self.nodes[i].reassert()
        self.forgot_retired = False
        for c, t in self.truth.items():
            if t.retired:
                self.streams.pop((i, c), None)

    async def holds_its_streams(self, i: int) -> None:
        """Redis counts exactly node ``i``'s open streams, with no heal: a node that has
        re-asserted and was not cleared since will not re-assert again, so a stream its own
        re-assertion undid (a join or a close let in half-way) would stay wrong for good."""
        node = self.nodes[i]
        key = scripts.workspace_keys(self.workspace)[scripts.STREAMS_KEY]
        prefix = node.node + "|"
        counted = {
            c.removeprefix(prefix): int(n)
            for c, n in (await node.redis.hgetall(key)).items()
            if c.startswith(prefix) and not self.truth[c.removeprefix(prefix)].retired
        }
        open_here = [c for c in CLIENTS if self.streams[i, c] and not self.truth[c].retired]
        held = {c: self.streams[i, c] for c in open_here}
        assert counted == held, f"node {i}: Redis counts {counted}, its sockets {held}"

    async def check(self) -> None:
        """Every node answers the truth: the claims of the clients with streams open, each
        with its streams, session and released mark; none for a client whose claim ended; the
        counts of those claims."""
        w = self.workspace
        want = {
            c: (self.total(c), t.session, t.released)
            for c, t in self.truth.items()
            if self.total(c)
        }
        online = Counter(t.session for c, t in self.truth.items() if self.total(c))
        counts = {s: n for s, n in online.items() if s}  # "": attached, viewing none
        for i, node in enumerate(self.nodes):
            claims = {v.client_id: v for v in await node.claims(w)}
            got = {c: (v.streams, v.session_id, v.released) for c, v in claims.items() if v.streams}
            assert got == want, f"node {i}: claims with streams {got} != the truth {want}"
            for c, t in self.truth.items():
                if not t.alive:
                    assert c not in claims, f"node {i}: {c} has a claim after it ended"
                elif c in claims and not claims[c].streams:
                    assert not claims[c].released, f"node {i}: {c} in grace, released"
            snap = await node.snapshot(w)
            assert snap.online == sum(online.values())
            assert {s: n for s, n in snap.counts.items() if n} == counts
        self.ran["checked"] += 1


# Histories written by hand, each a path random ones seldom reach in full; run first.
SCRIPTED: dict[str, list[Op]] = {
    # The node holding the stream and the mark never learned the release (versions 0).
    "a release written back after Redis restarted empty": [
        ("attach", 0, 0, "", 0), ("release", 0, 0, "", 0), ("flush", 0, 0, "", 0),
        ("heal", 0, 0, "", 0),
    ],
    # The session was set over REST through node 1, which holds no stream of the client, and
    # node 0's feed never told it (not running here, as when the link drops the message).
    "a session set through another node, written back after Redis restarted empty": [
        ("attach", 0, 0, "", 0), ("rest_session", 0, 1, "S1", 0), ("flush", 0, 0, "", 0),
        ("heal", 0, 0, "", 0),
    ],
    # Node 2's join makes the claim anew after the restart; node 1's memory of the older claim
    # merges into it first (it continues that claim), then node 0's mark of the release
    # (made before the new claim's birth) must still reach it.
    "a release written back to a claim made anew that continues an older one": [
        ("attach", 0, 1, "", 0), ("set_session", 0, 1, "S1", 0), ("release", 0, 0, "", 0),
        ("flush", 0, 0, "", 0), ("attach", 0, 2, "", 0),
        ("heal", 0, 0, "", ORDERS.index((1, 0, 2))),
    ],
    # Node 0, cleared, comes back: its heartbeat re-asserts everything while a frame makes it
    # re-assert the workspace, and a join (client a) or a close (client b) runs through it;
    # the first re-assertion done must not let them in while the other still has to write
    # (chaos seeds 402 and 302).
    "a join while a node re-asserts twice": [
        ("attach", 1, 0, "", 0), ("clear", 1, 0, "", 0), ("race_here", 0, 0, "", 0),
        ("heal", 0, 0, "", 0),
    ],
    "a close while a node re-asserts twice": [
        ("attach", 1, 0, "", 0), ("clear", 1, 0, "", 0), ("race_here", 1, 0, "", 0),
        ("heal", 0, 0, "", 0),
    ],
}  # fmt: skip


def run_history(ops: list[Op], redis: RedisServer) -> Counter[str]:
    if not redis.answers():
        redis.restart()
    redis.flush()
    return asyncio.run(Heal(redis).run(ops))


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ops=HISTORIES)
def test_every_heal_reaches_the_truth(ops: list[Op], redis_server: RedisServer) -> None:
    run_history(ops, redis_server)


@pytest.mark.parametrize("name", SCRIPTED)
def test_every_heal_reaches_the_truth_on_the_scripted_histories(
    name: str, redis_server: RedisServer
) -> None:
    assert run_history(SCRIPTED[name], redis_server)["checked"] == 1
