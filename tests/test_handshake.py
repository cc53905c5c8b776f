"""The direct handshake (hub.transport): a plain handshake request read once by
HubHttpProtocol and accepted by _ServerProtocol, side by side with websockets' own parser and
``ServerProtocol.accept`` on the same bytes: the same request, the same response (but its
``Date``), the same state; anything unusual goes to websockets, which answers it as before."""

from __future__ import annotations

import asyncio
import socket
import time
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.http11 import Request, Response
from websockets.server import ServerProtocol

from hub import transport
from hub.settings import Settings
from tests.conftest import FAST
from tests.harness import ServerThread, loopback_pair, new_client_id, run_on

KEY = "dGhlIHNhbXBsZSBub25jZQ=="
PLAIN = [
    b"Host: 127.0.0.1:8000",
    b"Upgrade: websocket",
    b"Connection: Upgrade",
    f"Sec-WebSocket-Key: {KEY}".encode(),
    b"Sec-WebSocket-Version: 13",
]
BROWSER = [  # what Chromium sends
    b"Host: localhost:8000",
    b"Connection: keep-alive, Upgrade",
    b"Pragma: no-cache",
    b"User-Agent: Mozilla/5.0 (X11; Linux x86_64)",
    b"Upgrade: WebSocket",
    b"Origin: http://localhost:8000",
    b"Sec-WebSocket-Version: 13",
    b"Accept-Language: fr-FR,fr;q=0.9",
    f"Sec-WebSocket-Key: {KEY}".encode(),
    b"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits",
]
LINE = b"GET /v1/workspaces/w1/ws?client_id=c1 HTTP/1.1"


def replace(lines: list[bytes], old: bytes, *new: bytes) -> list[bytes]:
    """``lines`` with the header named ``old`` replaced by ``new`` (none: removed)."""
    out: list[bytes] = []
    for line in lines:
        if line.split(b":")[0].lower() == old.lower():
            out += new
        else:
            out.append(line)
    return out


# (name, request line, header lines, whether it takes the direct path)
CASES: list[tuple[str, bytes, list[bytes], bool]] = [
    ("plain", LINE, PLAIN, True),
    ("browser", LINE, BROWSER, True),
    ("spaces and tabs", LINE, [*PLAIN, b"X-Pad: \t v \t"], True),
    ("latin-1 value", LINE, [*PLAIN, b"X-Name: Jos\xe9"], True),
    ("empty value", LINE, [*PLAIN, b"X-Empty:"], True),
    ("inner tab, colon", LINE, [*PLAIN, b"X-In:a\tb: c  \t "], True),
    ("only blanks", LINE, [*PLAIN, b"X-Blank: \t \t"], True),
    ("space before colon", LINE, [*PLAIN, b"X-A : v"], False),
    ("empty name", LINE, [*PLAIN, b": v"], False),
    ("DEL in value", LINE, [*PLAIN, b"X-Del: a\x7fb"], False),
    ("one origin", LINE, [*PLAIN, b"Origin: http://a"], True),
    ("two origins", LINE, [*PLAIN, b"Origin: http://a", b"Origin: http://b"], False),
    ("subprotocol", LINE, [*PLAIN, b"Sec-WebSocket-Protocol: chat"], False),
    ("bad subprotocol", LINE, [*PLAIN, b"Sec-WebSocket-Protocol: ,,"], False),
    (
        "version 12",
        LINE,
        replace(PLAIN, b"sec-websocket-version", b"Sec-WebSocket-Version: 12"),
        False,
    ),  # fmt: skip
    ("no version", LINE, replace(PLAIN, b"sec-websocket-version"), False),
    ("two versions", LINE, [*PLAIN, b"Sec-WebSocket-Version: 13"], False),
    ("short key", LINE, replace(PLAIN, b"sec-websocket-key", b"Sec-WebSocket-Key: AAAA"), False),
    ("bad key", LINE, replace(PLAIN, b"sec-websocket-key", b"Sec-WebSocket-Key: !!!!"), False),
    ("latin-1 key", LINE, replace(PLAIN, b"sec-websocket-key", b"Sec-WebSocket-Key: \xe9"), False),
    ("two keys", LINE, [*PLAIN, f"Sec-WebSocket-Key: {KEY}".encode()], False),
    ("no key", LINE, replace(PLAIN, b"sec-websocket-key"), False),
    ("upgrade h2c", LINE, replace(PLAIN, b"upgrade", b"Upgrade: h2c"), False),
    ("two upgrades", LINE, [*PLAIN, b"Upgrade: websocket"], False),
    ("upgrade list", LINE, replace(PLAIN, b"upgrade", b"Upgrade: websocket, h2c"), False),
    ("connection close", LINE, replace(PLAIN, b"connection", b"Connection: close"), False),
    (
        "connection empty token",
        LINE,
        replace(PLAIN, b"connection", b"Connection: Upgrade,"),
        False,
    ),  # fmt: skip
    ("connection quoted", LINE, replace(PLAIN, b"connection", b'Connection: "Upgrade"'), False),
    ("x-upgrade", LINE, replace(PLAIN, b"connection", b"Connection: x-upgrade"), False),
    ("transfer-encoding", LINE, [*PLAIN, b"Transfer-Encoding: chunked"], False),
    ("content-length 0", LINE, [*PLAIN, b"Content-Length: 0"], False),
    ("content-length 5", LINE, [*PLAIN, b"Content-Length: 5"], False),
    ("bad name", LINE, [*PLAIN, b"X Name: v"], False),
    ("folded", LINE, [*PLAIN, b" folded"], False),
    ("no colon", LINE, [*PLAIN, b"X-Nothing"], False),
    ("control in value", LINE, [*PLAIN, b"X-Bad: a\x01b"], False),
    ("lone LF", LINE, [*PLAIN, b"X-A: a\nX-B: b"], False),
    ("POST", b"POST /v1/workspaces/w1/ws HTTP/1.1", PLAIN, False),
    ("HTTP/1.0", b"GET /v1/workspaces/w1/ws HTTP/1.0", PLAIN, False),
    ("path with space", b"GET /v1/workspaces/w 1/ws HTTP/1.1", PLAIN, False),
    ("non-ASCII path", b"GET /v1/workspaces/\xe9/ws HTTP/1.1", PLAIN, False),
]


