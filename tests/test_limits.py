"""Limits and keepalive end to end: past each HUB_* limit comes the answer the contract names."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Callable

import httpx
from websockets.exceptions import ConnectionClosed

from tests.harness import NonReader, ServerThread, Viewer, close_code, eventually, new_client_id

MakeServer = Callable[..., ServerThread]


async def workspace_of(server: ServerThread) -> str:
    async with httpx.AsyncClient(base_url=server.url) as http:
        response = await http.post("/v1/workspaces", json={"path": "/limits"})
        workspace_id: str = response.json()["id"]
        return workspace_id


async def claims(server: ServerThread, workspace: str) -> dict[str, str]:
    async with httpx.AsyncClient(base_url=server.url) as http:
        rows = (await http.get(f"/v1/workspaces/{workspace}/clients")).json()
        return {c["client_id"]: c["state"] for c in rows}


async def test_frames_over_the_rate_get_rate_limited_then_4429(make_server: MakeServer) -> None:
    server = make_server(rate_limit=5, rate_burst=5, rate_close_after=1.0)
    w = await workspace_of(server)
    client = new_client_id()
    v = await Viewer.open(server.ws_url(w, client), client)
    for i in range(12):
        await v.send({"type": "ping", "ref": i})
    answers = [await v.next() for _ in range(12)]
    assert [a["type"] for a in answers] == ["pong"] * 5 + ["error"] * 7
    assert {a["code"] for a in answers[5:]} == {"rate_limited"}
    await asyncio.sleep(0.5)  # the bucket refills at 5/s
    await v.send({"type": "ping", "ref": "again"})
    assert await v.next() == {"type": "pong", "ref": "again"}
    # Kept up without a break for rate_close_after: closed with 4429.

    async def flood() -> None:
        with contextlib.suppress(ConnectionClosed):
            while True:
                await v.send({"type": "ping"})
                await asyncio.sleep(0.02)

    flooding = asyncio.create_task(flood())
    assert await v.closed_with() == 4429
    await flooding
    async with httpx.AsyncClient(base_url=server.url) as http:
        metrics = (await http.get("/metrics")).text
    assert 'hub_closes_total{reason="rate_limit"} 1.0' in metrics


async def test_streams_per_client_per_workspace(make_server: MakeServer) -> None:
    server = make_server(max_streams_per_client=2)
    w = await workspace_of(server)
    a = new_client_id()
    tabs = [await Viewer.open(server.ws_url(w, a), a) for _ in range(2)]
    assert await close_code(server.ws_url(w, a)) == 1013
    other = new_client_id()
    ok = await Viewer.open(server.ws_url(w, other), other)  # another client is not affected
    await tabs[0].close()
    await eventually(lambda: server.call(lambda: server.services.hub.sockets == 2))
    again = await Viewer.open(server.ws_url(w, a), a)  # room again for the first client
    assert (await claims(server, w))[a] == "attached"
    for v in (tabs[1], ok, again):
        await v.close()


async def test_sockets_per_process(make_server: MakeServer) -> None:
    server = make_server(max_sockets=3)
    w = await workspace_of(server)
    ids = [new_client_id() for _ in range(3)]
    open_ = [await Viewer.open(server.ws_url(w, c), c) for c in ids]
    refused = new_client_id()
    assert await close_code(server.ws_url(w, refused)) == 1013
    assert refused not in await claims(server, w)  # refused before any claim was touched
    await open_[0].close()
    await eventually(lambda: server.call(lambda: server.services.hub.sockets == 2))
    late = await Viewer.open(server.ws_url(w, refused), refused)
    for v in (*open_[1:], late):
        await v.close()


async def test_a_silent_peer_is_dropped_with_4408_and_its_claim_enters_grace(
    make_server: MakeServer,
) -> None:
    server = make_server(ping_interval=0.3, ping_timeout=0.3, detach_grace=5)
    w = await workspace_of(server)
    silent_id, live_id = new_client_id(), new_client_id()
    silent = NonReader(server.port, f"/v1/workspaces/{w}/ws?client_id={silent_id}")
    live = await Viewer.open(server.ws_url(w, live_id), live_id)  # answers pings by itself
    want = {silent_id: "grace", live_id: "attached"}

    async def dropped() -> bool:  # a ping (0.3 s) unanswered for 0.3 s
        return await claims(server, w) == want

    await eventually(dropped, within=5)
    assert await asyncio.to_thread(silent.read_close_code) == 4408
    silent.sock.close()
    await live.close()


def raw_head(port: int, head: str) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(head.encode())
        return s.recv(200)


UPGRADE = (
    "Upgrade: websocket\r\nConnection: Upgrade\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


async def test_oversized_handshakes_get_431_at_once(make_server: MakeServer) -> None:
    server = make_server()
    w = await workspace_of(server)
    path = f"/v1/workspaces/{w}/ws?client_id={new_client_id()}"
    long_query = f"GET {path}&pad={'a' * 9000} HTTP/1.1\r\nHost: x\r\n{UPGRADE}"
    long_header = f"GET {path} HTTP/1.1\r\nHost: x\r\nX-Pad: {'b' * 9000}\r\n{UPGRADE}"
    many = "".join(f"X-{i}: v\r\n" for i in range(300))
    many_headers = f"GET {path} HTTP/1.1\r\nHost: x\r\n{many}{UPGRADE}"
    for head in (long_query, long_header, many_headers):
        answer = await asyncio.to_thread(raw_head, server.port, head)
        assert answer.startswith(b"HTTP/1.1 431 "), answer
    normal = await asyncio.to_thread(
        raw_head, server.port, f"GET {path} HTTP/1.1\r\nHost: x\r\n{UPGRADE}"
    )
    assert normal.startswith(b"HTTP/1.1 101 ")
    assert await claims(server, w) != {}  # the server is still serving


async def test_a_handshake_in_pieces_is_upgraded_like_a_whole_one(make_server: MakeServer) -> None:
    """A handshake that arrives whole goes straight to the WebSocket protocol
    (hub.transport.HubHttpProtocol); one in pieces takes h11's path: both are answered 101,
    with header names of any case (the origin check reads them)."""
    server = make_server()
    w = await workspace_of(server)

    def handshake(pieces: int, origin: str) -> bytes:
        head = (
            f"GET /v1/workspaces/{w}/ws?client_id={new_client_id()} HTTP/1.1\r\nHost: x\r\n"
            f"ORIGIN: {origin}\r\n{UPGRADE}"
        ).encode()
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
            step = len(head) // pieces + 1
            for i in range(0, len(head), step):
                s.sendall(head[i : i + step])
                time.sleep(0.05)
            answer = s.recv(4096)
            while b"\x88" not in answer and b"snapshot" not in answer:
                answer += s.recv(4096)
            return answer

    for pieces in (1, 3):
        ok = await asyncio.to_thread(handshake, pieces, "http://localhost:5173")
        assert ok.startswith(b"HTTP/1.1 101 ") and b"snapshot" in ok, ok
        refused = await asyncio.to_thread(handshake, pieces, "http://evil.example")
        frame = refused[refused.index(b"\r\n\r\n") + 4 :]  # a close frame, 1008
        assert refused.startswith(b"HTTP/1.1 101 ") and frame[:1] == b"\x88", refused
        assert frame[2:4] == (1008).to_bytes(2, "big"), refused
