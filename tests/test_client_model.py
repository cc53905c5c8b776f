"""The reconnect model (docs/clients.md) held against the Python client.

The scenarios are data (``tests/vectors/client_model.json``), shared with the browser client's
Node tests (``tests/js/model.test.mjs``). Here each one runs against a real WebSocket server on a
free port that follows the scenario's script, one list of steps per connection attempt.
"""

from __future__ import annotations

import asyncio
import base64
import json
import random
import time
from http import HTTPStatus
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.http11 import Request, Response

from hub import errors
from hub.client import FINAL, HubClient, Stream, StreamClosed, backoff

VECTORS = json.loads((Path(__file__).parent / "vectors" / "client_model.json").read_text())
OPTIONS = VECTORS["options"]
STEP_TIMEOUT = 3.0


def test_final_codes_are_the_models() -> None:
    assert sorted(FINAL) == VECTORS["final_codes"]
    assert not set(VECTORS["retry_codes"]) & FINAL


@pytest.mark.parametrize("case", VECTORS["backoff"]["cases"], ids=lambda c: str(c["attempt"]))
def test_backoff_is_full_jitter_with_the_models_bounds(
    case: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(random, "random", lambda: case["random"])
    got = backoff(case["attempt"], VECTORS["backoff"]["base"], VECTORS["backoff"]["max"])
    assert got == pytest.approx(case["delay"])
    assert backoff(case["attempt"]) == pytest.approx(case["delay"])  # the defaults are these


def outcome(task: asyncio.Task[int]) -> str:
    """A call's result in the vectors' words."""
    exc = task.exception()
    if exc is None:
        return f"ack:{task.result()}"
    if isinstance(exc, StreamClosed):
        return f"closed:{exc.code}"
    if isinstance(exc, errors.PeerError):
        return f"error:{exc.code}"
    if isinstance(exc, TimeoutError):
        return "timeout"
    return "connection_lost" if type(exc).__name__ == "ConnectionLost" else repr(exc)


class Tokens:
    """The vectors' token provider: token n is an unsigned JWT-shaped token carrying ``n``,
    with an ``exp`` ``ttl`` seconds after it is made."""

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self.made = 0

    def __call__(self) -> str:
        self.made += 1
        head = _b64({"alg": "none"})
        return f"{head}.{_b64({'n': self.made, 'exp': time.time() + self.ttl})}."

    @staticmethod
    def number(token: str | None) -> int | None:
        try:
            body = str(token).split(".")[1]
            n: int = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))["n"]
        except (IndexError, ValueError, KeyError):
            return None
        return n


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


