"""The suite's one two-node harness: hub nodes on one Redis and one PostgreSQL
(:class:`Cluster`), and the checks of a fault test: the truth (the counting rule over the
sockets a test holds open) against every node's REST answer and every open socket.

The nodes are real ``hub serve`` processes (a fault test kills, pauses and restarts them), or,
in-process servers whose state a test can read (:class:`InProcessCluster`; its ``server``, a
:class:`~tests.harness.ClusterThread`, is the end-to-end suite's two-node server)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx

from hub.settings import Settings
from tests.harness import ClusterThread, HubProcess, ServerThread, Viewer, new_client_id
from tests.services import Database, RedisServer
from tests.timing import T

BOUND = 10.0  # seconds from the end of a fault to the truth on every node and socket


class Cluster:
    """Two hub nodes on a PostgreSQL database of their own and a Redis (their own, unless
    ``urls`` are given), configured by ``HUB_*`` variables (``env``, over short graces).

    The nodes are ``hub serve`` processes, in ``nodes``; an :class:`InProcessCluster` runs
    them in this process instead, in ``threads``."""

    in_process = False

    def __init__(
        self, tmp: Path, redis: RedisServer | None = None, urls: list[str] | None = None, **env: str
    ) -> None:
        """``urls``: each node's Redis URL (a node may reach Redis through a fault proxy)."""
        self._redis = redis or (RedisServer() if urls is None else None)
        self.database = Database()
        self.env = {
            "HUB_DATABASE_URL": self.database.url,
            "HUB_DETACH_GRACE": "1",
            "HUB_CREATE_GRACE": "1",
            "HUB_NODE_TTL": "2",
            **env,
        }
        urls = urls or [self.redis.url] * 2
        self.logs: list[str] = []  # what each node printed, once stopped
        self.nodes: list[HubProcess] = []
        self.threads: list[ServerThread] = []
        self._server: ClusterThread | None = None
        try:
            if self.in_process:
                assert len(set(urls)) == 1, "in-process nodes share one Redis URL"
                settings = Settings.from_env({**self.env, "HUB_REDIS_URL": urls[0]})
                self._server = ClusterThread(settings)
                self._server.start()
                self.threads = [self._server, self._server.other]
            else:
                for url in urls:
                    self.nodes.append(HubProcess(tmp / "unused.db", **self.env, HUB_REDIS_URL=url))
        except BaseException:
            self.stop()
            raise

    @property
    def redis(self) -> RedisServer:
        """The Redis of the cluster's own (not there when it was given ``urls`` only)."""
        assert self._redis is not None, "this cluster's nodes use the Redis URLs it was given"
        return self._redis

    @property
    def server(self) -> ClusterThread:
        """In-process nodes as one server (an InProcessCluster's)."""
        assert self._server is not None, "a cluster of processes: see nodes"
        return self._server

    def ws(self, node: int, workspace_id: str, client_id: str) -> str:
        port = (self.threads or self.nodes)[node].port
        return f"ws://127.0.0.1:{port}/v1/workspaces/{workspace_id}/ws?client_id={client_id}"

    def stop(self) -> None:
        for i, node in enumerate(self.nodes):
            if node.proc.poll() is None:
                self.logs.append(f"node {i}:\n{node.stop()}")
        if self._server is not None:
            self._server.stop()
        if self._redis is not None:
            self._redis.kill()
        self.database.drop()


class InProcessCluster(Cluster):
    """The same two nodes as in-process servers on one Redis URL (their state can be read):
    ``server`` is the first one used as the whole cluster (REST to it, sockets alternating),
    the second runs uvicorn's wsproto, so both send paths run."""

    in_process = True


def env_of(settings: dict[str, Any]) -> dict[str, str]:
    """Settings by field name (``create_grace``) as the ``HUB_*`` variables a node reads."""
    return {f"HUB_{name.upper()}": str(value) for name, value in settings.items()}


async def rest(node: HubProcess, method: str, path: str, **kw: Any) -> httpx.Response:
    async with httpx.AsyncClient(base_url=node.url, timeout=5 * T) as http:
        return await http.request(method, path, **kw)


