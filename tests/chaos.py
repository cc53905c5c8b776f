"""Randomized fault schedules against several real ``hub serve`` nodes, checked against the truth.

A schedule is a seed. It starts ``nodes`` hub processes on one redis-server of its own (each
node's Redis link through a :class:`~tests.faultproxy.FaultProxy` of its own), a fresh
PostgreSQL database (:class:`tests.clusters.Cluster`) and a webhook receiver that checks every
signature (:class:`tests.receiver.Receiver`). About 40 clients in 3 workspaces (most of them
named users, several clients per user, some with two streams) open streams on random nodes,
switch sessions (frames and REST), close streams, release and get retired at random, while one
or two faults at a time hit the set-up: a node paused (SIGSTOP) or killed and restarted, Redis
paused or restarted empty, a node's Redis link stalled, reset, silently dropped or slowed.

After every heal the truth is computed from the counting rule (docs/protocol.md sections 2 and 9)
over the streams the test holds open and the operations the hub acknowledged, and every node's
REST answers, every open socket and the webhooks' last events must come to it within
:data:`BOUND` seconds. Along the way: ``seq`` never goes down on a socket, no join is refused
4403 (each client always presents its own user), no HTTP status 5xx but 503, no close 1011, and
a retired client's sockets are closed with 4410.

What the test cannot know it does not guess. An operation answered with an error or not
answered at all (``unavailable``, a 503, a timeout, a socket that died first) may or may not
have taken effect: the client's state is then *unsure* until a later acknowledged operation
settles it (after the heal the test repeats it until the hub acknowledges). So is the state of
a client without a stream when Redis restarts empty: Redis has no persistence here and no node
holds a socket of that client to re-assert it (docs/scaling.md, "Redis outage"), so its grace
claim may be gone. Grace claims count nowhere (docs/protocol.md section 2, the counting rule), and
the grace here is an hour, so a client that reconnects keeps its session.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import signal
import statistics
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import httpx
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from tests.clusters import Cluster
from tests.faultproxy import FaultProxy
from tests.harness import HubProcess, Viewer, new_client_id
from tests.receiver import SECRET, Receiver
from tests.services import RedisServer

BOUND = 10.0  # seconds from a heal to the truth everywhere (issue 30's done-when)
ANSWER = 6.0  # how long an operation waits for its answer before it counts as unanswered
LATE = 2.5  # after the heal, by when a request held by a frozen node has been applied (the
# hub answers within HUB_REDIS_TIMEOUT, 2 s, once it runs again)
SESSIONS = ("S1", "S2", "S3", "S4")  # each with a session record; "" is the landing page
USERS = ("ana", "bo", "cy", "dee", "eli", "fay")
FAULT_KINDS = (
    "node-pause", "node-kill", "redis-pause", "redis-restart",
    "link-stall", "link-reset", "link-drop", "link-slow",
)  # fmt: skip


class Violation(Exception):
    """The hub broke a promise; the message says which and with what."""


@dataclass(eq=False)
class Stream:
    """One WebSocket of a client, read all the time by a task of its own, as a UI reads it."""

    client: Client
    node: int
    viewer: Viewer
    generation: int  # the node's generation (restarts) when the stream opened
    task: asyncio.Task[None] | None = None
    close_code: int | None = None
    closed_by_us: bool = False
    must_4410: bool = False  # open when its client's retire was acknowledged
    answers: dict[str, dict[str, Any]] = field(default_factory=dict)  # ref -> ack or error
    pending: set[str] = field(default_factory=set)  # refs sent, not answered yet

    @property
    def open(self) -> bool:
        return self.task is not None and not self.task.done()

    async def read(self, chaos: Chaos) -> None:
        last = -1
        try:
            while True:
                raw = await self.viewer.ws.recv()
                frame: dict[str, Any] = json.loads(raw)
                self.viewer.apply(frame)
                if frame["type"] in ("snapshot", "counts", "ack") and "seq" in frame:
                    if frame["seq"] < last:
                        chaos.violation(
                            f"seq went down on a socket of {self.client.name} (node "
                            f"{self.node}): {last} then {frame['seq']} ({frame['type']})"
                        )
                    last = max(last, frame["seq"])
                ref = frame.get("ref")
                if frame["type"] in ("ack", "error") and isinstance(ref, str):
                    self.answers[ref] = frame
                    self.pending.discard(ref)
        except ConnectionClosed:
            self.close_code = self.viewer.ws.close_code
        except Exception as exc:  # noqa: BLE001 (reported, never swallowed)
            chaos.violation(f"a socket of {self.client.name} failed: {exc!r}")
        if not self.closed_by_us:
            chaos.count(f"closed-{self.close_code}", self.client, f"node {self.node} (server)")
        if self.close_code == 1011:
            chaos.violation(f"a socket of {self.client.name} closed 1011 (internal error)")
        if self.close_code == 4403:
            chaos.violation(f"a socket of {self.client.name} closed 4403 after it joined")
        if self.close_code == 4410 and not self.client.retired:
            chaos.violation(f"{self.client.name} was closed 4410 but never retired")


@dataclass(eq=False)
class Client:
    """A client id in one workspace, with what the hub acknowledged about its claim."""

    id: str
    workspace: str
    user: str | None  # None: anonymous (a user of its own)
    name: str
    streams: list[Stream] = field(default_factory=list)
    session: str = ""  # the session of its last acknowledged set_session
    released: bool = False  # its claim carries the released mark (acknowledged)
    sure: bool = True  # False: an unanswered set_session may or may not have taken effect
    released_sure: bool = True  # False: likewise for a release
    ended: bool = False  # a released claim's last stream closed: no claim until it opens again
    retired: bool = False
    # A REST set_session that got no answer may still be applied (its node was frozen): no
    # more operations for this client until the round's heal has let it through.
    rest_in_flight: bool = False
    retire_sure: bool = True  # False: a retire was sent but not acknowledged
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    history: deque[str] = field(default_factory=lambda: deque(maxlen=16))

    def open_streams(self) -> list[Stream]:
        return [s for s in self.streams if s.open]

    def forget_closed(self) -> None:
        """Drop the streams that ended. A released claim's last close ends it (no grace): the
        claim must be gone. Its next stream starts a new claim (session "", not released),
        unless that join reaches the hub before the old stream's close did (a close travels on
        its own socket, maybe to a frozen node; order across sockets is not promised): so the
        next stream finds either, and the client is unsure until settled. A release that was
        not answered may have landed (a reply lost in a stalled link): then the last close
        ended the claim and took its session with it, so the session is unsure too."""
        self.streams = [s for s in self.streams if s.open]
        if not self.streams and self.released and self.released_sure:
            self.session, self.released, self.ended = "", False, True
        elif not self.streams and not self.released_sure:
            self.sure = False

    def joined(self) -> None:
        """A stream of it joined."""
        if self.ended:
            self.ended, self.sure, self.released_sure = False, False, False


@dataclass
class Round:
    index: int
    faults: list[str]
    ops: dict[str, int]
    converged: float | None = None  # seconds from the heal to the truth
    violations: list[str] = field(default_factory=list)


@dataclass
class Node:
    """A hub process and what it printed (drained all along: a full pipe would stall it)."""

    process: HubProcess
    url: str  # its Redis URL (its fault proxy)
    generation: int = 0
    log: deque[str] = field(default_factory=lambda: deque(maxlen=400))
    file: Path | None = None  # every line is appended here too (--logs)
    errors: list[str] = field(default_factory=list)  # its ERROR lines: each a defect

    reader: threading.Thread | None = None

    def drain(self) -> None:
        def pump(process: HubProcess, log: deque[str]) -> None:
            assert process.proc.stdout is not None
            out = self.file.open("a") if self.file is not None else None
            with contextlib.suppress(ValueError, OSError):  # closed by a kill9's communicate
                for raw in process.proc.stdout:
                    line = raw.decode(errors="replace").rstrip()
                    if " ERROR " in line:
                        self.errors.append(line)
                    log.append(line)
                    if out is not None:
                        out.write(line + "\n")
                        out.flush()
            if out is not None:
                out.close()

        self.reader = threading.Thread(target=pump, args=(self.process, self.log), daemon=True)
        self.reader.start()


class Chaos:
    """One schedule: the set-up, the workload, the faults and the checks, from one seed."""

    def __init__(
        self,
        seed: int,
        tmp: Path,
        nodes: int = 3,
        clients: int = 40,
        workspaces: int = 3,
        say: Callable[[str], None] = print,
        logs: Path | None = None,
    ) -> None:
        """``logs``: a folder for every node's whole log, at debug level (``node-<i>.log``),
        and the workload's operations with their wall-clock times (``ops.log``), to read a
        failing seed against."""
        self.seed = seed
        self.logs = logs
        self.rng = random.Random(seed)
        self.tmp = tmp
        self.n_nodes = nodes
        self.n_clients = clients
        self.n_workspaces = workspaces
        self.say = say
        self.clients: list[Client] = []
        self.workspaces: list[str] = []
        self.down: set[int] = set()  # nodes killed and not restarted yet
        self.paused: set[int] = set()
        self.violations: list[str] = []
        self.rounds: list[Round] = []
        self.ops: dict[str, int] = {}
        self.redis_restarted = False  # in this round: grace claims may be gone
        # When Redis last lost its data (the Redis clock in microseconds, the unit of a
        # re-made workspace's first seq): which sessions were occupied is forgotten with it
        self.redis_lost_at = 0
        self.forgotten: set[str] = set()  # (workspace, session) whose vacated event is lost
        self.http = httpx.AsyncClient(timeout=ANSWER)
        self.cluster: Cluster | None = None
        self.nodes: list[Node] = []
        self.proxies: list[FaultProxy] = []
        self.receiver = Receiver().start()
        self.next_name = 0
        self.started = time.monotonic()

    # -- set-up -----------------------------------------------------------------------------

    async def start(self) -> None:
        redis = await asyncio.to_thread(RedisServer)
        self.proxies = [await FaultProxy(redis.port).start() for _ in range(self.n_nodes)]
        env = {
            "HUB_NODE_TTL": "2",
            "HUB_DETACH_GRACE": "3600",  # a reconnect keeps its session all along the run
            "HUB_CREATE_GRACE": "1",
            "HUB_WEBHOOK_URL": self.receiver.url,
            "HUB_WEBHOOK_SECRET": SECRET,
            "HUB_WEBHOOK_VACATED_DELAY": "1",
            "HUB_WEBHOOK_RETRY_MAX": "2",  # a delivery that failed during a fault comes soon
        }
        if self.logs is not None:
            env["HUB_LOG_LEVEL"] = "debug"
            self.logs.mkdir(parents=True, exist_ok=True)
        urls = [p.url for p in self.proxies]
        self.cluster = await asyncio.to_thread(Cluster, self.tmp, redis, urls, **env)
        self.nodes = [Node(p, u) for p, u in zip(self.cluster.nodes, urls, strict=True)]
        for i, node in enumerate(self.nodes):
            node.file = self.logs / f"node-{i}.log" if self.logs is not None else None
            node.drain()
        for i in range(self.n_workspaces):
            body = {"path": f"/chaos/{self.seed}/{i}"}
            w = (await self.rest(0, "POST", "/v1/workspaces", json=body)).json()["id"]
            self.workspaces.append(w)
            for s in SESSIONS:
                r = await self.rest(0, "POST", f"/v1/workspaces/{w}/sessions", json={"id": s})
                assert r.status_code == 201, r.text
        for _ in range(self.n_clients):
            self.new_client()

    def new_client(self) -> Client:
        """A client in a random workspace: a named user two times in three."""
        user = self.rng.choice(USERS) if self.rng.random() < 0.67 else None
        c = Client(new_client_id(), self.rng.choice(self.workspaces), user, f"c{self.next_name}")
        c.name += f"({user or 'anon'})"
        self.next_name += 1
        self.clients.append(c)
        return c

    async def stop(self) -> None:
        for c in self.clients:
            for s in c.streams:
                if s.task is not None:
                    s.task.cancel()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(s.viewer.ws.close(), 1)
        await self.http.aclose()
        for node in self.nodes:
            proc = node.process.proc
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGCONT)
                    proc.send_signal(signal.SIGINT)
                try:
                    await asyncio.to_thread(proc.wait, 10)
                except Exception:  # noqa: BLE001 (it did not stop: it is killed, never left)
                    proc.kill()
                    proc.wait()
            if node.reader is not None:
                await asyncio.to_thread(node.reader.join, 5)
            if proc.stdout is not None:
                proc.stdout.close()
        for proxy in self.proxies:
            await proxy.close()
        if self.cluster is not None:
            self.cluster.redis.kill()
            await asyncio.to_thread(self.cluster.database.drop)
        self.receiver.stop()

    @property
    def redis(self) -> RedisServer:
        assert self.cluster is not None
        return self.cluster.redis

    def live(self) -> list[int]:
        return [i for i in range(self.n_nodes) if i not in self.down]

    def violation(self, what: str) -> None:
        self.violations.append(what)

    # -- talking to the hub -----------------------------------------------------------------

    async def rest(self, node: int, method: str, path: str, **kw: Any) -> httpx.Response:
        """A REST call; any 5xx but 503 is a violation."""
        url = self.nodes[node].process.url if self.nodes else self.cluster_url(node)
        response = await self.http.request(method, url + path, **kw)
        if response.status_code >= 500 and response.status_code != 503:
            self.violation(
                f"{method} {path} on node {node}: {response.status_code} {response.text}"
            )
        return response

    def cluster_url(self, node: int) -> str:
        assert self.cluster is not None
        return self.cluster.nodes[node].url

    def ws_url(self, node: int, c: Client) -> str:
        port = self.nodes[node].process.port
        user = f"&user_id={c.user}" if c.user else ""
        return f"ws://127.0.0.1:{port}/v1/workspaces/{c.workspace}/ws?client_id={c.id}{user}"

    # -- operations (each records whether the hub acknowledged it) --------------------------

    def count(self, op: str, c: Client | None = None, detail: str = "") -> None:
        """Count an operation's outcome, and keep it in the client's history (for a report)."""
        self.ops[op] = self.ops.get(op, 0) + 1
        if c is not None:
            c.history.append(f"{time.monotonic() - self.started:.2f} {op} {detail}".rstrip())
        self.trace(f"{op} {c.name} {c.id} {detail}" if c is not None else f"{op} {detail}")

    def trace(self, line: str) -> None:
        """One line of ops.log (with ``logs``): the wall-clock time, as the nodes' logs."""
        if self.logs is not None:
            now = time.time()
            stamp = time.strftime("%H:%M:%S", time.gmtime(now)) + f".{int(now * 1000) % 1000:03d}"
            with (self.logs / "ops.log").open("a") as out:
                out.write(f"{stamp} {line.rstrip()}\n")

    async def open_stream(self, c: Client, node: int) -> Stream | None:
        """Open a stream; it is open in the truth once its snapshot came."""
        try:
            ws = await asyncio.wait_for(
                connect(self.ws_url(node, c), compression=None, close_timeout=1, open_timeout=None),
                ANSWER,
            )
        except (TimeoutError, OSError, InvalidHandshake) as exc:
            if isinstance(exc, InvalidStatus) and exc.response.status_code >= 500:
                self.violation(f"join of {c.name} on node {node}: {exc.response.status_code}")
            self.count("open-failed", c, f"node {node}")
            return None
        viewer = Viewer(ws, c.id)
        try:
            first = json.loads(await asyncio.wait_for(ws.recv(), ANSWER))
        except ConnectionClosed:
            code = ws.close_code
            if code == 4403:
                self.violation(f"spurious 4403: {c.name} refused its own user on node {node}")
            elif code in (4410, 1011) or (code is not None and code >= 4000 and code != 4429):
                self.violation(f"join of {c.name} on node {node} closed {code}")
            self.count(f"open-closed-{code}", c, f"node {node}")
            return None
        except TimeoutError:  # abandoned: it must leave nothing behind (no ghost)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(), 1)
            self.count("open-abandoned", c, f"node {node}")
            return None
        viewer.apply(first)
        stream = Stream(c, node, viewer, self.nodes[node].generation)
        stream.task = asyncio.ensure_future(stream.read(self))
        c.streams.append(stream)
        c.joined()
        self.count("open", c, f"node {node}")
        return stream

    async def set_session_frame(self, c: Client, stream: Stream, session: str) -> bool:
        """``set_session`` on a socket; True if acknowledged (the truth moves only then)."""
        ref = f"{c.name}-{self.rng.getrandbits(40):x}"
        stream.pending.add(ref)
        try:
            await stream.viewer.send({"type": "set_session", "session_id": session, "ref": ref})
        except ConnectionClosed:
            stream.pending.discard(ref)
            self.count("set-unsent", c, session)
            return False
        await poll(lambda: ref in stream.answers or not stream.open, time.monotonic() + ANSWER)
        answer = stream.answers.get(ref)
        if answer is not None and answer["type"] == "ack":
            c.session, c.sure = session, True
            self.count("set-acked", c, f"{session!r} node {stream.node} seq {answer['seq']}")
            return True
        c.sure = False  # refused (it may still land: a retry on a dead link) or unanswered
        self.count("set-" + (str(answer.get("code")) if answer else "unanswered"), c, session)
        return False

    async def set_session_rest(self, c: Client, node: int, session: str) -> None:
        path = f"/v1/workspaces/{c.workspace}/current-session"
        try:
            r = await self.rest(
                node, "POST", path, params={"client_id": c.id}, json={"session_id": session}
            )
        except httpx.HTTPError:
            c.sure, c.rest_in_flight = False, True
            self.count("rest-set-unanswered", c, f"{session!r} node {node}")
            return
        if r.status_code == 200:
            c.session, c.sure = session, True
        elif r.status_code == 409:  # not attached, as the store sees it now: nothing changed
            pass
        else:
            c.sure = False
        self.count(f"rest-set-{r.status_code}", c, f"{session!r} node {node}")

    async def release(self, c: Client, node: int) -> bool:
        try:
            r = await self.rest(node, "DELETE", f"/v1/workspaces/{c.workspace}/clients/{c.id}")
        except httpx.HTTPError:
            r = None
        self.count(f"release-{r.status_code if r else 'unanswered'}", c, f"node {node}")
        if r is not None and r.status_code == 204:
            c.released, c.released_sure = True, True
            c.forget_closed()  # no stream: the claim is gone, so is its session
            return True
        if not (c.released and c.released_sure):  # adds nothing to an acked release
            c.released_sure = False
        return False

    async def retire(self, c: Client, node: int) -> bool:
        c.retired = True  # from now on it is never used again; it must count nowhere
        try:
            r = await self.rest(node, "DELETE", f"/v1/clients/{c.id}")
        except httpx.HTTPError:
            r = None
        self.count(f"retire-{r.status_code if r else 'unanswered'}", c, f"node {node}")
        c.retire_sure = r is not None and r.status_code == 204
        if c.retire_sure:
            for s in c.open_streams():
                s.must_4410 = True
        return c.retire_sure

    async def close_stream(self, stream: Stream) -> None:
        stream.closed_by_us = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(stream.viewer.ws.close(), 2)
        if stream.task is not None:
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(stream.task), 1)
            if not stream.task.done():  # the peer is frozen: the socket is gone from our side
                stream.viewer.ws.transport.abort()
                stream.task.cancel()
        self.count("close", stream.client, f"node {stream.node}")

    async def op(self) -> None:
        """One random operation of a random client (its lock held: one at a time per client,
        and a socket closes only once its switches were answered)."""
        live = self.live()
        candidates = [c for c in self.clients if not c.retired and not c.rest_in_flight]
        if not live or not candidates:
            return
        c = self.rng.choice(candidates)
        async with c.lock:
            # A frame still unanswered may land late, after anything sent now on another way
            # (order holds per socket only): wait for its answer, else leave the client alone.
            await poll(partial(answered, c.open_streams()), time.monotonic() + ANSWER)
            if not answered(c.open_streams()):
                return
            c.forget_closed()
            if self.redis_restarted and not c.open_streams():  # its last stream closed since
                c.sure = c.released_sure = c.ended = False
            streams = c.open_streams()
            roll = self.rng.random()
            node = self.rng.choice(live)
            if not streams or (roll < 0.15 and len(streams) < 2):
                stream = await self.open_stream(c, node)
                if stream is not None:  # settle what the hub holds for it
                    if not c.sure:
                        await self.set_session_frame(c, stream, self.rng.choice(SESSIONS))
                    if not c.released_sure:
                        await self.release(c, self.rng.choice(self.live()))
            elif roll < 0.50:
                await self.set_session_frame(c, self.rng.choice(streams), self.session_for())
            elif roll < 0.62:
                await self.set_session_rest(c, node, self.session_for())
            elif roll < 0.80:
                await self.close_stream(self.rng.choice(streams))
            elif roll < 0.92:
                await self.release(c, node)
            elif roll < 0.95:
                await self.retire(c, node)
                self.new_client()
            c.forget_closed()

    def session_for(self) -> str:
        return self.rng.choice(SESSIONS + ("",))

    async def workload(self, stop: asyncio.Event, workers: int = 4) -> None:
        async def worker() -> None:
            while not stop.is_set():
                await self.op()
                await asyncio.sleep(self.rng.uniform(0.02, 0.25))

        await asyncio.gather(*(worker() for _ in range(workers)))

    # -- faults -----------------------------------------------------------------------------

    def pick_faults(self) -> list[tuple[str, int, float]]:
        """One or two faults (kind, node, seconds) that do not hit the same thing."""
        picked: list[tuple[str, int, float]] = []
        used: set[str] = set()
        for _ in range(1 if self.rng.random() < 0.5 else 2):
            kind = self.rng.choice(FAULT_KINDS)
            node = self.rng.randrange(self.n_nodes)
            target = "redis" if kind.startswith("redis") else f"node{node}"
            if target in used or (
                kind == "node-kill" and any(k == "node-kill" for k, *_ in picked)
            ):
                continue
            used.add(target)
            picked.append((kind, node, round(self.rng.uniform(1.0, 6.0), 1)))
        return picked

    async def fault(self, kind: str, node: int, seconds: float) -> None:
        """Apply one fault and heal it; returns once healed."""
        await asyncio.sleep(self.rng.uniform(0.0, 1.0))
        proxy = self.proxies[node]
        self.trace(f"fault {describe(kind, node, seconds)}: begins")
        try:
            await self._fault(kind, node, seconds, proxy)
        finally:
            self.trace(f"fault {describe(kind, node, seconds)}: healed")

    async def _fault(self, kind: str, node: int, seconds: float, proxy: FaultProxy) -> None:
        if kind == "node-pause":
            proc = self.nodes[node].process.proc
            self.paused.add(node)
            proc.send_signal(signal.SIGSTOP)
            await asyncio.sleep(seconds)
            proc.send_signal(signal.SIGCONT)
            self.paused.discard(node)
        elif kind == "node-kill":
            self.down.add(node)
            await asyncio.to_thread(self.nodes[node].process.kill9)
            await asyncio.sleep(seconds)
            await self.restart_node(node)
            self.down.discard(node)
        elif kind == "redis-pause":
            assert self.redis.proc is not None
            self.redis.proc.send_signal(signal.SIGSTOP)
            await asyncio.sleep(seconds)
            self.redis.proc.send_signal(signal.SIGCONT)
        elif kind == "redis-restart":
            self.redis_restarted = True
            self.redis_lost_at = time.time_ns() // 1000
            await asyncio.to_thread(self.redis.kill)
            self.lost_with_redis()
            await asyncio.sleep(seconds / 3)
            await asyncio.to_thread(self.redis.start)
        elif kind == "link-stall":
            proxy.stall()
            await asyncio.sleep(seconds)
            proxy.resume()
        elif kind == "link-reset":
            proxy.reset()
        elif kind == "link-drop":
            proxy.drop_silently()
            await asyncio.sleep(seconds)  # the node must find out by itself
        elif kind == "link-slow":
            proxy.delay = 0.3
            await asyncio.sleep(seconds)
            proxy.delay = 0.0

    def lost_with_redis(self) -> None:
        """Redis lost its data (or is about to, until the round's heal): a client without a
        stream had its claim in Redis alone (no node holds a socket of it to re-assert it), so
        what its next stream finds is unknown: a fresh claim, or the old one if it reaches the
        hub first. It is unsure until a set_session and a release are acknowledged."""
        for c in self.clients:
            c.forget_closed()
            if not c.retired and not c.open_streams():
                c.sure = c.released_sure = False
                c.ended = False

    async def restart_node(self, node: int) -> None:
        assert self.cluster is not None
        old = self.nodes[node]
        env = {**self.cluster.env, "HUB_REDIS_URL": old.url}
        process = await asyncio.to_thread(HubProcess, self.tmp / "unused.db", **env)
        fresh = Node(process, old.url, old.generation + 1, old.log, old.file, old.errors)
        fresh.drain()
        self.nodes[node] = fresh
        self.cluster.nodes[node] = process

    # -- after the heal ---------------------------------------------------------------------

    async def settle(self, deadline: float) -> None:
        """Make every unsure state sure again by repeating the operation until the hub
        acknowledges it (first waiting for the answers still due on the client's sockets: a
        late answer settles it too, and a new frame must not overtake an old one)."""
        if self.redis_restarted:
            self.lost_with_redis()
            self.redis_restarted = False

        if any(c.rest_in_flight for c in self.clients):  # let a late REST call land first
            await asyncio.sleep(max(0.0, deadline - BOUND + LATE - time.monotonic()))
            for c in self.clients:
                c.rest_in_flight = False

        async def one(c: Client) -> None:
            async with c.lock:
                while time.monotonic() < deadline:
                    c.forget_closed()
                    streams = c.open_streams()
                    if c.retired:
                        if c.retire_sure or await self.retire(c, self.rng.choice(self.live())):
                            return
                    elif (c.sure and c.released_sure) or not streams:
                        return  # (without a stream: settled when it opens one again)
                    else:
                        # a late answer first (it settles too), then the next frame
                        await poll(partial(answered, streams), deadline)
                        if not c.sure:
                            await self.set_session_frame(c, streams[0], self.session_for())
                        if c.sure and not c.released_sure:
                            await self.release(c, self.rng.choice(self.live()))
                        if c.sure and c.released_sure:
                            return
                    await asyncio.sleep(0.2)

        await asyncio.gather(*(one(c) for c in self.clients))

    def truth(self, w: str) -> dict[str, Any]:
        """The counting rule over the streams the test holds open (unsure clients excluded:
        :meth:`settle` left none with a stream)."""
        attached = [
            c for c in self.clients if c.workspace == w and not c.retired and c.open_streams()
        ]
        counts: dict[str, int] = {}
        users: dict[str, set[str]] = {}
        for c in attached:
            users.setdefault(c.session, set()).add(c.user or c.id)
            counts[c.session] = counts.get(c.session, 0) + 1
        every = {c.user or c.id for c in attached}
        return {
            "online": len(attached),
            "counts": {s: n for s, n in counts.items() if s},
            "online_users": len(every),
            "users": {s: len(u) for s, u in users.items() if s},
            "attached": {c.id: c for c in attached},
        }

    async def differences(self) -> list[str]:
        """What differs from the truth now, on any node, socket or webhook ("": nothing)."""
        out: list[str] = []
        for w in self.workspaces:
            t = self.truth(w)
            want = (t["online"], t["counts"], t["online_users"], t["users"])
            for node in self.live():
                out += await self.node_differences(node, w, t, want)
            for c in t["attached"].values():
                for s in c.open_streams():
                    v = s.viewer
                    have = (v.online, v.counts, v.online_users, v.users)
                    if have != want:
                        tail = [json.dumps(f)[:300] for f in v.frames[-3:]]
                        out.append(
                            f"{w[:8]} socket of {c.name} on node {s.node} at seq {v.seq}: "
                            f"{have} != {want}; its last frames {tail}"
                        )
            out += self.webhook_differences(w, t)
        for c in self.clients:
            if not c.retired and c.open_streams() and not (c.sure and c.released_sure):
                out.append(f"{c.name}: its state could not be settled (no acknowledgement)")
            for s in c.streams if c.retired else ():
                if s.open and c.retire_sure:
                    out.append(f"{c.name} retired, its socket on node {s.node} still open")
                elif s.must_4410 and not s.open and s.close_code != 4410:
                    if s.generation == self.nodes[s.node].generation:  # (not killed meanwhile)
                        out.append(f"{c.name} retired, its socket closed {s.close_code}")
        return out

    async def node_differences(
        self, node: int, w: str, t: dict[str, Any], want: tuple[Any, ...]
    ) -> list[str]:
        out = []
        where = f"{w[:8]} node {node}"
        try:
            presence = await self.rest(node, "GET", f"/v1/workspaces/{w}/presence")
            record = await self.rest(node, "GET", f"/v1/workspaces/{w}")
            sessions = await self.rest(node, "GET", f"/v1/workspaces/{w}/sessions")
            claims = await self.rest(node, "GET", f"/v1/workspaces/{w}/clients")
        except httpx.HTTPError as exc:
            return [f"{where}: {exc!r}"]
        for r in (presence, record, sessions, claims):
            if r.status_code != 200:
                return [f"{where}: {r.request.url.path} {r.status_code}"]
        p = presence.json()
        have = (p["online"], p["counts"], p["online_users"], p.get("users", {}))
        if have != want:
            out.append(f"{where} presence {have} != {want}")
        if record.json()["online"] != t["online"]:
            out.append(f"{where} workspace record online {record.json()['online']}")
        for s in sessions.json():
            pair = (s["attached_clients"], s["attached_users"])
            should = (t["counts"].get(s["id"], 0), t["users"].get(s["id"], 0))
            if pair != should:
                out.append(f"{where} session record {s['id']} {pair} != {should}")
        by_id = {c.id: c for c in self.clients}
        attached: dict[str, Client] = t["attached"]
        for claim in claims.json():
            c = by_id.get(claim["client_id"])
            if c is None:
                out.append(f"{where}: a claim of an unknown client {claim}")
                continue
            if claim["streams"] >= 1 and c.id not in attached:
                state = "retired" if c.retired else "no socket"
                out.append(f"{where}: ghost {c.name} ({state}): {claim}")
            elif claim["streams"] >= 1:
                expect = (len(c.open_streams()), c.session, c.released)
                got = (claim["streams"], claim["session_id"], claim["released"])
                if got != expect:
                    out.append(
                        f"{where}: claim of {c.name} {got} != {expect} (streams, session, released)"
                    )
            elif c.retired:
                out.append(f"{where}: retired {c.name} still has a claim {claim}")
            elif c.sure and c.released_sure and not c.released:  # grace keeps the session
                if claim["session_id"] != c.session or claim["released"]:
                    out.append(f"{where}: grace claim of {c.name} {claim} != session {c.session!r}")
            elif c.ended:
                out.append(f"{where}: released {c.name} without a stream still has {claim}")
        listed = {claim["client_id"] for claim in claims.json() if claim["streams"] >= 1}
        for c in attached.values():
            if c.id not in listed:
                out.append(f"{where}: claim of {c.name} missing ({len(c.open_streams())} streams)")
        return out

    def webhook_differences(self, w: str, t: dict[str, Any]) -> list[str]:
        """The newest (highest seq) occupied/vacated event per workspace and session."""
        last: dict[str | None, dict[str, Any]] = {}
        history: dict[str | None, list[dict[str, Any]]] = {}
        for e in self.receiver.unique():
            if e["workspace_id"] != w:
                continue
            key = e.get("session_id")
            history.setdefault(key, []).append(e)
            if key not in last or e["seq"] >= last[key]["seq"]:
                last[key] = e
        out = []
        for s in (None, *SESSIONS):
            n = t["online"] if s is None else t["counts"].get(s, 0)
            kind = "workspace" if s is None else "session"
            word = "occupied" if n else "vacated"
            event = last.get(s, {"name": f"{kind}_vacated", "seq": 0})
            if event["name"] == f"{kind}_{word}":
                continue
            if not n and event["seq"] < self.redis_lost_at:
                # Occupied before Redis lost its data, emptied since: no vacated event will
                # come. Documented (docs/webhooks.md, "What is not sent"): tolerated, and
                # counted in the report, never taken for the truth.
                self.forgotten.add(f"{w}/{s or ''}")
                continue
            seen = [(e["name"], e["seq"]) for e in history.get(s, [])[-4:]]
            out.append(
                f"{w[:8]} webhook {s or '(workspace)'}: last {event['name']}, {n} there; {seen}"
            )
        if self.receiver.bad_signatures:
            out.append(f"webhook: {self.receiver.bad_signatures} bad signatures")
        return out

    def redis_dump(self) -> list[str]:
        """Redis's webhook and timer records of each workspace (for a violation's report)."""
        import redis

        client = redis.Redis(port=self.redis.port, decode_responses=True, socket_timeout=2)
        out = []
        try:
            for w in self.workspaces:
                hooks = client.hgetall(f"hub:{{{w}}}:hooks")
                timers = client.zrange(f"hub:{{{w}}}:timers", 0, -1, withscores=True)
                index = client.zscore("hub:timers", w)
                out.append(f"redis {w[:8]}: hooks {hooks} timers {timers[:8]} index {index}")
            out.append(f"redis: outbox groups {client.xinfo_groups('hub:webhooks')}")
        except redis.RedisError as exc:
            out.append(f"redis: {exc!r}")
        finally:
            client.close()
        return out

    async def converge(self, healed: float) -> float | None:
        """Seconds from the heal to the truth everywhere; None (and a violation with what
        still differed) after :data:`BOUND`."""
        await self.settle(healed + BOUND)
        while True:
            diff = await self.differences()
            if not diff:
                return time.monotonic() - healed
            if time.monotonic() - healed > BOUND:
                diff = diff[:25]
                named = {c.name for c in self.clients if f" {c.name} " in " ".join(diff)}
                for c in self.clients:
                    if c.name in named:
                        diff.append(f"history of {c.name}: " + "; ".join(c.history))
                diff += await asyncio.to_thread(self.redis_dump)
                self.violation(
                    f"not at the truth {BOUND:.0f} s after the heal:\n    " + "\n    ".join(diff)
                )
                return None
            await asyncio.sleep(0.1)

    # -- a schedule -------------------------------------------------------------------------

    async def run_round(self, index: int) -> Round:
        logged = [len(node.errors) for node in self.nodes]
        faults = self.pick_faults()
        self.ops = {}
        stop = asyncio.Event()
        work = asyncio.ensure_future(self.workload(stop))
        await asyncio.sleep(self.rng.uniform(0.5, 1.5))
        await asyncio.gather(*(self.fault(*f) for f in faults))
        healed = time.monotonic()
        stop.set()
        await work
        r = Round(index, [describe(*f) for f in faults], dict(self.ops))
        self.trace(f"round {index}: healed, converging")
        before = len(self.violations)
        r.converged = await self.converge(healed)
        for i, node in enumerate(self.nodes):  # what a node logged as an error is a defect
            for line in node.errors[logged[i] :]:
                self.violation(f"node {i} logged an error: {line}")
        r.violations = self.violations[before:]
        self.rounds.append(r)
        return r

    async def run(self, rounds: int) -> bool:
        """Every round of the schedule, stopping at the first that breaks a promise."""
        await self.start()
        await self.warm_up()
        forgotten = 0
        for i in range(rounds):
            r = await self.run_round(i + 1)
            took = "-" if r.converged is None else f"{r.converged:.2f} s"
            faults = ", ".join(r.faults)
            self.say(
                f"  round {r.index:2}: {faults:<44} converged {took}  ops {sum(r.ops.values())}"
            )
            if len(self.forgotten) > forgotten:
                lost = len(self.forgotten) - forgotten
                self.say(
                    f"    (webhooks: {lost} vacated events lost with Redis's data: documented)"
                )
                forgotten = len(self.forgotten)
            for v in r.violations:
                self.say(f"    VIOLATION {v}")
            if r.violations:
                for i, node in enumerate(self.nodes):
                    self.say(
                        f"    node {i} log tail:\n      " + "\n      ".join(list(node.log)[-15:])
                    )
                return False
        return True

    async def warm_up(self) -> None:
        """Every client opens a stream and picks a session, with no fault."""
        stop = asyncio.Event()
        for c in self.clients:
            async with c.lock:
                stream = await self.open_stream(c, self.rng.choice(self.live()))
                if stream is not None:
                    await self.set_session_frame(c, stream, self.session_for())
        before = len(self.violations)
        took = await self.converge(time.monotonic())
        stop.set()
        if self.violations[before:]:
            raise Violation("\n".join(self.violations[before:]))
        self.say(f"  warm-up: {len(self.clients)} clients converged in {took:.2f} s")


