"""How many round trips to Redis each operation of a hub node costs, counted on the wire.

A real ``hub serve`` process reaches its own ``redis-server`` through the tests' fault proxy
(:class:`tests.faultproxy.FaultProxy`), which records every exchange: on one connection, what
the client sent (a command, or a pipeline sent at once) up to the server's first byte back.
An operation (a REST call, a join up to its snapshot, a ``set_session`` up to its ack) costs
the exchanges that began while it ran, but the node's own background traffic, told apart by
what it sends: the timer sweep and index (scripts on ``hub:timers`` alone), the heartbeat and
the node registry (``hub:node:*``, ``hub:nodes``), and the change feed's pings and leaves.

With ``delay`` (seconds each way), the elapsed time cross-checks the count: an operation that
waits for n round trips in a row takes about n * 2 * delay.

Used by ``scripts/roundtrips.py`` (through a 100 ms link, a table for docs/scaling.md) and by
``tests/test_roundtrips.py`` (no delay: the counts against the targets).
"""

from __future__ import annotations

import asyncio
import hashlib
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.faultproxy import Exchange, FaultProxy
from tests.harness import HubProcess, Viewer
from tests.services import RedisServer

# What each operation may cost (the targets).
TARGETS = {"create": 3, "join (cold)": 2, "join (warm)": 2, "set_session": 1, "REST read": 1}


def commands(request: bytes | bytearray) -> list[list[bytes]]:
    """The commands in a request (RESP arrays of bulk strings, as redis-py sends them)."""
    found: list[list[bytes]] = []
    pos = 0
    while pos < len(request) and request[pos : pos + 1] == b"*":
        end = request.index(b"\r\n", pos)
        n, pos = int(request[pos + 1 : end]), end + 2
        command = []
        for _ in range(n):
            end = request.index(b"\r\n", pos)
            size = int(request[pos + 1 : end])
            command.append(bytes(request[end + 2 : end + 2 + size]))
            pos = end + 2 + size + 2
        found.append(command)
    return found


def script_names() -> dict[bytes, str]:
    """The SHA1 of each of the hub's scripts (as a node registers them) -> its name."""
    from hub.backends.redis import RedisBackend

    async def known(workspace_id: str) -> bool:
        return True

    backend = RedisBackend("redis://127.0.0.1:1/0", known=known)  # never connects
    return {str(script.sha).encode(): name for name, script in backend.scripts.items()}


SCRIPTS = script_names()
# The scripts a node runs by itself: its timer sweep, the timer index, and the expiry of the
# holds and graces the sweep finds due.
_BACKGROUND_SCRIPTS = {"due", "reindex", "arm", "expire"}


def _script_of(command: list[bytes]) -> str | None:
    """The name of the hub's script an EVALSHA runs or a SCRIPT LOAD loads (None: neither)."""
    name = command[0].upper()
    if name == b"EVALSHA" and len(command) > 1:
        return SCRIPTS.get(command[1], "?")
    if name == b"SCRIPT" and len(command) > 2 and command[1].upper() == b"LOAD":
        return SCRIPTS.get(hashlib.sha1(command[2]).hexdigest().encode(), "?")
    return None


def describe(command: list[bytes]) -> str:
    """A command's name, with the script's name after EVALSHA and SCRIPT (LOAD)."""
    script = _script_of(command)
    name = command[0].decode().upper()
    return name if script is None else f"{name} {script}"


def _background(command: list[bytes], feed: bool) -> bool:
    """Whether a command is the node's own background work (not an operation's); ``feed``:
    whether it went on a change feed connection."""
    name = command[0].upper()
    script = _script_of(command)
    if script is not None:
        return script in _BACKGROUND_SCRIPTS
    if name in (b"PING", b"UNSUBSCRIBE", b"SUNSUBSCRIBE"):
        return feed  # the feed's own check, its leaves; a PING elsewhere is a health check
    return len(command) > 1 and command[1].startswith((b"hub:node:", b"hub:nodes"))


def background(exchange: Exchange, feeds: set[int]) -> bool:
    """Whether every command of an exchange is background work (``feeds``: the connections
    that subscribed)."""
    try:
        found = commands(exchange.request)
    except (ValueError, IndexError):
        return False
    return bool(found) and all(_background(c, exchange.link in feeds) for c in found)


def _subscribes(exchange: Exchange) -> bool:
    return b"SUBSCRIBE" in exchange.request.upper()


@dataclass
class Measured:
    """The trials of one operation: round trips counted, and seconds taken."""

    name: str
    counts: list[int] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    what: list[list[str]] = field(default_factory=list)  # each trial's commands, for a report

    @property
    def count(self) -> int:
        """The most any trial cost (what a target must hold for)."""
        return max(self.counts)

    def row(self, delay: float) -> str:
        median = statistics.median(self.seconds)
        cross = f"{median / (2 * delay):5.1f}" if delay else "    -"
        counts = "/".join(str(c) for c in self.counts)
        target = TARGETS.get(self.name, "-")
        return f"| {self.name} | {counts} | {median * 1000:7.1f} ms | {cross} | {target} |"


