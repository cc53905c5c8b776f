"""Fan-out benchmark: the hub against a ``websockets.broadcast()`` baseline, in one run.

    .venv/bin/python scripts/bench.py                     # N=1000 and N=5000, R=100/s, 10 s
    .venv/bin/python scripts/bench.py --n 2000 --rate 50 --seconds 5 --json out.json
    .venv/bin/python scripts/bench.py --quick             # small smoke run (the test suite's)
    .venv/bin/python scripts/bench.py --nodes 2 --n 1000  # scale-out: see "Several nodes" below
    .venv/bin/python scripts/bench.py --before /tmp/old   # also the hub of another source tree
    .venv/bin/python scripts/bench.py --people --n 1000   # people: see "People" below
    .venv/bin/python scripts/bench.py --servers hub uvloop --repeat 3  # medians of 3 rounds
    .venv/bin/python scripts/bench.py --transport sse     # viewers on the event stream too
    .venv/bin/python scripts/bench.py --tokens --n 5000 --repeat 3  # tokens: see "Tokens" below

For each N and each server (the hub as users run it: ``hub serve``, one worker, in-memory
presence, default settings; ``scripts/baseline_server.py``, the same workload on
``websockets.broadcast()``; and ``scripts/node_ws/server.js``, the same workload on Node's
``ws`` library with one Buffer per push, installed with npm on first use and left out with a
note where node is missing), this process (not the server)
opens N viewer sockets in one workspace plus a driver client that changes its session R times
per second, and measures:

- server CPU per delivered frame: the server process's own CPU time (its CPU-time clock, to the
  nanosecond, every thread's; the user-mode part from ``/proc/PID/stat``, in ticks of 10 ms)
  over the fan-out phase divided by the frames the viewers received;
- delivered frames/s;
- delivery latency p50/p99/max: from the driver's receipt of the ``ack`` of a change to each
  viewer's receipt of a frame with ``seq >= ack.seq`` (a sample of viewers);
- idle server memory per connection: RSS growth over opening the N sockets, divided by N;
- the connect storm: the time to open the N sockets (500 handshakes in flight at a time, each
  done when its snapshot came) and the server CPU spent on it; then, for the hub, the time from
  the storm's start until every socket was told its room's final ``online`` (the joins are
  pushed to the room's sockets, merged while the storm lasts), and how many sockets were told
  another after 30 s (must be 0); the peers push no ``online`` (0 in their column);
- server CPU per incoming ``set_session``: a separate workspace where one client sends them
  in bursts of 50, each burst waiting for its acks; then one at a time, each sent after the
  last one's ack (a client that changes its session now and then: each frame wakes the server
  on its own);
- lost frames (a viewer that never reaches the final ``seq``) and out-of-order ones (a ``seq``
  lower than one seen before on the same socket); both must be 0.

Several nodes (``--nodes K``): the same fan-out, in one run, on 1 node with in-memory presence,
1 node on Redis, and K nodes on one Redis (a redis-server of its own); viewers are spread round
robin over the nodes and the drivers sit on node 0, so the latency of viewers on the other
nodes is the cross-node path (ack on node 0 to receipt on node k). Throughput is printed as
the ratio to 1 node on Redis; with a rate high enough to saturate one worker (e.g.
``--n 10000 --workspaces 50 --rate 1000``) it is how much more K workers deliver.

The event stream (``--transport sse``, or the server ``sse`` in ``--servers``): the same hub
and the same run, its N viewers on ``GET .../events`` (Server-Sent Events, read by a minimal
asyncio client) instead of WebSockets, the drivers still on WebSockets; printed beside the
hub's WebSocket viewers (so ``hub/sse`` below 1 is what an event stream costs more).

Another version (``--before PATH``: a source tree, e.g. ``git worktree add /tmp/old <ref>``) runs
as the server ``before`` in the same run, and its figures are printed beside the hub's as the
ratio hub/before: what a change costs, measured on the same machine at the same time.

People (``--people``): the memory per idle socket of N anonymous sockets, then of N sockets
each of its own user, 10 users per session, each with a 1 KB profile (the difference is what
people cost per claim); then 100 watchers of one such session while one of its users changes
its profile R times a second: server CPU per profile update and per delivered
``viewers_diff``, and whether every watcher saw the last update.

Tokens (``--tokens``): the connect storm of N sockets, each with a token of its own user, on a
hub that verifies HS256 tokens (``HUB_AUTH_SECRET``) and on one that verifies RS256 tokens
(``HUB_AUTH_PUBLIC_KEY``, a 2048-bit key), and on an open hub for reference: the server CPU of
the storm, then the server CPU over 10 s of the N sockets idle (each holding a token expiry of
one hour: the cost of the expiry timers), and the RSS per socket. The ratio RS256/HS256 of the
storm's CPU is printed round by round.

Every figure is also printed as the ratio hub/baseline, because these machines are shared and
absolute times drift. With ``--repeat K`` every server runs K times per N, in alternating rounds
(every other round in reverse order, so a drift of the machine hits both sides): the tables
hold each figure's median (lost and reordered frames, wrong views: the worst round), and a line
gives the CPU-per-frame ratio round by round, so a difference smaller than the machine's noise
shows as such. The viewers are a minimal asyncio WebSocket client (no library) so the load side
stays cheap enough to keep up with the servers.

On two or more cores, each compared server runs on the first core and this load generator on
the second (``--no-pin``: the scheduler places both), as the issue that set the targets
measured them: a server never shares its core with the load it is measured under, and a round
does not depend on where the scheduler happened to put the two.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import random
import re
import resource
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
from array import array
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
NODE_WS = ROOT / "scripts" / "node_ws"  # the Node `ws` peer (npm install on first use)
HUB_ARGS: list[str] = []  # extra ``hub serve`` flags (--hub-args)
SETTLE_S = 30.0  # how long a storm's views may take to settle before they count as wrong
BEFORE: list[str] = []  # the source tree of the ``before`` server (--before)
# The core of a compared server (one; this load generator runs on another, as the issue's
# harness ran them); empty with --no-pin or on one core: the scheduler places both.
SERVER_CPUS: set[int] = set()
SEQ = re.compile(rb'"seq":(\d+)')
ONLINE = re.compile(rb'"online":(\d+)')
REF = re.compile(rb'"ref":(\d+)')
CODE = re.compile(rb'"code":(\d+)')
TICK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


# -- a minimal WebSocket client -------------------------------------------------------------


class WsClient(asyncio.Protocol):
    """Handshake, then unmasked server frames. Text frames go to ``on_text``."""

    def __init__(self, path: str, host: str, port: int, read: bool = True) -> None:
        self.request = (
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {base64.b64encode(os.urandom(16)).decode()}"
            "\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
        self.read = read
        self.buf = bytearray()
        self.open = False
        self.transport: asyncio.Transport | None = None
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.closed: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        if not self.open:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            if b" 101 " not in buf[:end]:
                self.ready.set_exception(RuntimeError(bytes(buf[:end]).decode()))
                return
            del buf[: end + 4]
            self.open = True
            if not self.read and self.transport is not None:
                self.transport.pause_reading()
        pos = 0
        n = len(buf)
        while n - pos >= 2:
            opcode = buf[pos] & 0x0F
            length = buf[pos + 1] & 0x7F
            head = 2
            if length == 126:
                if n - pos < 4:
                    break
                length = struct.unpack_from("!H", buf, pos + 2)[0]
                head = 4
            elif length == 127:
                if n - pos < 10:
                    break
                length = struct.unpack_from("!Q", buf, pos + 2)[0]
                head = 10
            if n - pos < head + length:
                break
            payload = bytes(buf[pos + head : pos + head + length])
            pos += head + length
            if opcode == 1:
                self.on_text(payload)
            elif opcode == 8:
                code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
                if not self.closed.done():
                    self.closed.set_result(code)
            elif opcode == 9:
                self.send(payload, opcode=0xA)
        del buf[:pos]

    def on_text(self, payload: bytes) -> None:
        if not self.ready.done():
            self.ready.set_result(None)

    def send(self, payload: bytes, opcode: int = 1) -> None:
        mask = os.urandom(4)
        n = len(payload)
        if n < 126:
            head = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
        else:
            head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        assert self.transport is not None
        self.transport.write(head + mask + masked)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(1006)
        if not self.ready.done():
            self.ready.set_exception(ConnectionError("closed during handshake"))


class Viewer(WsClient):
    """Records the arrival time and seq of every frame after the first (the snapshot)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.times = array("d")
        self.seqs = array("q")
        self.last = -1
        self.disorder = 0
        self.recording = False
        self.online = -1  # the last online this socket was told (snapshot, counts)

    def on_text(self, payload: bytes) -> None:
        m = SEQ.search(payload)
        if m is None:
            return
        if b'"online"' in payload:
            self.online = int(ONLINE.search(payload).group(1))  # type: ignore[union-attr]
        seq = int(m.group(1))
        if not self.ready.done():
            self.last = seq
            self.ready.set_result(None)
            return
        if seq < self.last:
            self.disorder += 1
        self.last = max(self.last, seq)
        if self.recording:
            self.times.append(time.monotonic())
            self.seqs.append(seq)


