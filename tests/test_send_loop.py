"""The fan-out's send loop (hub.connection.send_each), compiled (hub/_fanout.c) and in Python:
in the steady state every socket of a room takes the lean path (none is handed back for the
checked one), and both loops hand back exactly the same sockets, with the same bytes sent."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import socket
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import httpx
import pytest
from websockets.protocol import State
from websockets.server import ServerProtocol

import hub.hub
from hub import connection
from hub.connection import Connection, Outgoing
from hub.settings import Settings
from hub.transport import DirectWriter, Watched, _Flag, frame_text, watched
from tests.conftest import FAST
from tests.harness import ServerThread, Viewer, loopback_pair, new_client_id, run_on
from tests.services import missing

Loop = Callable[[Iterable[Any], bytes, int], list[Any]]


def compiled() -> Loop:
    loop = connection._compiled()  # whatever HUB_PURE_PYTHON says for the process
    if loop is None:
        missing("the compiled send loop (hub/_fanout.c: a C compiler and Python's headers)")
    assert loop is not None
    return loop


LOOPS: dict[str, Callable[[], Loop]] = {
    "compiled": compiled,
    "python": lambda: connection._send_each_python,
}


class UvloopServer(ServerThread):
    """The shipped threaded hub on uvloop (``hub serve --loop uvloop``)."""

    def _run(self) -> None:
        import uvloop

        uvloop.run(self._serve())


@pytest.fixture(params=["asyncio", "uvloop"])
def server(request: pytest.FixtureRequest) -> Iterator[ServerThread]:
    kind = UvloopServer if request.param == "uvloop" else ServerThread
    srv = kind(Settings.from_env({}, **FAST)).start()
    yield srv
    srv.stop()


@pytest.mark.parametrize("which", LOOPS)
async def test_every_steady_socket_takes_the_lean_path(
    server: ServerThread, which: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    loop = LOOPS[which]()
    flushes: list[tuple[int, list[Any], list[Any]]] = []  # (sockets, handed back, expected)
    watches: list[Any] = []  # after each flush, the Watched of every socket it sent to

    def send_each(conns: Iterable[Any], wire: bytes, seq: int) -> list[Any]:
        conns = list(conns)
        # Steady sockets all: only one whose snapshot already carries the frame goes back.
        behind = [c for c in conns if c.send_now is None or seq <= c.snapshot_seq]
        slow = loop(conns, wire, seq)
        flushes.append((len(conns), slow, behind))
        watches.extend(c.writer._watch for c in conns if c not in slow)
        return slow

    monkeypatch.setattr(hub.hub, "send_each", send_each)
    async with httpx.AsyncClient(base_url=server.url, timeout=5) as http:
        w = (await http.post("/v1/workspaces", json={"path": "/lean"})).json()["id"]
    viewers = []
    for _ in range(20):
        client = new_client_id()
        viewers.append(await Viewer.open(server.ws_url(w, client), client))
    for v in viewers:
        await v.until(lambda x: x.online == 20)
    mover = viewers[0]
    for i in range(5):
        await mover.send({"type": "set_session", "session_id": f"S{i}", "ref": i})
        for v in viewers:
            await v.until(functools.partial(_counts_are, {f"S{i}": 1}))
    assert all(slow == behind for _, slow, behind in flushes)
    # every change went the lean way (but perhaps to the mover, whose ack may be queued)
    assert sum(n == 20 and len(slow) <= 1 for n, slow, _ in flushes) >= 5
    # uvloop's transports are Watched, and one that took a frame whole is known empty (the
    # next frame does not ask it); asyncio's own are read as they are.
    if isinstance(server, UvloopServer):
        assert watches and all(type(w) is Watched and not w.wrote for w in watches)
    else:
        assert watches and all(w is None for w in watches)
    for v in viewers:
        await v.close()


class _Proto:
    """What a DirectWriter reads of uvicorn's protocol: a real transport (held as the hub's
    protocol holds it: uvloop's Watched), a real websockets connection, ``close_sent``, flow
    control's ``writable``."""

    def __init__(self, transport: Any) -> None:
        self.transport = watched(transport)
        self.writable: Any = asyncio.Event()  # or the hub protocol's _Flag
        self.writable.set()
        self.conn = ServerProtocol()
        self.conn.state = State.OPEN
        self.close_sent = False


