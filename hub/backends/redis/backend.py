"""The Redis backend's shell: :class:`RedisBackend` composes the package's nouns.

It carries the hub's calls to the scripts (:mod:`.scripts`, with the deployment found by
:mod:`.connect`), the change feed to the hub (:mod:`.feed`, :mod:`.messages`), and time to
the timers (:mod:`.timers`); what it decides about this node (when to re-assert, the
generation fence, what it remembers) it asks the pure :mod:`.nodes`. Its own work is the
I/O around them: which calls make a node doubt Redis, the heartbeat's reads and writes, the
re-assertion and the clearing of dead nodes, and the gate that keeps a re-assertion from
racing the writes it did not see, or another re-assertion.

Redis unreachable: calls raise :class:`~hub.errors.Unavailable` (REST 503, close 1013)
within the socket timeout (on a Cluster each call is bounded as a whole, since a topology
refresh may ask node after node).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
from redis.asyncio.sentinel import Sentinel
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisClusterException, RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from hub.backends import Events, RetiredRecords
from hub.backends.redis import connect, nodes, scripts
from hub.backends.redis.feed import Feed
from hub.backends.redis.messages import FeedMessage, session_event
from hub.backends.redis.nodes import Marks, Standing, Truth
from hub.backends.redis.outbox import RedisOutbox, WebhookStream
from hub.backends.redis.scripts import NODES, OUTBOX
from hub.backends.redis.timers import Timers, every
from hub.errors import ClientRetired, ConfigError, NotAttached, Unavailable, WorkspaceNotFound
from hub.presence import ClaimView, Profile, Recalled, Snapshot, Viewers
from hub.protocol import CloseCode

__all__ = ["RedisBackend"]

log = logging.getLogger(__name__)


class _Gate:
    """Stream writes run side by side; a re-assertion of this node's streams runs alone: no
    write runs while it does, and no other re-assertion (each writes back what it read of
    this node's truth, so a write let in before it has written would be undone by it)."""

    def __init__(self) -> None:
        self._writes = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._open = asyncio.Event()
        self._open.set()
        self._alone = asyncio.Lock()

    @contextlib.asynccontextmanager
    async def write(self) -> AsyncIterator[None]:
        # Looked at again once woken: a re-assertion may have closed the gate between the
        # wake-up and this task's turn.
        while not self._open.is_set():
            await self._open.wait()
        self._writes += 1
        self._idle.clear()
        try:
            yield
        finally:
            self._writes -= 1
            if not self._writes:
                self._idle.set()

    @contextlib.asynccontextmanager
    async def alone(self) -> AsyncIterator[None]:
        async with self._alone:
            self._open.clear()
            try:
                while self._writes:
                    await self._idle.wait()
                yield
            finally:
                self._open.set()


class RedisBackend:
    """Presence shared by every hub process on one Redis (see :mod:`hub.backends.redis`).

    Besides the :class:`~hub.backends.PresenceBackend` port, a node's steps are public, for
    drills and tests that run them by hand (:meth:`stop_loops` first): :meth:`beat`,
    :meth:`sweep`, :meth:`reassert`, :meth:`clear_node_in`; and what it knows of itself:
    :attr:`standing`, :attr:`truth` (:mod:`hub.backends.redis.nodes`).
    """

    def __init__(
        self,
        url: str,
        *,
        known: Callable[[str], Awaitable[bool]],
        create_grace: float = 30.0,
        detach_grace: float = 10.0,
        retire_ttl: float = 86400.0,
        heartbeat: float = 1.0,
        node_ttl: float = 3.0,
        sweep_interval: float = 0.1,
        timeout: float = 2.0,
        max_connections: int = 64,
        node_id: str | None = None,
        webhooks: WebhookStream | None = None,
        tomb_ttl: float = 600.0,
        retired: RetiredRecords | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        """``clock``: the time in seconds that the scripts take for "now" (deadlines, expiry,
        retirements in a workspace), given to each script as its last argument; None (the
        default): each script reads Redis's own clock (TIME), the one clock every node shares.
        For tests that move time by hand (tests/test_replay.py)."""
        self._clock = clock
        self.node = node_id or uuid.uuid4().hex[:12]
        self.webhooks = webhooks
        # Whether the durable store has the workspace: Redis may have lost what it knew.
        self._known = known
        # Where retirements outlive Redis (the store): written before Redis, restored at every
        # re-assertion, since a Redis restarted empty forgot its ``hub:retired:*`` keys.
        self._retired = retired
        self._create_ms = int(create_grace * 1000)
        self._grace_ms = int(detach_grace * 1000)
        self._retire_ms = max(1, int(retire_ttl * 1000))
        # How long an ended claim's last state is kept for a node that re-asserts it.
        self._tomb_ms = max(1, int(tomb_ttl * 1000))
        self.heartbeat = heartbeat
        self.node_ttl_ms = int(node_ttl * 1000)
        self._sweep_interval = sweep_interval
        self._timeout = timeout
        # Redis's clock minus this node's, ms (read at each heartbeat): for the calls' deadlines.
        self._skew_ms = 0.0
        self._url = url
        self._options = connect.pool_options(timeout, max_connections)
        self.redis: Any
        self._sentinel: Sentinel | None
        self.redis, self._sentinel = connect.open_client(url, self._options, timeout)
        self._cluster = False  # a Redis Cluster (found at start): sharded pub/sub
        self.scripts: dict[str, Any] = {}  # by name; replaced in place (see _use)
        self._timers = Timers(self.scripts, self._expire, self.now)
        self._stopping = asyncio.Event()
        self._feed = Feed(
            self.node,
            heartbeat=heartbeat,
            timeout=timeout,
            stopping=self._stopping,
            heard=self._heard,
            resync=self._resync,
            lost=self._purge,
        )
        self._use(self.redis)
        self._events: Events | None = None
        #: This node's truth (what it re-asserts) and its standing in Redis (whether to, and
        #: the generation that fences its stream writes).
        self.truth = Truth()
        #: The released marks this node acknowledged, written back at every re-assertion.
        self.marks = Marks(self._tomb_ms / 1000)
        self.standing = Standing(self.node, time.time())
        self._gate = _Gate()
        self._tasks: list[asyncio.Task[None]] = []

    def _use(self, client: Any) -> None:
        """Talk to Redis through ``client``; the scripts publish the way it listens."""
        self.redis = client
        hooks = self.webhooks
        loaded = scripts.load(
            client,
            cluster=self._cluster,
            vacated_ms=int(hooks.vacated_delay * 1000) if hooks is not None else -1,
            hook_max=hooks.limit if hooks else 0,
            tomb_ms=self._tomb_ms,
            clock_arg=self._clock is not None,
        )
        self.scripts.clear()
        self.scripts.update(loaded)
        self._timers.cluster = self._cluster
        self._feed.use(client, self._cluster, connect.shard_options(self._options))

    async def _find_cluster(self) -> None:
        """A ``redis://`` URL may name any node of a Redis Cluster: then use the cluster
        client (every workspace's keys are one slot) and sharded pub/sub (SSUBSCRIBE)."""
        if self._sentinel is not None or not await connect.is_cluster(self._url, self._timeout):
            return
        if self.webhooks is not None:
            raise ConfigError(
                "HUB_WEBHOOK_URL: webhooks need one Redis or Sentinel, not a Redis Cluster "
                "(a workspace's script cannot append its events to one stream there)"
            )
        standalone = self.redis
        self._cluster = True
        self._use(connect.cluster_client(self._url, self._options))
        await standalone.aclose(close_connection_pool=True)
        log.info("Redis Cluster: workspaces spread over its masters, sharded pub/sub")

    # -- life -------------------------------------------------------------------------------

    async def start(self, events: Events) -> None:
        self._events = events
        await self._find_cluster()
        for receiver in self.webhooks.receivers if self.webhooks else ():
            # A new receiver gets the events from now on (after Redis lost its data, the
            # first take makes the group anew, from the start of the stream).
            with contextlib.suppress(RedisError, OSError):
                await self.redis.xgroup_create(OUTBOX, receiver, "$", mkstream=True)
        loop = asyncio.get_running_loop()
        doubt = self.standing.doubt
        jobs = {
            "feed": self._feed.run(),
            "heartbeat": every(
                self.heartbeat, self.beat, "presence heartbeat",
                quiet=False, stopping=self._stopping, failed=doubt,
            ),
            "sweep": every(
                self._sweep_interval, self.sweep, "timer sweep",
                quiet=True, stopping=self._stopping, failed=doubt,
            ),
        }  # fmt: skip
        for name, job in jobs.items():
            self._tasks.append(loop.create_task(job, name=f"redis-{name}-{self.node}"))

    async def stop_loops(self) -> None:
        """Stop the heartbeat, the sweep and the feed, saying nothing to Redis: what a killed
        process leaves behind. Calls still answer, and the steps can be run by hand."""
        # The loops stop by themselves at their next turn: a redis-py call being cancelled
        # mid-command can swallow the cancellation, so cancelling is only the fallback.
        self._stopping.set()
        if self._tasks:
            _, stuck = await asyncio.wait(self._tasks, timeout=3)
            for task in stuck:
                log.warning("presence task %s did not stop: cancelled", task.get_name())
                task.cancel()
        self._tasks.clear()

    async def close(self) -> None:
        await self.stop_loops()
        with contextlib.suppress(RedisError, OSError, *connect.CLUSTER_LOST):
            # The hub's shutdown detached this node's streams; should one detach have failed,
            # ending the heartbeat now lets a survivor (or this node's next run) clear what is
            # left at its next beat, as for a node that died.
            await self._bounded(self.redis.delete(scripts.node_key(self.node)))
        await self._feed.drop()
        if self._cluster:
            await self.redis.aclose()
        else:
            await self.redis.aclose(close_connection_pool=True)
        if self._sentinel is not None:
            await self._sentinel.aclose()

    async def ping(self) -> None:
        await self.redis.ping()

    # -- the change feed ---------------------------------------------------------------------

    async def watch(self, workspace_id: str) -> None:
        await self._feed.watch(workspace_id)

    def unwatch(self, workspace_id: str) -> None:
        """Counted down now; the channel is left by the next heartbeat if nobody came back."""
        self._feed.unwatch(workspace_id)

    def _resync(self, workspace_id: str) -> None:
        if self._events is not None:
            self._events.resync(workspace_id)

    def _heard(self, message: FeedMessage) -> None:
        """One message of a workspace's feed: this node learns the claims' states, then the
        hub hears the change, the close and the session event."""
        if self._events is None:
            return
        workspace_id = message.workspace_id
        for client_id, (session_id, sv) in message.sessions.items():
            self.truth.learn(workspace_id, client_id, session_id, sv, 0, 0)
        for client_id, (released, rv) in message.released.items():
            self.truth.learn(workspace_id, client_id, "", 0, released, rv)
        if message.diff is not None:
            self._events.changed(message.diff)
        if message.close is not None:
            self.truth.forget(workspace_id, message.close.client_id)
            self._events.closed(workspace_id, message.close.client_id, message.close.code)
        if message.event is not None:
            self._events.session(workspace_id, message.event.op, message.event.session)

    # -- calls ------------------------------------------------------------------------------

    async def _run(self, name: str, workspace_id: str, *args: Any) -> Any:
        """One workspace script; a workspace Redis forgot (but the store has) is re-made. An
        idempotent script that met a dead connection is tried once more on a fresh one, within
        what is left of the timeout: the whole call answers within about ``timeout``."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        deadline = self._deadline()
        try:
            return await self._bounded(self._script(name, workspace_id, *args, deadline=deadline))
        except (RedisConnectionError, RedisTimeoutError, OSError, *connect.CLUSTER_LOST) as exc:
            await self._purge(exc)
            left = self._timeout - (loop.time() - started)
            if name not in scripts.IDEMPOTENT or left < self._timeout / 4:
                raise Unavailable(f"presence unavailable: {exc or 'timeout'}") from None
        try:
            return await asyncio.wait_for(
                self._script(name, workspace_id, *args, deadline=deadline), left
            )
        except (RedisError, OSError, TimeoutError, RedisClusterException) as exc:
            raise Unavailable(f"presence unavailable: {exc or 'timeout'}") from None

    def _bounded(self, coro: Awaitable[Any]) -> Awaitable[Any]:
        """A call to Redis that answers within ``timeout``. On one Redis each socket operation
        is bounded already; on a Cluster a call may also refresh the topology (asking node
        after node), which no socket timeout bounds as a whole."""
        return asyncio.wait_for(coro, self._timeout) if self._cluster else coro

    def _read_skew(self, sent: float, redis_time: tuple[int, int]) -> None:
        """Redis's clock against this node's, from a ``TIME`` sent at ``sent`` and answered
        now; kept only from a clear reading (a quick answer), for :meth:`_deadline`."""
        answered = time.time()
        if answered - sent < self._timeout / 4:
            seconds, micros = redis_time
            self._skew_ms = seconds * 1000 + micros / 1000 - (sent + answered) * 500

    def _deadline(self) -> str:
        """The deadline of a call made now, for the scripts' prelude (lua/_lib.lua): the
        moment, in Redis's time, past which this node has answered it unavailable. Sent with
        the call, so that a call which reaches Redis later (held in a stalled link, a paused
        Redis) is refused there instead of overwriting what was acknowledged since."""
        if self._clock is not None:  # the scripts' time is the given clock's
            return f"D:{int((self._clock() + self._timeout) * 1000)}"
        return f"D:{int(time.time() * 1000 + self._skew_ms + self._timeout * 1000)}"

    def now(self) -> list[int]:
        """The scripts' last argument: the time in ms by ``clock``; none (Redis's TIME)."""
        return [] if self._clock is None else [int(self._clock() * 1000)]

    async def _script(
        self, name: str, workspace_id: str, *args: Any, deadline: str | None = None
    ) -> Any:
        script = self.scripts[name]
        client_id = str(args[0]) if args else ""
        keys = scripts.script_keys(name, workspace_id, client_id, self.node, self._cluster)
        argv = [workspace_id, *args, *self.now()]
        if deadline is not None:
            argv.append(deadline)  # after the clock: the prelude takes it off first
        try:
            try:
                return await script(keys=keys, args=argv)
            except ResponseError as exc:
                if "workspace_not_found" not in str(exc):
                    raise
                if not await self._known(workspace_id):
                    raise WorkspaceNotFound(f"workspace {workspace_id[:64]!r} not found") from None
                await self.scripts["add_workspace"](keys=keys, args=[workspace_id, *self.now()])
                return await script(keys=keys, args=argv)
        except ResponseError as exc:
            raise scripts.refusal(exc) from None

    async def _purge(self, exc: BaseException) -> None:
        """A connection died without a word (a timeout, a reset): the idle ones in the pool
        went the same way, most likely, so they are closed and the next calls connect anew."""
        level = logging.DEBUG if self.standing.dirty else logging.WARNING  # once per outage
        log.log(level, "presence connection lost (%s): reconnecting", exc or "timeout")
        self.standing.suspect()  # what was written on it may be lost (a failover): re-assert
        if self._cluster:
            return  # the cluster client replaces its nodes' connections itself
        with contextlib.suppress(RedisError, OSError):
            await self.redis.connection_pool.disconnect(inuse_connections=False)

    async def _call(self, coro: Awaitable[Any]) -> Any:
        try:
            return await self._bounded(coro)
        except (RedisError, OSError, *connect.CLUSTER_LOST) as exc:
            raise Unavailable(f"presence unavailable: {exc or 'timeout'}") from None

    async def _expire(self, workspace_id: str) -> Any:
        return await self._run("expire", workspace_id)

    # -- claims -----------------------------------------------------------------------------

    async def add_workspace(self, workspace_id: str) -> None:
        await self._run("add_workspace", workspace_id)

    async def remove_workspace(self, workspace_id: str) -> None:
        await self._run("remove_workspace", workspace_id, int(CloseCode.NOT_FOUND))

    async def hold(self, workspace_id: str, client_id: str) -> int:
        """A creation hold, the workspace made known in Redis if the store has it: one round
        trip to Redis outside a Cluster, where the script indexes the claim itself."""
        if not await self._known(workspace_id):
            raise WorkspaceNotFound(f"workspace {workspace_id[:64]!r} not found")
        await self._index_claim(workspace_id, client_id)
        seq, deadline, version = await self._run("hold", workspace_id, client_id, self._create_ms)
        self.marks.keep(workspace_id, client_id, False, version, time.monotonic())
        await self._recheck_retired(workspace_id, client_id)
        await self._call(self._timers.arm(workspace_id, deadline))
        return int(seq)

    async def attach(
        self,
        workspace_id: str,
        client_id: str,
        user: str | None = None,
        profile: Profile | None = None,
    ) -> Snapshot:
        """One round trip outside a Cluster (the script indexes the claim and checks the
        retirement), two on one; the stream, its user and profile are this node's truth from
        the start (so a re-assertion never sees a stream without its user)."""
        text = orjson.dumps(profile).decode() if profile is not None else ""
        async with self._gate.write():
            before = self.truth.attach(workspace_id, client_id, user, profile)
            try:
                await self._index_claim(workspace_id, client_id)
                args = (client_id, self.node, user or "", text, self.standing.generation)
                *state, seq, online, counts, online_users, users = await self._run(
                    "attach", workspace_id, *args
                )
            except Unavailable:
                self.standing.suspect()  # the script may have run: re-assert when Redis answers
                self.truth.detach(workspace_id, client_id)
                raise
            except Exception:
                self.truth.refused(workspace_id, client_id, before)
                raise
            self.truth.learn(workspace_id, client_id, *state)
            log.debug(
                "attach workspace=%s client=%s generation=%s: seq=%s state=%s",
                workspace_id, client_id, args[-1], seq, state,
            )  # fmt: skip
        await self._recheck_retired(workspace_id, client_id)
        return scripts.snapshot_of(workspace_id, seq, online, counts, online_users, users)

    async def _index_claim(self, workspace_id: str, client_id: str) -> None:
        """On a Cluster, before a claim is made: this node's and the client's workspace indexes
        (so a dead node's streams are found, and a retire finds the claim), then the
        retirement, in one round trip. (Outside one, the claiming script does the same, in one
        step: lua/_lib.lua's index_claim.) A retire sets its key before it reads the client's
        index, so either the retirement is seen, or the retire sees this workspace and removes
        the claim."""
        if not self._cluster:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.sadd(scripts.node_spaces(self.node), workspace_id)
            pipe.sadd(scripts.client_spaces(client_id), workspace_id)
            pipe.exists(scripts.retired_key(client_id))
            *_, retired = await self._call(pipe.execute())
        if retired:
            raise ClientRetired(f"client {client_id} is retired")

    async def _recheck_retired(self, workspace_id: str, client_id: str) -> None:
        """On a Redis Cluster the index and the retirement live on different masters, so the
        order that :meth:`_index_claim` relies on does not hold: look again after the claim
        was made (a retire that ran meanwhile missed it: it is removed here, and the client's
        sockets close with 4410). One Redis needs no second look."""
        if not self._cluster:
            return
        if await self._call(self.redis.exists(scripts.retired_key(client_id))):
            await self._retire_in(workspace_id, client_id)
            raise ClientRetired(f"client {client_id} is retired")

    def remembered(self, workspace_id: str, client_id: str) -> Recalled | None:
        """What this node remembers of a claim whose streams it holds (what it re-asserts)."""
        return self.truth.remembered(workspace_id, client_id)

    async def set_session(self, workspace_id: str, client_id: str, session_id: str) -> int:
        try:
            seq, sv = await self._run("set_session", workspace_id, client_id, session_id)
        except NotAttached:
            if not self.truth.holds(workspace_id, client_id):
                await self._refuse_retired(client_id)
                raise
            # This node holds a stream of the client, so Redis forgot it (this node was taken
            # for dead, or Redis lost its data): write the streams back, then apply the frame.
            self.standing.doubt()  # and every other workspace at the next heartbeat
            await self._reassert_in(workspace_id)
            seq, sv = await self._run("set_session", workspace_id, client_id, session_id)
        known = self.truth.remembered(workspace_id, client_id)
        if known is not None:
            self.truth.learn(
                workspace_id, client_id, session_id, sv, known.released, known.released_v
            )
        # Kept, as a release is: the nodes holding the client's streams may not have heard of
        # it (a cut feed) when Redis loses it, or this node's stream may close first.
        self.marks.keep_session(workspace_id, client_id, session_id, sv, time.monotonic())
        return int(seq)

    async def detach(self, workspace_id: str, client_id: str) -> int:
        async with self._gate.write():
            self.truth.detach(workspace_id, client_id)
            try:
                args = (client_id, self.node, self._grace_ms, self.standing.generation)
                seq, deadline, stale = await self._run("detach", workspace_id, *args)
                await self._call(self._timers.arm(workspace_id, deadline))
            except (Unavailable, WorkspaceNotFound) as exc:
                log.warning("detach of %s deferred: %s", client_id, exc.message)
                self.standing.suspect()
                return 0
            log.debug(
                "detach workspace=%s client=%s generation=%s: seq=%s stale=%s",
                workspace_id, client_id, args[-1], seq, stale,
            )  # fmt: skip
            if int(stale):
                self.standing.suspect()  # a newer write of this node went first: re-assert
        return int(seq)

    async def set_profile(self, workspace_id: str, client_id: str, profile: Profile) -> int:
        text = orjson.dumps(profile).decode()
        seq = await self._run("set_profile", workspace_id, client_id, text)
        self.truth.set_profile(workspace_id, client_id, profile)
        return int(seq)

    async def release(self, workspace_id: str, client_id: str) -> int:
        seq, deadline, version = await self._run("release", workspace_id, client_id)
        self.marks.keep(workspace_id, client_id, True, version, time.monotonic())
        await self._call(self._timers.arm(workspace_id, deadline))
        return int(seq)

    async def retire(self, client_id: str) -> None:
        # Recorded first (it outlives Redis), refused next, then removed: a claim made
        # meanwhile is refused or seen (_index_claim).
        if self._retired is not None:
            await self._retired.retire_client(client_id, time.time() + self._retire_ms / 1000)
        await self._call(self.redis.set(scripts.retired_key(client_id), 1, px=self._retire_ms))
        index = scripts.client_spaces(client_id)
        spaces = scripts.strs(await self._call(self.redis.smembers(index)))
        for workspace_id in sorted(spaces):
            await self._retire_in(workspace_id, client_id)
        await self._call(self.redis.delete(index))

    async def _retire_in(self, workspace_id: str, client_id: str) -> None:
        args = (client_id, int(CloseCode.RETIRED), self._retire_ms)
        await self._run("retire", workspace_id, *args)

    async def is_retired(self, client_id: str) -> bool:
        return bool(await self._call(self.redis.exists(scripts.retired_key(client_id))))

    async def _refuse_retired(self, client_id: str) -> None:
        if await self.is_retired(client_id):
            raise ClientRetired(f"client {client_id} is retired")

    async def publish_session(self, workspace_id: str, op: str, session: dict[str, Any]) -> None:
        publish = self.redis.spublish if self._cluster else self.redis.publish
        await self._call(publish(scripts.channel(workspace_id), session_event(op, session)))

    # -- reads ------------------------------------------------------------------------------

    async def snapshot(self, workspace_id: str) -> Snapshot:
        return scripts.snapshot_of(workspace_id, *await self._run("snapshot", workspace_id))

    async def viewers(self, workspace_id: str, session_id: str, limit: int) -> Viewers:
        answer = await self._run("viewers", workspace_id, session_id, limit)
        return scripts.viewers_of(workspace_id, session_id, *answer)

    async def claims(self, workspace_id: str) -> list[ClaimView]:
        await self.snapshot(workspace_id)  # 404 for an unknown workspace
        key = scripts.workspace_keys(workspace_id)[scripts.CLAIMS_KEY]
        raw = await self._call(self.redis.hgetall(key))
        return [scripts.claim_view(client_id, text) for client_id, text in raw.items()]

    async def claim_count(self) -> int:
        total = 0
        async for key in self.redis.scan_iter(match="hub:{*}:claims", count=1000):
            total += await self._call(self.redis.hlen(key))
        return total

    def claim_states(self) -> dict[str, int]:
        """Not counted here: it would scan every workspace in Redis at each scrape."""
        return {}

    def outbox(self, url: str) -> RedisOutbox:
        """The webhook events for the receiver ``url`` (its consumer group)."""
        return RedisOutbox(
            self.scripts,
            url,
            self.node,
            takeover_ms=self.node_ttl_ms,
            keep_every=self.heartbeat,  # a third of the takeover bound
        )

    # -- this node among the others ---------------------------------------------------------

    async def beat(self) -> None:
        """One heartbeat: keep this node alive and registered in Redis; write its truth back
        when :meth:`Standing.must_reassert <hub.backends.redis.nodes.Standing.must_reassert>`
        says so; clear nodes that died; leave the channels nobody here watches any more. The
        registry is repaired by its member at every beat."""
        sent = time.time()
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.set(scripts.node_key(self.node), 1, px=self.node_ttl_ms, xx=True)
            pipe.sadd(NODES, self.node)
            pipe.get(scripts.node_cleared(self.node))
            if not self._cluster:  # a Cluster's pipeline takes no keyless command: alone
                pipe.time()
            alive, _, cleared, *clock = await pipe.execute()
        if self._cluster:
            clock = [await self.redis.time()]
        self._read_skew(sent, clock[0])
        if self.standing.must_reassert(bool(alive), cleared):
            log.debug(
                "re-asserting: beating=%s dirty=%s cleared=%s (was %s)",
                bool(alive), self.standing.dirty, cleared, self.standing.cleared,
            )  # fmt: skip
            await self._reassert(cleared)
        await self._clear_dead_nodes()
        await self._feed.leave_unwatched()

    async def sweep(self) -> None:
        """One sweep of the timer index: fire due holds, graces and vacated delays."""
        await self._timers.sweep()

    async def reassert(self, workspace_id: str | None = None) -> None:
        """Write this node's streams back now: in one workspace, or (None) in every one it
        holds or has held streams in, as a heartbeat does when it must."""
        if workspace_id is None:
            await self._reassert(self.standing.cleared)
        else:
            await self._reassert_in(workspace_id)

    async def _reassert(self, cleared: str | None) -> None:
        """Write this node's streams back, exactly as its sockets hold them, with the marks it
        keeps (``cleared``: the clear count read before)."""
        async with self._gate.alone():
            self.standing.reasserting(cleared)
            await self._announce()
            await self._restore_retirements()
            marks = self._marks()
            spaces = scripts.node_spaces(self.node)
            recorded = scripts.strs(await self.redis.smembers(spaces))
            for workspace_id in sorted(recorded | self.truth.workspaces() | marks.keys()):
                mine = self.truth.streams(workspace_id)
                if (mine or workspace_id in marks) and not await self._known(workspace_id):
                    for client_id in marks.get(workspace_id, ()):
                        self.marks.drop(workspace_id, client_id)
                    continue  # deleted meanwhile: its sockets are being closed
                if mine:
                    await self.redis.sadd(spaces, workspace_id)
                await self._set_streams(workspace_id, self.node, mine, marks.get(workspace_id))
                if not self.truth.streams(workspace_id):  # none, or all retired meanwhile
                    await self.redis.srem(spaces, workspace_id)
        held = len(self.truth.workspaces())
        log.info("node %s re-asserted its streams in %d workspaces", self.node, held)
        for workspace_id in self._feed.watched():
            self._resync(workspace_id)

    def _marks(self) -> dict[str, dict[str, dict[str, Any]]]:
        """The marks this node keeps, by workspace, as set_streams.lua writes them back."""
        spaces: dict[str, dict[str, dict[str, Any]]] = {}
        for workspace_id, client_id, m in self.marks.kept(time.monotonic()):
            spaces.setdefault(workspace_id, {})[client_id] = {
                "s": m.session_id, "sv": str(m.session_v),
                "r": int(m.released), "rv": str(m.released_v),
            }  # fmt: skip
        return spaces

    async def _restore_retirements(self) -> None:
        """Write the recorded retirements back before the streams (Redis may have restarted
        empty): then the streams' write finds this node's retired clients and closes them
        (see _set_streams). A store that does not answer leaves this node dirty, so the next
        heartbeat tries again; the streams are written back meanwhile all the same."""
        if self._retired is None:
            return
        now = time.time()
        try:
            found = await self._retired.retirements(now)
        except Exception as exc:  # any store: sqlite, asyncpg, Unavailable
            log.warning("retirements not restored (the store did not answer: %s)", exc)
            self.standing.doubt()
            return
        if found:
            async with self.redis.pipeline(transaction=False) as pipe:
                for client_id, until in found.items():
                    px = max(1, int((until - now) * 1000))
                    pipe.set(scripts.retired_key(client_id), 1, px=px)
                await self._call(pipe.execute())

    async def _reassert_in(self, workspace_id: str) -> None:
        """Write this node's streams in one workspace back (a frame found them gone)."""
        async with self._gate.alone():
            await self._announce()
            await self._call(self.redis.sadd(scripts.node_spaces(self.node), workspace_id))
            await self._set_streams(workspace_id, self.node, self.truth.streams(workspace_id))

    async def _announce(self) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.sadd(NODES, self.node)
            pipe.set(scripts.node_key(self.node), 1, px=self.node_ttl_ms)
            await self._call(pipe.execute())

    async def clear_node_in(self, workspace_id: str, node: str) -> None:
        """Detach every stream of ``node`` in the workspace, with grace: what a survivor does,
        workspace by workspace, to a node taken for dead."""
        await self._set_streams(workspace_id, node, {})

    async def _set_streams(
        self,
        workspace_id: str,
        node: str,
        streams: dict[str, int],
        marks: dict[str, dict[str, Any]] | None = None,
    ) -> None:
        """Set ``node``'s streams in the workspace, with what this node remembers of each claim
        and the ``marks`` it keeps there, written back first (merged by version and birth:
        lua/set_streams.lua), and learn each claim's state back. For this
        node's own streams the write is fenced by its generation, and the clients re-created
        are indexed for retire; a survivor clearing another node passes no memory and no
        generation. The clients retired there are not brought back: when they are this
        node's, their sockets are closed with 4410."""
        own = node == self.node
        # A copy: the feed changes this node's record while this call waits (a client retired
        # or a workspace deleted through another node).
        streams = dict(streams)
        claims = self.truth.recalled(workspace_id, streams)
        want = orjson.dumps(streams).decode()
        args = (node, want, orjson.dumps(claims).decode(), self._grace_ms)
        fence, written = self.standing.fence(node), orjson.dumps(marks or {}).decode()
        answer = await self._run("set_streams", workspace_id, *args, fence, written)
        log.debug(
            "set_streams workspace=%s node=%s generation=%s streams=%s marks=%s: %s",
            workspace_id, node, fence, want, written, answer,
        )  # fmt: skip
        if self.standing.fenced(int(answer[0])):  # this node moved on since this call began
            return
        _, deadline, retired, states = answer
        await self._timers.arm(workspace_id, deadline)
        for i in range(0, len(states), 6):
            self.truth.learn(workspace_id, *states[i : i + 6])
        retired = list(retired or ())
        if own and streams:  # retired where Redis lost the workspace's record of it
            async with self.redis.pipeline(transaction=False) as pipe:
                for c in streams:
                    pipe.sadd(scripts.client_spaces(c), workspace_id)
                    pipe.exists(scripts.retired_key(c))
                found = await pipe.execute()
            for c, is_retired in zip(streams, found[1::2], strict=True):
                if is_retired and c not in retired:
                    await self._retire_in(workspace_id, c)
                    retired.append(c)
        for client_id in retired:
            self.truth.forget(workspace_id, client_id)
            if self._events is not None:
                self._events.closed(workspace_id, client_id, CloseCode.RETIRED)

    async def _clear_dead_nodes(self) -> None:
        """Detach the streams of every node whose heartbeat expired (idempotent: several
        survivors may do it at once)."""
        others = nodes.others(self.node, scripts.strs(await self.redis.smembers(NODES)))
        if not others:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            for node in others:
                pipe.exists(scripts.node_key(node))
            beating = await pipe.execute()
        for node in nodes.dead(others, beating):
            spaces = scripts.strs(await self.redis.smembers(scripts.node_spaces(node)))
            log.warning(
                "node %s is gone: detaching its streams in %d workspaces", node, len(spaces)
            )
            for workspace_id in sorted(spaces):
                await self.clear_node_in(workspace_id, node)
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.delete(scripts.node_spaces(node))
                pipe.srem(NODES, node)
                # Last: should the node be alive after all, it re-asserts after all of this.
                pipe.incr(scripts.node_cleared(node))
                pipe.pexpire(scripts.node_cleared(node), nodes.CLEARED_TTL_MS)
                await pipe.execute()