class SseViewer(Viewer):
    """A Viewer on the event stream: the response's head, then events split on blank lines,
    each ``data:`` line handled as a WebSocket text frame is (chunk framing stripped)."""

    def __init__(self, path: str, host: str, port: int, read: bool = True) -> None:
        super().__init__(path, host, port, read)
        self.request = (
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAccept: text/event-stream\r\n\r\n"
        ).encode()

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        if not self.open:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            if b" 200 " not in buf[:end]:
                self.ready.set_exception(RuntimeError(bytes(buf[:end]).decode()))
                return
            del buf[: end + 4]
            self.open = True
        pos = 0
        while (end := buf.find(b"\n\n", pos)) >= 0:
            event = bytes(buf[pos:end])
            pos = end + 2
            start = event.find(b"data: ")
            if start >= 0:
                if b"event: close" in event:
                    code = CODE.search(event)
                    if code is not None and not self.closed.done():
                        self.closed.set_result(int(code.group(1)))
                    continue
                self.on_text(event[start + 6 :].split(b"\r\n", 1)[0])
        del buf[:pos]


class Driver(WsClient):
    """Sends set_session frames with integer refs; records each ack's arrival time and seq."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.acks: dict[int, tuple[float, int]] = {}
        self.waiter: asyncio.Future[None] | None = None

    def on_text(self, payload: bytes) -> None:
        if not self.ready.done():
            self.ready.set_result(None)
            return
        if b'"ack"' in payload:
            ref = REF.search(payload)
            seq = SEQ.search(payload)
            if ref and seq:
                self.acks[int(ref.group(1))] = (time.monotonic(), int(seq.group(1)))
                if self.waiter is not None and not self.waiter.done():
                    self.waiter.set_result(None)

    def set_session(self, ref: int, session: str) -> None:
        frame = {"type": "set_session", "session_id": session, "ref": ref}
        self.send(json.dumps(frame).encode())

    async def burst(self, first_ref: int, count: int) -> None:
        """Send ``count`` set_session frames at once and wait for all their acks."""
        self.waiter = asyncio.get_running_loop().create_future()
        for ref in range(first_ref, first_ref + count):
            self.set_session(ref, f"S{ref % 2}")
        while not all(ref in self.acks for ref in range(first_ref, first_ref + count)):
            await asyncio.wait_for(self.waiter, 10)
            self.waiter = asyncio.get_running_loop().create_future()


# -- the servers ----------------------------------------------------------------------------


# The hub mounted in a FastAPI app under plain uvicorn, by server kind: uvicorn's extra options
# (its WebSocket implementation: its default, websockets-sansio, or wsproto).
MOUNTED = {"mounted": [], "mounted-wsproto": ["--ws", "wsproto"]}


class Server:
    def __init__(
        self, kind: str, port: int, workdir: str, env: dict[str, str] | None = None
    ) -> None:
        self.kind = kind
        self.port = port
        mounted = kind in MOUNTED
        self.hub = kind in ("hub", "before", "uvloop", "python", "sse") or mounted
        # The mounted hub's URLs are below its mount (scripts/mounted_app.py).
        self.prefix = "/presence" if mounted else ""
        if kind == "before":
            env = {**(env or {}), "PYTHONPATH": BEFORE[0]}
        if kind == "python":  # the same hub with its send loop in Python (hub.transport)
            env = {**(env or {}), "HUB_PURE_PYTHON": "1"}
        if kind == "node":
            cmd = ["node", str(NODE_WS / "server.js"), "--port", str(port)]
        elif mounted:
            # The hub in a FastAPI app under plain uvicorn, as a user runs it, on the plain
            # path (HUB_FAST_PATHS=off); the per-socket rate limit off, as for the hub.
            env = {**(env or {}), "HUB_FAST_PATHS": "off", "HUB_RATE_LIMIT": "0"}
            # asyncio, as plain uvicorn runs where uvloop is not installed (the hub does not
            # need it), and as `hub serve` runs by default.
            cmd = [sys.executable, "-m", "uvicorn", "mounted_app:app",
                   "--app-dir", str(ROOT / "scripts"), "--port", str(port),
                   "--loop", "asyncio", "--log-level", "warning", *MOUNTED[kind]]  # fmt: skip
        elif self.hub:
            # The driver sends far faster than one client may (100 changes/s, bursts of 50):
            # the per-socket rate limit is off here, everything else is as shipped.
            cmd = [sys.executable, "-m", "hub", "serve", "--port", str(port),
                   "--log-level", "warning", "--rate-limit", "0", *HUB_ARGS]  # fmt: skip
            if kind == "uvloop":  # the same hub on uvloop
                cmd += ["--loop", "uvloop"]
        else:
            cmd = [sys.executable, str(ROOT / "scripts/baseline_server.py"), "--port", str(port)]
        # The environment's size moves where a new process's stack starts, and with it the
        # alignment of what is on it, which can make one launch of a program a few percent
        # faster than another, the same way every time (A/A runs of the hub here put the same
        # code 0-7% apart: docs/performance.md). A pad of random length per launch makes that
        # noise the rounds average out, not a bias between two servers whose environments
        # differ (PYTHONPATH for ``before``).
        pad = {"BENCH_PAD": "x" * random.randrange(4096)}
        self.proc = subprocess.Popen(
            cmd, cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            preexec_fn=_server_setup, env={**os.environ, **(env or {}), **pad},
        )  # fmt: skip

    def wait_ready(self) -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.kind} exited: {self.proc.stdout.read()!r}")  # type: ignore[union-attr]
            try:
                url = f"http://127.0.0.1:{self.port}{self.prefix}/v1/health"
                with urllib.request.urlopen(url, timeout=1):
                    return
            except OSError as exc:
                if "426" in str(exc) or "Upgrade" in str(exc):  # the baseline: up, WS only
                    return
            time.sleep(0.05)
        raise RuntimeError(f"{self.kind} did not start")

    def workspace(self, path: str) -> str:
        if not self.hub:
            return path.strip("/").replace("/", "-")
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{self.prefix}/v1/workspaces",
            data=json.dumps({"path": path}).encode(),
            method="POST",
        )
        with urllib.request.urlopen(req) as response:
            workspace_id: str = json.loads(response.read())["id"]
            return workspace_id

    def cpu(self) -> float:
        return _cpu_of(self.proc.pid)

    def user_cpu(self) -> float:
        return _cpu_of(self.proc.pid, system=False)

    def rss(self) -> int:
        return int(Path(f"/proc/{self.proc.pid}/statm").read_text().split()[1]) * PAGE

    def stop(self) -> str:
        self.proc.terminate()
        try:
            out = self.proc.communicate(timeout=10)[0]
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out = self.proc.communicate()[0]
        return out.decode(errors="replace")


def node_ws_ready() -> str:
    """Install the Node `ws` peer on first use; "" when ready, else why it cannot run."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        return "node and npm are not installed"
    if not (NODE_WS / "node_modules" / "ws").is_dir():
        proc = subprocess.run(
            ["npm", "install", "--no-audit", "--no-fund", "--silent"],
            cwd=NODE_WS, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        if proc.returncode != 0:
            return f"npm install failed: {proc.stderr.strip()[-300:]}"
    return ""


def _cpu_of(pid: int, system: bool = True) -> float:
    """CPU seconds of a process: all of it from the process's CPU-time clock (every thread's,
    those that ended too, to the nanosecond: ``/proc/PID/stat`` counts in ticks of 10 ms, a
    tenth of what 2,000 lone set_session frames cost); user mode only from ``/proc/PID/stat``
    (the kernel's tick-sampled split of that total)."""
    if system:
        # clock_getcpuclockid(pid): MAKE_PROCESS_CPUCLOCK(pid, CPUCLOCK_SCHED) of the kernel
        return time.clock_gettime_ns((~pid << 3) | 2) / 1e9
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) / TICK


