"""The backends against the pure core, on random histories: one rule set, replayed everywhere.

A history is a list of steps: the claim calls of the port (hold, attach, set_session, detach,
release, set_profile, retire), time passing (``advance``: creation holds, reconnect graces,
tombstones and vacated delays run out), and, on Redis, time passing with no node sweeping
(``pause``: what came due waits for the next ``advance``) and node events (a survivor clears a
node taken for dead; a node re-asserts its streams). Histories written by hand (SCRIPTED), each
aimed at one path that random ones seldom reach in full, run besides the random ones. The same
history goes to the pure core (:mod:`hub.presence`) with the occupancy rules
(:mod:`hub.occupancy`), and to a backend: the memory backend, or two
:class:`~hub.backends.redis.RedisBackend` nodes sharing one redis-server. After every step each
node must show exactly what the core shows: counts, seq, users, viewers, every claim with its
state (held, attached, grace) and released mark, who is retired, and the webhook events
(occupied, vacated) made so far, in order, with their seq.

Time is the history's: a :class:`Clock` that moves only at ``advance`` and ``pause``. The core
is given its ``now``. The memory backend reads the event loop's clock and arms its one timer on
it, so its history runs on a :class:`ClockLoop`, whose clock is that Clock. The Redis nodes are
given the Clock (``RedisBackend(clock=)``): their scripts take its time for now, and when time
passes one node sweeps the timers, as whichever node gets there first would.

The Redis nodes' loops (heartbeat, sweep, change feed) are not started: nothing happens behind
the history's back, and a node knows only what its own calls answered (a node that missed the
news, as after a pause). Three things a node does on those loops have no call on the port; the
history reaches them through :class:`RedisHooks`, the one place this file names private
methods. ``scripts/replay.py`` runs longer histories; ``scripts/mutate_lua.py`` checks that
this replay catches mutations of the Lua scripts.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import uuid
from collections import Counter
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hub.backends.memory import MemoryBackend
from hub.errors import ClientRetired, Forbidden, NotAttached
from hub.occupancy import Event, Occupancy
from hub.presence import Diff, Presence, Recalled
from tests.services import RedisServer

# Timers, each different, so that a rule applied with the wrong one shows.
CREATE, DETACH, VACATED, TOMB = 30.0, 10.0, 5.0, 60.0
# How far one step moves time: onto a deadline exactly (it fires at its instant), short of it,
# past it; a history of 50 steps stays far below the retirement (a day).
STEPS = [1.0, 4.0, 5.0, 9.0, 10.0, 30.0, 60.0, 61.0]
START = 1000.0
CLIENTS = [f"00000000-0000-4000-8000-00000000000{c}" for c in "abc"]
SESSIONS = ["", "S1", "S2"]
USERS = ["ana", "ana", "bo", None]
# Time passes and no node sweeps (all cut off from Redis, or every sweep failed): the timers
# that came due wait, in the core too, until the next ``advance`` sweeps. Redis only (the
# memory backend's timer runs at the loop's next turn: there it is an ``advance``).
PAUSE = "pause"
# The operations, some several times to weigh them (a retire takes a client out for the rest
# of the history: rarely). The node events run on Redis only (one process has no nodes).
CLAIM_OPS = ["hold", "attach", "attach", "attach", "set_session", "set_session", "detach", "detach"]
OTHER_OPS = ["release", "set_profile", "advance", "advance", "advance", "advance", PAUSE, "retire"]
NODE_OPS = ["clear", "reassert"]
# A node cleared, its claims' graces run out, the node re-asserts: where tombstones and
# versions decide, so these come more often than their share.
NODE_WEIGHTS = NODE_OPS * 2
Op = tuple[str, int, int, str, str | None, float]  # (operation, client, node, session, user, dt)
OPS = st.tuples(
    st.sampled_from(CLAIM_OPS + OTHER_OPS + NODE_WEIGHTS),
    st.integers(0, len(CLIENTS) - 1),
    st.integers(0, 1),
    st.sampled_from(SESSIONS),
    st.sampled_from(USERS),
    st.sampled_from(STEPS),
)
HISTORIES = st.lists(OPS, min_size=10, max_size=50)  # 20 steps on average
KINDS = ("memory", "redis")


def do(
    op: str, client: int = 0, node: int = 0, session: str = "", dt: float = 1.0, user: str = "ana"
) -> Op:
    """One step of a scripted history (an attach with ``dt`` > 9 sets a profile; a retire with
    ``dt`` > 9 reaches the other node after it re-asserts)."""
    return (op, client, node, session, user, dt)


# Histories written by hand, each aimed at one path that random ones seldom reach in full
# (scripts/mutate_lua.py: the mutations they catch); run before the random ones. On the memory
# backend the node events do nothing and a pause is an advance.
SCRIPTED: dict[str, list[Op]] = {
    "a released claim ends at its last close, its user's profile with it": [
        do("attach", dt=10), do("release"), do("detach"), do("attach", 1), do("attach"),
    ],
    "a user is bound by the first stream only": [
        do("attach", dt=10), do("attach"), do("detach"), do("detach"), do("advance", dt=10),
        do("attach", 1),
    ],
    "a hold clears the released mark and runs out at its instant": [
        do("attach"), do("release"), do("hold"), do("hold", 1), do("advance", dt=CREATE),
        do("hold", 2), do("attach", 2), do("detach", 2), do("advance", dt=DETACH),
    ],
    "a retire reaches a node after it re-asserts the client": [
        do("attach"), do("attach", node=1), do("retire", dt=10), do("attach", node=1),
        do("reassert", node=1), do("attach", 1, node=1),
    ],
    "a frame after a clear writes the node's streams back": [
        do("attach"), do("set_session", session="S1"), do("clear"), do("advance"),
        do("set_session", session="S2"), do("detach"), do("advance", dt=DETACH),
    ],
    "a claim made anew takes the release its tombstone kept": [
        do("attach"), do("set_session", session="S1"), do("clear"), do("release"),
        do("attach", node=1), do("reassert"), do("detach", node=1), do("detach"),
    ],
    "a claim made anew ignores the tombstone a newer memory never saw": [
        do("attach"), do("clear"), do("release"), do("attach", node=1), do("reassert", node=1),
        do("set_session", node=1, session="S1"), do("reassert", node=1),
    ],
    "a claim that runs out leaves its tombstone": [
        do("attach"), do("attach", node=1), do("set_session", node=1, session="S1"),
        do("clear"), do("clear", node=1), do("advance", dt=DETACH), do("reassert"),
    ],
    "a first set of the session a claim has takes a version": [
        do("attach"), do("set_session"), do("attach", node=1), do("set_session", node=1),
    ],
    "a grace turned into a hold; a vacated event when the delay ends": [
        do("attach"), do("detach"), do("hold"), do("advance", dt=VACATED),
    ],
    "a profile replaced; a client bound to another user refused": [
        do("attach", dt=10), do("set_profile"), do("attach", user="bo"),
    ],
    "a stream its node no longer holds detaches nothing": [
        do("attach"), do("attach", node=1), do("clear"), do("detach"), do("detach", node=1),
    ],
    "a claim in grace takes no profile": [
        do("attach", dt=10), do("detach"), do("set_profile"), do("attach"),
    ],
    "a release with no claim marks the tombstone": [
        do("attach"), do("clear"), do("advance", dt=DETACH), do("release"), do("reassert"),
        do("detach"),
    ],
    "a node's memory brings a claim back after its tombstone went": [
        do("attach", dt=10), do("set_session", session="S1"), do("clear"),
        do("advance", dt=DETACH), do("advance", dt=TOMB), do("reassert"), do("detach"),
    ],
    "a tombstone runs out": [
        do("attach"), do("clear"), do("release"), do("advance", dt=TOMB), do("reassert"),
        do("detach"),
    ],
    "a timer due and not swept is not hidden by a later one": [
        do("attach", session="S1"), do("set_session", session="S1"), do("detach"),
        do(PAUSE, dt=DETACH), do("hold", 1), do("advance"), do("hold", 2),
        do(PAUSE, dt=CREATE), do("attach", 1), do("advance"),
    ],
}  # fmt: skip
Seen = tuple[str, str | None, int]  # a webhook event: (name, session, seq from the start)


class Clock:
    """The history's time in seconds: it moves only when the history says so."""

    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class ClockLoop(asyncio.SelectorEventLoop):
    """An event loop that tells the time by a :class:`Clock`. Its timers (``call_at``) come
    due when the Clock is moved past them, and run at the loop's next turns (see settle)."""

    def __init__(self, clock: Clock) -> None:
        super().__init__()
        self.clock = clock

    def time(self) -> float:
        return self.clock.now


