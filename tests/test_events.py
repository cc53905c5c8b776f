"""The event stream (docs/protocol.md section 12) end to end, on real servers: a stream of the
client exactly like a socket, its refusals as REST errors, and its ``close`` events."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from hub import create_app, errors
from hub.auth import Auth
from hub.cli import main
from hub.client import HubClient, StreamClosed
from hub.settings import Settings
from hub.testing import TEST_SETTINGS
from tests.harness import (
    ClusterThread,
    HubProcess,
    ServerThread,
    Viewer,
    app_thread,
    eventually,
    new_client_id,
)
from tests.test_mount import PARENTS, PREFIX


class Events:
    """An event stream read as ``EventSource`` reads it: events with their type, id and JSON
    data, and the comments seen on the way."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.lines = response.aiter_lines()
        self.comments = 0
        self.last_id: str | None = None

    async def next(self, within: float = 5) -> tuple[str, dict[str, Any]]:
        return await asyncio.wait_for(self._next(), within)

    async def _next(self) -> tuple[str, dict[str, Any]]:
        kind, data = "message", None
        async for line in self.lines:
            if line.startswith(":"):
                self.comments += 1
            elif line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("id: "):
                self.last_id = line[4:]
            elif line.startswith("data: "):
                data = json.loads(line[6:])
            elif line == "" and data is not None:
                return kind, data
        raise EOFError("the stream ended")

    async def expect(self, kind: str, within: float = 5) -> dict[str, Any]:
        """The next event of type ``kind``, skipping counts, session and viewers events."""
        while True:
            got, data = await self.next(within)
            if got == kind:
                return data
            assert got in ("counts", "session", "viewers", "viewers_diff"), (got, data)

    async def until_counts(self, wanted: dict[str, int], within: float = 5) -> None:
        counts: dict[str, int] = {}
        deadline = asyncio.get_running_loop().time() + within
        while counts != wanted:
            kind, data = await self.next(deadline - asyncio.get_running_loop().time())
            if kind in ("snapshot", "counts"):
                counts = {**counts, **data["counts"]} if kind == "counts" else data["counts"]
                counts = {k: v for k, v in counts.items() if v}


@asynccontextmanager
async def stream(
    base: str, workspace: str, client_id: str, query: str = "", **headers: str
) -> AsyncIterator[Events]:
    url = f"{base}/v1/workspaces/{workspace}/events?client_id={client_id}{query}"
    async with (
        httpx.AsyncClient(timeout=10) as client,
        client.stream("GET", url, headers=headers) as response,
    ):
        assert response.status_code == 200, await response.aread()
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-cache"
        assert response.headers["x-accel-buffering"] == "no"
        yield Events(response)


async def new_workspace(http: httpx.AsyncClient) -> str:
    response = await http.post("/v1/workspaces", json={"path": f"/e/{os.urandom(8).hex()}"})
    workspace: str = response.json()["id"]
    return workspace


async def claim_states(http: httpx.AsyncClient, workspace: str) -> dict[str, Any]:
    return {
        c["client_id"]: c for c in (await http.get(f"/v1/workspaces/{workspace}/clients")).json()
    }


async def test_a_stream_counts_with_the_sockets_of_its_client(
    server: ServerThread, http: httpx.AsyncClient, workspace: str
) -> None:
    """One client with a socket and an event stream is one client (on two nodes: the stream on
    one, the socket and the REST commands on either)."""
    client = new_client_id()
    async with stream(server.url, workspace, client) as events:
        snapshot = await events.expect("snapshot")
        assert (snapshot["online"], snapshot["client_id"]) == (1, client)
        assert events.last_id == str(snapshot["seq"])
        socket_ = await Viewer.open(server.ws_url(workspace, client), client)
        assert socket_.online == 1
        assert (await claim_states(http, workspace))[client]["streams"] == 2
        # Commands over REST, to any node; the stream sees them as counts with their id.
        set_ = await http.post(
            f"/v1/workspaces/{workspace}/current-session?client_id={client}",
            json={"session_id": "S1"},
        )
        assert set_.status_code == 200
        await events.until_counts({"S1": 1})
        assert int(events.last_id or 0) >= set_.json()["seq"]
        await socket_.until(lambda v: v.counts == {"S1": 1} and v.online == 1)
        profile = await http.put(
            f"/v1/workspaces/{workspace}/clients/{client}/profile", json={"name": "Ada"}
        )
        assert profile.status_code == 200 and isinstance(profile.json()["seq"], int)
        await socket_.close()
        await eventually(
            lambda: _streams(http, workspace, client, 1), message="the socket still counted"
        )
    # The stream's end starts the grace, as a socket's does; then the claim goes.
    await eventually(lambda: _state(http, workspace, client, {"grace", None}))
    await eventually(lambda: _state(http, workspace, client, {None}))