def _raise_nofile() -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _server_setup() -> None:
    """In a server's process, before it runs: its file limit, and its core when the compared
    servers are pinned (SERVER_CPUS is set only on the way to them, after the other
    scenarios have returned)."""
    _raise_nofile()
    if SERVER_CPUS:
        os.sched_setaffinity(0, SERVER_CPUS)  # before exec: every thread it makes inherits it


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


# -- one run --------------------------------------------------------------------------------


@dataclass
class Result:
    server: str
    n: int
    rate: float
    seconds: float
    cpu_per_frame_us: float = 0.0
    user_cpu_per_frame_us: float = 0.0  # of it, in user mode (the rest is the kernel's)
    frames_per_s: float = 0.0
    latency_p50_ms: float = 0.0
    latency_p99_ms: float = 0.0
    latency_max_ms: float = 0.0
    idle_bytes_per_conn: float = 0.0
    connect_s: float = 0.0
    connect_cpu_s: float = 0.0
    settled_s: float = 0.0  # the hub's: until every socket was told the room's final online
    wrong_views: int = 0  # the hub's: sockets told another online (SETTLE_S after the storm)
    cpu_per_set_session_us: float = 0.0
    cpu_per_lone_set_session_us: float = 0.0
    lost: int = 0
    out_of_order: int = 0
    delivered: int = 0
    changes: int = 0
    peak_rss_mb: float = 0.0
    notes: list[str] = field(default_factory=list)


async def poll(done: Callable[[], bool], deadline: float) -> None:
    """Wait until ``done()`` or the deadline: the state polled is spread over many sockets."""
    while not done() and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.01)


async def connect_all(cls: type[WsClient], port: int, paths: list[str], read: bool = True,
                      batch: int = 500) -> list[Any]:  # fmt: skip
    loop = asyncio.get_running_loop()
    clients: list[Any] = []
    for start in range(0, len(paths), batch):
        made = await asyncio.gather(
            *(
                loop.create_connection(
                    lambda p=p: cls(p, "127.0.0.1", port, read), "127.0.0.1", port
                )
                for p in paths[start : start + batch]
            )
        )
        group = [protocol for _, protocol in made]
        if read:
            await asyncio.wait_for(asyncio.gather(*(c.ready for c in group)), 60)
        clients.extend(group)
    return clients


