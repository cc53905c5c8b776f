"""Two real ``hub serve`` processes on one Redis and one PostgreSQL: what scale-out promises.

Every scenario of the single-node suite also runs on two nodes (the ``cluster`` run of the
shared ``server`` fixture); these tests are about processes: a client on both nodes, a node
killed with ``kill -9``, and Redis killed and restarted empty.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.clusters import Cluster, rest, same_on_both, workspace
from tests.harness import Viewer, eventually, new_client_id


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path)
    yield c
    c.stop()


async def test_a_client_on_both_nodes_counts_once(cluster: Cluster) -> None:
    w = await workspace(cluster)
    x, watcher = new_client_id(), new_client_id()
    on_a = await Viewer.open(cluster.ws(0, w, x), x)
    on_b = await Viewer.open(cluster.ws(1, w, x), x)
    watch = await Viewer.open(cluster.ws(1, w, watcher), watcher)
    await on_a.send({"type": "set_session", "session_id": "S1", "ref": 1})
    for v in (on_a, on_b, watch):  # the set on node A reaches every socket, on both nodes
        await v.until(lambda v: v.counts == {"S1": 1} and v.online == 2)
    await on_b.send({"type": "set_session", "session_id": "S2"})  # the same client, node B
    for v in (on_a, on_b, watch):
        await v.until(lambda v: v.counts == {"S2": 1})
    snap = await same_on_both(cluster, f"/v1/workspaces/{w}/presence")
    assert (snap["counts"], snap["online"]) == ({"S2": 1}, 2)
    claims = await same_on_both(cluster, f"/v1/workspaces/{w}/clients")
    mine = next(c for c in claims if c["client_id"] == x)
    assert (mine["streams"], mine["session_id"], mine["state"]) == (2, "S2", "attached")
    created = await rest(cluster.nodes[1], "POST", f"/v1/workspaces/{w}/sessions", json={})
    assert created.status_code == 201
    await on_a.until(lambda v: any(f["type"] == "session" for f in v.frames))  # across nodes
    await on_a.close()  # one of x's two streams: x still counts

    async def one_stream_left() -> bool:
        claims = (await rest(cluster.nodes[0], "GET", f"/v1/workspaces/{w}/clients")).json()
        return any(c["client_id"] == x and c["streams"] == 1 for c in claims)

    await eventually(one_stream_left)  # the detach landed
    assert (await same_on_both(cluster, f"/v1/workspaces/{w}/presence"))["online"] == 2
    for v in (on_b, watch):
        await v.close()


async def test_a_killed_node_is_cleared_on_the_other_within_10_s(cluster: Cluster) -> None:
    w = await workspace(cluster)
    doomed, watcher = new_client_id(), new_client_id()
    victim = await Viewer.open(cluster.ws(1, w, doomed), doomed)
    await victim.send({"type": "set_session", "session_id": "S1"})
    watch = await Viewer.open(cluster.ws(0, w, watcher), watcher)
    await watch.until(lambda v: v.counts == {"S1": 1})
    started = time.monotonic()
    cluster.nodes[1].kill9()
    await watch.until(lambda v: v.counts == {} and v.online == 1, within=10)
    took = time.monotonic() - started
    assert took > 1.0  # HUB_NODE_TTL (2 s here, beats every 0.67 s): not dead before it lapsed
    # Grace rules apply to the dead node's streams: grace first, then gone.
    claims = (await rest(cluster.nodes[0], "GET", f"/v1/workspaces/{w}/clients")).json()
    states = {c["client_id"]: c["state"] for c in claims}
    assert states.get(doomed) in ("grace", None) and states[watcher] == "attached"

    async def only_the_watcher() -> bool:  # the grace (1 s) fires once, on the survivor
        claims = (await rest(cluster.nodes[0], "GET", f"/v1/workspaces/{w}/clients")).json()
        return [c["client_id"] for c in claims] == [watcher]

    await eventually(only_the_watcher)
    print(f"dead node cleared after {took:.2f} s")
    await watch.close()


async def test_redis_outage_is_503_and_counts_come_back_after_a_restart(
    cluster: Cluster,
) -> None:
    w = await workspace(cluster)
    viewers = []
    for i, session in enumerate(["S1", "S1", "S2"]):
        client = new_client_id()
        v = await Viewer.open(cluster.ws(i % 2, w, client), client)
        await v.send({"type": "set_session", "session_id": session})
        viewers.append(v)
    truth = {"S1": 2, "S2": 1}
    for v in viewers:
        await v.until(lambda v: v.counts == truth)
    cluster.redis.kill()
    for node in cluster.nodes:
        for path in (f"/v1/workspaces/{w}/presence", f"/v1/workspaces/{w}/sessions"):
            started = time.monotonic()
            response = await rest(node, "GET", path)
            assert time.monotonic() - started < 1.0  # never a hang
            assert response.status_code == 503, response.text  # never a 500
            assert response.headers["retry-after"] == "1"
            assert response.json()["error"] == "unavailable"
        assert (await rest(node, "GET", "/v1/ready")).status_code == 503
    deleted = await rest(cluster.nodes[0], "DELETE", f"/v1/workspaces/{w}")
    assert deleted.status_code == 503  # nothing deleted: it can be retried later
    for v in viewers:  # sockets stay open: frames still get answers
        await v.send({"type": "ping", "ref": "still-here"})
        await v.until(lambda v: any(f.get("ref") == "still-here" for f in v.frames))
        await v.send({"type": "set_session", "session_id": "S3", "ref": "down"})
        error = await v.until(lambda v: any(f.get("ref") == "down" for f in v.frames))
        assert error is not None and error["code"] == "unavailable"
    cluster.redis.start()  # back, and empty
    started = time.monotonic()
    for node in cluster.nodes:
        while True:
            response = await rest(node, "GET", f"/v1/workspaces/{w}/presence")
            if response.status_code == 200 and response.json()["counts"] == truth:
                break
            assert response.status_code in (200, 503)
            assert time.monotonic() - started < 15, response.text
            await asyncio.sleep(0.1)
    for v in viewers:
        await v.until(lambda v: v.counts == truth and v.online == 3, within=15)
    print(f"converged {time.monotonic() - started:.2f} s after Redis came back")
    assert (await rest(cluster.nodes[1], "GET", f"/v1/workspaces/{w}")).status_code == 200
    # And the feed works again: a change on one node reaches the other.
    await viewers[0].send({"type": "set_session", "session_id": "S2"})
    for v in viewers:
        await v.until(lambda v: v.counts == {"S1": 1, "S2": 2})
    for v in viewers:
        await v.close()