class _Other:
    """A connection of another class: its send_now is called as it is."""

    def __init__(self, answer: bool) -> None:
        self.snapshot_seq = -1
        self.calls: list[bytes] = []
        self.answer = answer

    def send_now(self, wire: bytes) -> bool:
        self.calls.append(wire)
        return self.answer


CASES = [
    "steady", "snapshot", "off", "buffered", "lost", "close_sent", "closing", "full",
    "partial", "paused", "paused_flag", "flag", "other_yes", "other_no",
]  # fmt: skip
SEQ = 7


async def _room(case: str, wire: bytes) -> tuple[Any, socket.socket | None]:
    """A connection in the state ``case`` names, and its peer's socket (None for _Other)."""
    if case.startswith("other"):
        return _Other(case == "other_yes"), None
    loop = asyncio.get_running_loop()
    sock, peer = loopback_pair()
    if case in ("full", "buffered"):  # small kernel buffers: they fill up
        peer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    transport, _ = await loop.connect_accepted_socket(asyncio.Protocol, sock)
    proto = _Proto(transport)
    conn = Connection("w", "c", DirectWriter(proto, _no_send), 1 << 20)
    conn.start(Outgoing(b"{}"), 0)  # ready and steady, its snapshot (a "{}" frame) sent
    if case == "snapshot":
        conn.snapshot_seq = SEQ
    elif case == "off":
        conn.close(4000)
    elif case == "buffered":
        proto.transport.write(b"x" * (1 << 20))  # the peer does not read: most of it waits
    elif case == "lost":
        transport.abort()
    elif case == "close_sent":
        proto.close_sent = True
    elif case == "closing":
        proto.conn.state = State.CLOSING
    elif case == "paused":  # flow control holds writes back (an empty buffer all the same)
        proto.writable.clear()
    elif case in ("paused_flag", "flag"):  # the hub protocol's own flag (read at its slot)
        proto.writable = _Flag()
        if case == "paused_flag":
            proto.writable.clear()
    elif case == "full":
        sock.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            while True:
                sock.send(b"y" * 4096)
    return conn, peer


def _received(peer: socket.socket | None) -> bytes:
    if peer is None:
        return b""
    peer.setblocking(False)
    data = b""
    with contextlib.suppress(BlockingIOError, ConnectionResetError):
        while chunk := peer.recv(1 << 20):
            data += chunk
    return data


async def _no_send(message: Any) -> None:
    raise AssertionError("the direct path was expected")