def latencies(
    pairs: list[tuple[Viewer, list[tuple[float, int]]]], sample: int
) -> tuple[float, float, float]:
    """p50, p99 and max (ms) from each ack of a change to a viewer's first frame with
    ``seq >= ack.seq``, over a sample of (viewer, the acks of its workspace's driver)."""
    found: list[float] = []
    step = max(1, len(pairs) // sample)
    for viewer, acks in pairs[::step]:
        seqs, times = viewer.seqs, viewer.times
        j = 0
        for t_ack, seq in acks:
            while j < len(seqs) and seqs[j] < seq:
                j += 1
            if j == len(seqs):
                break
            found.append(max(0.0, times[j] - t_ack))
    if not found:
        return 0.0, 0.0, 0.0
    found.sort()
    p99 = found[max(0, int(len(found) * 0.99) - 1)]
    return statistics.median(found) * 1e3, p99 * 1e3, found[-1] * 1e3


async def run_one(kind: str, n: int, rate: float, seconds: float, workspaces: int,
                  sets: int, sample: int) -> Result:  # fmt: skip
    result = Result(kind, n, rate, seconds)
    with tempfile.TemporaryDirectory() as workdir:
        server = Server(kind, free_port(), workdir)
        try:
            server.wait_ready()
            await _measure(server, result, n, rate, seconds, workspaces, sets, sample)
        finally:
            log = server.stop()
            if "Traceback" in log:
                result.notes.append("server log has a traceback")
                print(log[-3000:], file=sys.stderr)
    return result


async def _measure(server: Server, result: Result, n: int, rate: float, seconds: float,
                   workspaces: int, sets: int, sample: int) -> None:  # fmt: skip
    port = server.port
    ids = [server.workspace(f"/bench/{i}") for i in range(workspaces)]
    side = server.workspace("/bench/set-session")
    cid = "00000000-0000-4000-8000-{:012d}"

    def ws_path(workspace: str, i: int) -> str:
        if server.hub:
            return f"{server.prefix}/v1/workspaces/{workspace}/ws?client_id={cid.format(i)}"
        return f"/{workspace}"

    # The viewers: WebSockets, or the event stream (server "sse": the same hub).
    viewer: type[Viewer] = SseViewer if server.kind == "sse" else Viewer

    def viewer_path(workspace: str, i: int) -> str:
        if server.kind == "sse":
            return f"/v1/workspaces/{workspace}/events?client_id={cid.format(i)}"
        return ws_path(workspace, i)

    # Idle memory per connection.
    await asyncio.sleep(0.5)
    rss0 = server.rss()
    paths = [viewer_path(ids[i % workspaces], i) for i in range(n)]
    cpu0, t0 = server.cpu(), time.monotonic()  # the connect storm: 500 handshakes at a time
    viewers: list[Viewer] = await connect_all(viewer, port, paths)
    result.connect_s, result.connect_cpu_s = time.monotonic() - t0, server.cpu() - cpu0
    if server.hub:  # every view right at the end: each socket told its room's online
        sizes = Counter(i % workspaces for i in range(n))
        truth = [sizes[i % workspaces] for i in range(n)]

        def wrong() -> int:
            return sum(v.online != t for v, t in zip(viewers, truth, strict=True))

        await poll(lambda: wrong() == 0, time.monotonic() + SETTLE_S)
        result.settled_s, result.wrong_views = time.monotonic() - t0, wrong()
    await asyncio.sleep(1.0)
    result.idle_bytes_per_conn = (server.rss() - rss0) / n

    # CPU per incoming set_session: one client alone in its workspace sends them in bursts of
    # 50 (each burst waits for its acks), so wake-up costs are shared as in real traffic.
    (solo,) = await connect_all(Driver, port, [ws_path(side, 10**9)])
    await solo.burst(0, 50)  # warm-up
    cpu0 = server.cpu()
    for first in range(1000, 1000 + sets, 50):
        await solo.burst(first, 50)
    result.cpu_per_set_session_us = (server.cpu() - cpu0) / sets * 1e6
    # The same one at a time, each sent after the last one's ack: how a client that changes
    # its session now and then costs (every frame then wakes the server on its own).
    cpu0 = server.cpu()
    for ref in range(2 * 10**6, 2 * 10**6 + sets):
        await solo.burst(ref, 1)
    result.cpu_per_lone_set_session_us = (server.cpu() - cpu0) / sets * 1e6

    # Fan-out: one driver per workspace, R changes per second in all.
    drivers: list[Driver] = await connect_all(
        Driver, port, [ws_path(w, 10**9 + 1 + i) for i, w in enumerate(ids)]
    )
    await asyncio.sleep(0.5)
    for v in viewers:
        v.recording = True
    cpu0, user0 = server.cpu(), server.user_cpu()
    t0 = time.monotonic()
    result.changes = await drive(drivers, rate, seconds)
    final = await drain(drivers, result.changes)
    targets = [final[i % workspaces] for i in range(n)]
    deadline = time.monotonic() + 10
    await poll(lambda: all(v.last >= t for v, t in zip(viewers, targets, strict=True)), deadline)
    elapsed = time.monotonic() - t0
    cpu, user = server.cpu() - cpu0, server.user_cpu() - user0
    result.peak_rss_mb = server.rss() / 2**20
    result.delivered = sum(len(v.seqs) for v in viewers)
    result.frames_per_s = result.delivered / elapsed
    result.cpu_per_frame_us = cpu / max(result.delivered, 1) * 1e6
    result.user_cpu_per_frame_us = user / max(result.delivered, 1) * 1e6
    result.lost = sum(1 for v, t in zip(viewers, targets, strict=True) if v.last < t)
    result.out_of_order = sum(v.disorder for v in viewers)

    acks = [sorted(d.acks.values(), key=lambda a: a[1]) for d in drivers]
    lat = latencies([(v, acks[i % len(acks)]) for i, v in enumerate(viewers)], sample)
    result.latency_p50_ms, result.latency_p99_ms, result.latency_max_ms = lat

    for c in [*viewers, *drivers, solo]:
        if c.transport is not None:
            c.transport.close()
    await asyncio.sleep(0.2)


async def drive(drivers: list[Driver], rate: float, seconds: float) -> int:
    """R changes per second for T seconds, spread over the drivers; the number sent."""
    t0 = time.monotonic()
    interval = 1 / rate
    ref = 0
    total = int(rate * seconds)
    while ref < total:
        # Catch up when the loop fell behind, so R changes per second are really sent.
        due = min(total, int((time.monotonic() - t0) / interval) + 1)
        while ref < due:
            drivers[ref % len(drivers)].set_session(ref, f"S{ref % 3}")
            ref += 1
        await asyncio.sleep(max(0, t0 + ref * interval - time.monotonic()))
    return ref


async def drain(drivers: list[Driver], sent: int) -> list[int]:
    """Wait for the acks of every change sent (or 10 s); the final seq of each driver's
    workspace."""
    await poll(lambda: sum(len(d.acks) for d in drivers) >= sent, time.monotonic() + 10)
    return [max((seq for _, seq in d.acks.values()), default=-1) for d in drivers]


# -- several nodes on Redis ----------------------------------------------------------------


@dataclass
class NodesResult:
    setup: str
    nodes: int
    n: int
    rate: float
    seconds: float
    workspaces: int
    frames_per_s: float = 0.0
    cpu_per_frame_us: float = 0.0  # hub processes only
    hub_cores: float = 0.0  # CPU the hub processes used, in cores (CPU seconds / second)
    load_cores: float = 0.0  # the same for this load generator: it shares the machine
    redis_cpu_s: float = 0.0
    latency_same_p50_ms: float = 0.0
    latency_same_p99_ms: float = 0.0
    latency_cross_p50_ms: float = 0.0
    latency_cross_p99_ms: float = 0.0
    lost: int = 0
    out_of_order: int = 0
    delivered: int = 0
    changes: int = 0


def _spawn_redis() -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    time.sleep(0.3)
    return proc, f"redis://127.0.0.1:{port}/0"


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def run_nodes(nodes: int, redis: bool, n: int, rate: float, seconds: float,
                    workspaces: int, sample: int) -> NodesResult:  # fmt: skip
    """N viewers spread round robin over ``nodes`` hub processes (on one Redis when
    ``redis``); the drivers are on node 0, so viewers on the other nodes measure the
    cross-node path: ack on node 0 to receipt on node k."""
    setup = f"{nodes} node{'s' * (nodes > 1)} ({'redis' if redis else 'memory'})"
    result = NodesResult(setup, nodes, n, rate, seconds, workspaces)
    with tempfile.TemporaryDirectory() as workdir:
        env = {"HUB_DATABASE_URL": f"sqlite:///{workdir}/hub.db"}
        redis_proc = None
        if redis:
            redis_proc, env["HUB_REDIS_URL"] = _spawn_redis()
        servers: list[Server] = []
        try:
            for _ in range(nodes):  # one after the other: the SQLite schema is made once
                servers.append(Server("hub", free_port(), workdir, env))
                servers[-1].wait_ready()
            await _measure_nodes(servers, redis_proc, result, sample)
        finally:
            for server in servers:
                log = server.stop()
                if "Traceback" in log:
                    print(log[-3000:], file=sys.stderr)
            if redis_proc is not None:
                redis_proc.kill()
                redis_proc.wait()
    return result


async def _measure_nodes(servers: list[Server], redis_proc: subprocess.Popen[bytes] | None,
                         result: NodesResult, sample: int) -> None:  # fmt: skip
    n, w, k = result.n, result.workspaces, len(servers)
    ids = [servers[0].workspace(f"/bench/{i}") for i in range(w)]
    cid = "00000000-0000-4000-8000-{:012d}"
    placed: list[tuple[Viewer, int, int]] = []  # (viewer, workspace index, node)
    for node, server in enumerate(servers):
        mine = [i for i in range(n) if i % k == node]
        paths = [f"/v1/workspaces/{ids[i % w]}/ws?client_id={cid.format(i)}" for i in mine]
        conns: list[Viewer] = await connect_all(Viewer, server.port, paths)
        placed += [(v, i % w, node) for v, i in zip(conns, mine, strict=True)]
    drivers: list[Driver] = await connect_all(
        Driver, servers[0].port,
        [f"/v1/workspaces/{x}/ws?client_id={cid.format(10**9 + i)}" for i, x in enumerate(ids)],
    )  # fmt: skip
    await asyncio.sleep(0.5)
    for v, _, _ in placed:
        v.recording = True
    cpu0 = [s.cpu() for s in servers]
    redis0 = _cpu_of(redis_proc.pid) if redis_proc is not None else 0.0
    own0 = _own_cpu()
    t0 = time.monotonic()
    result.changes = await drive(drivers, result.rate, result.seconds)
    final = await drain(drivers, result.changes)
    await poll(lambda: all(v.last >= final[x] for v, x, _ in placed), time.monotonic() + 10)
    elapsed = time.monotonic() - t0
    cpu = sum(s.cpu() - c for s, c in zip(servers, cpu0, strict=True))
    result.hub_cores = cpu / elapsed
    result.load_cores = (_own_cpu() - own0) / elapsed
    if redis_proc is not None:
        result.redis_cpu_s = _cpu_of(redis_proc.pid) - redis0
    result.delivered = sum(len(v.seqs) for v, _, _ in placed)
    result.frames_per_s = result.delivered / elapsed
    result.cpu_per_frame_us = cpu / max(result.delivered, 1) * 1e6
    result.lost = sum(1 for v, x, _ in placed if v.last < final[x])
    result.out_of_order = sum(v.disorder for v, _, _ in placed)
    acks = [sorted(d.acks.values(), key=lambda a: a[1]) for d in drivers]
    same = [(v, acks[x]) for v, x, node in placed if node == 0]
    cross = [(v, acks[x]) for v, x, node in placed if node != 0]
    result.latency_same_p50_ms, result.latency_same_p99_ms, _ = latencies(same, sample)
    if cross:
        result.latency_cross_p50_ms, result.latency_cross_p99_ms, _ = latencies(cross, sample)
    for c in [*(v for v, _, _ in placed), *drivers]:
        if c.transport is not None:
            c.transport.close()
    await asyncio.sleep(0.2)


def nodes_table(results: list[NodesResult]) -> str:
    first = results[0]
    lines = [
        f"N={first.n} W={first.workspaces} R={first.rate:g}/s T={first.seconds:g}s "
        "(drivers on node 0; 'cross' = viewers on the other nodes)",
        f"{'setup':18} {'frames/s':>10} {'vs 1 node':>9} {'us/frame':>9} {'same p50/p99 ms':>16} "
        f"{'cross p50/p99 ms':>17} {'hub/load cores':>14} {'redis cpu s':>11} {'lost':>5} "
        f"{'order':>5}",
    ]
    one = next((r for r in results if r.nodes == 1 and "redis" in r.setup), first)
    for r in results:
        lines.append(
            f"{r.setup:18} {r.frames_per_s:10.0f} {r.frames_per_s / one.frames_per_s:8.2f}x "
            f"{r.cpu_per_frame_us:9.2f} "
            f"{r.latency_same_p50_ms:7.1f}/{r.latency_same_p99_ms:<8.1f} "
            f"{r.latency_cross_p50_ms:8.1f}/{r.latency_cross_p99_ms:<8.1f} "
            f"{r.hub_cores:8.2f}/{r.load_cores:<5.2f} "
            f"{r.redis_cpu_s:11.2f} {r.lost:5d} {r.out_of_order:5d}"
        )
    return "\n".join(lines)


# -- slow consumers -------------------------------------------------------------------------


@dataclass
class SlowResult:
    readers: int
    slow: int
    latency_p99_ms: float = 0.0
    peak_rss_mb: float = 0.0
    closed_4409: int = 0
    slowest_close_s: float = 0.0
    lost: int = 0


def _http(port: int, method: str, path: str, body: Any = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method=method)
    with urllib.request.urlopen(req, timeout=10) as response:
        raw = response.read()
        return json.loads(raw) if raw else None


async def run_slow(readers: int, slow: int, rate: float, seconds: float, sample: int,
                   updates: float, title: int) -> SlowResult:  # fmt: skip
    """Readers next to sockets that never read, under counts and session-update traffic."""
    result = SlowResult(readers, slow)
    with tempfile.TemporaryDirectory() as workdir:
        server = Server("hub", free_port(), workdir)
        try:
            server.wait_ready()
            await _measure_slow(server, result, rate, seconds, sample, updates, title)
        finally:
            server.stop()
    return result


async def _measure_slow(server: Server, result: SlowResult, rate: float, seconds: float,
                        sample: int, updates: float, title: int) -> None:  # fmt: skip
    port = server.port
    w = server.workspace("/bench/slow")
    base = f"/v1/workspaces/{w}"
    await asyncio.to_thread(_http, port, "POST", f"{base}/sessions", {"id": "S0"})
    cid = "00000000-0000-4000-8000-{:012d}"
    viewers: list[Viewer] = await connect_all(
        Viewer, port, [f"{base}/ws?client_id={cid.format(i)}" for i in range(result.readers)]
    )
    slow_ids = [cid.format(10**6 + i) for i in range(result.slow)]
    slow: list[WsClient] = await connect_all(
        WsClient, port, [f"{base}/ws?client_id={c}" for c in slow_ids], read=False
    )
    (driver,) = await connect_all(Driver, port, [f"{base}/ws?client_id={cid.format(10**9)}"])
    for v in viewers:
        v.recording = True
    closed_at: dict[str, float] = {}
    t0 = time.monotonic()

    async def watch() -> None:
        """Sample RSS; note when each slow client stops being attached and let it read its
        close then. Runs until cancelled."""
        while True:
            claims = await asyncio.to_thread(_http, port, "GET", f"{base}/clients")
            states = {c["client_id"]: c["state"] for c in claims}
            for c, client in zip(slow_ids, slow, strict=True):
                if c not in closed_at and states.get(c) != "attached":
                    closed_at[c] = time.monotonic() - t0
                    if client.transport is not None:
                        client.transport.resume_reading()
            result.peak_rss_mb = max(result.peak_rss_mb, server.rss() / 2**20)
            await asyncio.sleep(0.25)

    async def update_sessions() -> None:
        i = 0
        while time.monotonic() - t0 < seconds:
            body = {"title": "t" * title, "message_count": i}
            await asyncio.to_thread(_http, port, "PUT", f"{base}/sessions/S0", body)
            i += 1
            await asyncio.sleep(max(0, t0 + i / updates - time.monotonic()))

    watcher = asyncio.create_task(watch())
    updater = asyncio.create_task(update_sessions())
    ref = 0
    while ref < int(rate * seconds):
        due = min(int(rate * seconds), int((time.monotonic() - t0) * rate) + 1)
        while ref < due:
            driver.set_session(ref, f"S{ref % 3}")
            ref += 1
        await asyncio.sleep(max(0, t0 + ref / rate - time.monotonic()))
    await updater
    deadline = time.monotonic() + 10
    await poll(lambda: len(driver.acks) >= ref, deadline)
    final = max(seq for _, seq in driver.acks.values())
    await poll(lambda: all(v.last >= final for v in viewers), deadline)
    if result.slow:
        await poll(lambda: len(closed_at) == len(slow_ids), time.monotonic() + 15)
    watcher.cancel()
    result.lost = sum(1 for v in viewers if v.last < final)
    result.latency_p99_ms = latencies(viewers, [sorted(driver.acks.values(), key=lambda a: a[1])],
                                      sample)[1]  # fmt: skip
    await asyncio.gather(*(asyncio.wait_for(c.closed, 3) for c in slow), return_exceptions=True)
    result.closed_4409 = sum(1 for c in slow if c.closed.done() and c.closed.result() == 4409)
    result.slowest_close_s = max(closed_at.values(), default=0.0)
    for c in [*viewers, *slow, driver]:
        if c.transport is not None:
            c.transport.close()
    await asyncio.sleep(0.2)


def slow_table(calm: SlowResult, busy: SlowResult, rate: float, updates: float,
               title: int) -> str:  # fmt: skip
    return "\n".join(
        [
            f"slow consumers: {busy.readers} readers, {busy.slow} never-reading sockets, "
            f"R={rate:g}/s + {updates:g} session updates/s of {title} B",
            f"{'figure':40} {'no slow':>12} {'with slow':>12} {'ratio':>9}",
            f"{'readers latency p99 (ms)':40} {calm.latency_p99_ms:12.2f} "
            f"{busy.latency_p99_ms:12.2f} {busy.latency_p99_ms / calm.latency_p99_ms:8.2f}x",
            f"{'peak server RSS (MB)':40} {calm.peak_rss_mb:12.1f} {busy.peak_rss_mb:12.1f} "
            f"{busy.peak_rss_mb / calm.peak_rss_mb:8.2f}x",
            f"{'readers lost frames':40} {calm.lost:12d} {busy.lost:12d}",
            f"{'slow sockets closed with 4409':40} {'-':>12} {busy.closed_4409:>7d}/{busy.slow}",
            f"{'last slow socket closed after (s)':40} {'-':>12} {busy.slowest_close_s:12.2f}",
        ]
    )


# -- reporting ------------------------------------------------------------------------------

FIGURES = [
    ("cpu_per_frame_us", "server CPU per delivered frame (us)"),
    ("user_cpu_per_frame_us", "  of it in user mode (us)"),
    ("frames_per_s", "delivered frames/s"),
    ("latency_p50_ms", "latency p50 (ms)"),
    ("latency_p99_ms", "latency p99 (ms)"),
    ("latency_max_ms", "latency max (ms)"),
    ("idle_bytes_per_conn", "idle memory per connection (bytes)"),
    ("connect_s", "N sockets connected in (s)"),
    ("connect_cpu_s", "server CPU to connect them (s)"),
    ("settled_s", "every socket told online=N after (s)"),  # 0 for the peers: see the docstring
    ("wrong_views", "sockets told another online"),
    ("cpu_per_set_session_us", "server CPU per set_session (us)"),
    ("cpu_per_lone_set_session_us", "  one at a time, each after its ack (us)"),
    ("lost", "lost frames"),
    ("out_of_order", "out-of-order frames"),
]


# -- people: profiles and viewers -------------------------------------------------------------


class Watcher(WsClient):
    """Watches a session: counts its viewers frames and the viewers_diff frames after them,
    and keeps the ``"v"`` of the last profile it saw."""

    V = re.compile(rb'"v":(\d+)')

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lists = 0
        self.diffs = 0
        self.last_v = -1

    def on_text(self, payload: bytes) -> None:
        if not self.ready.done():
            self.ready.set_result(None)
            return
        if payload.startswith(b'{"type":"viewers"'):
            self.lists += 1
        elif payload.startswith(b'{"type":"viewers_diff"'):
            self.diffs += 1
            m = self.V.search(payload)
            if m is not None:
                self.last_v = max(self.last_v, int(m.group(1)))


@dataclass
class PeopleResult:
    n: int
    watchers: int
    rate: float
    seconds: float
    anonymous_bytes_per_conn: float = 0.0
    people_bytes_per_conn: float = 0.0
    updates: int = 0
    diffs_delivered: int = 0
    cpu_per_update_us: float = 0.0
    cpu_per_diff_us: float = 0.0
    lost: int = 0


PROFILE_BYTES = 1000  # a profile of about 1 KB encoded (the limit is 1024)


def _profile(user: int, v: int = 0) -> dict[str, Any]:
    body = {"name": f"User {user}", "v": v, "bio": ""}
    body["bio"] = "x" * (PROFILE_BYTES - len(json.dumps(body)))
    return body


async def run_people(n: int, watchers: int, rate: float, seconds: float) -> PeopleResult:
    result = PeopleResult(n, watchers, rate, seconds)
    with tempfile.TemporaryDirectory() as workdir:
        server = Server("hub", free_port(), workdir)
        try:
            server.wait_ready()
            await _measure_people(server, result)
        finally:
            log = server.stop()
            if "Traceback" in log:
                print(log[-3000:], file=sys.stderr)
    return result


async def _measure_people(server: Server, result: PeopleResult) -> None:
    port, n = server.port, result.n
    cid = "00000000-0000-4000-8000-{:012d}"
    anonymous, people = server.workspace("/bench/anonymous"), server.workspace("/bench/people")
    await asyncio.sleep(0.5)
    rss0 = server.rss()
    plain = await connect_all(
        Viewer, port, [f"/v1/workspaces/{anonymous}/ws?client_id={cid.format(i)}" for i in range(n)]
    )
    await asyncio.sleep(1.0)
    result.anonymous_bytes_per_conn = (server.rss() - rss0) / n
    rss0 = server.rss()  # the anonymous ones stay open: nothing freed is reused below
    paths = [
        f"/v1/workspaces/{people}/ws?client_id={cid.format(n + i)}&user_id=u{i}" for i in range(n)
    ]
    users = await connect_all(Viewer, port, paths)
    for i, u in enumerate(users):  # 10 users a session, each with a 1 KB profile
        u.send(json.dumps({"type": "set_session", "session_id": f"S{i // 10}"}).encode())
        u.send(json.dumps({"type": "set_profile", "profile": _profile(i)}).encode())
    last = f"S{(n - 1) // 10}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        found = _http(port, "GET", f"/v1/workspaces/{people}/viewers?session_id={last}")
        if found["viewers"] and all(v["profile"] for v in found["viewers"]):
            break
        await asyncio.sleep(0.1)
    await asyncio.sleep(1.0)
    result.people_bytes_per_conn = (server.rss() - rss0) / n
    # viewers_diff to W watchers of S0: its user u0 changes its profile R times a second.
    watch_paths = [
        f"/v1/workspaces/{people}/ws?client_id={cid.format(3 * n + i)}"
        for i in range(result.watchers)
    ]
    watching = await connect_all(Watcher, port, watch_paths)
    for w in watching:
        w.send(json.dumps({"type": "watch", "session_id": "S0"}).encode())
    await poll(lambda: all(w.lists for w in watching), time.monotonic() + 10)
    await asyncio.sleep(0.5)
    cpu0 = server.cpu()
    total = int(result.rate * result.seconds)
    t0 = time.monotonic()
    for v in range(1, total + 1):
        frame = {"type": "set_profile", "profile": _profile(0, v)}
        users[0].send(json.dumps(frame).encode())
        await asyncio.sleep(max(0.0, t0 + v / result.rate - time.monotonic()))
    await poll(lambda: all(w.last_v >= total for w in watching), time.monotonic() + 10)
    cpu = server.cpu() - cpu0
    result.updates = total
    result.diffs_delivered = sum(w.diffs for w in watching)
    result.cpu_per_update_us = cpu / total * 1e6
    result.cpu_per_diff_us = cpu / max(1, result.diffs_delivered) * 1e6
    result.lost = sum(1 for w in watching if w.last_v < total)
    for c in [*plain, *users, *watching]:
        if c.transport is not None:
            c.transport.close()
    await asyncio.sleep(0.2)


def people_table(r: PeopleResult) -> str:
    extra = r.people_bytes_per_conn - r.anonymous_bytes_per_conn
    return "\n".join(
        [
            f"people: N={r.n} (10 users a session, {PROFILE_BYTES} B profiles), "
            f"{r.watchers} watchers, R={r.rate:g} profile updates/s, T={r.seconds:g}s",
            f"{'idle bytes per socket, anonymous':48} {r.anonymous_bytes_per_conn:12.0f}",
            f"{'idle bytes per socket, a user with a profile':48} {r.people_bytes_per_conn:12.0f}",
            f"{'what people cost per claim (bytes)':48} {extra:12.0f}",
            f"{'server CPU per profile update (us)':48} {r.cpu_per_update_us:12.1f}",
            f"{'viewers_diff frames delivered':48} {r.diffs_delivered:12d}",
            f"{'server CPU per delivered viewers_diff (us)':48} {r.cpu_per_diff_us:12.2f}",
            f"{'watchers that missed the last update':48} {r.lost:12d}",
        ]
    )


# -- tokens (--tokens) ----------------------------------------------------------------------


@dataclass
class TokensResult:
    kind: str  # "open", "HS256" or "RS256"
    n: int
    storm_cpu_s: float = 0.0
    storm_s: float = 0.0
    idle_cpu_pct: float = 0.0  # of one core, over IDLE_S with every socket open
    bytes_per_conn: float = 0.0


IDLE_S = 10.0


async def run_tokens(kind: str, n: int, idle_s: float = IDLE_S) -> TokensResult:
    """One hub, verifying ``kind`` tokens ("open": none), and a storm of N sockets."""
    import jwt
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    result = TokensResult(kind, n)
    secret = "bench-" + "s" * 40
    with tempfile.TemporaryDirectory() as workdir:
        env: dict[str, str] = {}
        private: Any = secret
        if kind == "HS256":
            env["HUB_AUTH_SECRET"] = secret
        elif kind == "RS256":
            private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            pem = Path(workdir) / "public.pem"
            pem.write_bytes(
                private.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
            )
            env.update(HUB_AUTH_PUBLIC_KEY=str(pem), HUB_AUTH_ISSUER="bench")

        def token(claims: dict[str, Any]) -> str:
            body = {"exp": int(time.time()) + 3600, "iss": "bench", **claims}
            return jwt.encode(body, private, algorithm="HS256" if kind != "RS256" else "RS256")

        server = Server("hub", free_port(), workdir, env)
        try:
            server.wait_ready()
            admin = token({"ws": "*", "scope": "admin", "sub": "admin"})
            workspace = _token_workspace(server.port, admin if kind != "open" else None)
            cid = "00000000-0000-4000-8000-{:012d}"
            paths = []
            for i in range(n):
                path = f"/v1/workspaces/{workspace}/ws?client_id={cid.format(i)}"
                if kind == "HS256":  # a hub token: its user in "user"
                    path += "&token=" + token({"ws": [workspace], "user": f"u{i}"})
                elif kind == "RS256":  # a provider's: its user in "sub"
                    path += "&token=" + token({"ws": [workspace], "sub": f"u{i}"})
                paths.append(path)
            await asyncio.sleep(0.5)
            rss0 = server.rss()
            cpu0, t0 = server.cpu(), time.monotonic()
            viewers = await connect_all(WsClient, server.port, paths)
            result.storm_s, result.storm_cpu_s = time.monotonic() - t0, server.cpu() - cpu0
            await asyncio.sleep(2.0)  # the storm's pushes settle
            cpu1 = server.cpu()
            await asyncio.sleep(idle_s)
            result.idle_cpu_pct = (server.cpu() - cpu1) / idle_s * 100
            result.bytes_per_conn = (server.rss() - rss0) / n
            for v in viewers:
                if v.transport is not None:
                    v.transport.close()
        finally:
            log = server.stop()
            if "Traceback" in log:
                print(log[-3000:], file=sys.stderr)
    return result


def _token_workspace(port: int, token: str | None) -> str:
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/workspaces",
        data=json.dumps({"path": "/bench/tokens"}).encode(),
        headers={"Authorization": f"Bearer {token}"} if token else {},
        method="POST",
    )
    with urllib.request.urlopen(req) as response:
        workspace_id: str = json.loads(response.read())["id"]
        return workspace_id