async def settle() -> None:
    """Let the timers that came due run. The loop moves due timers to its ready queue behind
    the callback that resumes this task, so they run in the turn after; three turns leave room
    for a timer that schedules another one due at once."""
    for _ in range(3):
        await asyncio.sleep(0)


class RedisHooks:
    """What a Redis node does on its own loops, which have no call on the port: RedisBackend's
    public handles on them (hub/backends/redis/backend.py)."""

    @staticmethod
    async def sweep(node: Any) -> None:
        """Fire the due timers of every workspace (each node does it every sweep interval)."""
        await node.sweep()

    @staticmethod
    async def clear(survivor: Any, workspace_id: str, node: str) -> None:
        """A survivor detaches every stream of ``node``, taken for dead, in the workspace."""
        await survivor.clear_node_in(workspace_id, node)

    @staticmethod
    async def reassert(node: Any, workspace_id: str) -> None:
        """The node writes its streams back (it found itself forgotten)."""
        await node.reassert(workspace_id)


class _Sink:
    """The hub's side of the port, for the memory backend (whose timer starts with it)."""

    def changed(self, diff: Diff) -> None:
        pass

    def resync(self, workspace_id: str) -> None:
        pass

    def session(self, workspace_id: str, op: str, session: dict[str, Any]) -> None:
        pass

    def closed(self, workspace_id: str, client_id: str | None, code: int) -> None:
        pass


