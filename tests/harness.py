"""Test harness: a real uvicorn server on a free port, and a viewer that applies frames.

``ServerThread`` runs ``hub.create_app`` under uvicorn (the same config as ``hub serve``) on its
own event loop in a background thread, so tests use real sockets and can still read the
server's true state (``services``) once it is quiet.

Every bound a helper here waits up to is in the suite's unit ``T`` (tests/timing.py,
``HUB_TEST_TIME_SCALE``): a ``within=5`` is five seconds on an idle machine, more on a
loaded one.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import functools
import inspect
import itertools
import json
import os
import resource
import signal
import socket
import struct
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.routing import Mount
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from hub import create_app
from hub.client import _absolute
from hub.settings import Settings
from hub.testing import ThreadedHub, ThreadedServer
from tests.timing import T as UNIT
from tests.timing import eventually

__all__ = ["eventually"]  # (tests import it from here too)

T = TypeVar("T")


class ServerThread(ThreadedHub):
    """The shipped :class:`~hub.testing.ThreadedHub`, on a free port, plus what the tests
    need. ``ws`` picks uvicorn's WebSocket implementation: ``hub`` (what ``hub serve`` runs:
    websockets-sansio, frames take the direct path) or ``wsproto`` (the portable ASGI path)."""

    def __init__(self, settings: Settings, ws: str = "hub") -> None:
        overrides: dict[str, Any] = {"port": 0}
        if ws != "hub":
            overrides["ws"] = ws
        super().__init__(settings, **overrides)

    def start(self) -> ServerThread:
        super().start()
        return self

    def call(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` on the server's loop thread (to read its state without racing it)."""
        assert self.loop is not None
        future = asyncio.run_coroutine_threadsafe(_call(fn), self.loop)
        return future.result(timeout=5 * UNIT)

    PREFIX = ""  # where the hub is mounted in the served app (MountedThread: /presence)

    def ws_url(self, workspace_id: str, client_id: str | None) -> str:
        query = "" if client_id is None else f"?client_id={client_id}"
        return f"ws://127.0.0.1:{self.port}{self.PREFIX}/v1/workspaces/{workspace_id}/ws{query}"


