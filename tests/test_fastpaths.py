"""The one door (hub.fastpaths): every fast path's check, forced to fail, turns that fast path
off with one warning line naming it, and a real server on the plain path still serves real
clients end to end; ``HUB_FAST_PATHS=off`` runs uvicorn's own protocol classes and the seed's
scenarios; the table in docs/performance.md is the door's own."""

from __future__ import annotations

import asyncio
import asyncio.selector_events
import contextlib
import functools
import logging
import re
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Mount
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.http11 import Request

from hub import create_app, fastpaths
from hub.settings import Settings
from tests.conftest import FAST
from tests.harness import HubProcess, NonReader, ServerThread, Viewer, app_thread, new_client_id
from tests.test_events import stream

ROOT = Path(__file__).resolve().parent.parent


class UvloopServer(ServerThread):
    """The shipped threaded hub on uvloop (``hub serve --loop uvloop``)."""

    def _run(self) -> None:
        import uvloop

        uvloop.run(self._serve())


@pytest.fixture
def door() -> Iterator[pytest.MonkeyPatch]:
    """A monkeypatch for breaking what a check looks up; afterwards the library is whole
    again and the door is checked anew (every fast path back on for the rest of the run)."""
    fastpaths._warned.clear()
    with pytest.MonkeyPatch.context() as mp:
        yield mp
    fastpaths._warned.clear()
    assert all(fastpaths.configure(True).values())


def _wrap(mp: pytest.MonkeyPatch, cls: Any, name: str, signature: bool = True) -> None:
    """Replace ``cls.name`` by a wrapper that calls it: the same behaviour, but what the check
    reads of its code (the attributes it sets; without ``signature``, its parameters too) is
    gone, as in a release that moved things around."""
    original = getattr(cls, name)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return original(*args, **kwargs)

    if signature:
        wrapper = functools.wraps(original)(wrapper)
    mp.setattr(cls, name, wrapper)


def _newer_uvicorn(mp: pytest.MonkeyPatch) -> None:
    """A uvicorn whose WebSocket protocol sets an attribute the hub's slots do not name."""

    def newer(self: Any) -> None:
        self.something_new = True

    mp.setattr(WebSocketsSansIOProtocol, "newer", newer, raising=False)


def _older_websockets(mp: pytest.MonkeyPatch) -> None:
    """A websockets whose Request is not the one the direct handshake builds."""
    fields = dict(Request.__dataclass_fields__)
    del fields["protocol"]
    mp.setattr(Request, "__dataclass_fields__", fields)


def _older_h11(mp: pytest.MonkeyPatch) -> None:
    """An h11 whose Connection keeps its body writer elsewhere."""
    import h11

    _wrap(mp, h11.Connection, "_process_event")  # the one of its methods that sets _writer
    for name, value in vars(h11.Connection).items():
        if name != "_process_event" and "_writer" in fastpaths._stores(value):
            _wrap(mp, h11.Connection, name)


def _no_compiled_setup(mp: pytest.MonkeyPatch) -> None:
    from hub import _fanout

    def setup(*args: Any) -> None:
        raise TypeError("Connection.send_now is not a slot")

    mp.setattr(_fanout, "setup", setup)


def _no_uvloop_transport(mp: pytest.MonkeyPatch) -> None:
    import uvloop.loop

    mp.setattr(uvloop.loop, "TCPTransport", None)


def _asyncio_transport_changed(mp: pytest.MonkeyPatch) -> None:
    events: Any = asyncio.selector_events  # private names, not in typeshed
    _wrap(mp, events._SelectorSocketTransport, "__init__")
    _wrap(mp, events._SelectorTransport, "__init__")