def websockets_reads(data: bytes) -> tuple[ServerProtocol, Any]:
    """What websockets' own parser makes of ``data``: the protocol, and its event (a Request)
    or None when it refused the bytes."""
    conn = ServerProtocol()
    conn.receive_data(data)
    events = conn.events_received()
    return conn, events[0] if events else None


def answer(response: Response) -> tuple[int, list[tuple[str, str]], bytes | bytearray]:
    return (
        response.status_code,
        [(k, v) for k, v in response.headers.raw_items() if k != "Date"],
        response.body,
    )


@pytest.mark.parametrize(("name", "line", "fields", "direct"), CASES, ids=[c[0] for c in CASES])
def test_the_direct_handshake_matches_websockets(
    name: str, line: bytes, fields: list[bytes], direct: bool
) -> None:
    data = b"\r\n".join([line, *fields]) + b"\r\n\r\n"
    ours = transport._plain_request(data, line, fields)
    # websockets reads the head as HubHttpProtocol hands it over: header names lower-cased
    conn, theirs = websockets_reads(b"\r\n".join([line, *transport._lowered(fields)]) + b"\r\n\r\n")
    if ours is not None:  # read as websockets reads it
        assert isinstance(theirs, Request)
        assert (ours.method, ours.path, ours.protocol) == (
            theirs.method, theirs.path, theirs.protocol,
        )  # fmt: skip
        assert list(ours.headers.raw_items()) == list(theirs.headers.raw_items())
    if not isinstance(theirs, Request):
        assert ours is None  # websockets refuses it, and so it answers it
        return
    # Accepted alike: the same response, and the same state after sending it.
    fast, full = transport._ServerProtocol(), ServerProtocol()
    mine, reference = fast.accept(theirs), full.accept(theirs)
    if name == "version 12":  # RFC 6455 4.2.2: 426 naming the version spoken (websockets: 400)
        assert (mine.status_code, mine.headers["Sec-WebSocket-Version"]) == (426, "13")
        assert reference.status_code == 400
        return
    assert answer(mine) == answer(reference)
    ours_at, theirs_at = (parsedate_to_datetime(r.headers["Date"]) for r in (mine, reference))
    assert abs((ours_at - theirs_at).total_seconds()) <= 1
    assert (fast.origin, fast.extensions, fast.subprotocol, fast.accept_called) == (
        full.origin, full.extensions, full.subprotocol, full.accept_called,
    )  # fmt: skip
    fast.send_response(mine)
    full.send_response(reference)
    assert fast.state is full.state
    took_direct = ours is not None and fast._plain_key(theirs) is not None
    assert took_direct == direct


def test_a_protocol_with_choices_takes_websockets_accept() -> None:
    """Origins, extensions or subprotocols to choose from: never the direct accept."""
    conn, request = websockets_reads(b"\r\n".join([LINE, *PLAIN]) + b"\r\n\r\n")
    for kwargs in ({"origins": ["http://a"]}, {"subprotocols": ["chat"]}):
        protocol = transport._ServerProtocol(**kwargs)  # type: ignore[arg-type]
        assert protocol._plain_key(request) is None


