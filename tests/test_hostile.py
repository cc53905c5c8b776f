"""Connections as an attacker opens them, against a real ``hub serve`` process over real sockets:
silent, half a request line, a head trickled a byte at a time, more connections than the process
has descriptors, more waiting ones than the cap (hub.admission, hub.transport's accept guard);
and RFC 6455 as a strict client reads it (a wrong version, a close between fragments).

Timings are only ever bounds with a margin (closed within the head bound + 2 s), never speeds.
"""

from __future__ import annotations

import asyncio
import base64
import errno
import json
import logging
import os
import socket
import struct
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvloop
from websockets.asyncio.client import ClientConnection, connect

from hub import transport
from hub.admission import default_pending_cap
from hub.cli import uvicorn_config
from hub.settings import Settings
from tests.harness import HubProcess, LimitedHubProcess, new_client_id

BOUND = 1.0  # HUB_HANDSHAKE_TIMEOUT in these tests
MARGIN = 2.0


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubProcess]:
    """A hub whose request heads are bounded by BOUND, with room for every waiting connection."""
    process = HubProcess(
        tmp_path_factory.mktemp("hostile") / "hub.db",
        HUB_HANDSHAKE_TIMEOUT=str(BOUND),
        HUB_MAX_PENDING_CONNECTIONS="10000",
    )
    yield process
    process.stop()


def handshake(path: str, version: int = 13) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    return (
        f"GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: {version}\r\n\r\n"
    ).encode()