# How each check is made to fail, what the warning says, and which loop the server runs on.
BREAKS: dict[str, tuple[Callable[[pytest.MonkeyPatch], None], str, str]] = {
    "http_protocol": (
        lambda mp: _wrap(mp, H11Protocol, "__init__"),
        "H11Protocol no longer sets",
        "asyncio",
    ),
    "ws_protocol": (_newer_uvicorn, "sets something_new", "asyncio"),
    "ws_server_protocol": (
        _older_websockets,
        "Request has no method/protocol fields",
        "asyncio",
    ),
    "direct_writer": (
        lambda mp: _wrap(mp, WebSocketsSansIOProtocol, "__init__"),
        "WebSocketsSansIOProtocol no longer sets",
        "asyncio",
    ),
    "raw_send": (_asyncio_transport_changed, "_SelectorSocketTransport no longer sets", "asyncio"),
    "compiled_loop": (_no_compiled_setup, "hub._fanout.setup: ", "asyncio"),
    "uvloop_transport": (_no_uvloop_transport, "has no TCPTransport", "uvloop"),
    "cork": (lambda mp: mp.delattr(socket, "TCP_CORK"), "TCP_CORK", "asyncio"),
    "event_writer": (_older_h11, "h11 Connection no longer sets _writer", "asyncio"),
    "stream_shutdown": (
        lambda mp: mp.delattr(H11Protocol, "shutdown"),
        "H11Protocol has no shutdown",
        "asyncio",
    ),
    "accept_guard": (
        lambda mp: _wrap(
            mp, asyncio.selector_events.BaseSelectorEventLoop, "_accept_connection", False
        ),
        "_accept_connection takes other parameters",
        "asyncio",
    ),
}


def test_every_fast_path_has_a_forced_failure_and_every_check_holds_here() -> None:
    switchable = {p.name for p in fastpaths.TABLE if not p.required}
    assert switchable == set(BREAKS)
    assert fastpaths.check_all() == {p.name: None for p in fastpaths.TABLE}


async def _scenario(server: ServerThread, viewers: int = 4) -> dict[str, Any]:
    """The seed's scenario: join, set_session, counts fanned out to every socket, REST the
    same; the hub's /v1/stats."""
    async with httpx.AsyncClient(base_url=server.url, timeout=5) as http:
        workspace = (await http.post("/v1/workspaces", json={"path": "/door"})).json()["id"]
        assert (
            await http.post(f"/v1/workspaces/{workspace}/sessions", json={"id": "S1"})
        ).status_code == 201
        opened = [
            await Viewer.open(server.ws_url(workspace, c), c)
            for c in (new_client_id() for _ in range(viewers))
        ]
        async with stream(server.url, workspace, new_client_id()) as events:  # an event stream
            assert (await events.expect("snapshot"))["online"] == viewers + 1
            for i, v in enumerate(opened):
                await v.send({"type": "set_session", "session_id": "S1", "ref": f"r{i}"})
                assert (await v.expect("ack"))["ref"] == f"r{i}"
            await events.until_counts({"S1": viewers})
        for v in opened:
            await v.until(lambda x: x.counts == {"S1": viewers} and x.online == viewers)
        presence = (await http.get(f"/v1/workspaces/{workspace}/presence")).json()
        assert presence["counts"] == {"S1": viewers}
        stats: dict[str, Any] = (await http.get("/v1/stats")).json()
        await opened[0].send({"type": "set_session", "session_id": None})
        for v in opened[1:]:
            await v.until(lambda x: x.counts == {"S1": viewers - 1})
        for v in opened:
            await v.close()
        return stats


@pytest.mark.parametrize("name", sorted(BREAKS))
async def test_a_failed_check_turns_its_fast_path_off_with_one_warning(
    name: str, door: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    breaks, says, loop = BREAKS[name]
    breaks(door)
    caplog.set_level(logging.WARNING, logger="hub.fastpaths")
    state = fastpaths.configure(True)
    assert not state[name]
    lines = [r.getMessage() for r in caplog.records if r.name == "hub.fastpaths"]
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"fast path check {name} failed (") and says in lines[0], lines
    # The others stay on, but those that only work beside this one.
    for path in fastpaths.TABLE:
        if not path.required and path.name != name:
            assert state[path.name] == (name not in path.needs), path.name
    kind = UvloopServer if loop == "uvloop" else ServerThread
    server = kind(Settings.from_env({}, **FAST)).start()
    if name == "stream_shutdown":
        # Decided at start-up (off); uvicorn itself calls shutdown on each connection still
        # open when it stops, so the class gets it back before the server stops.
        door.undo()
    try:
        stats = await _scenario(server)
    finally:
        server.stop()
    assert stats["fast_paths"][name] is False
    assert len([r for r in caplog.records if r.name == "hub.fastpaths"]) == 1  # once a process
    if name == "direct_writer":
        assert stats["direct_sockets"] == 0
    elif name == "compiled_loop":
        from hub.connection import send_loop

        assert send_loop() == "python"


