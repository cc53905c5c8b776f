"""The shared presence backend: claims in Redis, one atomic Lua script per transition.

Several hub processes ("nodes") share one Redis and show exactly the counts one process would.
How (docs/scaling.md has the whole picture):

- Every claim transition of docs/protocol.md section 2 is one Lua script (``lua/*.lua``, each run
  after the shared prelude ``lua/_lib.lua``), over the keys of one workspace, which all share
  the hash tag ``{workspace_id}``. Two nodes can never interleave half-transitions.
- A script that moves counts increments the workspace ``seq`` and publishes the diff on the
  workspace's channel. A node subscribes to the channels of the workspaces it has sockets in
  and hands each message to the hub in order; a node that may have missed messages (it
  resubscribed after losing its connection) tells the hub to re-read the snapshot.
- Streams are counted per node (``<node>|<client>`` in the workspace's ``streams`` hash), and
  every node refreshes a heartbeat key with a short TTL. A node whose heartbeat expired (it was
  killed) is cleared by whichever node notices first: its streams are detached, with grace.
- Holds and graces are deadlines in a per-workspace sorted set, indexed cluster-wide in
  ``hub:timers``; every node sweeps the index, and the expiry script removes a claim at most
  once whichever node runs it first.
- Redis unreachable: calls raise :class:`~hub.errors.Unavailable` (REST 503, close 1013)
  within the socket timeout. A node keeps its own truth (the streams its sockets hold, and the
  session of each of their claims) and writes it back whenever its heartbeat finds itself
  forgotten (Redis restarted empty, or this node was taken for dead: a survivor's clear count
  moved) or a write or a connection was lost. Every connection is checked, the feed included.
- Deployments: one Redis, Sentinel (``redis+sentinel://``), or a Redis Cluster (found at
  start-up; sharded pub/sub, one feed connection per master).
- Webhooks (docs/protocol.md section 10): the scripts that move counts also decide occupied and
  vacated (the rules of :mod:`hub.occupancy`; a vacated delay is one more member of the
  workspace's timers) and append the events to one Redis Stream, ``hub:webhooks``, in the same
  script. Each receiver is a consumer group; a node delivers a batch at a time and renews its
  claim while it does; a batch whose node stopped renewing it for ``node_ttl`` is taken over
  (``XAUTOCLAIM``) by another (``lua/_outbox.lua`` has the rules). Not on a Redis Cluster: a
  workspace's script cannot append to a stream outside its slot.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from importlib import resources
from typing import Any, cast

import orjson
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisClusterException, RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from hub.backends import Events, RetiredRecords
from hub.errors import (
    ClientRetired,
    ConfigError,
    Forbidden,
    NotAttached,
    Unavailable,
    WorkspaceNotFound,
)
from hub.presence import (
    ClaimState,
    ClaimView,
    Diff,
    Profile,
    Recalled,
    Snapshot,
    Viewer,
    Viewers,
)
from hub.protocol import CloseCode
from hub.webhook import BATCH, Batch, OutboxStats

__all__ = ["RedisBackend", "WebhookStream", "parse_sentinel_url"]

log = logging.getLogger(__name__)

TIMERS = "hub:timers"  # workspace -> its earliest hold or grace deadline (ms, Redis clock)
NODES = "hub:nodes"  # ids of the nodes that announced themselves
_SCRIPTS = (
    "add_workspace", "attach", "detach", "expire", "hold", "release", "remove_workspace",
    "retire", "set_profile", "set_session", "set_streams", "snapshot", "viewers",
)  # fmt: skip
_GLOBAL_SCRIPTS = ("arm", "due", "reindex")
_OUTBOX_SCRIPTS = ("outbox_take", "outbox_keep", "outbox_ack")
OUTBOX = "hub:webhooks"  # the webhook events of every workspace (a Redis Stream)
OUTBOX_KEYS = [OUTBOX, "hub:webhooks:n", "hub:webhooks:read"]
# Scripts that may run twice with the same effect as once (tried again on a fresh connection).
_IDEMPOTENT = frozenset(
    {
        "add_workspace",
        "expire",
        "hold",
        "release",
        "retire",
        "set_profile",
        "set_session",
        "snapshot",
        "viewers",
    }  # fmt: skip
)
# What a Redis Cluster call raises when it found no node to answer (no slot map, no master
# for the slot: a failover), or when it did not answer in time (see _bounded).
_CLUSTER_LOST = (RedisClusterException, TimeoutError)
# The scripts that make claims; outside a Cluster they index them themselves (lua/_lib.lua).
_CLAIMING = frozenset({"attach", "hold"})
_CLEARED_TTL_MS = 7 * 24 * 3600 * 1000  # a clear count outlives any pause worth noticing
# TCP keepalive: probe after 5 s idle, every 2 s, give up after 3 (a vanished peer in ~11 s).
_KEEPALIVE = {
    getattr(socket, name): value
    for name, value in (("TCP_KEEPIDLE", 5), ("TCP_KEEPINTVL", 2), ("TCP_KEEPCNT", 3))
    if hasattr(socket, name)
}


SENTINEL_SCHEME = "redis+sentinel://"


def parse_sentinel_url(url: str) -> tuple[list[tuple[str, int]], str, int] | None:
    """``redis+sentinel://HOST:PORT[,HOST:PORT...]/MASTER_NAME[/DB]`` as (sentinels, master
    name, db); None for another scheme. Raises ValueError naming what is wrong."""
    if not url.startswith(SENTINEL_SCHEME):
        return None
    hosts_part, _, path = url[len(SENTINEL_SCHEME) :].partition("/")
    parts = [p for p in path.split("/") if p]
    if not hosts_part or not parts or len(parts) > 2:
        raise ValueError("expected redis+sentinel://HOST:PORT[,HOST:PORT...]/MASTER_NAME[/DB]")
    hosts = []
    for item in hosts_part.split(","):
        host, _, port = item.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"{item!r} is not HOST:PORT")
        hosts.append((host.strip("[]"), int(port)))
    if len(parts) == 2 and not parts[1].isdigit():
        raise ValueError(f"database {parts[1]!r} is not a number")
    return hosts, parts[0], int(parts[1]) if len(parts) == 2 else 0


class _ShardedFeed:
    """The change feed on a Redis Cluster: sharded pub/sub, one plain connection per master
    that serves a watched channel's slot, read by one task each into one queue. It offers
    what the feed loop uses of a PubSub (``subscribe``, ``unsubscribe``, ``get_message``,
    ``ping``, ``aclose``), so the loop is the same on every deployment. A shard
    connection that fails, or a channel whose slot moved away (the server's ``sunsubscribe``),
    fails the whole feed: the loop then makes it anew from the current topology and re-reads
    every room, as after any lost feed."""

    def __init__(self, cluster: Any, options: dict[str, Any]) -> None:
        self.cluster = cluster
        self.options = options
        # node -> its client, its PubSub, and the task reading it (once subscribed)
        self.shards: dict[str, tuple[Any, Any, asyncio.Task[None] | None]] = {}
        self.channels: dict[str, set[str]] = {}  # node -> the channels subscribed there
        self.queue: asyncio.Queue[dict[str, Any] | BaseException] = asyncio.Queue()
        self.leaving: set[str] = set()  # channels this node unsubscribes from itself

    async def subscribe(self, *channels: str) -> None:
        """Join channels, each on the master that serves its slot (SSUBSCRIBE)."""
        for channel in channels:
            self.leaving.discard(channel)
            name, pubsub = self._shard(channel)
            self.channels.setdefault(name, set()).add(channel)
            await pubsub.ssubscribe(channel)
            client, _, reader = self.shards[name]
            if reader is None:  # a shard is read from its first subscription on
                self.shards[name] = (client, pubsub, asyncio.ensure_future(self._read(pubsub)))

    async def unsubscribe(self, *channels: str) -> None:
        """Leave channels; a shard left with none is closed (its connection and task)."""
        for channel in channels:
            self.leaving.add(channel)
            name, pubsub = self._shard(channel)
            mine = self.channels.get(name, set())
            mine.discard(channel)
            if mine:
                await pubsub.sunsubscribe(channel)
            else:
                self.channels.pop(name, None)
                await self._close(name)

    def _shard(self, channel: str) -> tuple[str, Any]:
        node = self.cluster.get_node_from_key(channel)
        if node.name not in self.shards:
            client = aioredis.Redis(host=node.host, port=node.port, **self.options)
            self.shards[node.name] = (client, client.pubsub(), None)
        return node.name, self.shards[node.name][1]

    async def _read(self, pubsub: Any) -> None:
        try:
            while True:
                message = await pubsub.get_message(timeout=1.0)
                if message is None:
                    continue
                if message["type"] == "sunsubscribe" and message["channel"] not in self.leaving:
                    raise RedisConnectionError(f"slot of {message['channel']} moved")
                self.queue.put_nowait(message)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            self.queue.put_nowait(exc)

    async def get_message(self, timeout: float) -> dict[str, Any] | None:  # noqa: ASYNC109 (PubSub's)
        try:
            item = await asyncio.wait_for(self.queue.get(), timeout)
        except TimeoutError:
            return None
        if isinstance(item, BaseException):
            raise item
        return item

    async def ping(self) -> None:
        for _, pubsub, _ in list(self.shards.values()):
            await pubsub.ping()

    async def aclose(self) -> None:
        for name in list(self.shards):
            await self._close(name)

    async def _close(self, name: str) -> None:
        shard = self.shards.pop(name, None)
        if shard is None:
            return
        client, pubsub, task = shard
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        with contextlib.suppress(RedisError, OSError):
            await pubsub.aclose()
        with contextlib.suppress(RedisError, OSError):
            await client.aclose()


@dataclass(frozen=True, slots=True)
class WebhookStream:
    """Webhooks on: the receivers (one consumer group each), the vacated delay in seconds, and
    the stream's bound (events beyond it are trimmed, oldest first)."""

    receivers: tuple[str, ...]
    vacated_delay: float = 5.0
    limit: int = 400_000


class _RedisOutbox:
    """One receiver's view of the outbox stream (see ``lua/_outbox.lua``)."""

    def __init__(self, backend: RedisBackend, group: str) -> None:
        self._backend = backend
        self._group = group
        self.keep_every = backend.heartbeat  # a third of the takeover bound
        self._stats = OutboxStats()
        self._dropped = 0

    async def _run(self, name: str, *args: Any) -> Any:
        script = self._backend.scripts[name]
        return await script(keys=OUTBOX_KEYS, args=[self._group, self._backend.node, *args])

    def _note(self, depth: Any, age_ms: Any) -> None:
        self._stats = OutboxStats(int(depth), int(age_ms) / 1000, self._dropped)

    async def take(self) -> Batch:
        bound = self._backend.node_ttl_ms
        flat, dropped, depth, age = await self._run("outbox_take", BATCH, bound)
        if int(dropped):
            self._dropped += int(dropped)
            log.error(
                "webhook events for %s dropped: the queue bound trimmed %s (%d so far)",
                self._group,
                dropped,
                self._dropped,
            )
        self._note(depth, age)
        ids = flat[0::2]
        return Batch([e.encode() for e in flat[1::2]], ids)

    async def keep(self, batch: Batch) -> bool:
        kept, depth, age = await self._run("outbox_keep", *batch.handle)
        self._note(depth, age)
        return bool(kept)

    async def ack(self, batch: Batch) -> None:
        depth, age = await self._run("outbox_ack", *batch.handle)
        self._note(depth, age)

    def stats(self) -> OutboxStats:
        return self._stats


class _BlockingSentinelPool(SentinelConnectionPool, aioredis.BlockingConnectionPool):
    """The sentinels' master, through a bounded pool that waits for a free connection."""


def _lua(name: str) -> str:
    return (resources.files("hub.backends") / "lua" / f"{name}.lua").read_text()


def _keys(workspace_id: str) -> list[str]:
    tag = f"hub:{{{workspace_id}}}:"
    names = (
        "meta", "counts", "claims", "timers", "streams", "nodes", "retired", "users", "people",
        "arrive", "hooks", "gone",
    )  # fmt: skip
    return [tag + k for k in names]


def _channel(workspace_id: str) -> str:
    return f"hub:{{{workspace_id}}}:ch"


def _retired(client_id: str) -> str:
    return f"hub:retired:{client_id}"


def _client_spaces(client_id: str) -> str:
    """The workspaces a client has had claims in (read by retire)."""
    return f"hub:client:{client_id}"


def _node_key(node: str) -> str:
    return f"hub:node:{node}"


def _node_cleared(node: str) -> str:
    """How many times a survivor cleared the node (read by the node at every heartbeat)."""
    return f"hub:node:{node}:cleared"


def _node_spaces(node: str) -> str:
    """The workspaces a node has had streams in (read when it is cleared)."""
    return f"hub:node:{node}:spaces"


def _pairs(flat: list[str]) -> dict[str, int]:
    return {flat[i]: int(flat[i + 1]) for i in range(0, len(flat), 2)}


def _snapshot(
    workspace_id: str, seq: Any, online: Any, flat: list[str], online_users: Any, users: list[str]
) -> Snapshot:
    """A snapshot from a script's ``{seq, online, flat counts, online_users, flat users}``."""
    return Snapshot(
        workspace_id, int(seq), int(online), _pairs(flat), _pairs(users), int(online_users)
    )


def _strs(members: Any) -> set[str]:
    """A set reply (the client decodes responses to str)."""
    return {str(m) for m in members}


class _Gate:
    """Stream writes run side by side; a re-assertion of this node's streams runs alone, so it
    never races a write it did not see."""

    def __init__(self) -> None:
        self._writes = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._open = asyncio.Event()
        self._open.set()

    @contextlib.asynccontextmanager
    async def write(self) -> AsyncIterator[None]:
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
        self._open.clear()
        try:
            await self._idle.wait()
            yield
        finally:
            self._open.set()


class RedisBackend:
    """Presence shared by every hub process on one Redis (see the module docstring)."""

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
        self._sentinel: Sentinel | None = None
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
        # Every connection is checked: a command or a connection that gets no answer within
        # ``timeout`` fails (and the connection is dropped, the idle ones with it: _purge); a
        # pooled connection the server closed is replaced when taken (the pool sees it
        # readable), with no round trip; TCP keepalive finds a peer that vanished; the change
        # feed pings itself (see _feed). No PING before a command on a connection idle for a
        # while (redis-py's health check): it cost a node at rest one more round trip per
        # call (REST read and set_session 2 instead of 1), and with no retries it could only
        # fail where the command itself would. The pool is bounded and blocking: a burst of
        # calls (a thousand sockets joining at once) waits for a connection rather than
        # failing. No retries inside redis-py: a Redis that is down is reported at once.
        options: dict[str, Any] = {
            "max_connections": max_connections,
            "timeout": 10 * timeout,  # waiting for a pooled connection
            "decode_responses": True,
            "socket_timeout": timeout,
            "socket_connect_timeout": timeout,
            "socket_keepalive": True,
            "socket_keepalive_options": _KEEPALIVE,
            "health_check_interval": 0,
            "retry": Retry(NoBackoff(), 0),
        }
        sentinel = parse_sentinel_url(url)
        if sentinel is None:
            pool = aioredis.BlockingConnectionPool.from_url(url, **options)
            self.redis = aioredis.Redis(connection_pool=pool)
        else:
            # The master named by the sentinels, asked again at every new connection; a
            # connection to a demoted master fails (READONLY), so nothing is written there.
            hosts, master, db = sentinel
            self._sentinel = Sentinel(  # type: ignore[no-untyped-call,unused-ignore]
                hosts, socket_timeout=timeout, socket_connect_timeout=timeout
            )
            self.redis = self._sentinel.master_for(
                master, connection_pool_class=_BlockingSentinelPool, db=db, **options
            )
        self._url = url
        self._options = options
        self._cluster = False  # a Redis Cluster (found at start): sharded pub/sub
        self.scripts: dict[str, Any] = {}
        self._use(self.redis)
        self._events: Events | None = None
        # This node's truth: the streams its sockets hold, and what it remembers of each such
        # claim (its session and released mark with their versions, its user and profile),
        # recorded with the stream, kept up to date by the answers and the feed.
        self._local: dict[str, dict[str, int]] = {}
        self._memory: dict[tuple[str, str], Recalled] = {}
        self._dirty = True  # Redis may differ from the truth above: re-assert it
        # This node's generation: every stream write carries it, and one made under an older
        # generation than Redis has seen from this node is refused (it arrived after the node
        # gave up on it). A new one at every doubt (a lost connection) and every re-assertion.
        self._gen = time.time_ns() // 1000
        self._cleared: str | None = None  # this node's clear count as of its last re-assertion
        self._gate = _Gate()
        # Channels: how many local holders each has, and the subscription state.
        self._watchers: dict[str, int] = {}
        self._subscribed: dict[str, asyncio.Future[None]] = {}
        self._pubsub: Any = None  # a PubSub, or a _ShardedFeed on a Cluster
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = asyncio.Event()

    def _use(self, client: Any) -> None:
        """Talk to Redis through ``client``; the scripts publish the way it listens."""
        self.redis = client
        publish = "SPUBLISH" if self._cluster else "PUBLISH"
        hooks = self.webhooks
        vacated_ms = int(hooks.vacated_delay * 1000) if hooks is not None else -1
        # The timer index rule, of arm.lua, due.lua and the prelude alike; it tells the time.
        index = f"local CLOCK_ARG = {'true' if self._clock else 'false'}\n" + _lua("_index")
        lib = (
            f"local PUBLISH = '{publish}'\n"
            f"local VACATED_MS, HOOK_MAX = {vacated_ms}, {hooks.limit if hooks else 0}\n"
            f"local TOMB_MS = {self._tomb_ms}\n" + index + _lua("_lib")
        )
        preludes = ((lib, _SCRIPTS), (index, _GLOBAL_SCRIPTS), (_lua("_outbox"), _OUTBOX_SCRIPTS))
        self.scripts = {
            name: client.register_script(prelude + "\n" + _lua(name))
            for prelude, names in preludes
            for name in names
        }

    async def _find_cluster(self) -> None:
        """A ``redis://`` URL may name any node of a Redis Cluster: then use the cluster
        client (every workspace's keys are one slot) and sharded pub/sub (SSUBSCRIBE)."""
        if self._sentinel is not None:
            return
        probe = aioredis.Redis.from_url(
            self._url, socket_timeout=self._timeout, socket_connect_timeout=self._timeout
        )
        try:
            enabled = bool((await probe.info("cluster")).get("cluster_enabled"))
        except (RedisError, OSError) as exc:
            log.warning("Redis does not answer yet (%s): taken for a standalone one", exc)
            enabled = False
        finally:
            await probe.aclose()
        if not enabled:
            return
        if self.webhooks is not None:
            raise ConfigError(
                "HUB_WEBHOOK_URL: webhooks need one Redis or Sentinel, not a Redis Cluster "
                "(a workspace's script cannot append its events to one stream there)"
            )
        # The cluster client pools per node and follows MOVED/ASK itself. It retries nothing
        # (its default is ten tries with backoff): a command that met a dead master is
        # reported within the timeout (503 while the slot has no master), and a script that
        # may have run is never run twice behind this node's back (an attach counted twice
        # is a ghost); _run tries the idempotent ones once more, as on one Redis.
        options = {k: v for k, v in self._options.items() if k != "timeout"}
        standalone = self.redis
        self._cluster = True
        self._use(aioredis.RedisCluster.from_url(self._url, **options))
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
        jobs = {
            "feed": self._feed(),
            "heartbeat": self._every(self.heartbeat, self._beat, "presence heartbeat", False),
            "sweep": self._every(self._sweep_interval, self._sweep, "timer sweep", True),
        }
        for name, job in jobs.items():
            self._tasks.append(loop.create_task(job, name=f"redis-{name}-{self.node}"))

    async def close(self) -> None:
        # The loops stop by themselves at their next turn: a redis-py call being cancelled
        # mid-command can swallow the cancellation, so cancelling is only the fallback.
        self._stopping.set()
        if self._tasks:
            _, stuck = await asyncio.wait(self._tasks, timeout=3)
            for task in stuck:
                log.warning("presence task %s did not stop: cancelled", task.get_name())
                task.cancel()
        self._tasks.clear()
        with contextlib.suppress(RedisError, OSError, *_CLUSTER_LOST):
            # The hub's shutdown detached this node's streams; should one detach have failed,
            # ending the heartbeat now lets a survivor (or this node's next run) clear what is
            # left at its next beat, as for a node that died.
            await self._bounded(self.redis.delete(_node_key(self.node)))
        await self._drop_feed()
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
        self._watchers[workspace_id] = self._watchers.get(workspace_id, 0) + 1
        try:
            await asyncio.wait_for(self._subscribe(workspace_id), self._timeout * 4)
        except (TimeoutError, RedisError, OSError, RedisClusterException) as exc:
            self.unwatch(workspace_id)
            raise Unavailable(f"presence feed unavailable: {exc or 'timeout'}") from None

    def unwatch(self, workspace_id: str) -> None:
        """Counted down now; the channel is left by the next heartbeat if nobody came back."""
        n = self._watchers.get(workspace_id, 0) - 1
        if n > 0:
            self._watchers[workspace_id] = n
        else:
            self._watchers.pop(workspace_id, None)

    async def _subscribe(self, workspace_id: str) -> None:
        channel = _channel(workspace_id)
        confirmed = self._subscribed.get(channel)
        if confirmed is None:
            confirmed = self._subscribed[channel] = asyncio.get_running_loop().create_future()
            if self._pubsub is not None:  # else the feed subscribes it when it reconnects
                await self._pubsub.subscribe(channel)
        await asyncio.shield(confirmed)

    async def _connect_feed(self) -> Any:
        """A new subscription connection, subscribed to every watched workspace. The hub
        re-reads each watched workspace once its subscription is confirmed, since changes may
        have been published while this node was not listening."""
        loop = asyncio.get_running_loop()
        pubsub: Any
        if self._cluster:
            cluster = cast(aioredis.RedisCluster, self.redis)
            await cluster.nodes_manager.initialize()  # the topology as it is now
            pubsub = _ShardedFeed(self.redis, self._shard_options())
        else:
            pubsub = self.redis.pubsub()
        channels = {_channel(w) for w in self._watchers} | self._subscribed.keys()
        for channel in channels:
            if channel not in self._subscribed:
                self._subscribed[channel] = loop.create_future()
            self._subscribed[channel].add_done_callback(self._resync_after(channel))
        # The node's own channel keeps the connection subscribed to something.
        await pubsub.subscribe(f"hub:node:{self.node}:ch", *channels)
        while late := self._subscribed.keys() - channels:  # watched while this was connecting
            channels |= late
            await pubsub.subscribe(*late)
        self._pubsub = pubsub
        return pubsub

    def _shard_options(self) -> dict[str, Any]:
        """Connection options for one shard of the feed (a plain client to one master)."""
        keep = ("decode_responses", "socket_timeout", "socket_connect_timeout")
        return {k: v for k, v in self._options.items() if k in keep or k.startswith("socket_k")}

    async def _drop_feed(self) -> None:
        pubsub, self._pubsub = self._pubsub, None
        for future in self._subscribed.values():
            if not future.done():
                future.set_exception(Unavailable("presence feed lost"))
                future.exception()  # retrieved: nobody may be waiting
        self._subscribed.clear()
        if pubsub is not None:
            with contextlib.suppress(RedisError, OSError):
                await pubsub.aclose()

    async def _feed(self) -> None:
        """Read the subscribed channels until closed, re-subscribing after a lost connection.

        The feed checks its own connection: when nothing was heard for a heartbeat it sends a
        PING, and a connection that has not answered ``timeout`` later is taken for lost
        (a silent loss: no FIN, no RST), so it is dropped and made anew, and every watched
        workspace is re-read. A loss is seen within heartbeat + timeout.
        """
        loop = asyncio.get_running_loop()
        heard = loop.time()
        pinged: float | None = None
        while not self._stopping.is_set():
            try:
                if self._pubsub is None:
                    await asyncio.wait_for(self._connect_feed(), self._timeout)
                    heard, pinged = loop.time(), None
                pubsub = self._pubsub
                assert pubsub is not None
                message = await pubsub.get_message(timeout=self.heartbeat / 2)
                now = loop.time()
                if message is not None:
                    heard, pinged = now, None
                    self._dispatch(message)
                elif pinged is not None and now - pinged > self._timeout:
                    raise TimeoutError(f"no answer to a ping within {self._timeout} s")
                elif pinged is None and now - heard > self.heartbeat:
                    pinged = now
                    await asyncio.wait_for(pubsub.ping(), self._timeout)
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError, TimeoutError, RedisClusterException) as exc:
                log.warning("presence feed lost (%s); re-subscribing", exc or "timeout")
                await self._purge(exc)
                await self._drop_feed()
                await self._pause(self.heartbeat / 4)
            except Exception:
                log.exception("presence feed: unexpected message")

    def _resync_after(self, channel: str) -> Callable[[asyncio.Future[None]], None]:
        def done(future: asyncio.Future[None]) -> None:
            if not future.cancelled() and future.exception() is None and self._events:
                self._events.resync(self._workspace_of(channel))

        return done

    @staticmethod
    def _workspace_of(channel: str) -> str:
        return channel[len("hub:{") : -len("}:ch")]

    def _dispatch(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind == "pong":
            return
        channel = message["channel"]
        if kind in ("subscribe", "ssubscribe"):
            future = self._subscribed.get(channel)
            if future is not None and not future.done():
                future.set_result(None)
            return
        if kind not in ("message", "smessage") or self._events is None:
            return
        if not isinstance(channel, str) or not channel.endswith("}:ch"):
            return
        workspace_id = self._workspace_of(channel)
        data = orjson.loads(message["data"])
        for client_id, (session_id, sv) in (data.get("s") or {}).items():
            self._learn(workspace_id, client_id, session_id, sv, 0, 0)
        for client_id, (released, rv) in (data.get("r") or {}).items():
            self._learn(workspace_id, client_id, "", 0, released, rv)
        if "q" in data or "t" in data:
            diff = Diff(
                workspace_id,
                int(data.get("q", 0)),
                data.get("c") or {},
                data.get("o"),
                data.get("u") or {},
                data.get("ou"),
                frozenset(data.get("t") or ()),
            )
            self._events.changed(diff)
        close = data.get("x")
        if close is not None:
            client_id = close["k"] or None
            self._forget(workspace_id, client_id)
            self._events.closed(workspace_id, client_id, int(close["code"]))
        event = data.get("e")
        if event is not None:
            self._events.session(workspace_id, event["op"], event["session"])

    def _forget(self, workspace_id: str, client_id: str | None) -> None:
        """Claims gone for good (retired client, deleted workspace): nothing to re-assert."""
        mine = self._local.get(workspace_id)
        if mine is None:
            return
        for c in [client_id] if client_id is not None else list(mine):
            mine.pop(c, None)
            self._memory.pop((workspace_id, c), None)
        if not mine:
            del self._local[workspace_id]

    # -- calls ------------------------------------------------------------------------------

    async def _run(self, name: str, workspace_id: str, *args: Any) -> Any:
        """One workspace script; a workspace Redis forgot (but the store has) is re-made. An
        idempotent script that met a dead connection is tried once more on a fresh one, within
        what is left of the timeout: the whole call answers within about ``timeout``."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            return await self._bounded(self._script(name, workspace_id, *args))
        except (RedisConnectionError, RedisTimeoutError, OSError, *_CLUSTER_LOST) as exc:
            await self._purge(exc)
            left = self._timeout - (loop.time() - started)
            if name not in _IDEMPOTENT or left < self._timeout / 4:
                raise Unavailable(f"presence unavailable: {exc or 'timeout'}") from None
        try:
            return await asyncio.wait_for(self._script(name, workspace_id, *args), left)
        except (RedisError, OSError, TimeoutError, RedisClusterException) as exc:
            raise Unavailable(f"presence unavailable: {exc or 'timeout'}") from None

    def _bounded(self, coro: Awaitable[Any]) -> Awaitable[Any]:
        """A call to Redis that answers within ``timeout``. On one Redis each socket operation
        is bounded already; on a Cluster a call may also refresh the topology (asking node
        after node), which no socket timeout bounds as a whole."""
        return asyncio.wait_for(coro, self._timeout) if self._cluster else coro

    async def _script(self, name: str, workspace_id: str, *args: Any) -> Any:
        script = self.scripts[name]
        keys = _keys(workspace_id)
        if not self._cluster:  # the keys outside the workspace (lua/_lib.lua)
            keys += [*OUTBOX_KEYS[:2], TIMERS]
            if name in _CLAIMING:  # args[0] is the client
                keys += [_retired(args[0]), _client_spaces(args[0]), _node_spaces(self.node)]
        try:
            try:
                return await script(keys=keys, args=[workspace_id, *args, *self._now()])
            except ResponseError as exc:
                if "workspace_not_found" not in str(exc):
                    raise
                if not await self._known(workspace_id):
                    raise WorkspaceNotFound(f"workspace {workspace_id[:64]!r} not found") from None
                add = self.scripts["add_workspace"]
                await add(keys=keys, args=[workspace_id, *self._now()])
                return await script(keys=keys, args=[workspace_id, *args, *self._now()])
        except ResponseError as exc:
            if "not_attached" in str(exc):
                raise NotAttached("client has no live stream in this workspace") from None
            if "HUB forbidden" in str(exc):
                raise Forbidden("this client id is in use by another user") from None
            if "HUB retired" in str(exc):
                raise ClientRetired("this client is retired") from None
            if "HUB stale" in str(exc):  # this node gave up on the write (see _suspect)
                raise Unavailable("presence write arrived after its timeout") from None
            raise Unavailable(f"presence refused: {exc}") from None

    async def _purge(self, exc: BaseException) -> None:
        """A connection died without a word (a timeout, a reset): the idle ones in the pool
        went the same way, most likely, so they are closed and the next calls connect anew."""
        level = logging.DEBUG if self._dirty else logging.WARNING  # once per outage
        log.log(level, "presence connection lost (%s): reconnecting", exc or "timeout")
        self._suspect()  # what was written on it may be lost (a failover): re-assert
        if self._cluster:
            return  # the cluster client replaces its nodes' connections itself
        with contextlib.suppress(RedisError, OSError):
            await self.redis.connection_pool.disconnect(inuse_connections=False)

    async def _call(self, coro: Awaitable[Any]) -> Any:
        try:
            return await self._bounded(coro)
        except (RedisError, OSError, *_CLUSTER_LOST) as exc:
            raise Unavailable(f"presence unavailable: {exc or 'timeout'}") from None

    async def _arm(self, workspace_id: str, deadline: int) -> None:
        """Index a timer a script armed (outside a Cluster the script did it itself)."""
        if deadline >= 0 and self._cluster:
            await self.scripts["arm"](keys=[TIMERS], args=[workspace_id, deadline, *self._now()])

    def _now(self) -> list[int]:
        """The scripts' last argument: the time in ms by ``clock``; none (Redis's TIME)."""
        return [] if self._clock is None else [int(self._clock() * 1000)]

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
        seq, deadline = await self._run("hold", workspace_id, client_id, self._create_ms)
        await self._recheck_retired(workspace_id, client_id)
        await self._call(self._arm(workspace_id, deadline))
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
        key = (workspace_id, client_id)
        async with self._gate.write():
            mine = self._local.setdefault(workspace_id, {})
            first = not mine.get(client_id)
            mine[client_id] = mine.get(client_id, 0) + 1
            known = before = self._memory.get(key)
            if known is None or first:
                known = Recalled(user=user, profile=profile)
            elif profile is not None:
                known = dataclasses.replace(known, profile=profile)
            self._memory[key] = known
            try:
                await self._index_claim(workspace_id, client_id)
                args = (client_id, self.node, user or "", text, self._gen)
                *state, seq, online, counts, online_users, users = await self._run(
                    "attach", workspace_id, *args
                )
            except Unavailable:
                self._suspect()  # the script may have run: re-assert when Redis answers
                self._unlocal(workspace_id, client_id)
                raise
            except Exception:
                self._unlocal(workspace_id, client_id)
                if before is not None and key in self._memory:
                    self._memory[key] = before  # a refused stream's profile is not the user's
                raise
            self._learn(workspace_id, client_id, *state)
        await self._recheck_retired(workspace_id, client_id)
        return _snapshot(workspace_id, seq, online, counts, online_users, users)

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
            pipe.sadd(_node_spaces(self.node), workspace_id)
            pipe.sadd(_client_spaces(client_id), workspace_id)
            pipe.exists(_retired(client_id))
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
        if await self._call(self.redis.exists(_retired(client_id))):
            await self._retire_in(workspace_id, client_id)
            raise ClientRetired(f"client {client_id} is retired")

    def _learn(
        self, workspace_id: str, client_id: str, session_id: Any, sv: Any, r: Any, rv: Any
    ) -> None:
        """What this node remembers of a claim whose streams it holds takes each field of the
        claim's state that is newer (the answers and the feed may come in any order)."""
        known = self._memory.get((workspace_id, client_id))
        if known is None:
            return
        sv, rv = int(sv), int(rv)
        if sv > known.session_v:
            known = dataclasses.replace(known, session_id=str(session_id), session_v=sv)
        if rv > known.released_v:
            known = dataclasses.replace(known, released=bool(int(r)), released_v=rv)
        self._memory[workspace_id, client_id] = known

    def remembered(self, workspace_id: str, client_id: str) -> Recalled | None:
        """What this node remembers of a claim whose streams it holds (what it re-asserts)."""
        return self._memory.get((workspace_id, client_id))

    def _suspect(self) -> None:
        """Redis may differ from this node's truth (a write's answer was lost): re-assert at the
        next heartbeat, under a new generation, so that a write this node gave up on and that
        arrives late is refused."""
        self._dirty = True
        self._gen += 1

    def _unlocal(self, workspace_id: str, client_id: str) -> None:
        mine = self._local.get(workspace_id)
        if mine is None or client_id not in mine:
            return
        mine[client_id] -= 1
        if mine[client_id] <= 0:
            del mine[client_id]
            self._memory.pop((workspace_id, client_id), None)
            if not mine:
                del self._local[workspace_id]

    async def set_session(self, workspace_id: str, client_id: str, session_id: str) -> int:
        try:
            seq, sv = await self._run("set_session", workspace_id, client_id, session_id)
        except NotAttached:
            if not self._local.get(workspace_id, {}).get(client_id):
                await self._refuse_retired(client_id)
                raise
            # This node holds a stream of the client, so Redis forgot it (this node was taken
            # for dead, or Redis lost its data): write the streams back, then apply the frame.
            self._dirty = True  # and every other workspace at the next heartbeat
            await self._reassert_in(workspace_id)
            seq, sv = await self._run("set_session", workspace_id, client_id, session_id)
        known = self._memory.get((workspace_id, client_id))
        if known is not None:
            self._learn(workspace_id, client_id, session_id, sv, known.released, known.released_v)
        return int(seq)

    async def detach(self, workspace_id: str, client_id: str) -> int:
        async with self._gate.write():
            self._unlocal(workspace_id, client_id)
            try:
                args = (client_id, self.node, self._grace_ms, self._gen)
                seq, deadline, stale = await self._run("detach", workspace_id, *args)
                await self._call(self._arm(workspace_id, deadline))
            except (Unavailable, WorkspaceNotFound) as exc:
                log.warning("detach of %s deferred: %s", client_id, exc.message)
                self._suspect()
                return 0
            if int(stale):
                self._suspect()  # a newer write of this node went first: re-assert
        return int(seq)

    async def set_profile(self, workspace_id: str, client_id: str, profile: Profile) -> int:
        text = orjson.dumps(profile).decode()
        seq = await self._run("set_profile", workspace_id, client_id, text)
        known = self._memory.get((workspace_id, client_id))
        if known is not None:
            self._memory[workspace_id, client_id] = dataclasses.replace(known, profile=profile)
        return int(seq)

    async def release(self, workspace_id: str, client_id: str) -> int:
        seq, deadline = await self._run("release", workspace_id, client_id)
        await self._call(self._arm(workspace_id, deadline))
        return int(seq)

    async def retire(self, client_id: str) -> None:
        # Recorded first (it outlives Redis), refused next, then removed: a claim made
        # meanwhile is refused or seen (_index_claim).
        if self._retired is not None:
            await self._retired.retire_client(client_id, time.time() + self._retire_ms / 1000)
        await self._call(self.redis.set(_retired(client_id), 1, px=self._retire_ms))
        spaces = _strs(await self._call(self.redis.smembers(_client_spaces(client_id))))
        for workspace_id in sorted(spaces):
            await self._retire_in(workspace_id, client_id)
        await self._call(self.redis.delete(_client_spaces(client_id)))

    async def _retire_in(self, workspace_id: str, client_id: str) -> None:
        args = (client_id, int(CloseCode.RETIRED), self._retire_ms)
        await self._run("retire", workspace_id, *args)

    async def is_retired(self, client_id: str) -> bool:
        return bool(await self._call(self.redis.exists(_retired(client_id))))

    async def _refuse_retired(self, client_id: str) -> None:
        if await self.is_retired(client_id):
            raise ClientRetired(f"client {client_id} is retired")

    async def publish_session(self, workspace_id: str, op: str, session: dict[str, Any]) -> None:
        message = orjson.dumps({"e": {"op": op, "session": session}})
        publish = self.redis.spublish if self._cluster else self.redis.publish
        await self._call(publish(_channel(workspace_id), message))

    # -- reads ------------------------------------------------------------------------------

    async def snapshot(self, workspace_id: str) -> Snapshot:
        return _snapshot(workspace_id, *await self._run("snapshot", workspace_id))

    async def viewers(self, workspace_id: str, session_id: str, limit: int) -> Viewers:
        seq, total, named, flat = await self._run("viewers", workspace_id, session_id, limit)
        listed = [
            Viewer(flat[i], orjson.loads(flat[i + 2]) if flat[i + 2] else None, int(flat[i + 1]))
            for i in range(0, len(flat), 3)
        ]
        total = int(total)
        return Viewers(workspace_id, session_id, int(seq), total, total - int(named), listed)

    async def claims(self, workspace_id: str) -> list[ClaimView]:
        await self.snapshot(workspace_id)  # 404 for an unknown workspace
        raw = await self._call(self.redis.hgetall(_keys(workspace_id)[2]))
        views = []
        for client_id, text in raw.items():
            c = orjson.loads(text)
            state = (
                ClaimState.ATTACHED if c["n"] else ClaimState.HELD if c["h"] else ClaimState.GRACE
            )
            views.append(ClaimView(client_id, c["n"], c["s"], state, bool(c["r"])))
        return views

    async def claim_count(self) -> int:
        total = 0
        async for key in self.redis.scan_iter(match="hub:{*}:claims", count=1000):
            total += await self._call(self.redis.hlen(key))
        return total

    def claim_states(self) -> dict[str, int]:
        """Not counted here: it would scan every workspace in Redis at each scrape."""
        return {}

    def outbox(self, url: str) -> _RedisOutbox:
        """The webhook events for the receiver ``url`` (its consumer group)."""
        return _RedisOutbox(self, url)

    # -- nodes and timers -------------------------------------------------------------------

    async def _every(
        self, interval: float, step: Callable[[], Awaitable[None]], what: str, quiet: bool
    ) -> None:
        """Run ``step`` every ``interval`` (at a fixed rate: a slow step, over a far link, does
        not stretch the period) until closed; Redis being down is logged (and marks this node's
        truth for re-assertion), never fatal."""
        loop = asyncio.get_running_loop()
        while not self._stopping.is_set():
            started = loop.time()
            try:
                await step()
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError, Unavailable, RedisClusterException) as exc:
                self._dirty = True
                log.log(logging.DEBUG if quiet else logging.WARNING, "%s failed: %s", what, exc)
            except Exception:
                log.exception(what)
            await self._pause(max(0.0, started + interval - loop.time()))

    async def _beat(self) -> None:
        """Keep this node alive and registered in Redis; write its truth back when Redis forgot
        it or a survivor cleared it; clear nodes that died; leave the channels nobody here
        watches any more.

        A survivor may clear this node at any moment after its heartbeat lapsed (a pause, a
        stalled Redis), even after this node has come back and re-asserted. Every clear ends
        by counting up ``hub:node:<id>:cleared``, and this node re-asserts whenever that
        count moved since its last re-assertion: whatever the interleaving, the last word is
        this node's own streams. The registry is repaired by its member at every beat.
        """
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.set(_node_key(self.node), 1, px=self.node_ttl_ms, xx=True)
            pipe.sadd(NODES, self.node)
            pipe.get(_node_cleared(self.node))
            alive, _, cleared = await pipe.execute()
        if not alive or self._dirty or cleared != self._cleared:
            await self._reassert(cleared)
        await self._clear_dead_nodes()
        await self._leave_unwatched()

    async def _reassert(self, cleared: str | None = None) -> None:
        """Write this node's streams back, exactly as its sockets hold them (``cleared``: the
        clear count read before)."""
        async with self._gate.alone():
            self._dirty = False
            self._cleared = cleared
            await self._announce()
            await self._restore_retirements()
            recorded = _strs(await self.redis.smembers(_node_spaces(self.node)))
            for workspace_id in sorted(recorded | self._local.keys()):
                mine = self._local.get(workspace_id, {})
                if mine and not await self._known(workspace_id):
                    continue  # deleted meanwhile: its sockets are being closed
                await self.redis.sadd(_node_spaces(self.node), workspace_id)
                await self._set_streams(workspace_id, self.node, mine)
                if not mine:
                    await self.redis.srem(_node_spaces(self.node), workspace_id)
        log.info("node %s re-asserted its streams in %d workspaces", self.node, len(self._local))
        if self._events is not None:
            for workspace_id in list(self._watchers):
                self._events.resync(workspace_id)

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
            self._dirty = True
            return
        if found:
            async with self.redis.pipeline(transaction=False) as pipe:
                for client_id, until in found.items():
                    pipe.set(_retired(client_id), 1, px=max(1, int((until - now) * 1000)))
                await self._call(pipe.execute())

    async def _reassert_in(self, workspace_id: str) -> None:
        """Write this node's streams in one workspace back (a frame found them gone)."""
        async with self._gate.alone():
            await self._announce()
            await self._call(self.redis.sadd(_node_spaces(self.node), workspace_id))
            await self._set_streams(workspace_id, self.node, self._local.get(workspace_id, {}))

    async def _announce(self) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.sadd(NODES, self.node)
            pipe.set(_node_key(self.node), 1, px=self.node_ttl_ms)
            await self._call(pipe.execute())

    async def _set_streams(self, workspace_id: str, node: str, streams: dict[str, int]) -> None:
        """Set ``node``'s streams in the workspace, with what this node remembers of each claim
        (merged by version: lua/set_streams.lua), and learn each claim's state back. For this
        node's own streams the write is fenced by its generation, and the clients re-created
        are indexed for retire; a survivor clearing another node passes no memory and no
        generation. The clients retired there are not brought back: when they are this
        node's, their sockets are closed with 4410."""
        own = node == self.node
        # A copy: this node's own record of its streams is passed in, and the feed changes it
        # while this call waits (a client retired or a workspace deleted through another node).
        streams = dict(streams)
        claims: dict[str, dict[str, Any]] = {}
        for c in streams:
            known = self._memory.get((workspace_id, c), Recalled())
            claim = claims[c] = {
                "s": known.session_id,
                "sv": str(known.session_v),
                "r": int(known.released),
                "rv": str(known.released_v),
            }
            if known.user is not None:
                claim["u"] = known.user
            if known.profile is not None:
                claim["p"] = orjson.dumps(known.profile).decode()
        want = orjson.dumps(streams).decode()
        gen = self._gen if own else -1
        args = (node, want, orjson.dumps(claims).decode(), self._grace_ms, gen)
        answer = await self._run("set_streams", workspace_id, *args)
        if int(answer[0]) < 0:  # fenced: this node has a newer generation than this call
            self._suspect()
            return
        _, deadline, retired, states = answer
        await self._arm(workspace_id, deadline)
        for i in range(0, len(states), 5):
            self._learn(workspace_id, *states[i : i + 5])
        retired = list(retired or ())
        if own and streams:  # retired where Redis lost the workspace's record of it
            async with self.redis.pipeline(transaction=False) as pipe:
                for c in streams:
                    pipe.sadd(_client_spaces(c), workspace_id)
                    pipe.exists(_retired(c))
                found = await pipe.execute()
            for c, is_retired in zip(streams, found[1::2], strict=True):
                if is_retired and c not in retired:
                    await self._retire_in(workspace_id, c)
                    retired.append(c)
        for client_id in retired:
            self._forget(workspace_id, client_id)
            if self._events is not None:
                self._events.closed(workspace_id, client_id, CloseCode.RETIRED)

    async def _clear_dead_nodes(self) -> None:
        """Detach the streams of every node whose heartbeat expired (idempotent: several
        survivors may do it at once)."""
        others = sorted(_strs(await self.redis.smembers(NODES)) - {self.node})
        if not others:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            for node in others:
                pipe.exists(_node_key(node))
            alive = await pipe.execute()
        for node in (n for n, up in zip(others, alive, strict=True) if not up):
            spaces = _strs(await self.redis.smembers(_node_spaces(node)))
            log.warning(
                "node %s is gone: detaching its streams in %d workspaces", node, len(spaces)
            )
            for workspace_id in sorted(spaces):
                await self._set_streams(workspace_id, node, {})
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.delete(_node_spaces(node))
                pipe.srem(NODES, node)
                # Last: should the node be alive after all, it re-asserts after all of this.
                pipe.incr(_node_cleared(node))
                pipe.pexpire(_node_cleared(node), _CLEARED_TTL_MS)
                await pipe.execute()

    async def _leave_unwatched(self) -> None:
        pubsub = self._pubsub
        idle = [c for c in self._subscribed if self._workspace_of(c) not in self._watchers]
        if pubsub is None or not idle:
            return
        for channel in idle:
            del self._subscribed[channel]
        await pubsub.unsubscribe(*idle)

    async def _pause(self, seconds: float) -> None:
        """Sleep, or less when the backend is closing."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    async def _sweep(self) -> None:
        """Fire due holds and graces, whichever node gets there first."""
        due = await self.scripts["due"](keys=[TIMERS], args=[100, *self._now()])
        for i in range(0, len(due), 2):
            workspace_id, swept = due[i], due[i + 1]
            next_deadline = await self._run("expire", workspace_id)
            await self.scripts["reindex"](keys=[TIMERS], args=[workspace_id, swept, next_deadline])