def masked(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    """One client frame (masked, as RFC 6455 requires of a client); payload under 126 bytes."""
    mask = os.urandom(4)
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes([(0x80 if fin else 0) | opcode, 0x80 | len(payload)]) + mask + body


async def workspace(hub: HubProcess) -> str:
    async with httpx.AsyncClient(base_url=hub.url, timeout=5) as http:
        response = await http.post("/v1/workspaces", json={"path": f"/h/{os.urandom(6).hex()}"})
        assert response.status_code == 200, response.text
        workspace_id: str = response.json()["id"]
        return workspace_id


async def health(hub: HubProcess, within: float = 5) -> int:
    async with httpx.AsyncClient(base_url=hub.url, timeout=within) as http:
        return (await http.get("/v1/health")).status_code


async def joined(hub: HubProcess, workspace_id: str) -> ClientConnection:
    url = f"ws://127.0.0.1:{hub.port}/v1/workspaces/{workspace_id}/ws?client_id={new_client_id()}"
    ws = await connect(url, compression=None, ping_interval=None)
    assert json.loads(await asyncio.wait_for(ws.recv(), 5))["type"] == "snapshot"
    return ws


async def answers(ws: ClientConnection, ref: int) -> bool:
    """Whether a joined socket still answers a frame (its ack)."""
    await ws.send(json.dumps({"type": "set_session", "session_id": f"S{ref}", "ref": ref}))
    while True:
        frame = json.loads(await asyncio.wait_for(ws.recv(), 5))
        if frame["type"] == "ack" and frame.get("ref") == ref:
            return True


async def closed_after(reader: asyncio.StreamReader, opened: float) -> tuple[float, bytes]:
    """Read until the server closes; seconds from ``opened`` and what it sent."""
    data = b""
    try:
        while chunk := await asyncio.wait_for(reader.read(4096), BOUND + MARGIN + 5):
            data += chunk
    except ConnectionResetError:
        pass
    return time.monotonic() - opened, data


async def silent(hub: HubProcess) -> tuple[float, bytes]:
    opened = time.monotonic()
    reader, writer = await asyncio.open_connection("127.0.0.1", hub.port)
    try:
        return await closed_after(reader, opened)
    finally:
        writer.close()


async def half_line(hub: HubProcess) -> tuple[float, bytes]:
    opened = time.monotonic()
    reader, writer = await asyncio.open_connection("127.0.0.1", hub.port)
    writer.write(b"GET /v1/hea")
    try:
        return await closed_after(reader, opened)
    finally:
        writer.close()


async def trickled(hub: HubProcess, head: bytes, every: float = 0.3) -> tuple[float, bytes, int]:
    """A head sent one byte every ``every`` seconds until the server closes; the time it was
    closed, what it sent, and how many bytes went out before."""
    opened = time.monotonic()
    reader, writer = await asyncio.open_connection("127.0.0.1", hub.port)
    closing = asyncio.ensure_future(closed_after(reader, opened))
    sent = 0
    try:
        for i in range(len(head)):
            if closing.done():
                break
            writer.write(head[i : i + 1])
            sent += 1
            await asyncio.wait([closing], timeout=every)
        took, data = await closing
        return took, data, sent
    finally:
        writer.close()


async def test_unfinished_connections_close_at_the_bound_while_others_work(
    hub: HubProcess,
) -> None:
    """Silent connections, half a request line, a handshake and a REST request trickled a byte
    every 0.3 s (bytes keep coming until the end), and a kept-alive connection idle after its
    response: all closed within the bound (+ margin), a half head with a 408; meanwhile a
    joined socket and /v1/health keep answering."""
    w = await workspace(hub)
    ws = await joined(hub, w)
    path = f"/v1/workspaces/{w}/ws?client_id={new_client_id()}"
    tasks = [
        *(asyncio.ensure_future(silent(hub)) for _ in range(20)),
        *(asyncio.ensure_future(half_line(hub)) for _ in range(20)),
    ]
    trickles = [
        asyncio.ensure_future(trickled(hub, handshake(path))),
        asyncio.ensure_future(trickled(hub, b"GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n")),
    ]
    for ref in range(3):  # while they wait: the joined socket and REST answer
        assert await answers(ws, ref)
        assert await health(hub) == 200
        await asyncio.sleep(0.3)
    for took, data in await asyncio.gather(*tasks[:20]):
        assert took <= BOUND + MARGIN and data == b""  # silent: closed as it came
    for took, data in await asyncio.gather(*tasks[20:]):
        assert took <= BOUND + MARGIN and data.startswith(b"HTTP/1.1 408 "), data
    for took, data, sent in await asyncio.gather(*trickles):
        assert took <= BOUND + MARGIN and data.startswith(b"HTTP/1.1 408 "), data
        assert sent >= 3  # bytes kept arriving, and the deadline did not move
    # A kept-alive connection idle (or trickling) after its response: the bound again.
    reader, writer = await asyncio.open_connection("127.0.0.1", hub.port)
    writer.write(b"GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)).startswith(b"HTTP/1.1 200")
    took, _ = await closed_after(reader, time.monotonic())
    writer.close()
    assert took <= BOUND + MARGIN
    assert await answers(ws, 10)
    await ws.close()


async def test_the_cap_closes_the_oldest_waiting_connections(tmp_path: Path) -> None:
    """Past HUB_MAX_PENDING_CONNECTIONS the connections that waited longest are closed, the
    newest stay; a REST call gets in, and works again once the others are gone."""
    hub = HubProcess(
        tmp_path / "hub.db", HUB_HANDSHAKE_TIMEOUT="10", HUB_MAX_PENDING_CONNECTIONS="20"
    )
    try:
        streams = []
        for _ in range(30):
            streams.append(await asyncio.open_connection("127.0.0.1", hub.port))
            await asyncio.sleep(0.01)  # in order, one at a time
        oldest, newest = streams[:10], streams[10:]
        for reader, _ in oldest:  # closed within a moment, long before the bound
            assert await asyncio.wait_for(reader.read(10), MARGIN) == b""
        for reader, _ in newest:
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(reader.read(10), 0.05)
        assert await health(hub) == 200  # it gets in (the oldest waiting one made room)
        for _, writer in streams:
            writer.close()
        await asyncio.sleep(0.3)
        assert await health(hub) == 200
        w = await workspace(hub)
        ws = await joined(hub, w)
        assert await answers(ws, 1)
        await ws.close()
    finally:
        log = hub.stop()
    assert "Traceback" not in log, log


async def test_out_of_descriptors_the_hub_serves_and_accepts_again(tmp_path: Path) -> None:
    """With 256 descriptors and more connections than that: joined sockets keep answering,
    the log has a few lines about it and no traceback, and once the flood is gone /v1/health
    answers and new sockets join."""
    hub = LimitedHubProcess(
        tmp_path / "hub.db",
        256,
        HUB_HANDSHAKE_TIMEOUT="8",
        HUB_MAX_PENDING_CONNECTIONS="10000",  # no room made: the limit is what stops them
    )
    try:
        w = await workspace(hub)
        ws = await joined(hub, w)
        flood = []
        for _ in range(400):
            sock = socket.socket()
            sock.setblocking(False)
            try:
                sock.connect(("127.0.0.1", hub.port))
            except BlockingIOError:
                pass
            flood.append(sock)
        await asyncio.sleep(1.5)  # past several accept retries
        for ref in range(3):
            assert await answers(ws, ref)
        for sock in flood:
            sock.close()
        deadline = time.monotonic() + 10
        while True:  # it accepts again (within a retry, and the queue's EOFs read)
            try:
                if await health(hub, within=1) == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the hub did not accept again"
        other = await joined(hub, w)
        assert await answers(other, 1) and await answers(ws, 5)
        await other.close()
        await ws.close()
    finally:
        log = hub.stop()
    lines = [line for line in log.splitlines() if "accept" in line]
    assert "Traceback" not in log, log[-3000:]
    assert 1 <= len(lines) <= 4 and "cannot accept connections" in lines[0], log[-3000:]
    assert len(log.splitlines()) <= 20, log[-3000:]


async def test_with_the_default_cap_a_silent_flood_does_not_keep_rest_out(
    tmp_path: Path,
) -> None:
    """The issue's flood, scaled down: more silent connections than the process has
    descriptors (256), with HUB_MAX_PENDING_CONNECTIONS at its default (a quarter of them).
    The oldest waiting connections make room for the new ones, so /v1/health answers and a new
    socket joins while the flood is still open, long before the bound would close it."""
    hub = LimitedHubProcess(tmp_path / "hub.db", 256, HUB_HANDSHAKE_TIMEOUT="10")
    flood = []
    try:
        w = await workspace(hub)
        ws = await joined(hub, w)
        for _ in range(600):
            sock = socket.socket()
            sock.setblocking(False)
            try:
                sock.connect(("127.0.0.1", hub.port))
            except BlockingIOError:
                pass
            flood.append(sock)
        await asyncio.sleep(0.5)
        assert await health(hub, within=MARGIN) == 200
        other = await joined(hub, w)
        assert await answers(other, 1) and await answers(ws, 2)
        await other.close()
        await ws.close()
    finally:
        for sock in flood:
            sock.close()
        log = hub.stop()
    assert "Traceback" not in log, log[-3000:]
    assert len(log.splitlines()) <= 10, log[-3000:]


def read_head(sock: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        assert chunk, f"closed before an answer: {data!r}"
        data += chunk
    return data


@pytest.mark.parametrize("pieces", [1, 2], ids=["direct", "h11"])
def test_a_wrong_websocket_version_gets_426_naming_13(hub: HubProcess, pieces: int) -> None:
    """RFC 6455 4.2.2, on the direct handshake (the head in one piece) and on h11's path (in
    two): 426 Upgrade Required with ``Sec-WebSocket-Version: 13``."""
    request = handshake(f"/v1/workspaces/x/ws?client_id={new_client_id()}", version=8)
    with socket.create_connection(("127.0.0.1", hub.port), timeout=5) as sock:
        if pieces == 1:
            sock.sendall(request)
        else:
            sock.sendall(request[:20])
            time.sleep(0.05)
            sock.sendall(request[20:])
        head = read_head(sock).split(b"\r\n\r\n")[0].split(b"\r\n")
    assert head[0].startswith(b"HTTP/1.1 426 "), head
    assert b"sec-websocket-version: 13" in [line.lower() for line in head], head


def read_close(sock: socket.socket, data: bytes) -> bytes:
    """Frames from the server (unmasked) up to its close frame: that frame's payload."""
    while True:
        while len(data) >= 2:
            opcode, n = data[0] & 0x0F, data[1] & 0x7F
            start = 2
            if n == 126:
                if len(data) < 4:
                    break
                n, start = struct.unpack_from("!H", data, 2)[0], 4
            if len(data) < start + n:
                break
            if opcode == 8:
                return data[start : start + n]
            data = data[start + n :]
        chunk = sock.recv(65536)
        assert chunk, "closed without a close frame"
        data += chunk


@pytest.mark.parametrize("pieces", [1, 2], ids=["direct", "h11"])
async def test_a_close_between_fragments_is_echoed(hub: HubProcess, pieces: int) -> None:
    """RFC 6455 5.4: control frames may come between a message's fragments; a close there is
    answered with the close echo (its code), not with 1002."""
    w = await workspace(hub)
    request = handshake(f"/v1/workspaces/{w}/ws?client_id={new_client_id()}")

    def run() -> bytes:
        with socket.create_connection(("127.0.0.1", hub.port), timeout=5) as sock:
            if pieces == 1:
                sock.sendall(request)
            else:
                sock.sendall(request[:20])
                time.sleep(0.05)
                sock.sendall(request[20:])
            data = read_head(sock)
            head, _, rest = data.partition(b"\r\n\r\n")
            assert b" 101 " in head.split(b"\r\n")[0], head
            sock.sendall(masked(0x1, b'{"type":', fin=False))  # a text message, unfinished
            sock.sendall(masked(0x0, b'"set_session",', fin=False))
            sock.sendall(masked(0x8, struct.pack("!H", 1000) + b"bye"))
            return read_close(sock, rest)

    payload = await asyncio.to_thread(run)
    assert struct.unpack("!H", payload[:2])[0] == 1000, payload


def test_the_accept_guard_fits_this_python_and_its_fallback_folds_the_log() -> None:
    """The guarded accept is what an asyncio selector loop gets on the Python it was written
    for (3.11), the filter on one that changed asyncio's methods; uvloop needs nothing. The
    filter folds asyncio's own records of a refused accept: the first becomes one line
    without its traceback, the rest of the interval are dropped."""
    if sys.version_info[:2] == (3, 11):
        assert transport._ACCEPT_GUARDABLE  # the version it was written against
    loop = asyncio.new_event_loop()
    try:
        assert transport.guard_accepts(loop) == (
            "accept" if transport._ACCEPT_GUARDABLE else "filter"
        )
    finally:
        loop.close()
    uv = uvloop.new_event_loop()
    try:
        assert transport.guard_accepts(uv) == "none"
    finally:
        uv.close()
    fold = transport._RefusedFilter()
    error = OSError(errno.EMFILE, "Too many open files")
    records = [
        logging.LogRecord(
            "asyncio",
            logging.ERROR,
            __file__,
            1,
            "socket.accept() out of system resource\nsocket: <...>",
            (),
            (OSError, error, None),
        )  # fmt: skip
        for _ in range(100)
    ]
    shown = [record for record in records if fold.filter(record)]
    assert len(shown) == 1 and shown[0].exc_info is None
    assert "cannot accept connections" in shown[0].getMessage()
    other = logging.LogRecord("asyncio", logging.ERROR, __file__, 1, "other", (), None)
    assert fold.filter(other)


def test_keep_alive_idle_is_bounded_by_uvicorn_within_the_head_bound() -> None:
    """An idle kept-alive connection is closed by uvicorn's ``timeout_keep_alive`` (armed when
    a response completes), which ``hub serve`` leaves at a value within the head bound; the
    head bound covers the next request's bytes once they start (the test above)."""
    settings = Settings.from_env({})
    config = uvicorn_config(settings, app=object())
    assert 0 < config.timeout_keep_alive <= settings.handshake_timeout <= 10
    http = config.http
    assert isinstance(http, type) and issubclass(http, transport.HubHttpProtocol)
    assert http.admission is not None
    assert (http.admission.timeout, http.admission.cap) == (10, default_pending_cap())