@pytest.mark.parametrize("name", [p.name for p in fastpaths.TABLE if p.required])
def test_a_failed_check_of_redis_py_is_one_warning_and_changes_nothing(
    name: str, door: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import redis.asyncio as aioredis
    from redis.asyncio.cluster import NodesManager
    from redis.asyncio.sentinel import SentinelConnectionPool

    if name == "redis_pool_disconnect":
        _wrap(door, aioredis.ConnectionPool, "disconnect", False)
    elif name == "redis_cluster_nodes":
        door.delattr(NodesManager, "initialize")
    else:

        def init_subclass(cls: Any, /, **kwargs: Any) -> None:
            raise TypeError("no such combination")

        door.setattr(SentinelConnectionPool, "__init_subclass__", classmethod(init_subclass))
    caplog.set_level(logging.WARNING, logger="hub.fastpaths")
    before = fastpaths.status()
    assert fastpaths.configure(True) == before
    (line,) = [r.getMessage() for r in caplog.records if r.name == "hub.fastpaths"]
    assert line.startswith(f"fast path check {name} failed (") and line.endswith("used as is")


async def test_fast_paths_off_runs_uvicorns_classes_and_the_seed_scenarios(
    door: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """HUB_FAST_PATHS=off: uvicorn's own HTTP and WebSocket protocols, the ASGI send for
    every frame, no cork, the Python send loop, asyncio's own accept; join, set_session,
    counts to several sockets, and a slow consumer closed with 4409."""
    settings = Settings.from_env({"HUB_FAST_PATHS": "off"}, **FAST, max_outbox_bytes=64 * 1024)
    assert settings.fast_paths is False
    caplog.set_level(logging.WARNING, logger="hub.fastpaths")
    server = ServerThread(settings).start()
    try:
        assert server.server.config.http == "h11"
        assert server.server.config.ws == "websockets-sansio"
        stats = await _scenario(server, viewers=6)
        assert stats["fast_paths"] == {name: False for name in BREAKS}
        assert stats["direct_sockets"] == 0
        from hub.connection import send_loop

        assert send_loop() == "python"
        await _slow_consumer_closed_with_4409(server)
    finally:
        server.stop()
    assert not [r for r in caplog.records if r.name == "hub.fastpaths"]  # off: nothing checked


async def _slow_consumer_closed_with_4409(server: ServerThread) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=5) as http:
        workspace = (await http.post("/v1/workspaces", json={"path": "/slow"})).json()["id"]
        await http.post(f"/v1/workspaces/{workspace}/sessions", json={"id": "S1"})
        reader = await Viewer.open(server.ws_url(workspace, new_client_id()), new_client_id())
        slow = NonReader(server.port, f"/v1/workspaces/{workspace}/ws?client_id={new_client_id()}")
        reading = asyncio.create_task(_keep_reading(reader))
        for i in range(300):  # ~2 KB updates: far past 64 KiB for the socket that never reads
            body = {"title": "t" * 2000, "message_count": i}
            r = await http.put(f"/v1/workspaces/{workspace}/sessions/S1", json=body)
            assert r.status_code == 200
        code = await asyncio.to_thread(slow.read_close_code)
        reading.cancel()
        slow.sock.close()
        await reader.close()
        assert code == 4409


async def _keep_reading(v: Viewer) -> None:
    while True:
        await v.next(within=30)


async def test_mounted_under_plain_uvicorn_the_hub_takes_what_the_server_allows() -> None:
    """In a user's app under ``uvicorn app:app`` (uvicorn's own classes): the checks hold, so
    the process-wide fast paths are on, but the parent's middleware wraps the ASGI ``send``
    of a mounted app, so its sockets take the plain path, socket by socket (stats says
    how many are direct: none), and serve as well."""
    presence = create_app(Settings.from_env({}, **FAST))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with presence.router.lifespan_context(presence):
            yield

    app = Starlette(routes=[Mount("/presence", app=presence)], lifespan=lifespan)
    server = app_thread(app).start()
    try:
        async with httpx.AsyncClient(base_url=server.url + "/presence", timeout=5) as http:
            workspace = (await http.post("/v1/workspaces", json={"path": "/m"})).json()["id"]
            ws = f"ws://127.0.0.1:{server.port}/presence/v1/workspaces/{workspace}/ws"
            first = new_client_id()
            viewers = [await Viewer.open(f"{ws}?client_id={first}", first)]
            other = new_client_id()
            viewers.append(await Viewer.open(f"{ws}?client_id={other}", other))
            await viewers[1].send({"type": "set_session", "session_id": "S1"})
            for v in viewers:
                await v.until(lambda x: x.counts == {"S1": 1} and x.online == 2)
            stats = (await http.get("/v1/stats")).json()
            for v in viewers:
                await v.close()
        assert all(stats["fast_paths"].values())
        assert (stats["sockets"], stats["direct_sockets"]) == (2, 0)
    finally:
        server.stop()


def test_the_docs_table_is_the_doors() -> None:
    """docs/performance.md's table of fast paths is generated from the door's
    (``python -m hub.fastpaths --table``), so the two cannot drift."""
    doc = (ROOT / "docs" / "performance.md").read_text()
    assert fastpaths.markdown_table() in doc


def test_the_checks_command_names_a_failed_check(
    door: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``python -m hub.fastpaths`` (what ``scripts/test --newest`` and ``--python`` run
    first): one line per check, and a failed one named, with exit status 1."""
    assert fastpaths._main([]) == 0
    assert capsys.readouterr().out.count(": ok\n") == len(fastpaths.TABLE)
    _older_websockets(door)
    assert fastpaths._main([]) == 1
    out = capsys.readouterr().out
    assert "check ws_server_protocol: FAILED: websockets Request has no method/protocol" in out
    assert out.count(": ok\n") == len(fastpaths.TABLE) - 1


def test_every_reach_into_another_librarys_internals_is_a_row_of_the_door() -> None:
    """A private attribute read or set on another object anywhere in hub/ (``x._name``) is
    one the door's table names; a class swap or a re-declaration of another class's
    attributes as slots is hub/transport.py's alone (rows ws_server_protocol, ws_protocol).
    A new reach needs a row (and a check) first."""
    touched = " ".join(p.touches for p in fastpaths.TABLE)
    sources = [p for p in sorted((ROOT / "hub").rglob("*.py")) if p.name != "fastpaths.py"]
    # The hub's own private attributes (set as self._x somewhere in hub/) are no reach.
    own = {m for p in sources for m in re.findall(r"self\.(_[a-z]\w*)\s*[:=]", p.read_text())}
    unnamed = set()
    for path in sorted((ROOT / "hub").rglob("*.py")):
        if path.name == "fastpaths.py":
            continue
        text = path.read_text()
        for match in re.finditer(r"\b(?!self\b|cls\b)[a-z_]\w*\)?\.(_[a-z]\w*)\b", text):
            name = match.group(1)
            if name not in touched and name not in own and name != "_replace":  # namedtuple's
                unnamed.add(f"{path.relative_to(ROOT)}: {match.group(0)}")
        if path.name != "transport.py":
            assert ".__class__ =" not in text, path
    assert not unnamed, sorted(unnamed)


@pytest.mark.parametrize("setting", ["on", "off"])
def test_hub_serve_logs_which_fast_paths_are_on_in_one_line(setting: str, tmp_path: Path) -> None:
    hub = HubProcess(tmp_path / "hub.db", HUB_LOG_LEVEL="info", HUB_FAST_PATHS=setting)
    stats = httpx.get(hub.url + "/v1/stats").json()
    out = hub.stop()
    (line,) = [line for line in out.splitlines() if "fast paths on:" in line]
    state = fastpaths.configure(setting == "on")  # what this process finds, the same here
    try:
        assert stats["fast_paths"] == state
        assert f"{fastpaths.summary()} (HUB_FAST_PATHS); fan-out send loop: " in line
        loop = "compiled" if state["compiled_loop"] else "python"
        assert line.endswith(f"fan-out send loop: {loop}")
        if setting == "off":
            order = ", ".join(p.name for p in fastpaths.TABLE if not p.required)
            assert f"fast paths on: none; off: {order}" in line
    finally:
        fastpaths.configure(True)
    assert "fast path check" not in out  # nothing failed here: no warning