@pytest.mark.parametrize("compression", [None, "deflate"])
async def test_clients_connect_through_the_direct_handshake(
    monkeypatch: pytest.MonkeyPatch, compression: str | None
) -> None:
    """A real hub: a socket's handshake takes the direct path (with an extension offer too:
    permessage-deflate is off, so it is declined as websockets declines it), and the socket
    then works as any other; every attribute uvicorn gave its protocol is in a slot (no
    instance dict: 1.3 KB less per socket)."""
    direct: list[Request] = []
    protocols: list[transport.HubWebSocketProtocol] = []
    original = transport.HubWebSocketProtocol.handshake

    def spy(self: transport.HubWebSocketProtocol, request: Request) -> None:
        direct.append(request)
        protocols.append(self)
        original(self, request)

    monkeypatch.setattr(transport.HubWebSocketProtocol, "handshake", spy)
    server = ServerThread(Settings.from_env({}, **FAST)).start()
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=5) as http:
            w = (await http.post("/v1/workspaces", json={"path": "/hs"})).json()["id"]
        url = server.ws_url(w, new_client_id())
        async with connect(url, compression=compression) as ws:
            assert ws.response is not None and ws.response.headers.get_all("Date")
            assert "Sec-WebSocket-Extensions" not in ws.response.headers
            assert '"snapshot"' in str(await asyncio.wait_for(ws.recv(), 5))
            await ws.send('{"type":"set_session","session_id":"S1","ref":1}')
            frames = [str(await asyncio.wait_for(ws.recv(), 5)) for _ in range(2)]
            assert any('"ack"' in f for f in frames)
            assert vars(protocols[0]) == {}
        assert len(direct) == 1 and direct[0].path.startswith(f"/v1/workspaces/{w}/ws")
    finally:
        server.stop()


class _Endpoint:
    """What Cork reads of uvicorn's protocol: its transport, behind a bound ASGI ``send``."""

    def __init__(self, transport: Any) -> None:
        self.transport = transport

    async def send(self, message: Any) -> None:
        raise AssertionError("not called")


async def _pair() -> tuple[Any, socket.socket]:
    """A server transport of the running loop over real loopback TCP, and its peer."""
    sock, peer = loopback_pair()
    server, _ = await asyncio.get_running_loop().connect_accepted_socket(asyncio.Protocol, sock)
    peer.settimeout(0.05)
    return server, peer


def _recv(peer: socket.socket) -> bytes:
    try:
        return peer.recv(1 << 16)
    except TimeoutError:
        return b""


@pytest.mark.parametrize("loop_kind", ["asyncio", "uvloop"])
def test_a_cork_holds_the_first_bytes_until_released(loop_kind: str) -> None:
    """Cork (TCP_CORK), on both loops' transports over real TCP: what is written while it is
    on stays in the kernel (Linux holds it up to 200 ms: a run slower than 150 ms between the
    write and the look is tried again), then leaves at once on release, whole and in order;
    a second release and a release after the transport closed do nothing; a socket that is not
    TCP is not corked. On a platform without TCP_CORK, nothing is held."""

    async def run() -> None:
        if transport._TCP_CORK is None:
            await _uncorked(*await _pair())
            return
        for _ in range(5):
            server, peer = await _pair()
            cork = transport.Cork(_Endpoint(server).send)
            start = time.monotonic()
            server.write(b"HTTP/1.1 101 Switching Protocols\r\n\r\n")
            server.write(b"\x81\x02{}")
            held = await asyncio.to_thread(_recv, peer)
            in_time = time.monotonic() - start < 0.15
            cork.release()
            got = held
            while len(got) < 40 and (chunk := await asyncio.to_thread(_recv, peer)):
                got += chunk
            cork.release()  # again: nothing
            server.close()
            peer.close()
            assert got == b"HTTP/1.1 101 Switching Protocols\r\n\r\n\x81\x02{}"
            if in_time:
                assert held == b""
                break
        else:
            pytest.fail("the machine was too slow to look within 150 ms, five times")
        server, peer = await _pair()
        cork = transport.Cork(_Endpoint(server).send)
        server.write(b"bye")
        server.close()  # the transport's close sends what is held
        cork.release()
        peer.settimeout(1)
        assert await asyncio.to_thread(peer.recv, 16) == b"bye"
        peer.close()
        transport.Cork(lambda message: None).release()  # no protocol behind it: nothing
        # Not TCP (a Unix socket): the kernel refuses the cork, and writes go out as they come.
        mine, theirs = socket.socketpair()
        unix, _ = await asyncio.get_running_loop().connect_accepted_socket(asyncio.Protocol, mine)
        await _uncorked(unix, theirs)

    run_on(loop_kind, run())


@pytest.mark.parametrize("loop_kind", ["asyncio", "uvloop"])
def test_without_tcp_cork_a_cork_holds_nothing(
    loop_kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where the platform has no TCP_CORK, Cork does nothing: over real TCP, writes go out as
    they come, and a release does nothing."""
    monkeypatch.setattr(transport, "_TCP_CORK", None)

    async def run() -> None:
        await _uncorked(*await _pair())

    run_on(loop_kind, run())


async def _uncorked(server: Any, peer: socket.socket) -> None:
    """A Cork on ``server``'s transport holds nothing: a write reaches ``peer`` before any
    release; the release does nothing. Both ends are closed after."""
    cork = transport.Cork(_Endpoint(server).send)
    assert cork._sock is None
    server.write(b"as it comes")
    peer.settimeout(1)
    assert await asyncio.to_thread(peer.recv, 16) == b"as it comes"
    cork.release()
    server.close()
    peer.close()