async def workspace(cluster: Cluster) -> str:
    response = await rest(cluster.nodes[0], "POST", "/v1/workspaces", json={"path": "/c"})
    workspace_id: str = response.json()["id"]
    return workspace_id


async def same_on_both(cluster: Cluster, path: str) -> Any:
    a, b = [(await rest(node, "GET", path)).json() for node in cluster.nodes]
    assert a == b
    return a


class Truth:
    """The counting rule over the sockets a test holds open: each open viewer's client and the
    session it last asked for."""

    def __init__(self) -> None:
        self.viewers: dict[Viewer, int] = {}  # viewer -> the node it is on
        self.sessions: dict[str, str] = {}  # client -> session

    def add(self, viewer: Viewer, node: int, session: str) -> None:
        self.viewers[viewer] = node
        self.sessions[viewer.client_id] = session

    def drop_node(self, node: int) -> None:
        """The node died: its sockets are gone."""
        for viewer, on in list(self.viewers.items()):
            if on == node:
                del self.viewers[viewer]
                self.sessions.pop(viewer.client_id, None)

    def want(self) -> tuple[int, dict[str, int]]:
        counts: dict[str, int] = {}
        for session in self.sessions.values():
            if session:
                counts[session] = counts.get(session, 0) + 1
        return len(self.sessions), counts


async def shows(viewer: Viewer, want: tuple[int, dict[str, int]]) -> bool:
    """Whether the socket's view is ``want`` (reading what it was sent meanwhile)."""
    try:
        await viewer.until(lambda v: (v.online, v.counts) == want, within=0.05)
    except (AssertionError, TimeoutError):
        return False
    return True


async def mismatch(cluster: Cluster, workspace_id: str, truth: Truth, nodes: list[int]) -> str:
    """What differs from the truth on a node's REST answer or an open socket ("" if nothing);
    never a 500."""
    want = truth.want()
    for node in nodes:
        response = await rest(cluster.nodes[node], "GET", f"/v1/workspaces/{workspace_id}/presence")
        assert response.status_code in (200, 503), response.text
        if response.status_code != 200:
            return f"node {node}: {response.status_code}"
        body = response.json()
        if (body["online"], body["counts"]) != want:
            return f"node {node}: {body['online']} {body['counts']}"
    for viewer in truth.viewers:
        if not await shows(viewer, want):
            return f"socket on node {truth.viewers[viewer]}: {viewer.online} {viewer.counts}"
    return ""


async def converge(
    cluster: Cluster, workspace_id: str, truth: Truth, nodes: list[int], within: float
) -> float:
    """Wait until nothing differs from the truth (:func:`mismatch`); the seconds it took.
    Fails after ``within``."""
    started = time.monotonic()
    while differs := await mismatch(cluster, workspace_id, truth, nodes):
        took = time.monotonic() - started
        assert took < within, f"not converged within {within} s: want {truth.want()}, {differs}"
        await asyncio.sleep(0.05)
    for viewer in truth.viewers:  # seq never went down on any socket
        assert viewer.seqs_seen == sorted(viewer.seqs_seen), viewer.seqs_seen
    return time.monotonic() - started


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


async def change(truth: Truth, node: int, session: str) -> tuple[Viewer, str]:
    """A viewer on ``node`` moves to ``session`` (with a ref: its answer must come); the
    viewer and the session it had."""
    mover = next(v for v, on in truth.viewers.items() if on == node)
    before = truth.sessions[mover.client_id]
    await mover.send({"type": "set_session", "session_id": session, "ref": session})
    truth.sessions[mover.client_id] = session
    return mover, before


async def answered(viewer: Viewer, ref: str, within: float) -> dict[str, object]:
    """The ack or error frame for ``ref`` (never no answer)."""
    await viewer.until(lambda v: any(f.get("ref") == ref for f in v.frames), within)
    return next(f for f in viewer.frames if f.get("ref") == ref)


async def settle_change(truth: Truth, viewer: Viewer, ref: str, before: str) -> None:
    """The truth is what the hub acknowledged: a change refused (``unavailable``, the honest
    answer while the link is down) leaves the viewer where it was."""
    answer = await answered(viewer, ref, within=BOUND)
    if answer["type"] == "error":
        print(f"{ref} refused during the fault: {answer}")
        truth.sessions[viewer.client_id] = before