@pytest.mark.parametrize("loop_kind", ["asyncio", "uvloop"])
def test_both_loops_hand_back_the_same_sockets(loop_kind: str) -> None:
    """Every state the checks read, on real sockets and transports (asyncio's own, uvloop's):
    both loops hand back the same connections and put the same bytes on every socket; a
    partial send leaves the rest queued in the transport, in order. This is what holds the
    rule for a direct write together: DirectWriter.ready in Python, clear() in hub/_fanout.c
    (each fact it reads has a case of its own: flow control, close sent, the WebSocket's
    state, the transport closing or lost, something buffered ahead)."""
    compiled()  # skips (or fails in CI) without it
    wire = frame_text(b'{"type":"counts"}')
    big = frame_text(b"z" * (4 << 20))  # more than the socket takes at once: a partial send

    async def run(loop: Loop) -> tuple[list[str], dict[str, bytes], dict[str, list[bytes]]]:
        rooms = {case: await _room(case, big if case == "partial" else wire) for case in CASES}
        conns = [rooms[case][0] for case in CASES]
        handed = loop(conns, wire, SEQ)
        handed += loop([rooms["partial"][0]], big, SEQ)
        await asyncio.sleep(0.05)
        got = {}
        for case, (conn, peer) in rooms.items():
            # what went out, drained from the transport too (the partial case's rest)
            deadline = time.monotonic() + 5
            data = b""
            while time.monotonic() < deadline:
                data += _received(peer)
                if peer is None or case != "partial" or data.endswith(big):
                    break
                await asyncio.sleep(0.01)
            got[case] = data
            if peer is not None:
                conn.writer._proto.transport.abort()
                peer.close()
        calls = {c: rooms[c][0].calls for c in CASES if c.startswith("other")}
        for case in ("buffered", "lost", "full"):  # how much of the filler went varies
            assert wire not in got.pop(case)
        names = sorted(CASES[conns.index(c)] if c in conns else "partial" for c in handed)
        return names, got, calls

    results = {name: run_on(loop_kind, run(make())) for name, make in LOOPS.items()}
    assert results["compiled"] == results["python"]
    handed, got, calls = results["compiled"]
    assert handed == sorted(["snapshot", "off", "buffered", "lost", "close_sent", "closing",
                             "full", "paused", "paused_flag", "other_no"])  # fmt: skip
    head = frame_text(b"{}")  # the snapshot every direct socket got first
    assert got["steady"] == got["flag"] == head + wire
    assert got["partial"] == head + wire + big  # nothing lost, in order
    for case in ("snapshot", "off", "close_sent", "closing", "paused", "paused_flag"):
        assert got[case] == head  # nothing of the frame
    assert calls == {"other_yes": [wire], "other_no": [wire]}


def _counts_are(counts: dict[str, int], viewer: Viewer) -> bool:
    return viewer.counts == counts


@pytest.mark.parametrize("which", LOOPS)
def test_a_watched_transport_is_asked_its_buffer_only_after_a_write(which: str) -> None:
    """uvloop's transport, Watched: the lean path asks its buffer's size only after a write went
    through it. A frame sent whole leaves it known empty; a write that waits (the peer does not
    read) is noted and holds the lean path back until the transport has drained; nothing is
    overtaken. asyncio's own transport is not wrapped (its buffer is read as it is)."""
    loop = LOOPS[which]()
    wire = frame_text(b'{"type":"counts"}')
    filler = b"x" * (1 << 18)

    async def run() -> bytes:
        sock, peer = loopback_pair()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)  # a write can wait
        transport, _ = await asyncio.get_running_loop().connect_accepted_socket(
            asyncio.Protocol, sock
        )
        try:
            proto = _Proto(transport)
            watch = proto.transport
            assert type(watch) is Watched and watch.transport is transport
            conn = Connection("w", "c", DirectWriter(proto, _no_send), 1 << 30)
            conn.start(Outgoing(b"{}"), 0)  # written through the watch: noted
            assert watch.wrote
            assert loop([conn], wire, SEQ) == []  # asked, empty: sent, and known empty
            assert not watch.wrote
            assert loop([conn], wire, SEQ) == []  # not asked: nothing was written since
            watch.write(filler)  # as uvicorn writes (a ping, an ack): more than the kernel takes
            assert watch.wrote and transport.get_write_buffer_size() > 0
            assert loop([conn], wire, SEQ) == [conn]  # held back: it would overtake the filler
            got = b""
            deadline = time.monotonic() + 10
            while transport.get_write_buffer_size() and time.monotonic() < deadline:
                got += _received(peer)
                await asyncio.sleep(0.01)
            assert loop([conn], wire, SEQ) == []  # drained: asked again, sent
            assert not watch.wrote
            await asyncio.sleep(0.05)
            return got + _received(peer)
        finally:
            transport.abort()
            peer.close()

    head = frame_text(b"{}")
    assert run_on("uvloop", run()) == head + wire + wire + filler + wire

    async def plain() -> None:
        sock, peer = loopback_pair()
        transport, _ = await asyncio.get_running_loop().connect_accepted_socket(
            asyncio.Protocol, sock
        )
        assert watched(transport) is transport
        transport.abort()
        peer.close()

    run_on("asyncio", plain())
