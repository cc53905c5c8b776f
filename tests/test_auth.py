"""Tokens, origins and redaction: unit checks, then end to end against real servers."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import connect

from hub.auth import Auth, OriginPolicy, RedactTokens
from hub.cli import main, startup_warnings
from hub.errors import Forbidden, Unauthorized
from hub.settings import Settings
from tests.harness import (
    HubProcess,
    ServerThread,
    Viewer,
    close_code,
    eventually,
    new_client_id,
    no_sockets,
)

SECRET = "s" * 40
AUTH = Auth(SECRET)
MakeServer = Callable[..., ServerThread]


# -- units --------------------------------------------------------------------------------------


def test_tokens_verify_into_grants() -> None:
    client = new_client_id()
    grant = AUTH.verify(AUTH.mint(["w1", "w2"], client=client.upper()))
    assert grant.workspaces == frozenset({"w1", "w2"}) and grant.client == client
    assert not grant.admin
    grant.check_workspace("w1")
    with pytest.raises(Forbidden):
        grant.check_workspace("w3")
    with pytest.raises(Forbidden):
        grant.check_client(new_client_id())
    with pytest.raises(Forbidden):
        grant.check_admin()
    everything = AUTH.verify(AUTH.mint(["*"], admin=True))
    assert everything.workspaces is None and everything.admin
    everything.check_workspace("any")
    for bad in (
        None,
        "",
        "garbage",
        AUTH.mint(["w1"], ttl=-10),
        Auth("t" * 40).mint(["w1"]),
    ):
        with pytest.raises(Unauthorized):
            AUTH.verify(bad)
    assert Auth(None).verify(None).admin  # no secret: open


def test_origins() -> None:
    default = OriginPolicy(())
    for ok in (None, "http://localhost:5173", "https://127.0.0.1", "http://[::1]:8000"):
        assert default.allows(ok), ok
    for bad in ("http://evil.example", "null", "file://", "http://localhost.evil.example"):
        assert not default.allows(bad), bad
    listed = OriginPolicy(["https://app.example.com"])
    assert listed.allows("https://app.example.com") and listed.allows("HTTPS://APP.example.com/")
    assert not listed.allows("http://localhost:3000")
    assert OriginPolicy(["*"]).allows("http://anything.example")


def test_tokens_are_redacted_from_log_records() -> None:
    record = logging.LogRecord(
        "uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s"', ("1.2.3.4", "GET",
        "/v1/workspaces/w/ws?client_id=c&token=eyJ.secret.sig"), None,
    )  # fmt: skip
    RedactTokens().filter(record)
    assert "eyJ" not in record.getMessage() and "token=[redacted]" in record.getMessage()


def test_an_open_hub_off_loopback_warns() -> None:
    assert startup_warnings(Settings.from_env({})) == []
    assert startup_warnings(Settings.from_env({}, host="0.0.0.0"))
    assert not startup_warnings(Settings.from_env({"HUB_AUTH_SECRET": SECRET}, host="0.0.0.0"))


def test_hub_token_mints_a_token(capsys: pytest.CaptureFixture[str]) -> None:
    client = new_client_id()
    argv = ["token", "--workspace", "w1", "--client", client, "--admin", "--ttl", "60"]
    assert main(argv, environ={"HUB_AUTH_SECRET": SECRET}) == 0
    grant = AUTH.verify(capsys.readouterr().out.strip())
    assert (grant.workspaces, grant.client, grant.admin) == (frozenset({"w1"}), client, True)
    assert main(["token", "--workspace", "w1"], environ={}) == 2
    assert "HUB_AUTH_SECRET" in capsys.readouterr().err
    assert main(["token", "--workspace", "w1"], environ={"HUB_AUTH_SECRET": "short"}) == 2


# -- end to end -----------------------------------------------------------------------------


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_rest_needs_a_token_that_grants_the_request(make_server: MakeServer) -> None:
    server = make_server(auth_secret=SECRET)
    admin = bearer(AUTH.mint(["*"], admin=True))
    async with httpx.AsyncClient(base_url=server.url) as http:
        assert (await http.get("/v1/health")).status_code == 200  # for load balancers
        assert (await http.get("/v1/workspaces")).status_code == 401
        assert (await http.get("/v1/workspaces", headers=bearer("junk"))).status_code == 401
        a = (await http.post("/v1/workspaces", json={"path": "/a"}, headers=admin)).json()["id"]
        b = (await http.post("/v1/workspaces", json={"path": "/b"}, headers=admin)).json()["id"]
        only_a = AUTH.mint([a])
        user = bearer(only_a)
        assert (await http.get(f"/v1/workspaces/{a}", headers=user)).status_code == 200
        assert (await http.get(f"/v1/workspaces/{a}?token={only_a}")).status_code == 200
        assert (await http.get(f"/v1/workspaces/{b}", headers=user)).status_code == 403
        # 403 before 404: a token learns nothing of workspaces it is not granted.
        assert (await http.get("/v1/workspaces/nope/presence", headers=user)).status_code == 403
        r = await http.post(f"/v1/workspaces/{a}/sessions", json={"id": "S1"}, headers=user)
        assert r.status_code == 201
        for method, path in [
            ("GET", "/v1/workspaces"),
            ("GET", f"/v1/workspaces/{a}/clients"),
            ("GET", "/v1/stats"),
            ("GET", "/metrics"),
            ("DELETE", f"/v1/clients/{new_client_id()}"),
            ("DELETE", f"/v1/workspaces/{a}"),
        ]:
            assert (await http.request(method, path, headers=user)).status_code == 403, path
            assert (await http.request(method, path, headers=admin)).status_code in (200, 204)
        # A token limited to some workspaces reaches existing ones by path, creates none.
        c = (await http.post("/v1/workspaces", json={"path": "/c"}, headers=admin)).json()["id"]
        only_c = bearer(AUTH.mint([c]))
        again = await http.post("/v1/workspaces", json={"path": "/c"}, headers=only_c)
        assert again.status_code == 200 and again.json()["id"] == c
        new = await http.post("/v1/workspaces", json={"path": "/new"}, headers=only_c)
        assert new.status_code == 403
        listed = (await http.get("/v1/workspaces", headers=admin)).json()
        assert "/new" not in [w["path"] for w in listed]


async def test_a_token_with_sub_acts_only_as_that_client(make_server: MakeServer) -> None:
    server = make_server(auth_secret=SECRET)
    admin = bearer(AUTH.mint(["*"], admin=True))
    me, other = new_client_id(), new_client_id()
    async with httpx.AsyncClient(base_url=server.url) as http:
        w = (await http.post("/v1/workspaces", json={"path": "/sub"}, headers=admin)).json()["id"]
        mine = AUTH.mint([w], client=me)
        held = await http.post(
            "/v1/workspaces", json={"path": "/sub", "client_id": other}, headers=bearer(mine)
        )
        assert held.status_code == 403
        url = f"/v1/workspaces/{w}/current-session"
        body = {"session_id": "S1"}
        r = await http.post(url, params={"client_id": other}, json=body, headers=bearer(mine))
        assert r.status_code == 403
        released = await http.delete(f"/v1/workspaces/{w}/clients/{other}", headers=bearer(mine))
        assert released.status_code == 403
        v = await Viewer.open(server.ws_url(w, me) + f"&token={mine}", me)
        r = await http.post(url, params={"client_id": me}, json=body, headers=bearer(mine))
        assert r.status_code == 200
        await v.close()


async def test_handshakes_need_a_valid_token_for_the_workspace_and_client(
    make_server: MakeServer,
) -> None:
    server = make_server(auth_secret=SECRET)
    admin = AUTH.mint(["*"], admin=True)
    async with httpx.AsyncClient(base_url=server.url, headers=bearer(admin)) as http:
        w = (await http.post("/v1/workspaces", json={"path": "/ws"})).json()["id"]
        me = new_client_id()
        url = server.ws_url(w, me)
        assert await close_code(url) == 4401
        assert await close_code(url + "&token=junk") == 4401
        # expired beyond the default leeway (HUB_AUTH_LEEWAY, 30 s)
        assert await close_code(url + f"&token={AUTH.mint([w], ttl=-60)}") == 4401
        assert await close_code(url + f"&token={AUTH.mint(['other'])}") == 4403
        token = AUTH.mint([w], client=new_client_id())
        assert await close_code(url + f"&token={token}") == 4403
        # 4401 comes before 4400: an anonymous caller learns nothing about ids.
        assert await close_code(server.ws_url(w, "bad")) == 4401
        assert (await http.get(f"/v1/workspaces/{w}/clients")).json() == []  # nothing touched
        good = AUTH.mint([w], client=me)
        v = await Viewer.open(url + f"&token={good}", me)
        assert v.online == 1
        await v.close()
        header = await connect(url, additional_headers=bearer(good))  # non-browser clients
        await header.close()


async def test_origins_are_checked_before_anything_else(make_server: MakeServer) -> None:
    server = make_server()
    async with httpx.AsyncClient(base_url=server.url) as http:
        w = (await http.post("/v1/workspaces", json={"path": "/origins"})).json()["id"]
        url = server.ws_url(w, new_client_id())
        assert await close_code(url, {"Origin": "http://evil.example"}) == 1008
        assert (await http.get(f"/v1/workspaces/{w}/clients")).json() == []
        for fine in ({"Origin": "http://localhost:5173"}, None):
            async with connect(url, additional_headers=fine) as ws:
                assert "snapshot" in await asyncio.wait_for(ws.recv(), 5)
    listed = make_server(allowed_origins="https://app.example.com")
    async with httpx.AsyncClient(base_url=listed.url) as http:
        w = (await http.post("/v1/workspaces", json={"path": "/listed"})).json()["id"]
        url = listed.ws_url(w, new_client_id())
        assert await close_code(url, {"Origin": "http://localhost:5173"}) == 1008
        async with connect(url, additional_headers={"Origin": "https://app.example.com"}) as ws:
            assert "snapshot" in await asyncio.wait_for(ws.recv(), 5)


async def test_tokens_never_reach_the_log(tmp_path: Path) -> None:
    hub = HubProcess(tmp_path / "hub.db", HUB_AUTH_SECRET=SECRET, HUB_LOG_LEVEL="info")
    token = AUTH.mint(["*"], admin=True)
    try:
        async with httpx.AsyncClient(base_url=hub.url) as http:
            w = (await http.post(f"/v1/workspaces?token={token}", json={"path": "/log"})).json()
        client = new_client_id()
        url = f"ws://127.0.0.1:{hub.port}/v1/workspaces/{w['id']}/ws?client_id={client}"
        v = await Viewer.open(f"{url}&token={token}", client)
        await v.close()
        await eventually(lambda: no_sockets(hub, token))  # its "left" line is out
    finally:
        log = hub.stop()
    assert "token=[redacted]" in log
    assert token.split(".")[2] not in log  # not even the signature