async def refuses(call: Any, *refusals: type[Exception]) -> None:
    """``await call()`` must raise one of ``refusals``."""
    try:
        await call()
    except refusals:
        return
    raise AssertionError(f"the backend did not refuse: {', '.join(r.__name__ for r in refusals)}")


class Replay:
    """One history on one kind of backend and on the core, checked after every step."""

    def __init__(self, kind: str, clock: Clock, url: str) -> None:
        self.kind = kind
        self.clock = clock
        self.url = url
        self.workspace = f"replay-{uuid.uuid4().hex}"
        # The core as the backend is configured: tombstones where nodes re-assert (Redis).
        tombs = TOMB if kind == "redis" else 0.0
        self.model = Presence(create_grace=CREATE, detach_grace=DETACH, tomb_ttl=tombs)
        self.model.add_workspace(self.workspace)
        self.occupancy = Occupancy(VACATED)
        self.events: list[Seen] = []  # what the occupancy rules made, in order
        self.seen: list[Seen] = []  # what the backend's outbox held, in order
        self.streams_on: dict[tuple[int, str], int] = {}  # what each node's sockets hold
        # What each node remembers of the claims it holds streams of (Redis: re-asserted),
        # modelled on the core's versions, independently of what Redis answers.
        self.memory: dict[tuple[int, str], Recalled] = {}
        self.ran: Counter[str] = Counter()  # what the history exercised (scripts/replay.py)
        self.steps = 0
        self.nodes: list[Any] = []
        self.names: list[str] = ["0", "1"]
        self.base = 0  # the backend's seq (and version clock) at the start

    # -- the core's side --------------------------------------------------------------------

    def track(self, diffs: Diff | list[Diff]) -> None:
        """Committed changes go through the occupancy rules, as in both backends."""
        for diff in diffs if isinstance(diffs, list) else [diffs]:
            self.note(self.occupancy.apply(diff, self.clock.now))

    def note(self, events: list[Event]) -> None:
        self.events.extend((e.name, e.session_id, e.seq) for e in events)
        self.ran.update(e.name for e in events)

    def state(self, client: str) -> Recalled | None:
        """The client's claim in the core with its versions (read from the core's own record:
        its public reads do not show versions)."""
        claim = self.model._spaces[self.workspace].claims.get(client)
        if claim is None:
            return None
        return Recalled(
            claim.session_id, claim.session_v, claim.released, claim.released_v, born=claim.born
        )

    def learn(self, node: int, client: str, session_only: bool = False) -> None:
        """A node learns the claim's state from an answer (RedisBackend._learn's rule, on the
        core's versions): each field that is newer than what it remembers."""
        known, state = self.memory.get((node, client)), self.state(client)
        if known is None or state is None:
            return
        if state.session_v > known.session_v:
            known = dataclasses.replace(
                known, session_id=state.session_id, session_v=state.session_v
            )
        if state.released_v > known.released_v and not session_only:
            known = dataclasses.replace(known, released=state.released, released_v=state.released_v)
        if not session_only and state.born and (not known.born or state.born < known.born):
            known = dataclasses.replace(known, born=state.born)
        self.memory[node, client] = known

    def recalled(self, node: int) -> dict[str, Recalled]:
        """What the node re-asserts of each client it holds streams of (the core's model of
        its memory, checked against the node's after every step)."""
        return {c: self.memory[node, c] for c in self.mine(node)}

    def mine(self, node: int) -> dict[str, int]:
        return {c: n for (i, c), n in self.streams_on.items() if i == node and n}

    # -- running ----------------------------------------------------------------------------

    async def run(self, ops: list[Op]) -> Counter[str]:
        await self.start()
        try:
            for op in ops:
                await self.step(*op)
                await self.check()
        finally:
            for node in self.nodes[: 1 if self.kind == "memory" else 2]:
                await node.close()
        return self.ran

    async def start(self) -> None:
        if self.kind == "memory":
            presence = Presence(create_grace=CREATE, detach_grace=DETACH)
            backend = MemoryBackend(presence, occupancy=Occupancy(VACATED), receivers=["r"])
            await backend.start(_Sink())  # arms its timer on the running loop's clock
            self.nodes = [backend, backend]
        else:
            from hub.backends.redis import RedisBackend, WebhookStream

            async def known(workspace_id: str) -> bool:
                return workspace_id == self.workspace

            hooks = WebhookStream(("r",), VACATED)
            self.nodes = [
                RedisBackend(
                    self.url,
                    known=known,
                    webhooks=hooks,
                    create_grace=CREATE,
                    detach_grace=DETACH,
                    tomb_ttl=TOMB,
                    clock=self.clock,
                )  # fmt: skip
                for _ in range(2)
            ]
            self.names = [node.node for node in self.nodes]
        await self.nodes[0].add_workspace(self.workspace)
        self.base = (await self.nodes[0].snapshot(self.workspace)).seq

    async def same(self, model: Any, backend: Any, *also: type[Exception]) -> bool:
        """Call the core (``model()``), then the backend (``await backend()``): a refusal must
        be the same refusal (or one of ``also``). Whether the call went through."""
        try:
            self.track(model())
        except (ClientRetired, Forbidden, NotAttached) as refused:
            self.ran[f"refused: {type(refused).__name__}"] += 1
            await refuses(backend, type(refused), *also)
            return False
        await backend()
        return True

    async def reasserted(self, node: int) -> None:
        """The node wrote its streams back: the core takes them with the node's memory, and
        the node learns each claim that stands."""
        mine = self.mine(node)
        self.track(
            self.model.set_streams(
                self.workspace, self.names[node], mine, self.recalled(node), self.clock.now
            )
        )
        for c in mine:
            self.learn(node, c)

    async def step(
        self, op: str, index: int, node: int, session: str, user: str | None, dt: float
    ) -> None:
        client, backend, name = CLIENTS[index], self.nodes[node], self.names[node]
        model, w, now = self.model, self.workspace, self.clock.now
        self.ran[op] += 1
        self.steps += 1
        if op == "advance" or (op == PAUSE and self.kind == "memory"):
            await self.advance(node, dt)
        elif op == PAUSE:
            self.clock.now += dt
        elif op == "retire":
            await self.retire(node, client, late=dt > 9)
        elif op in NODE_OPS:
            if self.kind == "memory":
                return  # one process: no nodes to clear
            if op == "clear":
                await RedisHooks.clear(self.nodes[1 - node], w, name)
                self.track(model.clear_node(name, now))
            else:
                await RedisHooks.reassert(backend, w)
                await self.reasserted(node)
        elif op == "detach":
            if not self.streams_on.get((node, client)):
                return  # a node only ever detaches a stream it holds
            self.streams_on[node, client] -= 1
            if not self.streams_on[node, client]:
                del self.streams_on[node, client], self.memory[node, client]
            await backend.detach(w, client)
            self.track(model.detach(w, client, now, node=name))
        elif op == "attach":
            profile: dict[str, object] | None = {"n": self.steps} if dt > 9 else None
            attached = await self.same(
                lambda: model.attach(w, client, now, node=name, user=user, profile=profile),
                lambda: backend.attach(w, client, user, profile),
            )
            if attached:
                key = (node, client)
                known = self.memory.get(key)
                if known is None:  # its first stream here: the node remembers from now on
                    self.memory[key] = Recalled(user=user, profile=profile)
                elif profile is not None:
                    self.memory[key] = dataclasses.replace(known, profile=profile)
                self.streams_on[key] = self.streams_on.get(key, 0) + 1
                self.learn(node, client)
        elif op == "set_profile":
            profile = {"p": self.steps}
            # Redis answers a retired client's profile with not_attached (its socket is
            # closed by then: no frame of it comes from a hub).
            if await self.same(
                lambda: model.set_profile(w, client, profile, now),
                lambda: backend.set_profile(w, client, profile),
                *((NotAttached,) if self.kind == "redis" else ()),
            ):
                known = self.memory.get((node, client))
                if known is not None:
                    self.memory[node, client] = dataclasses.replace(known, profile=profile)
        elif op == "set_session":
            if self.streams_on.get((node, client)) and client not in {
                c.client_id for c in model.claims(w) if c.streams
            }:
                # The node holds a stream the store forgot (it was cleared): the backend
                # writes the node's streams back and applies the frame.
                await self.reasserted(node)
                self.ran["set_session after a clear"] += 1
            if await self.same(
                lambda: model.set_session(w, client, session, now),
                lambda: backend.set_session(w, client, session),
            ):
                self.learn(node, client, session_only=True)
        elif op == "hold":
            await self.same(lambda: model.hold(w, client, now), lambda: backend.hold(w, client))
        else:
            assert op == "release"
            await backend.release(w, client)
            self.track(model.release(w, client, now))

    async def advance(self, node: int, dt: float) -> None:
        """Time passes: every timer due by then fires, in the core, the occupancy rules and the
        backend (the memory backend's own timer; one Redis node's sweep)."""
        before = {c.client_id: c.state.value for c in self.model.claims(self.workspace)}
        self.clock.now += dt
        now = self.clock.now
        if self.kind == "memory":
            await settle()
        else:
            await RedisHooks.sweep(self.nodes[node])
        self.track(self.model.expire(now))
        self.note(self.occupancy.expire(now))
        after = {c.client_id for c in self.model.claims(self.workspace)}
        self.ran.update(f"expired: {state}" for c, state in before.items() if c not in after)

    async def retire(self, node: int, client: str, late: bool) -> None:
        """A retire through one node: the client's claims end, and every node closes its
        sockets (told by the change feed; the hub detaches nothing of a closed claim). On a
        Redis node, whose feed is not running, closing a socket is a detach, which forgets the
        stream as the feed would and finds nothing left to move. ``late``: the other node
        re-asserts its streams before the news reaches it (its heartbeat found it forgotten),
        the retired client's among them, which must not come back."""
        await self.nodes[node].retire(client)
        self.track(self.model.retire(client, self.clock.now))
        other = 1 - node
        if late and self.kind == "redis" and self.streams_on.get((other, client)):
            await RedisHooks.reassert(self.nodes[other], self.workspace)
            await self.reasserted(other)
            self.ran["retired while a node re-asserts"] += 1
        for i in (0, 1):
            self.memory.pop((i, client), None)
            for _ in range(self.streams_on.pop((i, client), 0)):
                if self.kind == "redis":
                    await self.nodes[i].detach(self.workspace, client)

    # -- checking ---------------------------------------------------------------------------

    async def check(self) -> None:
        """Every node shows what the core shows, and the outbox holds the events the
        occupancy rules made."""
        w, model, now = self.workspace, self.model, self.clock.now
        want = model.snapshot(w)
        truth = {s: model.viewers(w, s, 100) for s in SESSIONS}
        claims = sorted(model.claims(w), key=lambda c: c.client_id)
        retired = [model.is_retired(c, now) for c in CLIENTS]
        for b in self.nodes[: 1 if self.kind == "memory" else 2]:
            got = await b.snapshot(w)
            assert (got.online, got.counts, got.seq - self.base) == (
                want.online,
                want.counts,
                want.seq,
            )
            assert (got.users, got.online_users) == (want.users, want.online_users)
            for s in SESSIONS:
                seen = await b.viewers(w, s, 100)
                assert (seen.total, seen.anonymous, seen.viewers) == (
                    truth[s].total, truth[s].anonymous, truth[s].viewers,
                )  # fmt: skip
            assert sorted(await b.claims(w), key=lambda c: c.client_id) == claims
            assert [await b.is_retired(c) for c in CLIENTS] == retired
        if self.kind == "redis":
            for i, b in enumerate(self.nodes):
                got = {c: self.converted(b.remembered(w, c)) for c in CLIENTS}
                assert got == {c: self.memory.get((i, c)) for c in CLIENTS}
        self.seen += await self.drain()
        assert self.seen == self.events

    def converted(self, r: Recalled | None) -> Recalled | None:
        """A node's memory on the core's clock: Redis's starts where the workspace's seq did
        (``base``), and ticks where the core's does."""
        if r is None:
            return None
        sv = r.session_v - self.base if r.session_v else 0
        rv = r.released_v - self.base if r.released_v else 0
        born = r.born - self.base if r.born else 0
        return dataclasses.replace(r, session_v=sv, released_v=rv, born=born)

    async def drain(self) -> list[Seen]:
        """The webhook events the backend queued since the last drain (taken and
        acknowledged, through the port's outbox)."""
        outbox = self.nodes[0].outbox("r")
        taken: list[bytes] = []
        while self.kind == "redis" or outbox.stats().depth:
            batch = await outbox.take()
            if not batch.events:
                break
            taken += batch.events
            await outbox.ack(batch)
        made = [json.loads(e) for e in taken]
        return [
            (e["name"], e.get("session_id"), e["seq"] - self.base)
            for e in made
            if e["workspace_id"] == self.workspace
        ]