async def _streams(http: httpx.AsyncClient, workspace: str, client: str, n: int) -> bool:
    streams: int | None = (await claim_states(http, workspace)).get(client, {}).get("streams")
    return streams == n


async def _state(http: httpx.AsyncClient, workspace: str, client: str, states: set[Any]) -> bool:
    return (await claim_states(http, workspace)).get(client, {}).get("state") in states


async def test_refusals_are_rest_errors_before_the_stream(
    make_server: Callable[..., ServerThread],
) -> None:
    server = make_server(max_streams_per_client=1)
    async with httpx.AsyncClient(base_url=server.url, timeout=5) as http:
        workspace = await new_workspace(http)
        base = f"/v1/workspaces/{workspace}/events"

        async def refused(url: str, status: int, code: str) -> httpx.Response:
            response = await http.get(url)
            assert (response.status_code, response.json()["error"]) == (status, code), url
            assert response.headers["content-type"] == "application/json"
            return response

        await refused(base + "?client_id=nope", 400, "invalid_client_id")
        await refused(base, 400, "invalid_client_id")
        client = new_client_id()
        await refused(f"{base}?client_id={client}&watch={'x' * 200}", 400, "invalid_session_id")
        nine = ",".join(f"S{i}" for i in range(9))
        await refused(f"{base}?client_id={client}&watch={nine}", 400, "too_many_watches")
        await refused(f"/v1/workspaces/nope/events?client_id={client}", 404, "workspace_not_found")
        bad_origin = await http.get(
            f"{base}?client_id={client}", headers={"Origin": "https://evil.example"}
        )
        assert (bad_origin.status_code, bad_origin.json()["error"]) == (403, "origin_not_allowed")
        async with stream(server.url, workspace, client) as events:
            await events.expect("snapshot")
            busy = await refused(f"{base}?client_id={client}", 503, "over_capacity")
            assert busy.headers["retry-after"]
        retired = new_client_id()
        assert (await http.delete(f"/v1/clients/{retired}")).status_code == 204
        await refused(f"{base}?client_id={retired}", 410, "client_retired")


async def test_last_event_id_resumes_with_a_snapshot_and_watches_come_after_it(
    make_server: Callable[..., ServerThread],
) -> None:
    server = make_server()
    async with httpx.AsyncClient(base_url=server.url, timeout=5) as http:
        workspace = await new_workspace(http)
        client = new_client_id()
        async with stream(server.url, workspace, client, "&watch=S1,S2&limit=5") as events:
            snapshot = await events.expect("snapshot")
            first = await events.next()
            second = await events.next()
            assert [first, second] == [
                ("viewers", {**first[1], "session_id": "S1"}),
                ("viewers", {**second[1], "session_id": "S2"}),
            ]
            await http.post(
                f"/v1/workspaces/{workspace}/current-session?client_id={client}",
                json={"session_id": "S1"},
            )
            await events.until_counts({"S1": 1})
            last = events.last_id
        assert last is not None and int(last) > snapshot["seq"]
        # Back within grace with Last-Event-ID: a full snapshot first, the session kept.
        async with stream(server.url, workspace, client, **{"Last-Event-ID": last}) as events:
            again = await events.expect("snapshot")
            assert again["counts"] == {"S1": 1} and again["seq"] >= int(last)


async def test_close_events_carry_the_socket_close_codes(
    make_server: Callable[..., ServerThread],
) -> None:
    server = make_server(ping_interval=0.2)
    async with httpx.AsyncClient(base_url=server.url, timeout=5) as http:
        workspace = await new_workspace(http)
        retired = new_client_id()
        async with stream(server.url, workspace, retired) as events:
            await events.expect("snapshot")
            await asyncio.sleep(0.5)
            assert (await http.delete(f"/v1/clients/{retired}")).status_code == 204
            closed = await events.expect("close")
            assert closed == {"code": 4410, "reason": "client retired"}
            assert events.comments >= 3  # the first, then the keepalive every ping_interval
            assert [line async for line in events.lines] == []  # the response ended
        client = new_client_id()
        async with stream(server.url, workspace, client) as events:
            await events.expect("snapshot")
            assert (await http.delete(f"/v1/workspaces/{workspace}")).status_code == 204
            assert (await events.expect("close"))["code"] == 4404
        workspace = await new_workspace(http)
        async with stream(server.url, workspace, client) as events:
            await events.expect("snapshot")
            await asyncio.to_thread(server.stop)
            assert (await events.expect("close"))["code"] == 1012


