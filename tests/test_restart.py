"""The real ``hub serve`` process: acknowledged writes survive ``kill -9``, a restarted hub
knows its workspaces again, and SIGTERM is a graceful shutdown."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from hub.backends.memory import MemoryBackend
from tests.harness import HubProcess, ServerThread, Viewer, close_code, new_client_id


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path / "hub.db"


async def test_acknowledged_writes_survive_kill_9(db: Path) -> None:
    hub = HubProcess(db)
    async with httpx.AsyncClient(base_url=hub.url) as http:
        w = (await http.post("/v1/workspaces", json={"path": "/kept"})).json()
        await http.post(f"/v1/workspaces/{w['id']}/sessions", json={"id": "S1", "title": "t"})
        put = await http.put(
            f"/v1/workspaces/{w['id']}/sessions/S1", json={"message_count": 7, "is_busy": True}
        )
        assert put.status_code == 200
        for i in range(50):  # a burst of writes, each acknowledged before the kill
            r = await http.post(f"/v1/workspaces/{w['id']}/sessions", json={"id": f"B{i}"})
            assert r.status_code == 201
    hub.kill9()

    hub = HubProcess(db)
    try:
        async with httpx.AsyncClient(base_url=hub.url) as http:
            assert (await http.get(f"/v1/workspaces/{w['id']}")).json()["path"] == "/kept"
            s1 = (await http.get(f"/v1/workspaces/{w['id']}/sessions/S1")).json()
            assert (s1["title"], s1["message_count"], s1["is_busy"]) == ("t", 7, True)
            sessions = (await http.get(f"/v1/workspaces/{w['id']}/sessions")).json()
            assert len(sessions) == 51
        # Presence starts empty but the workspace is known: a socket attaches and counts.
        client = new_client_id()
        ws_url = f"ws://127.0.0.1:{hub.port}/v1/workspaces/{w['id']}/ws?client_id={client}"
        v = await Viewer.open(ws_url, client)
        assert v.online == 1
        await v.close()
    finally:
        log = hub.stop()
    assert "Traceback" not in log


async def test_a_retire_that_answered_204_outlives_the_process(db: Path) -> None:
    """Fault: the hub is killed (-9) after a retire answered 204; presence restarts empty.
    Truth: the client is still refused, at the handshake (4410) and by REST (410)."""
    hub = HubProcess(db)
    client = new_client_id()
    async with httpx.AsyncClient(base_url=hub.url) as http:
        w = (await http.post("/v1/workspaces", json={"path": "/retired"})).json()["id"]
        assert (await http.delete(f"/v1/clients/{client}")).status_code == 204
    hub.kill9()

    hub = HubProcess(db)
    try:
        url = f"ws://127.0.0.1:{hub.port}/v1/workspaces/{w}/ws?client_id={client}"
        assert await close_code(url) == 4410
        async with httpx.AsyncClient(base_url=hub.url) as http:
            again = await http.post("/v1/workspaces", json={"path": "/x", "client_id": client})
            assert again.status_code == 410
    finally:
        log = hub.stop()
    assert "Traceback" not in log


async def test_sigterm_closes_every_socket_with_1012_and_exits_cleanly(db: Path) -> None:
    hub = HubProcess(db)
    async with httpx.AsyncClient(base_url=hub.url) as http:
        w = (await http.post("/v1/workspaces", json={"path": "/term"})).json()["id"]
    clients = [new_client_id() for _ in range(20)]
    viewers = [
        await Viewer.open(f"ws://127.0.0.1:{hub.port}/v1/workspaces/{w}/ws?client_id={c}", c)
        for c in clients
    ]
    started = time.monotonic()
    hub.proc.send_signal(signal.SIGTERM)

    codes = await asyncio.gather(*(v.closed_with() for v in viewers))
    assert codes == [1012] * len(viewers)
    assert time.monotonic() - started < 2
    log = hub.proc.communicate(timeout=10)[0].decode()  # wait: a second signal forces the exit
    assert hub.proc.returncode == 0, log
    assert "Traceback" not in log, log
    # The store was closed cleanly: SQLite folded the WAL back into the database and removed it.
    assert not await asyncio.to_thread(Path(f"{db}-wal").exists)


async def test_shutdown_puts_claims_into_grace_not_released(
    make_server: Callable[..., ServerThread],
) -> None:
    server = make_server(detach_grace=30)
    async with httpx.AsyncClient(base_url=server.url) as http:
        w = (await http.post("/v1/workspaces", json={"path": "/shutdown"})).json()["id"]
    client = new_client_id()
    v = await Viewer.open(server.ws_url(w, client), client)
    await v.send({"type": "set_session", "session_id": "S1"})
    await v.until(lambda x: x.counts == {"S1": 1})
    await asyncio.to_thread(server.stop)
    backend = server.services.backend
    assert isinstance(backend, MemoryBackend)
    (claim,) = backend.presence.claims(w)
    assert (claim.state.value, claim.session_id, claim.released) == ("grace", "S1", False)