class RoundTrips:
    """A hub node on a Redis of its own, through a recording proxy with ``delay`` each way."""

    def __init__(self, tmp: Path, delay: float = 0.0, **env: str) -> None:
        self.tmp = tmp
        self.delay = delay
        self.env = env
        self.redis: RedisServer | None = None
        self.proxy: FaultProxy | None = None
        self.hub: HubProcess | None = None
        self.http: httpx.AsyncClient | None = None
        self.viewers: list[Viewer] = []

    async def __aenter__(self) -> RoundTrips:
        self.redis = await asyncio.to_thread(RedisServer)
        self.proxy = await FaultProxy(self.redis.port).start()
        self.proxy.delay = self.delay
        self.proxy.exchanges = []  # every exchange (feed connections are told by them)
        # The hub's start-up polls its health with blocking calls: off this loop, which runs
        # the proxy.
        self.hub = await asyncio.to_thread(
            HubProcess, self.tmp / "hub.db", HUB_REDIS_URL=self.proxy.url, **self.env
        )
        self.http = httpx.AsyncClient(base_url=self.hub.url, timeout=30)
        await self.http.get("/v1/health")  # the HTTP connection is open before any count
        return self

    async def __aexit__(self, *exc: object) -> None:
        for viewer in self.viewers:
            await viewer.close()
        if self.http is not None:
            await self.http.aclose()
        if self.hub is not None:
            await asyncio.to_thread(self.hub.stop)
        if self.proxy is not None:
            await self.proxy.close()
        if self.redis is not None:
            self.redis.kill()

    async def count(self, op: Callable[[], Awaitable[None]]) -> tuple[int, float, list[str]]:
        """Run ``op``: the round trips it cost (background left out), the seconds it took, and
        the commands of each round trip."""
        assert self.proxy is not None and self.proxy.exchanges is not None
        loop = asyncio.get_running_loop()
        started = loop.time()
        await op()
        ended = loop.time()
        exchanges = self.proxy.exchanges
        feeds = {e.link for e in exchanges if _subscribes(e)}
        mine = [e for e in exchanges if started <= e.started <= ended and not background(e, feeds)]
        what = [", ".join(describe(c) for c in commands(e.request)) or "?" for e in mine]
        return len(mine), ended - started, what

    async def create(self) -> str:
        """A new workspace, as an app makes one (with a creation hold for its client)."""
        assert self.http is not None
        body = {"path": f"/rt/{uuid.uuid4()}", "client_id": str(uuid.uuid4())}
        response = await self.http.post("/v1/workspaces", json=body)
        assert response.status_code == 200, response.text
        workspace_id: str = response.json()["id"]
        return workspace_id

    async def join(self, workspace_id: str) -> Viewer:
        """A socket of a new client, up to its snapshot."""
        assert self.hub is not None
        client = str(uuid.uuid4())
        url = f"ws://127.0.0.1:{self.hub.port}/v1/workspaces/{workspace_id}/ws?client_id={client}"
        viewer = await Viewer.open(url, client)
        self.viewers.append(viewer)
        return viewer

    async def measure(
        self, trials: int = 3, gap: float = 1.5, first_gap: float | None = None
    ) -> tuple[list[Measured], ...]:
        """Each operation once on a Redis that has not run the hub's scripts yet (its first
        use: each script is loaded on the way), ``first_gap`` seconds apart (default: ``gap``),
        then ``trials`` times, each ``gap`` seconds after the last thing this client did (a
        node at rest: its pooled connections have been idle that long). The first use, and the
        trials."""
        first_use = {name: Measured(name) for name in TARGETS}
        results = {name: Measured(name) for name in TARGETS}
        await self._round(first_use, gap if first_gap is None else first_gap, "first")
        for trial in range(trials):
            await self._round(results, gap, f"t{trial}")
        return list(first_use.values()), list(results.values())

    async def _round(self, into: dict[str, Measured], gap: float, ref: str) -> None:
        """Every operation once, in the order an app does them, noted in ``into``."""
        assert self.http is not None
        http = self.http
        made: list[str] = []
        first: list[Viewer] = []

        async def create() -> None:
            made.append(await self.create())

        async def join_cold() -> None:
            first.append(await self.join(made[0]))

        async def join_warm() -> None:
            await self.join(made[0])

        async def set_session() -> None:
            await first[0].send({"type": "set_session", "session_id": ref, "ref": ref})
            answer = await first[0].until(lambda v: any(f.get("ref") == ref for f in v.frames))
            assert answer is not None and answer["type"] == "ack", answer

        async def read() -> None:
            response = await http.get(f"/v1/workspaces/{made[0]}")
            assert response.status_code == 200, response.text

        ops = {
            "create": create,
            "join (cold)": join_cold,
            "join (warm)": join_warm,
            "set_session": set_session,
            "REST read": read,
        }
        for name, op in ops.items():
            await asyncio.sleep(gap)
            n, seconds, what = await self.count(op)
            into[name].counts.append(n)
            into[name].seconds.append(seconds)
            into[name].what.append(what)


def table(results: list[Measured], delay: float) -> str:
    """The figures as a Markdown table."""
    rtt = f"{2 * delay * 1000:.0f} ms round trip" if delay else "no delay"
    lines = [
        f"| operation ({rtt}) | round trips counted, per trial | median time | time / RTT "
        "| target |",
        "|---|---|---|---|---|",
    ]
    lines += [m.row(delay) for m in results]
    return "\n".join(lines)


def now() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