def tokens_table(rounds: list[dict[str, TokensResult]]) -> str:
    kinds = list(rounds[0])
    n = rounds[0][kinds[0]].n
    lines = [
        f"tokens: connect storm of {n} sockets (medians of {len(rounds)} rounds)",
        f"{'':10} {'storm CPU s':>12} {'storm s':>9} {'idle CPU %':>11} {'B/socket':>9}",
    ]
    for kind in kinds:
        med = [rd[kind] for rd in rounds]
        lines.append(
            f"{kind:10} {statistics.median(r.storm_cpu_s for r in med):12.3f} "
            f"{statistics.median(r.storm_s for r in med):9.2f} "
            f"{statistics.median(r.idle_cpu_pct for r in med):11.3f} "
            f"{statistics.median(r.bytes_per_conn for r in med):9.0f}"
        )
    if "RS256" in kinds and "HS256" in kinds:
        ratios = [rd["RS256"].storm_cpu_s / rd["HS256"].storm_cpu_s for rd in rounds]
        lines.append(
            "storm CPU RS256/HS256 by round: "
            + " ".join(f"{r:.3f}" for r in ratios)
            + f" (median {statistics.median(ratios):.3f})"
        )
    return "\n".join(lines)


def median_result(rounds: list[Result]) -> Result:
    """One server's figures over repeated rounds: the median of each, the worst of the lost
    and reordered frames and of the wrong views (one round's loss is not averaged away)."""
    if len(rounds) == 1:
        return rounds[0]
    merged = Result(rounds[0].server, rounds[0].n, rounds[0].rate, rounds[0].seconds)
    for key, _ in FIGURES:
        values = [getattr(r, key) for r in rounds]
        worst = key in ("lost", "out_of_order", "wrong_views")
        setattr(merged, key, max(values) if worst else statistics.median(values))
    merged.changes = rounds[0].changes
    merged.notes = [f"round {i + 1}: {note}" for i, r in enumerate(rounds) for note in r.notes]
    return merged


