"""A Redis Cluster failover under two real ``hub serve`` nodes: a master killed (``kill -9``),
its replica promoted by the cluster itself.

The cluster has three masters, each with a replica, and a short ``cluster-node-timeout``, so a
failover takes seconds. Workspaces with viewers on both nodes sit on every master; the master
killed also serves the hub's global keys (the node registry and the timer index), the
hardest case: heartbeats fail with it. The truth is the counting rule over the sockets the
test holds open (:class:`tests.clusters.Truth`), checked on both nodes' REST answers and every
open socket within 15 s of the promotion; REST is polled all along and never answers 500
(503 is the honest answer while a slot has no master).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tests.clusters import (
    Cluster,
    Truth,
    change,
    converge,
    mismatch,
    rest,
    settle_change,
    viewers,
)
from tests.harness import Viewer, new_client_id
from tests.services import RedisClusterSet

NODE_TIMEOUT = 2000  # ms without an answer before the cluster fails a master over
PROMOTED_WITHIN = 20.0  # seconds from the kill to the promotion (node timeout + election)
CONVERGED_WITHIN = 15.0  # seconds from the promotion to the truth everywhere
REST_WITHIN = 2.0 + 1.5  # HUB_REDIS_TIMEOUT (the default), and a margin for a loaded machine


@pytest.fixture
async def failover_cluster(tmp_path: Path) -> AsyncIterator[tuple[Cluster, RedisClusterSet]]:
    nodes = await asyncio.to_thread(
        RedisClusterSet, tmp_path, replicas=1, node_timeout=NODE_TIMEOUT
    )
    env = {"HUB_NODE_TTL": "2", "HUB_DETACH_GRACE": "30"}
    try:
        c = await asyncio.to_thread(Cluster, tmp_path, None, [nodes.url] * 2, **env)
    except BaseException:
        nodes.stop()
        raise
    yield c, nodes
    await asyncio.to_thread(c.stop)
    nodes.stop()
    print("\n".join(c.logs)[-6000:])  # shown when the test failed


class RestPoller:
    """Every node's presence of every workspace, asked again and again until stopped (one
    request per node at a time, through one client per node, so that the polling itself does
    not load the machine): 200 or 503 with ``Retry-After``, never anything else."""

    def __init__(self, cluster: Cluster, spaces: list[str]) -> None:
        self.statuses: dict[int, int] = {}  # status -> how many answers
        self.slowest = 0.0  # seconds, the slowest answer
        self.stopped = asyncio.Event()
        self.tasks = [asyncio.ensure_future(self._poll(n.url, spaces)) for n in cluster.nodes]

    async def _poll(self, url: str, spaces: list[str]) -> None:
        async with httpx.AsyncClient(base_url=url, timeout=10) as http:
            while not self.stopped.is_set():
                for w in spaces:
                    started = time.monotonic()
                    response = await http.get(f"/v1/workspaces/{w}/presence")
                    self.slowest = max(self.slowest, time.monotonic() - started)
                    status = response.status_code
                    self.statuses[status] = self.statuses.get(status, 0) + 1
                    assert status in (200, 503), response.text  # never a 500
                    if status == 503:
                        assert response.headers["retry-after"] == "1"
                await asyncio.sleep(0.05)

    async def stop(self) -> None:
        self.stopped.set()
        await asyncio.gather(*self.tasks)  # raises what failed

    def cancel(self) -> None:
        """Stop now (the test failed elsewhere)."""
        for task in self.tasks:
            task.cancel()


async def promotion(nodes: RedisClusterSet, replica: int, survivor: int) -> float:
    """When (``time.monotonic()``) the survivor sees ``replica`` as a master and the cluster
    as ``ok`` (asked every 50 ms)."""
    deadline = time.monotonic() + PROMOTED_WITHIN
    while True:
        masters = await asyncio.to_thread(nodes.masters, survivor)
        if replica in masters and await asyncio.to_thread(nodes.state, survivor) == "ok":
            return time.monotonic()
        assert time.monotonic() < deadline, "no promotion"
        await asyncio.sleep(0.05)


async def test_a_redis_cluster_failover_is_survived(
    failover_cluster: tuple[Cluster, RedisClusterSet],
) -> None:
    """Fault: the master serving the hub's global keys (and workspaces) is killed; its replica
    is promoted. Bound: 15 s after the promotion. Truth: every workspace's counts on both
    nodes' REST and every open socket, a change made during the failover included (or
    refused: ``unavailable``); REST polled all along is 200 or 503, never a 500; and a change
    after the promotion reaches every socket."""
    cluster, nodes = failover_cluster
    first = nodes.ports[0]
    masters = nodes.masters(first)
    assert len(masters) == 3 and all(len(r) == 1 for r in masters.values()), masters
    # Workspaces on every master: two each (made by the hub, so their ids are its own).
    by_master: dict[int, list[str]] = {port: [] for port in masters}
    i = 0
    while any(len(found) < 2 for found in by_master.values()):
        assert i < 200, by_master
        response = await rest(
            cluster.nodes[i % 2], "POST", "/v1/workspaces", json={"path": f"/{i}"}
        )
        assert response.status_code == 200, response.text
        w = response.json()["id"]
        found = by_master[nodes.serving(f"hub:{{{w}}}:meta", first)]
        if len(found) < 2:
            found.append(w)
        i += 1
    spaces = [w for found in by_master.values() for w in found]
    truths: dict[str, Truth] = {}
    for w in spaces:
        truths[w] = await viewers(cluster, w, (1, 1))
    victim = nodes.serving("hub:nodes", first)
    replica = masters[victim][0]
    survivor = next(p for p in masters if p != victim)
    doomed = by_master[victim][0]  # a workspace on the master killed

    poller = RestPoller(cluster, spaces)
    try:
        await asyncio.sleep(0.3)  # answers before the kill, too
        nodes.kill(victim)
        killed = time.monotonic()
        promoted_at = asyncio.ensure_future(promotion(nodes, replica, survivor))
        # A change during the failover, on the master killed: acknowledged or refused, never lost.
        await asyncio.sleep(0.5)
        mover, before = await change(truths[doomed], 1, "S3")
        promoted = await promoted_at
        print(f"promoted {promoted - killed:.2f} s after the kill")
        await settle_change(truths[doomed], mover, "S3", before)
        for w in spaces:
            left = CONVERGED_WITHIN - (time.monotonic() - promoted)
            await converge(cluster, w, truths[w], [0, 1], within=left)
        took = time.monotonic() - promoted
        print(f"cluster failover: every workspace converged {took:.2f} s after the promotion")
        # And stays there: no node taken for dead after the promotion, no blip.
        for _ in range(3):
            await asyncio.sleep(1)
            for w in spaces:
                assert not await mismatch(cluster, w, truths[w], [0, 1])
        # The feed of the promoted master works: a change there reaches every socket.
        for node in (0, 1):
            mover, before = await change(truths[doomed], node, f"S{4 + node}")
            await settle_change(truths[doomed], mover, f"S{4 + node}", before)
        await converge(cluster, doomed, truths[doomed], [0, 1], within=CONVERGED_WITHIN)
        await poller.stop()
    finally:
        poller.cancel()  # stopped already unless something failed
    print(f"REST during and after: {poller.statuses}, slowest {poller.slowest:.2f} s")
    assert poller.statuses.get(200)
    assert poller.slowest < REST_WITHIN, f"a REST answer took {poller.slowest:.2f} s"


async def test_a_redis_cluster_that_is_all_gone_is_503_and_a_clean_stop(tmp_path: Path) -> None:
    """Fault: every node of the Redis Cluster is killed (no node left to ask for the topology:
    redis-py raises its own RedisClusterException, not a RedisError). Truth: REST is 503 with
    Retry-After within HUB_REDIS_TIMEOUT + 1.5 s, a ``set_session`` is answered
    ``unavailable``, and the node stops on SIGINT without a traceback."""
    nodes = await asyncio.to_thread(RedisClusterSet, tmp_path)
    try:
        c = await asyncio.to_thread(Cluster, tmp_path, None, [nodes.url], HUB_LOG_LEVEL="warning")
    except BaseException:
        nodes.stop()
        raise
    try:
        response = await rest(c.nodes[0], "POST", "/v1/workspaces", json={"path": "/gone"})
        w = response.json()["id"]
        client = new_client_id()
        mover = await Viewer.open(c.ws(0, w, client), client)
        nodes.stop()
        for path in (f"/v1/workspaces/{w}/presence", f"/v1/workspaces/{w}"):
            started = time.monotonic()
            response = await rest(c.nodes[0], "GET", path)
            took = time.monotonic() - started
            assert response.status_code == 503, response.text  # never a 500
            assert response.headers["retry-after"] == "1"
            assert took < REST_WITHIN, took
        await mover.send({"type": "set_session", "session_id": "S9", "ref": "gone"})
        await mover.until(lambda v: any(f.get("ref") == "gone" for f in v.frames))
        answer = next(f for f in mover.frames if f.get("ref") == "gone")
        assert answer["type"] == "error" and answer["code"] == "unavailable", answer
        await mover.close()
    finally:
        await asyncio.to_thread(c.stop)
        nodes.stop()
    assert "Traceback" not in "\n".join(c.logs), "\n".join(c.logs)[-3000:]