def answered(streams: list[Stream]) -> bool:
    """Whether every frame sent on these streams has had its answer."""
    return not any(s.pending for s in streams)


async def poll(done: Callable[[], bool], deadline: float) -> None:
    """Wait until ``done()`` or the deadline (monotonic seconds), whichever is first."""
    while True:
        if done() or time.monotonic() >= deadline:
            return
        await asyncio.sleep(0.02)


def describe(kind: str, node: int, seconds: float) -> str:
    where = "" if kind.startswith("redis") else f" node {node}"
    return f"{kind}{where}" + ("" if kind == "link-reset" else f" {seconds}s")


def convergence_figures(rounds: list[Round]) -> dict[str, tuple[int, float, float]]:
    """Per fault kind: (rounds, median, max) seconds from the heal to the truth."""
    by: dict[str, list[float]] = {}
    for r in rounds:
        if r.converged is None:
            continue
        for f in r.faults:
            by.setdefault(f.split()[0], []).append(r.converged)
    return {k: (len(v), statistics.median(v), max(v)) for k, v in sorted(by.items())}


async def run_schedule(
    seed: int,
    rounds: int,
    tmp: Path,
    nodes: int = 3,
    say: Callable[[str], None] = print,
    logs: Path | None = None,
) -> Chaos:
    chaos = Chaos(seed, tmp, nodes=nodes, say=say, logs=logs)
    try:
        await chaos.run(rounds)
    finally:
        await chaos.stop()
    return chaos


__all__ = ["BOUND", "Chaos", "Violation", "convergence_figures", "run_schedule"]
