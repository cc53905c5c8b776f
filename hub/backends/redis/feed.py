"""The change feed: this node's subscription to the channels of the workspaces it watches.

A node subscribes to the channel of every workspace it holds sockets in (counted: each
``watch`` is ended by one ``unwatch``; a channel nobody watches any more is left at the next
heartbeat, :meth:`Feed.leave_unwatched`) and hands each message, parsed into a
:class:`~hub.backends.redis.messages.FeedMessage`, to the backend in the order it came.

One connection on one Redis or Sentinel (a PubSub); on a Redis Cluster sharded pub/sub, one
connection per master that serves a watched channel's slot (:class:`ShardedFeed`, which
offers what the loop uses of a PubSub, so the loop is the same everywhere).

The feed checks its own connection: when nothing was heard for a heartbeat it sends a PING,
and a connection that has not answered ``timeout`` later is taken for lost (a silent loss: no
FIN, no RST). A lost feed is dropped and made anew from the current topology, and every
watched workspace is re-read once its subscription is confirmed (``resync``), since changes
may have been published while this node was not listening. A loss is seen within heartbeat +
timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any, cast

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisClusterException, RedisError

from hub.backends.redis import scripts
from hub.backends.redis.messages import FeedMessage, parse
from hub.backends.redis.timers import pause
from hub.errors import Unavailable

log = logging.getLogger(__name__)


class ShardedFeed:
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


class Feed:
    """This node's change feed (see the module docstring). ``heard`` gets each workspace
    message, ``resync`` each workspace whose changes may have been missed, ``lost`` the error
    that lost the connection (before it is made anew)."""

    def __init__(
        self,
        node: str,
        *,
        heartbeat: float,
        timeout: float,
        stopping: asyncio.Event,
        heard: Callable[[FeedMessage], None],
        resync: Callable[[str], None],
        lost: Callable[[BaseException], Awaitable[None]],
    ) -> None:
        self.node = node
        self.heartbeat = heartbeat
        self.timeout = timeout
        self.stopping = stopping
        self.heard = heard
        self.resync = resync
        self.lost = lost
        self.client: Any = None  # set by use()
        self.cluster = False
        self.shard_options: dict[str, Any] = {}
        # Channels: how many local holders each has, and the subscription state.
        self._watchers: dict[str, int] = {}
        self._subscribed: dict[str, asyncio.Future[None]] = {}
        self._pubsub: Any = None  # a PubSub, or a ShardedFeed on a Cluster

    def use(self, client: Any, cluster: bool, shard_options: dict[str, Any]) -> None:
        """Listen through ``client`` (a Cluster's: sharded, with a plain client per master)."""
        self.client = client
        self.cluster = cluster
        self.shard_options = shard_options

    def watched(self) -> list[str]:
        """The workspaces watched here now."""
        return list(self._watchers)

    async def watch(self, workspace_id: str) -> None:
        """Count a holder in and wait for the subscription; Unavailable when it cannot be made
        within a few timeouts (the holder is counted out again)."""
        self._watchers[workspace_id] = self._watchers.get(workspace_id, 0) + 1
        try:
            await asyncio.wait_for(self._subscribe(workspace_id), self.timeout * 4)
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
        channel = scripts.channel(workspace_id)
        confirmed = self._subscribed.get(channel)
        if confirmed is None:
            confirmed = self._subscribed[channel] = asyncio.get_running_loop().create_future()
            if self._pubsub is not None:  # else the feed subscribes it when it reconnects
                await self._pubsub.subscribe(channel)
        await asyncio.shield(confirmed)

    async def leave_unwatched(self) -> None:
        """Leave the channels nobody here watches any more."""
        pubsub = self._pubsub
        idle = [c for c in self._subscribed if scripts.workspace_of(c) not in self._watchers]
        if pubsub is None or not idle:
            return
        for channel in idle:
            del self._subscribed[channel]
        await pubsub.unsubscribe(*idle)

    async def _connect(self) -> Any:
        """A new subscription connection, subscribed to every watched workspace; each is
        re-read once its subscription is confirmed."""
        loop = asyncio.get_running_loop()
        pubsub: Any
        if self.cluster:
            cluster = cast(aioredis.RedisCluster, self.client)
            await cluster.nodes_manager.initialize()  # the topology as it is now
            pubsub = ShardedFeed(self.client, self.shard_options)
        else:
            pubsub = self.client.pubsub()
        channels = {scripts.channel(w) for w in self._watchers} | self._subscribed.keys()
        for channel in channels:
            if channel not in self._subscribed:
                self._subscribed[channel] = loop.create_future()
            self._subscribed[channel].add_done_callback(self._resync_after(channel))
        await pubsub.subscribe(scripts.node_channel(self.node), *channels)
        while late := self._subscribed.keys() - channels:  # watched while this was connecting
            channels |= late
            await pubsub.subscribe(*late)
        self._pubsub = pubsub
        return pubsub

    def _resync_after(self, channel: str) -> Callable[[asyncio.Future[None]], None]:
        def done(future: asyncio.Future[None]) -> None:
            if not future.cancelled() and future.exception() is None:
                self.resync(scripts.workspace_of(channel))

        return done

    async def drop(self) -> None:
        """Close the connection; whoever waits for a subscription hears Unavailable."""
        pubsub, self._pubsub = self._pubsub, None
        for future in self._subscribed.values():
            if not future.done():
                future.set_exception(Unavailable("presence feed lost"))
                future.exception()  # retrieved: nobody may be waiting
        self._subscribed.clear()
        if pubsub is not None:
            with contextlib.suppress(RedisError, OSError):
                await pubsub.aclose()

    async def run(self) -> None:
        """Read the subscribed channels until stopped, re-subscribing after a lost connection."""
        loop = asyncio.get_running_loop()
        heard = loop.time()
        pinged: float | None = None
        while not self.stopping.is_set():
            try:
                if self._pubsub is None:
                    await asyncio.wait_for(self._connect(), self.timeout)
                    heard, pinged = loop.time(), None
                pubsub = self._pubsub
                assert pubsub is not None
                message = await pubsub.get_message(timeout=self.heartbeat / 2)
                now = loop.time()
                if message is not None:
                    heard, pinged = now, None
                    self.dispatch(message)
                elif pinged is not None and now - pinged > self.timeout:
                    raise TimeoutError(f"no answer to a ping within {self.timeout} s")
                elif pinged is None and now - heard > self.heartbeat:
                    pinged = now
                    await asyncio.wait_for(pubsub.ping(), self.timeout)
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError, TimeoutError, RedisClusterException) as exc:
                log.warning("presence feed lost (%s); re-subscribing", exc or "timeout")
                await self.lost(exc)
                await self.drop()
                await pause(self.stopping, self.heartbeat / 4)
            except Exception:
                log.exception("presence feed: unexpected message")

    def dispatch(self, message: dict[str, Any]) -> None:
        """One message of the connection: a confirmation settles its subscription; a
        workspace's message goes to ``heard``, parsed; anything else is ignored."""
        kind = message["type"]
        if kind == "pong":
            return
        channel = message["channel"]
        if kind in ("subscribe", "ssubscribe"):
            future = self._subscribed.get(channel)
            if future is not None and not future.done():
                future.set_result(None)
            return
        if kind not in ("message", "smessage") or not scripts.is_channel(channel):
            return
        workspace_id = scripts.workspace_of(channel)
        try:
            parsed = parse(workspace_id, message["data"])
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            # What it said is read back from Redis instead: the sockets would otherwise keep
            # the counts before it, at the newest seq, until the next change.
            log.error("presence feed: unreadable message in %s (%r): re-read", workspace_id, exc)
            self.resync(workspace_id)
            return
        self.heard(parsed)