async def test_a_stream_that_stops_reading_ends_with_4409(
    make_server: Callable[..., ServerThread], request: pytest.FixtureRequest
) -> None:
    server = make_server(max_outbox_bytes=64 * 1024)
    async with httpx.AsyncClient(base_url=server.url, timeout=5) as http:
        workspace = await new_workspace(http)
        await http.post(f"/v1/workspaces/{workspace}/sessions", json={"id": "S1"})
        client = new_client_id()
        sock = socket.socket()
        request.addfinalizer(sock.close)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", server.port))
        path = f"/v1/workspaces/{workspace}/events?client_id={client}"
        sock.sendall(
            f"GET {path} HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n".encode()
        )

        async def attached() -> bool:
            return await _state(http, workspace, client, {"attached"})

        await eventually(attached)
        title = "t" * 2000
        for i in range(400):
            await http.put(
                f"/v1/workspaces/{workspace}/sessions/S1",
                json={"title": title, "message_count": i},
            )
            if not await attached():
                break
        assert not await attached()
        # The close event came after what was buffered: a late reader still finds it.
        sock.settimeout(5)
        data = bytearray()
        while b"event: close" not in data:
            chunk = await asyncio.to_thread(sock.recv, 65536)
            assert chunk, bytes(data[-200:])
            data += chunk
        assert b'"code":4409' in data[data.index(b"event: close") :]
        sock.close()
        metrics = (await http.get("/metrics")).text
        assert 'hub_closes_total{reason="slow_consumer"} 1.0' in metrics


async def test_a_plain_get_of_the_socket_path_answers_426(
    server: ServerThread, http: httpx.AsyncClient, workspace: str
) -> None:
    if isinstance(server, ClusterThread):
        return  # the same code on every node
    response = await http.get(f"/v1/workspaces/{workspace}/ws?client_id={new_client_id()}")
    assert response.status_code == 426
    assert response.json()["error"] == "upgrade_required"
    message = response.json()["message"]
    assert "Upgrade" in message and "proxy" in message and "/events" in message


async def test_the_python_client_and_hub_watch_over_the_event_stream(
    make_server: Callable[..., ServerThread], capfd: pytest.CaptureFixture[str]
) -> None:
    server = make_server()
    async with HubClient(server.url) as hub:
        workspace = (await hub.create_workspace("/py-sse"))["id"]
        async with hub.connect(workspace, transport="sse", ack_timeout=5) as stream:
            assert stream.online == 1
            seq = await stream.set_session("S1")
            assert seq >= 1
            async for update in stream:
                if update.counts == {"S1": 1}:
                    break
            assert await stream.set_profile({"name": "Ada"}) >= seq
            with pytest.raises(errors.InvalidProfile):
                await stream.set_profile({"name": "x" * 2000})
            # A watch opens a new stream that names the session: its list answers the call.
            viewers = await stream.watch("S1")
            assert viewers == [] and stream.totals["S1"] == (1, 1)
            assert (await hub.presence(workspace))["counts"] == {"S1": 1}
            code = await asyncio.to_thread(
                main,
                ["watch", server.url, "--workspace", workspace, "--transport", "sse",
                 "--count", "1", "--json"],
            )  # fmt: skip
            assert code == 0
            line = json.loads(capfd.readouterr().out.strip().splitlines()[-1])
            assert line["online"] == 2 and line["counts"] == {"S1": 1}
        with pytest.raises(StreamClosed) as refused:
            async with hub.connect("nope", transport="sse"):
                pass
        assert refused.value.code == 4404


async def test_tokens_grants_and_origins_are_checked_before_the_stream(
    make_server: Callable[..., ServerThread],
) -> None:
    auth = Auth("s" * 40)
    server = make_server(auth_secret="s" * 40)
    admin = {"Authorization": f"Bearer {auth.mint(['*'], admin=True)}"}
    async with httpx.AsyncClient(base_url=server.url, timeout=5, headers=admin) as http:
        workspace = await new_workspace(http)
    client = new_client_id()
    path = f"/v1/workspaces/{workspace}/events?client_id={client}"
    async with httpx.AsyncClient(base_url=server.url, timeout=5) as http:
        assert (await http.get(path)).json()["error"] == "unauthorized"
        other = auth.mint(["another"])
        refused = await http.get(path, headers={"Authorization": f"Bearer {other}"})
        assert (refused.status_code, refused.json()["error"]) == (403, "forbidden")
        no_viewers = auth.mint([workspace], user="ana")
        refused = await http.get(f"{path}&watch=S1&token={no_viewers}")
        assert (refused.status_code, refused.json()["error"]) == (403, "forbidden")
    # ?token= as EventSource sends it; an allowed page's origin gets the CORS headers.
    origin = "http://127.0.0.1:5173"
    async with stream(
        server.url, workspace, client, f"&token={auth.mint([workspace], user='ana')}", Origin=origin
    ) as events:
        assert events.response.headers["access-control-allow-origin"] == origin
        snapshot = await events.expect("snapshot")
        assert (snapshot["online_users"], snapshot["client_id"]) == (1, client)


