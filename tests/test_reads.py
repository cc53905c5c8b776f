"""When a socket's reads pause (hub.transport.HubWebSocketProtocol.send_receive_event_to_app):
only while the app is INBOX_HIGH messages behind, not after every message as uvicorn does;
back-pressure still holds, and nothing is lost or reordered.

Against a real hub (uvicorn, asyncio) and a real TCP client; the server side's transport is
watched by a spy that counts its pauses and resumes and calls through."""

from __future__ import annotations

import json
import os
import re
import socket
import struct
from collections.abc import Callable
from typing import Any

import httpx

from hub.transport import INBOX_HIGH, DirectWriter
from tests.harness import ServerThread, new_client_id, raw_handshake

ACK = re.compile(rb'"type":"ack"[^}]*"ref":(\d+)|"ref":(\d+)[^}]*"type":"ack"')


class RawClient:
    """A WebSocket client on a plain socket: its frames are written exactly as asked (several
    in one write when asked so), and it reads the acks of its ``set_session`` frames."""

    def __init__(self, port: int, path: str) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.settimeout(5)
        self.data = raw_handshake(self.sock, path)

    def send(self, *refs: int) -> None:
        """``set_session`` frames with these refs, in one write."""
        frames = [
            _masked(json.dumps({"type": "set_session", "session_id": f"s{ref % 3}", "ref": ref}))
            for ref in refs
        ]
        self.sock.sendall(b"".join(frames))

    def acks(self, count: int) -> list[int]:
        """The refs of the next ``count`` acks, in the order they came (what follows the last
        of them is kept for the next call)."""
        while len(found := list(ACK.finditer(self.data))) < count:
            chunk = self.sock.recv(65536)
            assert chunk, "the hub closed the socket"
            self.data += chunk
        self.data = self.data[found[count - 1].end() :]
        return [int(m.group(1) or m.group(2)) for m in found[:count]]

    def close(self) -> None:
        self.sock.close()


def _masked(text: str) -> bytes:
    """One masked text frame (a client's, RFC 6455 section 5.3), under 126 bytes."""
    payload = text.encode()
    assert len(payload) < 126
    mask = os.urandom(4)
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return struct.pack("!BB", 0x81, 0x80 | len(payload)) + mask + body


class Spy:
    """Counts a transport's ``pause_reading`` and ``resume_reading`` calls (then makes them)."""

    def __init__(self, transport: Any) -> None:
        self.transport = transport
        self.pauses = self.resumes = 0
        pause, resume = transport.pause_reading, transport.resume_reading

        def paused() -> None:
            self.pauses += 1
            pause()

        def resumed() -> None:
            self.resumes += 1
            resume()

        transport.pause_reading, transport.resume_reading = paused, resumed


def _setup(make_server: Callable[..., ServerThread]) -> tuple[ServerThread, RawClient, Spy]:
    """A hub of its own, one raw client in a new workspace, and the spy on its transport."""
    server = make_server()
    workspace = httpx.post(f"{server.url}/v1/workspaces", json={"path": "/reads"}).json()["id"]
    client = RawClient(server.port, f"/v1/workspaces/{workspace}/ws?client_id={new_client_id()}")

    def spy() -> Spy:
        (conn,) = server.services.hub.rooms[workspace].conns
        writer = conn.writer
        assert isinstance(writer, DirectWriter)  # uvicorn's sansio protocol: the direct path
        return Spy(writer._proto.transport)

    return server, client, server.call(spy)


def test_a_client_that_sends_one_frame_at_a_time_never_pauses_reads(
    make_server: Callable[..., ServerThread],
) -> None:
    """Twenty set_session frames, each sent after the last one's ack: every ack comes, and
    the socket's reads never paused (uvicorn alone pauses and resumes once per frame)."""
    server, client, spy = _setup(make_server)
    try:
        for ref in range(1, 21):
            client.send(ref)
            assert client.acks(1) == [ref]
        assert server.call(lambda: (spy.pauses, spy.resumes)) == (0, 0)
        assert server.call(spy.transport.is_reading)
    finally:
        client.close()


def test_a_burst_pauses_reads_until_the_app_caught_up(
    make_server: Callable[..., ServerThread],
) -> None:
    """Forty frames in one write (within the default rate limit's burst of 50): the hub
    reads them in one go, so the app is soon INBOX_HIGH messages behind and reads pause
    (back-pressure); once the app took them all, reads resume. Every frame is acked, in
    order; a lone frame after that pauses nothing."""
    server, client, spy = _setup(make_server)
    try:
        refs = list(range(1, 41))
        assert len(refs) > INBOX_HIGH
        client.send(*refs)
        assert client.acks(len(refs)) == refs
        pauses, resumes = server.call(lambda: (spy.pauses, spy.resumes))
        assert pauses >= 1
        assert resumes == pauses
        assert server.call(spy.transport.is_reading)
        client.send(41)
        assert client.acks(1) == [41]
        assert server.call(lambda: spy.pauses) == pauses
    finally:
        client.close()