def run_history(kind: str, ops: list[Op], redis: RedisServer | None = None) -> Counter[str]:
    """Replay ``ops`` on a backend of ``kind`` (Redis: two nodes on ``redis``, emptied first)
    and on the core; raises AssertionError at the first step where they differ. Returns what
    the history exercised."""
    clock = Clock()
    if kind == "memory":
        with asyncio.Runner(loop_factory=lambda: ClockLoop(clock)) as runner:
            return runner.run(Replay(kind, clock, "").run(ops))
    assert redis is not None
    if not redis.answers():
        redis.restart()
    redis.flush()  # no retirement, index or outbox of another history
    return asyncio.run(Replay(kind, clock, redis.url).run(ops))


@pytest.mark.parametrize("kind", KINDS)
@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ops=HISTORIES)
def test_backends_follow_the_core_on_any_history(
    kind: str, ops: list[Op], request: pytest.FixtureRequest
) -> None:
    redis = request.getfixturevalue("redis_server") if kind == "redis" else None
    run_history(kind, ops, redis)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", SCRIPTED)
def test_backends_follow_the_core_on_the_scripted_histories(
    kind: str, name: str, request: pytest.FixtureRequest
) -> None:
    redis = request.getfixturevalue("redis_server") if kind == "redis" else None
    run_history(kind, SCRIPTED[name], redis)


def test_the_replay_catches_broken_scripts() -> None:
    """The mutation harness (scripts/mutate_lua.py) still runs, and the scripted histories
    alone still catch five representative broken transitions: a grace claim left marked held,
    a timer due this instant left waiting, a retired client's claim left standing, a released
    claim's last close starting a grace, a due index entry moved later by an arm."""
    from scripts.mutate_lua import MUTATIONS, mutate

    chosen = [
        "a grace claim stays marked held",
        "expire: a timer due this instant waits",
        "retire: the claim stays",
        "the last close of a released claim starts grace",
        "index: an entry already due is moved to the later deadline",
    ]
    mutations = [m for m in MUTATIONS if m.name in chosen]
    assert len(mutations) == len(chosen)
    assert mutate(mutations, examples=0, seed=1) == dict.fromkeys(chosen, "caught")
