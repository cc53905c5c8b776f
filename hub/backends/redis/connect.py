"""Connecting: the URL, the deployment behind it (one Redis, Sentinel, a Cluster), the pools.

- ``redis://`` names one Redis, or any node of a Redis Cluster: :func:`is_cluster` asks at
  start-up, and then :func:`cluster_client` replaces the first client (every workspace's
  keys are one slot; the change feed is sharded pub/sub, one connection per master).
- ``redis+sentinel://HOST:PORT[,HOST:PORT...]/MASTER_NAME[/DB]`` names the sentinels, asked
  for the master at every new connection (:func:`open_client`).

Every connection is checked: a command or a connection that gets no answer within
``timeout`` fails (and the shell drops the idle ones with it); a pooled connection the
server closed is replaced when taken (the pool sees it readable), with no round trip; TCP
keepalive finds a peer that vanished; the change feed pings itself. No PING before a command
on a connection idle for a while (redis-py's health check): it cost a node at rest one more
round trip per call (REST read and set_session 2 instead of 1), and with no retries it could
only fail where the command itself would. The pool is bounded and blocking: a burst of calls
(a thousand sockets joining at once) waits for a connection rather than failing. No retries
inside redis-py: a Redis that is down is reported at once.
"""

from __future__ import annotations

import logging
import socket
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import NoBackoff
from redis.exceptions import RedisClusterException, RedisError

log = logging.getLogger(__name__)

SENTINEL_SCHEME = "redis+sentinel://"
# What a Redis Cluster call raises when it found no node to answer (no slot map, no master
# for the slot: a failover), or when it did not answer in time (the shell bounds its calls).
CLUSTER_LOST = (RedisClusterException, TimeoutError)
# TCP keepalive: probe after 5 s idle, every 2 s, give up after 3 (a vanished peer in ~11 s).
KEEPALIVE = {
    getattr(socket, name): value
    for name, value in (("TCP_KEEPIDLE", 5), ("TCP_KEEPINTVL", 2), ("TCP_KEEPCNT", 3))
    if hasattr(socket, name)
}


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


def pool_options(timeout: float, max_connections: int) -> dict[str, Any]:
    """The options of every client (see the module docstring)."""
    return {
        "max_connections": max_connections,
        "timeout": 10 * timeout,  # waiting for a pooled connection
        "decode_responses": True,
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "socket_keepalive": True,
        "socket_keepalive_options": KEEPALIVE,
        "health_check_interval": 0,
        "retry": Retry(NoBackoff(), 0),
        # No CLIENT SETINFO on connecting: a round trip less for every new connection, which a
        # far Redis would charge to the call that needed it, against that call's deadline.
        "driver_info": None,
    }


def shard_options(options: dict[str, Any]) -> dict[str, Any]:
    """Connection options for one shard of the Cluster's feed (a plain client to one master)."""
    keep = ("decode_responses", "socket_timeout", "socket_connect_timeout")
    return {k: v for k, v in options.items() if k in keep or k.startswith("socket_k")}


class BlockingSentinelPool(SentinelConnectionPool, aioredis.BlockingConnectionPool):
    """The sentinels' master, through a bounded pool that waits for a free connection."""


def open_client(
    url: str, options: dict[str, Any], timeout: float
) -> tuple[aioredis.Redis, Sentinel | None]:
    """A client for ``url`` (and the Sentinel it asks, for a ``redis+sentinel://`` URL). No
    connection is made yet."""
    sentinel = parse_sentinel_url(url)
    if sentinel is None:
        pool = aioredis.BlockingConnectionPool.from_url(url, **options)
        return aioredis.Redis(connection_pool=pool), None
    # The master named by the sentinels, asked again at every new connection; a connection
    # to a demoted master fails (READONLY), so nothing is written there.
    hosts, master, db = sentinel
    asked = Sentinel(  # type: ignore[no-untyped-call,unused-ignore]
        hosts, socket_timeout=timeout, socket_connect_timeout=timeout
    )
    client = asked.master_for(master, connection_pool_class=BlockingSentinelPool, db=db, **options)
    return client, asked


async def is_cluster(url: str, socket_timeout: float) -> bool:
    """Whether the Redis at ``url`` is a node of a Redis Cluster (a Redis that does not answer
    yet is taken for a standalone one)."""
    probe = aioredis.Redis.from_url(
        url, socket_timeout=socket_timeout, socket_connect_timeout=socket_timeout
    )
    try:
        return bool((await probe.info("cluster")).get("cluster_enabled"))
    except (RedisError, OSError) as exc:
        log.warning("Redis does not answer yet (%s): taken for a standalone one", exc)
        return False
    finally:
        await probe.aclose()


def cluster_client(url: str, options: dict[str, Any]) -> aioredis.RedisCluster:
    """The cluster client: it pools per node and follows MOVED/ASK itself. It retries nothing
    (its default is ten tries with backoff): a command that met a dead master is reported
    within the timeout (503 while the slot has no master), and a script that may have run is
    never run twice behind this node's back (an attach counted twice is a ghost); the shell
    tries the idempotent ones once more, as on one Redis."""
    return aioredis.RedisCluster.from_url(
        url, **{k: v for k, v in options.items() if k != "timeout"}
    )
