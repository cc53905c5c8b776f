"""Faults that production has, on two real ``hub serve`` processes and a Redis of their own.

Each test states the fault, the bound and the truth (the counting rule over the sockets it holds
open), and checks both nodes' REST answers and every open socket against it
(:func:`tests.clusters.converge`), then that a ``kill -9`` of a node clears its viewers within
10 s. ``scripts/failover.py`` runs the same faults many times and prints p50/p95.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.clusters import Cluster, Truth, converge, workspace
from tests.harness import Viewer, new_client_id

BOUND = 10.0  # seconds from the end of a fault to the truth on every node and socket
TTL = "1"  # HUB_NODE_TTL: a pause or a stall longer than this is taken for a death


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    # A long grace: a node's viewers cleared during a fault wait in grace, as in production.
    c = Cluster(tmp_path, HUB_NODE_TTL=TTL, HUB_DETACH_GRACE="30")
    yield c
    c.stop()


async def viewers(cluster: Cluster, w: str, per_node: tuple[int, int]) -> Truth:
    """Open viewers (``per_node`` on node 0 and node 1), each on S1 or S2; the truth."""
    truth = Truth()
    for node, n in enumerate(per_node):
        for i in range(n):
            client = new_client_id()
            v = await Viewer.open(cluster.ws(node, w, client), client)
            session = f"S{i % 2 + 1}"
            await v.send({"type": "set_session", "session_id": session})
            truth.add(v, node, session)
    await converge(cluster, w, truth, [0, 1], within=BOUND)
    return truth


async def kill_one_and_converge(cluster: Cluster, w: str, truth: Truth) -> None:
    """``kill -9`` of node 1: its viewers are gone from node 0 within 10 s (no ghost)."""
    cluster.nodes[1].kill9()
    truth.drop_node(1)
    await converge(cluster, w, truth, [0], within=10)


async def test_a_paused_node_converges_and_applies_the_frames_sent_meanwhile(
    cluster: Cluster,
) -> None:
    """Fault: node 1 is paused (SIGSTOP) longer than HUB_NODE_TTL, so node 0 clears it, and a
    viewer on it changes its session during the pause. Bound: 10 s after SIGCONT. Truth: every
    open socket counts, the change included."""
    w = await workspace(cluster)
    truth = await viewers(cluster, w, (2, 4))
    mover = next(v for v, node in truth.viewers.items() if node == 1)
    for i, pause in enumerate((1.5, 2.5, 1.2)):
        cluster.nodes[1].proc.send_signal(signal.SIGSTOP)
        session = f"S{i + 3}"
        await mover.send({"type": "set_session", "session_id": session})  # waits in the socket
        truth.sessions[mover.client_id] = session
        await asyncio.sleep(pause)
        cluster.nodes[1].proc.send_signal(signal.SIGCONT)
        took = await converge(cluster, w, truth, [0, 1], within=BOUND)
        print(f"pause {pause} s: converged {took:.2f} s after SIGCONT")
    await kill_one_and_converge(cluster, w, truth)


async def test_a_stalled_redis_converges_and_leaves_no_ghost(cluster: Cluster) -> None:
    """Fault: Redis frozen (SIGSTOP) for 2.5, 1.1 and 5 s: both nodes see each other's
    heartbeat expire. Bound: 10 s after the last SIGCONT. Truth: every open socket counts;
    then a killed node leaves no ghost."""
    w = await workspace(cluster)
    truth = await viewers(cluster, w, (3, 3))
    assert cluster.redis.proc is not None
    for stall in (2.5, 1.1, 5.0):
        cluster.redis.proc.send_signal(signal.SIGSTOP)
        await asyncio.sleep(stall)
        cluster.redis.proc.send_signal(signal.SIGCONT)
        await asyncio.sleep(1.0)
    started = time.monotonic()
    took = await converge(cluster, w, truth, [0, 1], within=BOUND)
    print(f"Redis stalled three times: converged {took + time.monotonic() - started:.2f} s after")
    await kill_one_and_converge(cluster, w, truth)