class Script:
    """A server that plays one scenario: attempt N follows the N-th list of steps."""

    def __init__(self, scenario: dict[str, Any]) -> None:
        self.attempts: list[list[dict[str, Any]]] = scenario["attempts"]
        self.made = 0
        self.stream: Stream | None = None
        self.calls: dict[str, asyncio.Task[int]] = {}
        self.failures: list[str] = []
        self.holding: list[asyncio.Future[None]] = []

    def steps(self, attempt: int) -> list[dict[str, Any]]:
        if attempt >= len(self.attempts):
            return [{"handshake": 503}]  # more attempts than scripted: counted, refused
        return self.attempts[attempt]

    def call(self, step: dict[str, Any]) -> None:
        assert self.stream is not None
        self.calls[step["call"]] = asyncio.ensure_future(
            self.stream.set_session(step["session_id"])
        )

    async def process_request(self, conn: ServerConnection, request: Request) -> Response | None:
        attempt = self.made
        self.made += 1
        request.headers["x-attempt"] = str(attempt)
        for step in self.steps(attempt):
            if "call" in step:
                self.call(step)
            elif "handshake" in step:
                return conn.respond(HTTPStatus(step["handshake"]), "refused\n")
            else:
                break
        return None

    async def handler(self, ws: ServerConnection) -> None:
        attempt = int(ws.request.headers["x-attempt"]) if ws.request else 0
        steps = list(self.steps(attempt))
        while steps and "call" in steps[0]:
            steps.pop(0)  # run at the handshake
        query = parse_qs(urlsplit(ws.request.path if ws.request else "").query)
        if steps and "token" in steps[0]:
            got_token = Tokens.number(query.get("token", [None])[0])
            if got_token != steps[0]["token"]:
                self.failures.append(f"attempt {attempt}: token {got_token}, {steps[0]}")
            steps.pop(0)
        last_ref: Any = None
        ended = False
        try:
            for step in steps:
                if "snapshot" in step:
                    snap = {"type": "snapshot", "workspace_id": "w", "client_id": "c"}
                    await ws.send(json.dumps({**snap, **step["snapshot"]}))
                elif "call" in step:
                    self.call(step)
                elif "recv" in step:
                    frame = json.loads(await asyncio.wait_for(ws.recv(), STEP_TIMEOUT))
                    want = step["recv"]
                    got = {k: frame.get(k) for k in ("type", "session_id")}
                    if "token" in want:
                        got = {"type": frame.get("type"), "token": Tokens.number(frame["token"])}
                        expected = {"type": want["type"], "token": want["token"]}
                    else:
                        expected = {"type": want["type"], "session_id": want["session_id"]}
                    if got != expected:
                        self.failures.append(f"attempt {attempt}: got {frame}, want {want}")
                    if ("ref" in frame) != want["ref"]:
                        self.failures.append(f"attempt {attempt}: ref in {frame}: {want}")
                    last_ref = frame.get("ref")
                elif "ack" in step:
                    await ws.send(json.dumps({"type": "ack", "ref": last_ref, "seq": step["ack"]}))
                elif "error" in step:
                    error = {"type": "error", "code": step["error"], "message": "refused"}
                    await ws.send(json.dumps({**error, "ref": last_ref}))
                elif "result" in step:
                    task = self.calls[step["result"]]
                    await asyncio.wait([task], timeout=STEP_TIMEOUT)
                    got_result = outcome(task) if task.done() else "still pending"
                    if got_result != step["is"]:
                        self.failures.append(f"call {step['result']}: {got_result}, {step}")
                elif "close" in step:
                    await ws.close(step["close"], step.get("reason", ""))
                    ended = True
                elif "drop" in step:
                    ws.transport.abort()
                    ended = True
            if ended:
                return
            hold = asyncio.get_running_loop().create_future()
            self.holding.append(hold)
            await hold  # the script ran out: the socket stays open, quiet
        except Exception as exc:
            self.failures.append(f"attempt {attempt}: {exc!r}")


@pytest.mark.parametrize("scenario", VECTORS["scenarios"], ids=lambda s: s["name"])
async def test_the_python_client_follows_the_model(scenario: dict[str, Any]) -> None:
    script = Script(scenario)
    server: Server
    async with serve(
        script.handler, "127.0.0.1", 0, process_request=script.process_request, compression=None
    ) as server:
        port = server.sockets[0].getsockname()[1]
        tokens = Tokens(scenario.get("token_ttl", 3600))
        async with HubClient(f"http://127.0.0.1:{port}", token=tokens) as client:
            stream = Stream(
                client,
                "w",
                backoff=OPTIONS["backoff_base"],
                max_backoff=OPTIONS["backoff_max"],
                ack_timeout=OPTIONS["ack_timeout"],
                connect_timeout=5,
            )
            script.stream = stream
            entering = asyncio.ensure_future(stream.__aenter__())
            want_attempts = scenario["expect"]["attempts"]
            deadline = asyncio.get_running_loop().time() + 5
            while script.made < want_attempts or not all_ran(script, entering):
                assert asyncio.get_running_loop().time() < deadline, "the scenario did not run"
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.3)  # room for an attempt that should not come
            assert not script.failures, script.failures
            assert script.made == want_attempts
            final = scenario["expect"]["final"]
            closed = stream.closed
            assert (closed.code if isinstance(closed, StreamClosed) else None) == final
            if final is not None:
                with pytest.raises(StreamClosed):
                    await asyncio.wait_for(drain(stream), 1)
                with pytest.raises(StreamClosed):
                    await asyncio.wait_for(stream.set_session("S9"), 1)
            for hold in script.holding:
                hold.set_result(None)
            entering.cancel()
            if not entering.cancelled() and entering.exception() is not None:
                assert final is not None  # only a final code may fail entering
            await stream.aclose()


def all_ran(script: Script, entering: asyncio.Future[Any]) -> bool:
    """Every call settled, and entering the stream returned or failed."""
    return entering.done() and all(t.done() for t in script.calls.values())


async def drain(stream: Stream) -> None:
    async for _ in stream:
        pass