async def test_the_426_is_logged_once_a_minute_not_per_request(
    make_server: Callable[..., ServerThread], caplog: pytest.LogCaptureFixture
) -> None:
    server = make_server()
    async with httpx.AsyncClient(base_url=server.url, timeout=5) as http:
        for _ in range(3):
            assert (await http.get("/v1/workspaces/w/ws")).status_code == 426
    logged = [r for r in caplog.records if "Upgrade" in r.getMessage()]
    assert len(logged) == 1 and logged[0].levelname == "WARNING"


async def test_sigterm_ends_every_stream_with_1012_and_the_process_exits(tmp_path: Path) -> None:
    """``hub serve`` (its own HTTP protocol) shuts down with streams open: each gets its
    ``close`` event with 1012 at once, and the process exits cleanly, not held by them."""
    hub = HubProcess(tmp_path / "hub.db")
    try:
        async with httpx.AsyncClient(base_url=hub.url) as http:
            workspace = await new_workspace(http)
        async with contextlib.AsyncExitStack() as stack:
            streams = [
                await stack.enter_async_context(stream(hub.url, workspace, new_client_id()))
                for _ in range(5)
            ]
            for events in streams:
                await events.expect("snapshot")
            started = time.monotonic()
            hub.proc.send_signal(signal.SIGTERM)
            closes = await asyncio.gather(*(events.expect("close") for events in streams))
            assert [c["code"] for c in closes] == [1012] * 5
            assert time.monotonic() - started < 2
        log = (await asyncio.to_thread(hub.proc.communicate, timeout=10))[0].decode()
        assert hub.proc.returncode == 0 and "Traceback" not in log, log
    finally:
        if hub.proc.poll() is None:
            hub.proc.kill()
            hub.proc.communicate()


@pytest.mark.parametrize("kind", ["starlette", "fastapi"])
async def test_a_mounted_hub_streams_below_its_prefix_and_ends_them_on_shutdown(kind: str) -> None:
    """Mounted in a Starlette or FastAPI app under plain uvicorn (the parent's middleware
    wraps ``send``: the portable path): the stream counts, and the server's shutdown ends it
    with 1012 instead of waiting for the client to leave."""
    presence = create_app(Settings.from_env({}, **TEST_SETTINGS))
    server = app_thread(PARENTS[kind](presence, True)).start()
    try:
        base = server.url + PREFIX
        async with httpx.AsyncClient(base_url=base, timeout=5) as http:
            workspace = (await http.post("/v1/workspaces", json={"path": "/m"})).json()["id"]
            assert (await http.get(f"/v1/workspaces/{workspace}/ws")).status_code == 426
            client = new_client_id()
            async with stream(base, workspace, client) as events:
                await events.expect("snapshot")
                await http.post(
                    f"/v1/workspaces/{workspace}/current-session?client_id={client}",
                    json={"session_id": "S1"},
                )
                await events.until_counts({"S1": 1})
                started = time.monotonic()
                stopping = asyncio.create_task(asyncio.to_thread(server.stop))
                assert (await events.expect("close"))["code"] == 1012
                await stopping
                assert time.monotonic() - started < 3
    finally:
        server.stop()


async def test_a_stream_whose_token_expires_ends_with_4401(
    make_server: Callable[..., ServerThread],
) -> None:
    """Truth: an idle event stream opened with a token that expires in 1.5 s gets a final
    close event 4401 "token expired" at exp plus the leeway (0.5 s), and stops counting."""
    auth = Auth("s" * 40)
    server = make_server(auth_secret="s" * 40, auth_leeway=0.5)
    admin = {"Authorization": f"Bearer {auth.mint(['*'], admin=True)}"}
    async with httpx.AsyncClient(base_url=server.url, timeout=5, headers=admin) as http:
        workspace = await new_workspace(http)
        client = new_client_id()
        token = auth.mint([workspace], user="ana", ttl=1.5)
        async with stream(server.url, workspace, client, f"&token={token}") as events:
            assert (await events.expect("snapshot"))["online"] == 1
            started = time.monotonic()
            closed = await events.expect("close", within=6)
            assert closed == {"code": 4401, "reason": "token expired"}
            assert time.monotonic() - started < 1.5 + 0.5 + 1.5
        presence = (await http.get(f"/v1/workspaces/{workspace}/presence")).json()
        assert presence["online"] == 0