class ClusterThread(ServerThread):
    """Two hub nodes on one Redis and one PostgreSQL, used as one server: REST goes to the
    first node and sockets alternate between the two, so every end-to-end scenario has viewers
    on both nodes and must give the same pushes as one process does. Made and stopped by the
    two-node harness, ``tests.clusters.Cluster(..., threads=True)`` (its ``server``), which
    owns the Redis and the database."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.other = ServerThread(settings, ws="wsproto")
        self._turn = 0

    def start(self) -> ClusterThread:
        super().start()
        self.other.start()
        return self

    def stop(self) -> None:
        self.other.stop()
        super().stop()

    def ws_url(self, workspace_id: str, client_id: str | None) -> str:
        self._turn ^= 1
        node = self if self._turn else self.other
        return ServerThread.ws_url(node, workspace_id, client_id)

    def transport(self) -> httpx.AsyncBaseTransport:
        """An httpx transport that sends each request to the next node in turn."""
        return AlternatingTransport([self.port, self.other.port])


class MountedThread(ServerThread):
    """The hub as a user mounts it: inside a Starlette app of its own at ``/presence``, the
    app's lifespan entering the hub's, under plain uvicorn (its own protocol classes, as
    ``uvicorn app:app`` runs it), with ``HUB_FAST_PATHS=off``: the plain path of every frame.
    REST and sockets are served under the prefix (``url`` and ``ws_url`` include it)."""

    PREFIX = "/presence"

    def __init__(self, settings: Settings) -> None:
        hub_app = create_app(dataclasses.replace(settings, fast_paths=False, port=0))

        @contextlib.asynccontextmanager
        async def lifespan(_: Starlette) -> AsyncIterator[None]:
            async with hub_app.router.lifespan_context(hub_app):
                yield

        self.app = Starlette(routes=[Mount(self.PREFIX, app=hub_app)], lifespan=lifespan)
        self.services = hub_app.state.services
        ThreadedServer.__init__(
            self, uvicorn.Config(self.app, host="127.0.0.1", port=0, log_level="warning")
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.PREFIX}"


class AlternatingTransport(httpx.AsyncBaseTransport):
    """Round robin over local ports, like a load balancer without stickiness."""

    def __init__(self, ports: list[int]) -> None:
        self._inner = httpx.AsyncHTTPTransport()
        self._ports = itertools.cycle(ports)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        request.url = request.url.copy_with(port=next(self._ports))
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._inner.aclose()


async def _call(fn: Callable[[], Any]) -> Any:
    result = fn()
    return await result if inspect.isawaitable(result) else result


def new_client_id() -> str:
    return str(uuid.uuid4())


class Viewer:
    """A WebSocket client that applies snapshot and counts frames by ``seq``, like a UI.

    Every viewer opened is remembered in ``opened``; the suite's autouse fixture closes the
    ones a test left open, even when it failed, so one failure cannot break the shared
    server's teardown."""

    opened: list[Viewer] = []

    def __init__(self, ws: ClientConnection, client_id: str) -> None:
        self.ws = ws
        self.client_id = client_id
        self.seq = -1
        self.counts: dict[str, int] = {}
        self.online = 0
        self.users: dict[str, int] = {}
        self.online_users = 0
        # session -> user_id -> viewer, in the list's order (from viewers and viewers_diff)
        self.watched: dict[str, dict[str, dict[str, Any]]] = {}
        self.totals: dict[str, tuple[int, int]] = {}  # session -> (total, anonymous)
        self.frames: list[dict[str, Any]] = []
        self.seqs_seen: list[int] = []

    @classmethod
    async def open(cls, url: str, client_id: str) -> Viewer:
        ws = await connect(url, compression=None)
        viewer = cls(ws, client_id)
        cls.opened.append(viewer)
        first = await viewer.next()
        assert first["type"] == "snapshot", first
        return viewer

    def apply(self, frame: dict[str, Any]) -> None:
        self.frames.append(frame)
        if "seq" in frame and frame["type"] in ("snapshot", "counts", "ack"):
            self.seqs_seen.append(frame["seq"])
        if frame["type"] == "snapshot":
            self.seq = frame["seq"]
            self.counts = dict(frame["counts"])
            self.online = frame["online"]
            self.users = dict(frame.get("users", {}))
            self.online_users = frame.get("online_users", 0)
        elif frame["type"] == "counts" and frame["seq"] > self.seq:
            self.seq = frame["seq"]
            _absolute(self.counts, frame["counts"])
            _absolute(self.users, frame.get("users", {}))
            if "online" in frame:
                self.online = frame["online"]
            if "online_users" in frame:
                self.online_users = frame["online_users"]
        elif frame["type"] == "viewers":
            sid = frame["session_id"]
            self.watched[sid] = {v["user_id"]: v for v in frame["viewers"]}
            self.totals[sid] = (frame["total"], frame["anonymous"])
        elif frame["type"] == "viewers_diff":
            # joined ones go last: the list is a window on the earliest arrivals
            sid = frame["session_id"]
            shown = self.watched.setdefault(sid, {})
            for user_id in frame["left"]:
                del shown[user_id]
            for v in frame["updated"]:
                assert v["user_id"] in shown, frame
                shown[v["user_id"]] = v
            for v in frame["joined"]:
                assert v["user_id"] not in shown, frame
                shown[v["user_id"]] = v
            self.totals[sid] = (frame["total"], frame["anonymous"])

    async def next(self, within: float = 5) -> dict[str, Any]:
        """The next frame, applied; fail after ``within`` seconds of the suite."""
        raw = await asyncio.wait_for(self.ws.recv(), within * UNIT)
        frame: dict[str, Any] = json.loads(raw)
        self.apply(frame)
        return frame

    async def send(self, frame: dict[str, Any] | str | bytes) -> None:
        await self.ws.send(frame if isinstance(frame, str | bytes) else json.dumps(frame))

    async def until(
        self, predicate: Callable[[Viewer], bool], within: float = 5
    ) -> dict[str, Any] | None:
        """Read frames until ``predicate(self)`` holds; fail after ``within`` seconds."""
        deadline = asyncio.get_running_loop().time() + within * UNIT
        last = None
        while not predicate(self):
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                raise AssertionError(
                    f"timed out: seq={self.seq} counts={self.counts} online={self.online}"
                )
            last = await self.next(remaining / UNIT)
        return last

    async def expect(self, kind: str, within: float = 5) -> dict[str, Any]:
        """The next frame of type ``kind``, skipping counts frames on the way."""
        while True:
            frame = await self.next(within)
            if frame["type"] == kind:
                return frame
            assert frame["type"] == "counts", frame

    async def close(self) -> None:
        await self.ws.close()

    async def closed_with(self, within: float = 5) -> int | None:
        """Read until the server closes the socket; its close code."""
        try:
            while True:
                await self.next(within)
        except ConnectionClosed:
            return self.ws.close_code


