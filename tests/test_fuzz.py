"""Hostile input: the frame parser under hypothesis, and 10,000 random and mutated frames
against a live server. Nothing crashes, nothing is logged as an error, every frame gets the
answer the contract names, and presence still equals the truth afterwards."""

from __future__ import annotations

import asyncio
import json
import logging
import random
import struct
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hub import protocol
from hub.errors import PeerError
from hub.protocol import Ping, SetSession, Sync
from tests.harness import NonReader, ServerThread, Viewer, eventually, new_client_id

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=200),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=20), inner),
    max_leaves=20,
)
FRAMES = st.fixed_dictionaries(
    {"type": st.sampled_from(["set_session", "sync", "ping", "SYNC", ""]) | st.text(max_size=5)},
    optional={"session_id": JSON | st.text(max_size=140), "ref": JSON, "extra": JSON},
)


def verdict(text: str | bytes) -> str:
    """What the contract says a frame gets: an error code, or the command's answer."""
    try:
        command = protocol.parse(text)
    except PeerError as exc:
        return f"error:{exc.code}"
    if isinstance(command, SetSession):
        return "ack" if command.ref is not None else "none"
    return "snapshot" if isinstance(command, Sync) else "pong"


@settings(max_examples=2000, deadline=None)
@given(st.text() | st.binary() | JSON.map(json.dumps) | FRAMES.map(json.dumps))
def test_the_parser_answers_anything_with_a_command_or_a_peer_error(text: str | bytes) -> None:
    try:
        command = protocol.parse(text)
    except PeerError as exc:
        assert exc.code in {"bad_json", "bad_request", "unknown_type", "invalid_session_id"}
        assert exc.message
        return
    assert isinstance(command, SetSession | Sync | Ping)
    # Whatever was accepted can be echoed back: refs and session ids encode again.
    protocol.encode(protocol.Ack(command.ref if command.ref is not None else 0, 1))


# -- the live endpoint ------------------------------------------------------------------------


def mutations(rng: random.Random) -> Iterator[str | bytes]:
    """An endless mix of valid, mutated and hostile frames (all under the 64 KiB limit)."""
    sessions: list[Any] = ["S1", "S2", "", None, "é" * 128, "x" * 129, "a\nb", "\x7f", 5, [], {}]
    refs: list[Any] = [1, "r", -(2**53) + 1, 2**53, 1.5, True, None, "x" * 300, {}, [1]]
    while True:
        kind = rng.random()
        frame: dict[str, Any] = {
            "type": rng.choice(["set_session", "sync", "ping", "pong", "", 7, None, "SET_SESSION"])
        }
        if rng.random() < 0.8:
            frame["session_id"] = rng.choice(sessions)
        if rng.random() < 0.7:
            frame["ref"] = rng.choice(refs)
        if rng.random() < 0.1:
            frame[rng.choice(["extra", "Type", "session"])] = 1
        text = json.dumps(frame)
        if kind < 0.35:
            yield text
        elif kind < 0.6:  # byte-level mutations of a valid frame
            chars = list(text)
            for _ in range(rng.randint(1, 4)):
                i = rng.randrange(len(chars) + 1)
                op = rng.random()
                if op < 0.4 and chars:
                    del chars[min(i, len(chars) - 1)]
                elif op < 0.8:
                    chars.insert(i, rng.choice('{}[]",:0\\ \x00é\U0001f600'))
                elif chars:
                    chars[min(i, len(chars) - 1)] = chr(rng.randrange(0x20, 0x3000))
            yield "".join(chars)
        elif kind < 0.7:
            depth = rng.choice([10, 1000, 1100, 5000])
            yield "[" * depth + "]" * depth
        elif kind < 0.8:
            yield rng.choice(
                [
                    '{"type":"ping","ref":1e400}',
                    '{"type":"ping","ref":' + "9" * 400 + "}",
                    '{"type":"set_session","session_id":"\\ud800"}',
                    '{"type":"ping","ref":-0}',
                    "",
                    " ",
                    "null",
                    '"ping"',
                    '{"type":"ping"}' * 2,
                    '{"type":"set_session","session_id":"' + "y" * 20000 + '"}',
                ]
            )
        elif kind < 0.9:
            yield rng.randbytes(rng.randint(0, 300))  # binary frames, invalid UTF-8 included
        else:
            yield "".join(chr(rng.randrange(1, 0xD7FF)) for _ in range(rng.randint(0, 200)))


class Errors(logging.Handler):
    """Collects every record at ERROR or above, and every one that carries a traceback."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.ERROR or record.exc_info:
            self.records.append(record)


@pytest.fixture
def logged_errors() -> Iterator[Errors]:
    handler = Errors()
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield handler
    root.removeHandler(handler)
    root.setLevel(level)


async def test_10000_hostile_frames_against_a_live_server(
    make_server: Callable[..., ServerThread], logged_errors: Errors
) -> None:
    server = make_server(rate_limit=0)
    async with httpx.AsyncClient(base_url=server.url) as http:
        w = (await http.post("/v1/workspaces", json={"path": "/fuzz"})).json()["id"]
        clients = [new_client_id() for _ in range(2)]
        viewers = [await Viewer.open(server.ws_url(w, c), c) for c in clients]
        current = {c: "" for c in clients}
        rng = random.Random(20261124)
        frames = mutations(rng)
        sent = 0
        while sent < 10_000:
            v = viewers[sent // 100 % 2]
            batch = [next(frames) for _ in range(100)]
            for frame in batch:
                await v.ws.send(frame)
            await v.ws.send(json.dumps({"type": "ping", "ref": f"end-{sent}"}))
            answers: list[str] = []
            while True:
                got = await v.next()
                if got["type"] in ("counts", "session"):
                    continue
                if got == {"type": "pong", "ref": f"end-{sent}"}:
                    break
                answers.append(got["type"] if got["type"] != "error" else f"error:{got['code']}")
            expected = []
            for frame in batch:
                said = "error:unsupported_frame" if isinstance(frame, bytes) else verdict(frame)
                if said != "none":
                    expected.append(said)
                if not isinstance(frame, bytes) and said in ("ack", "none"):
                    command = protocol.parse(frame)
                    assert isinstance(command, SetSession)
                    current[v.client_id] = command.session_id
            assert answers == expected
            sent += len(batch)
        truth: dict[str, int] = {}
        for session in current.values():
            if session:
                truth[session] = truth.get(session, 0) + 1
        snap = (await http.get(f"/v1/workspaces/{w}/presence")).json()
        assert (snap["online"], snap["counts"]) == (2, truth)
        for v in viewers:
            await v.close()
    assert not logged_errors.records, [r.getMessage() for r in logged_errors.records]


async def test_invalid_utf8_in_a_text_frame_fails_the_connection_with_1007(
    make_server: Callable[..., ServerThread], logged_errors: Errors
) -> None:
    server = make_server()
    async with httpx.AsyncClient(base_url=server.url) as http:
        w = (await http.post("/v1/workspaces", json={"path": "/utf8"})).json()["id"]
    raw = NonReader(server.port, f"/v1/workspaces/{w}/ws?client_id={new_client_id()}")
    payload = b"\xff\xfe"
    mask = b"\x01\x02\x03\x04"
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    raw.sock.sendall(struct.pack("!BB", 0x81, 0x80 | len(payload)) + mask + masked)
    assert await asyncio.to_thread(raw.read_close_code) == 1007
    raw.sock.close()
    await eventually(lambda: server.call(lambda: server.services.hub.sockets == 0))  # it left
    assert not logged_errors.records, [r.getMessage() for r in logged_errors.records]