def spread(rounds: list[dict[str, Result]], other: str) -> str:
    """The hub/other ratio of the CPU per delivered frame round by round (the table above
    holds the medians of each server's figures)."""
    ratios = [rd["hub"].cpu_per_frame_us / rd[other].cpu_per_frame_us for rd in rounds]
    each = " ".join(f"{x:.2f}x" for x in ratios)
    return (
        f"CPU per frame hub/{other[:6]}, round by round: {each} "
        f"(median {statistics.median(ratios):.2f}x, {min(ratios):.2f}x-{max(ratios):.2f}x)"
    )


def table(hub: Result, base: Result, name: str = "baseline", short: str = "base") -> str:
    lines = [
        f"N={hub.n} R={hub.rate:g}/s T={hub.seconds:g}s changes={hub.changes}",
        f"{'figure':40} {'hub':>12} {name:>12} {'hub/' + short:>9}",
    ]
    for key, label in FIGURES:
        h, b = getattr(hub, key), getattr(base, key)
        ratio = f"{h / b:.2f}x" if b else "-"
        lines.append(f"{label:40} {h:12.2f} {b:12.2f} {ratio:>9}")
    for r in (hub, base):
        for note in r.notes:
            lines.append(f"note ({r.server}): {note}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, nargs="+", default=[1000, 5000], help="viewer sockets")
    parser.add_argument("--rate", type=float, default=100, help="changes per second")
    parser.add_argument("--seconds", type=float, default=10, help="fan-out phase length")
    parser.add_argument("--workspaces", type=int, default=1, help="spread viewers over W")
    parser.add_argument("--sets", type=int, default=10000, help="set_session ops for its CPU")
    parser.add_argument("--sample", type=int, default=500, help="viewers sampled for latency")
    parser.add_argument(
        "--servers",
        nargs="+",
        default=["hub", "baseline", "node"],
        help="hub, baseline (websockets.broadcast), node (Node ws), uvloop (the hub on "
        "uvloop), python (the hub without its compiled send loop), before (--before), sse "
        "(the hub, its viewers on the event stream), mounted (the hub in a FastAPI app under "
        "plain uvicorn, HUB_FAST_PATHS=off), mounted-wsproto (the same, uvicorn --ws wsproto)",
    )
    parser.add_argument(
        "--transport",
        choices=["websocket", "sse"],
        default="websocket",
        help="sse: the hub with WebSocket viewers and with event-stream viewers, side by side",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="rounds of every server per N, alternated (every other one in reverse): the "
        "tables hold each figure's median, then the CPU-per-frame ratio round by round",
    )
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument(
        "--hub-args", default="", help='extra hub serve flags, e.g. "--loop uvloop"'
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="N=50, 2 s, a smoke run (--n, --seconds, --sets and --rate given as well win)",
    )
    parser.add_argument(
        "--slow",
        type=int,
        default=0,
        help="the slow-consumer scenario: this many never-reading sockets",
    )
    parser.add_argument(
        "--nodes",
        type=int,
        default=0,
        help="scale-out: 1 node (memory), 1 node (Redis) and this many nodes on one Redis",
    )
    parser.add_argument(
        "--before", type=Path, help="also run the hub of this source tree (server 'before')"
    )
    parser.add_argument("--people", action="store_true", help="the people scenario")
    parser.add_argument(
        "--tokens", action="store_true", help="the connect storm with RS256 vs HS256 tokens"
    )
    parser.add_argument("--watchers", type=int, default=100, help="--people: watchers")
    parser.add_argument("--updates", type=float, default=50, help="--slow: session updates/s")
    parser.add_argument("--title", type=int, default=4000, help="--slow: bytes per update")
    parser.add_argument(
        "--no-pin",
        dest="pin",
        action="store_false",
        help="let the scheduler place the servers and the load side (default: a compared "
        "server on the first core, this process on the second)",
    )
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat takes 1 or more rounds")
    if args.quick:  # its figures are the defaults then: those given on the command line win
        parser.set_defaults(n=[50], seconds=2.0, sets=200, rate=50.0)
        args = parser.parse_args(argv)
    if args.transport == "sse":
        args.servers = ["hub", "sse"]
    HUB_ARGS.extend(args.hub_args.split())
    if args.before is not None:
        BEFORE.append(str(args.before.resolve()))
        if "before" not in args.servers:
            args.servers.append("before")
    _raise_nofile()
    try:  # the load side only: it must keep up with the servers (the hub does not use it)
        import uvloop

        run = uvloop.run
    except ImportError:
        run = asyncio.run
    if args.nodes:
        for n in args.n:
            setups = [(1, False), (1, True), (args.nodes, True)]
            found = [
                run(run_nodes(k, redis, n, args.rate, args.seconds, args.workspaces, args.sample))
                for k, redis in setups
            ]
            print(nodes_table(found), flush=True)
            if args.json:
                args.json.write_text(json.dumps([asdict(r) for r in found], indent=2))
        return 0
    if args.tokens:
        cores = sorted(os.sched_getaffinity(0))
        if args.pin and len(cores) >= 2:
            SERVER_CPUS.add(cores[0])
            os.sched_setaffinity(0, {cores[1]})
        for n in args.n:
            token_rounds: list[dict[str, TokensResult]] = []
            kinds = ["HS256", "RS256", "open"]
            for i in range(args.repeat):
                order = kinds if i % 2 == 0 else kinds[::-1]
                token_rounds.append({k: run(run_tokens(k, n)) for k in order})
            token_rounds = [{k: rd[k] for k in kinds} for rd in token_rounds]
            print(tokens_table(token_rounds), flush=True)
            if args.json:
                rows = [asdict(r) for rd in token_rounds for r in rd.values()]
                args.json.write_text(json.dumps(rows, indent=2))
        return 0
    if args.people:
        measured = [run(run_people(n, args.watchers, args.rate, args.seconds)) for n in args.n]
        for person in measured:
            print(people_table(person), flush=True)
        if args.json:
            args.json.write_text(json.dumps([asdict(p) for p in measured], indent=2))
        return 0
    if args.slow:
        for n in args.n:
            calm, busy = (
                run(run_slow(n, s, args.rate, args.seconds, args.sample, args.updates, args.title))
                for s in (0, args.slow)
            )
            print(slow_table(calm, busy, args.rate, args.updates, args.title), flush=True)
            if args.json:
                args.json.write_text(json.dumps([asdict(calm), asdict(busy)], indent=2))
        return 0
    cores = sorted(os.sched_getaffinity(0))
    if args.pin and len(cores) >= 2:  # the compared servers on one core, this side on another
        SERVER_CPUS.add(cores[0])
        os.sched_setaffinity(0, {cores[1]})
    if "node" in args.servers and (why := node_ws_ready()):
        print(f"note: the Node ws peer is left out: {why}", flush=True)
        args.servers.remove("node")
    results: list[Result] = []
    for n in args.n:
        rounds: list[dict[str, Result]] = []
        for i in range(args.repeat):  # every other round in reverse: a drift hits both sides
            rounds.append({})
            for kind in args.servers if i % 2 == 0 else args.servers[::-1]:
                r = run(
                    run_one(
                        kind, n, args.rate, args.seconds, args.workspaces, args.sets, args.sample
                    )
                )
                results.append(r)
                rounds[-1][kind] = r
        by_kind = {kind: median_result([rd[kind] for rd in rounds]) for kind in args.servers}
        if "hub" in by_kind and len(by_kind) > 1:
            for other in ("baseline", "node", "uvloop", "python", "before", "sse", *MOUNTED):
                if other in by_kind:
                    print(table(by_kind["hub"], by_kind[other], other, other[:6]), flush=True)
                    if len(rounds) > 1:
                        print(spread(rounds, other), flush=True)
                    print(flush=True)
        else:
            for r in by_kind.values():
                print(json.dumps(asdict(r)), flush=True)
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
