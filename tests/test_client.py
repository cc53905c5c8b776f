"""The Python client and the CLI commands built on it, against real servers."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
from collections.abc import Callable

import pytest

from hub.auth import Auth
from hub.cli import main
from hub.client import HubClient, StreamClosed
from hub.errors import InvalidPath, InvalidProfile, TooManyWatches, WorkspaceNotFound
from hub.settings import Settings
from tests.conftest import FAST
from tests.harness import ServerThread

MakeServer = Callable[..., ServerThread]


async def test_rest_helpers_and_errors(server: ServerThread) -> None:
    async with HubClient(server.url) as hub:
        ws = await hub.create_workspace("/client/rest")
        assert ws["path"] == "/client/rest"
        assert (await hub.workspace(ws["id"]))["id"] == ws["id"]
        created = await hub.create_session(ws["id"], id="S1", title="one")
        assert created["title"] == "one"
        updated = await hub.update_session(ws["id"], "S1", is_busy=True)
        assert updated["is_busy"] is True
        assert [s["id"] for s in await hub.sessions(ws["id"])] == ["S1"]
        assert (await hub.presence(ws["id"]))["online"] == 0
        with pytest.raises(WorkspaceNotFound):
            await hub.presence("nope")
        with pytest.raises(InvalidPath):
            await hub.create_workspace("")
        await hub.release(ws["id"])


async def test_a_stream_keeps_counts_and_sees_others(server: ServerThread) -> None:
    async with HubClient(server.url) as a, HubClient(server.url) as b:
        ws = await a.create_workspace("/client/stream")
        async with a.connect(ws["id"]) as sa, b.connect(ws["id"]) as sb:
            seq = await sa.set_session("S1")
            async for update in sb:
                if update.seq >= seq:
                    break
            assert sb.counts == {"S1": 1} and sb.online == 2
            await sb.set_session("S1")
            async for update in sa:
                if update.counts == {"S1": 2}:
                    break
            assert sa.counts == {"S1": 2}


async def test_a_stream_reconnects_after_a_restart_and_resends_its_session(
    tmp_path: object,
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    db = f"sqlite:///{tmp_path}/hub.db"

    def start() -> ServerThread:
        srv = ServerThread(Settings.from_env({}, **{**FAST, "database_url": db}))
        srv.server.config.port = port
        return srv.start()

    first = start()
    async with HubClient(first.url, user_id="ana") as hub:
        ws = await hub.create_workspace("/client/restart")
        async with hub.connect(ws["id"], backoff=0.05) as stream:
            await stream.set_session("S1")
            await stream.set_profile({"name": "Ana"})
            assert await stream.watch("S1") == [
                {"user_id": "ana", "profile": {"name": "Ana"}, "clients": 1}
            ]
            await asyncio.to_thread(first.stop)  # sockets closed with 1012: reconnect
            second = start()
            try:
                snapshots = 0
                async for update in stream:  # the first connect's snapshot, the updates
                    snapshots += update.frame["type"] == "snapshot"  # before the restart,
                    if snapshots == 2:  # then the new server's snapshot
                        break
                # The session, the profile and the watch are said again: the new server
                # knows ana as she was, and shows her to the watch.
                ana = {"user_id": "ana", "profile": {"name": "Ana"}, "clients": 1}
                counted = watched = False
                async for update in stream:
                    counted = counted or update.counts == {"S1": 1}
                    frame = update.frame
                    watched = watched or frame["type"] == "viewers" and frame["viewers"] == [ana]
                    if counted and watched:
                        break
                assert (await hub.presence(ws["id"]))["counts"] == {"S1": 1}
                assert stream.users == {"S1": 1} and stream.online_users == 1
            finally:
                await asyncio.to_thread(second.stop)


async def test_a_stream_gives_up_on_a_final_close(server: ServerThread) -> None:
    async with HubClient(server.url) as hub:
        ws = await hub.create_workspace("/client/final")
        async with hub.connect(ws["id"]) as stream:
            await hub.request("DELETE", f"/v1/workspaces/{ws['id']}")
            with pytest.raises(StreamClosed) as info:
                async for _ in stream:
                    pass
            assert info.value.code == 4404


def test_presence_and_sessions_commands(
    server: ServerThread, capsys: pytest.CaptureFixture[str]
) -> None:
    async def setup() -> str:
        async with HubClient(server.url) as hub:
            ws = await hub.create_workspace("/cli/x", hold=False)
            await hub.create_session(ws["id"], id="S1", title="Hello")
            return str(ws["id"])

    w = asyncio.run(setup())
    assert main(["presence", server.url, "--workspace", w]) == 0
    assert json.loads(capsys.readouterr().out)["counts"] == {}
    assert main(["sessions", server.url, "--workspace", w]) == 0
    out = capsys.readouterr().out
    assert "SESSION" in out and "S1" in out and "Hello" in out
    assert main(["presence", server.url, "--workspace", "nope"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("hub: error:") and "not found" in err and "Traceback" not in err
    assert main(["presence", "http://127.0.0.1:1", "--workspace", w]) == 1
    assert capsys.readouterr().err.startswith("hub: error:")


async def test_a_stream_watches_viewers_and_refusals_raise(server: ServerThread) -> None:
    async with HubClient(server.url, user_id="bo") as bo, HubClient(server.url) as anon:
        ws = await bo.create_workspace("/client/people")
        async with bo.connect(ws["id"]) as sb, anon.connect(ws["id"]) as sa:
            assert await sa.watch("S1", limit=5) == []
            await sb.set_session("S1")
            async for _ in sa:
                if list(sa.viewers["S1"]) == ["bo"]:
                    break
            assert sa.totals["S1"] == (1, 0)
            with pytest.raises(InvalidProfile):
                await sb.set_profile({"x": "y" * 2000})
            for i in range(7):
                await sa.watch(f"T{i}")
            with pytest.raises(TooManyWatches):
                await sa.watch("T8")
            assert "T8" not in sa.watching
            await sa.unwatch("S1")
            assert "S1" not in sa.viewers


def test_viewers_and_token_commands(
    server: ServerThread, capsys: pytest.CaptureFixture[str]
) -> None:
    async def setup() -> str:
        async with HubClient(server.url, user_id="ana") as hub:
            ws = await hub.create_workspace("/cli/viewers", hold=False)
            async with hub.connect(ws["id"]) as stream:
                await stream.set_profile({"name": "Ana"})
                await stream.set_session("S1")
                command = ["viewers", server.url, "--workspace", ws["id"], "--session", "S1"]
                assert await asyncio.to_thread(main, command) == 0
            return str(ws["id"])

    w = asyncio.run(setup())
    out = capsys.readouterr().out
    assert "1 viewing (0 anonymous)" in out and "ana" in out and "Ana" in out
    assert main(["viewers", server.url, "--workspace", w, "--session", "S1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["session_id"] == "S1"
    assert main(["viewers", server.url, "--workspace", w, "--session", "x" * 200]) == 1
    assert "session_id" in capsys.readouterr().err
    secret = ["--secret", "s" * 40]
    args = ["token", "--workspace", w, "--user", "ana", "--scope", "viewers", *secret]
    assert main([*args, "--profile", '{"name": "Ana"}']) == 0
    grant = Auth("s" * 40).verify(capsys.readouterr().out.strip())
    assert (grant.user, grant.profile, grant.may_view, grant.admin) == (
        "ana", {"name": "Ana"}, True, False,
    )  # fmt: skip
    for bad in (["--profile", "[1]"], ["--profile", "{"], ["--user", ""]):
        assert main([*args, *bad]) == 2
        err = capsys.readouterr().err
        assert err.startswith("hub: error:") and "Traceback" not in err


def spawn_watch(url: str, workspace: str) -> subprocess.Popen[str]:
    """``hub watch`` with its output piped, stopping after two updates."""
    return subprocess.Popen(
        [sys.executable, "-m", "hub", "watch", url, "--workspace", workspace, "--count", "2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_watch_prints_json_lines_when_piped(server: ServerThread) -> None:
    async def setup() -> str:
        async with HubClient(server.url) as hub:
            ws = await hub.create_workspace("/cli/watch", hold=False)
            return str(ws["id"])

    w = asyncio.run(setup())

    async def watch_a_move() -> subprocess.Popen[str]:
        async with HubClient(server.url) as other:
            async with other.connect(w) as stream:
                proc = spawn_watch(server.url, w)
                for _ in range(200):  # until the watcher is connected too
                    if (await other.presence(w))["online"] == 2:
                        break
                    await asyncio.sleep(0.05)
                await stream.set_session("S9")
                await asyncio.to_thread(proc.wait, 20)  # stay until the watcher saw it
                return proc

    proc = asyncio.run(watch_a_move())
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    assert lines[0]["online"] == 2 and lines[0]["counts"] == {}, out  # its snapshot
    assert lines[1]["counts"] == {"S9": 1}, out


def test_the_terminal_view_is_a_table() -> None:
    from hub.cli import _table

    screen = _table(7, 3, {"S2": 1, "S1": 2})
    assert screen.startswith("\033[H\033[2J")  # redrawn in place
    lines = screen.splitlines()
    assert "seq 7" in lines[0] and "online 3" in lines[0]
    assert [line.split() for line in lines[3:]] == [["S1", "2"], ["S2", "1"]]
    assert "(nobody)" in _table(1, 0, {})


async def test_a_stream_to_an_unknown_workspace_stops_at_once(server: ServerThread) -> None:
    """4404 from the real hub is final: one attempt, StreamClosed, no retry loop."""
    async with HubClient(server.url) as hub:
        stream = hub.connect("no-such-workspace", backoff=0.001, max_backoff=0.002)
        with pytest.raises(StreamClosed) as closed:
            await stream.__aenter__()
        assert closed.value.code == 4404
        await asyncio.sleep(0.1)  # where a retry loop would make dozens of attempts
        assert stream.attempts == 1