async def close_code(url: str, headers: dict[str, str] | None = None) -> int | None:
    """Open a socket and read until the server closes it; the close code."""
    async with connect(url, compression=None, additional_headers=headers) as ws:
        try:
            while True:
                await asyncio.wait_for(ws.recv(), 5 * UNIT)
        except ConnectionClosed:
            return ws.close_code


def raw_handshake(sock: socket.socket, path: str) -> bytes:
    """Open a WebSocket on a connected plain socket (the request, the 101 checked); what
    arrived after the response's head (the snapshot, say)."""
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        f"GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        assert chunk, "closed during the handshake"
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    assert b" 101 " in head, head
    return rest


class NonReader:
    """A raw socket that completes the handshake, then never reads (tiny receive buffer)."""

    def __init__(self, port: int, path: str) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sock.connect(("127.0.0.1", port))
        self.rest = raw_handshake(self.sock, path)

    def read_close_code(self) -> int | None:
        """Read what the server sent, up to its close frame; that frame's code, if one came."""
        self.sock.settimeout(5 * UNIT)
        data = bytearray(self.rest)
        pos = 0
        while True:
            while pos + 2 <= len(data):  # parse every complete frame received so far
                opcode, n = data[pos] & 0x0F, data[pos + 1] & 0x7F
                head = 2
                if n == 126:
                    if pos + 4 > len(data):
                        break
                    n, head = struct.unpack_from("!H", data, pos + 2)[0], 4
                if pos + head + n > len(data):
                    break
                if opcode == 8:
                    code: int = struct.unpack_from("!H", data, pos + head)[0]
                    return code
                pos += head + n
            try:
                chunk = self.sock.recv(65536)
            except (TimeoutError, ConnectionResetError):
                return None
            if not chunk:
                return None
            data += chunk


async def no_sockets(hub: HubProcess, token: str | None = None) -> bool:
    """Whether a hub process holds no socket any more (its ``/v1/stats``)."""
    params = {"token": token} if token else None
    async with httpx.AsyncClient(base_url=hub.url) as http:
        stats = (await http.get("/v1/stats", params=params)).json()
    return bool(stats["sockets"] == 0)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def run_on(loop: str, coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to its end on a new event loop of this kind: "asyncio" or "uvloop"."""
    if loop == "uvloop":
        import uvloop

        return uvloop.run(coro)
    return asyncio.run(coro)


def loopback_pair() -> tuple[socket.socket, socket.socket]:
    """Both ends of a real loopback TCP connection: the accepted socket, and its peer."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        peer = socket.create_connection(listener.getsockname())
        sock, _ = listener.accept()
    return sock, peer


def _limit_descriptors(n: int) -> None:
    """In a child before it runs: at most ``n`` descriptors."""
    resource.setrlimit(resource.RLIMIT_NOFILE, (n, n))


class HubProcess:
    """A real ``hub serve`` process on a free port, with its output captured."""

    nofile: int | None = None  # its descriptor limit (RLIMIT_NOFILE, soft and hard), if set

    def __init__(self, db: Path, **env: str) -> None:
        self.port = free_port()
        nofile = self.nofile
        limit = None if nofile is None else functools.partial(_limit_descriptors, nofile)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "hub", "serve", "--port", str(self.port)],
            preexec_fn=limit,
            env={
                **os.environ,
                "HUB_DATABASE_URL": f"sqlite:///{db}",
                "HUB_LOG_LEVEL": "warning",
                **env,
            },
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 15 * UNIT
        while True:
            try:
                if httpx.get(self.url + "/v1/health").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.proc.kill()
                raise RuntimeError(f"hub did not start: {self.proc.communicate()[0]!r}")
            time.sleep(0.05)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.communicate(timeout=10 * UNIT)

    def stop(self) -> str:
        """Ctrl-C, and its output; a process that does not stop within 10 s is killed (never
        left behind) and fails the test."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            return self.proc.communicate(timeout=10 * UNIT)[0].decode()
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out = self.proc.communicate()[0].decode()
            raise AssertionError(f"hub did not stop on SIGINT in 10 s:\n{out[-3000:]}") from None


def app_thread(app: Any) -> ThreadedServer:
    """Any ASGI app (a user's Starlette or FastAPI app mounting the hub) under plain uvicorn,
    as a user runs it (``uvicorn app:app``: uvicorn's own protocol classes), on a free port."""
    return ThreadedServer(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))


class LimitedHubProcess(HubProcess):
    """A :class:`HubProcess` started with at most ``nofile`` descriptors."""

    def __init__(self, db: Path, nofile: int, **env: str) -> None:
        self.nofile = nofile
        super().__init__(db, **env)
