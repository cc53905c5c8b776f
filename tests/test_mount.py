"""The hub inside a user's app: mounted at ``/presence`` of a Starlette and of a FastAPI app
under plain uvicorn, its lifespan entered by the parent's with one line, the WebSocket and
REST below the prefix, and the app's own handlers reading counts in-process
(``presence_of``), the same truth as REST."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Mount, Route
from websockets.asyncio.client import connect

from hub import Grant, create_app, presence_of
from hub.errors import Forbidden, Unauthorized, WorkspaceNotFound
from hub.settings import Settings
from hub.testing import TEST_SETTINGS, ThreadedServer
from tests.harness import Viewer, app_thread, close_code, eventually, new_client_id
from tests.receiver import SECRET, Receiver
from tests.services import postgres_database

PREFIX = "/presence"


def _starlette(presence: Starlette, run_lifespan: bool) -> Starlette:
    """A user's Starlette app: its own routes, the hub mounted at /presence."""
    counts = presence_of(presence)

    async def home(request: Request) -> PlainTextResponse:
        return PlainTextResponse("the app's own page")

    async def session_record(request: Request) -> JSONResponse:
        """The seed's shape: the app's own session record, with the hub's live count."""
        w, s = request.path_params["w"], request.path_params["s"]
        try:
            clients = await counts.attached_clients(w, s)
        except WorkspaceNotFound:
            return JSONResponse({"error": "no such workspace"}, 404)
        users = await counts.attached_users(w, s)
        snapshot = await counts.snapshot(w)
        body = {"id": s, "attached_clients": clients, "attached_users": users, "all": snapshot}
        return JSONResponse(body)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with presence.router.lifespan_context(presence):  # the one documented line
            yield

    return Starlette(
        routes=[
            Route("/", home),
            Route("/records/{w}/{s}", session_record),
            Mount(PREFIX, app=presence),
        ],
        lifespan=lifespan if run_lifespan else None,
    )


def _fastapi(presence: Starlette, run_lifespan: bool) -> Any:
    """A user's FastAPI app, the same shape."""
    from fastapi import FastAPI, HTTPException

    counts = presence_of(presence)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with presence.router.lifespan_context(presence):
            yield

    app = FastAPI(lifespan=lifespan if run_lifespan else None)

    @app.get("/")
    async def home() -> str:
        return "the app's own page"

    @app.get("/records/{w}/{s}")
    async def session_record(w: str, s: str) -> dict[str, Any]:
        try:
            clients = await counts.attached_clients(w, s)
        except WorkspaceNotFound:
            raise HTTPException(404, "no such workspace") from None
        users = await counts.attached_users(w, s)
        return {"id": s, "attached_clients": clients, "attached_users": users,
                "all": await counts.snapshot(w)}  # fmt: skip

    app.mount(PREFIX, presence)
    return app


PARENTS: dict[str, Callable[[Starlette, bool], Any]] = {
    "starlette": _starlette,
    "fastapi": _fastapi,
}


@pytest.fixture(params=sorted(PARENTS))
def parent(request: pytest.FixtureRequest) -> Iterator[ThreadedServer]:
    presence = create_app(Settings.from_env({}, **TEST_SETTINGS))
    server = app_thread(PARENTS[request.param](presence, True)).start()
    yield server
    server.stop()


async def test_rest_and_the_socket_work_below_the_prefix(parent: ThreadedServer) -> None:
    """Truth: two clients of two users view S1 (one of them with two sockets): REST, the
    sockets and the app's in-process reader all say 2 clients, 2 users."""
    base = parent.url + PREFIX
    async with httpx.AsyncClient(base_url=base) as http:
        assert (await http.get(parent.url + "/")).text.strip('"') == "the app's own page"
        w = (await http.post("/v1/workspaces", json={"path": "/mounted"})).json()["id"]
        assert (
            await http.post(f"/v1/workspaces/{w}/sessions", json={"id": "S1"})
        ).status_code == 201
        ws = base.replace("http", "ws", 1) + f"/v1/workspaces/{w}/ws"
        a, b = new_client_id(), new_client_id()
        tabs = [
            await Viewer.open(f"{ws}?client_id={a}&user_id=ana", a),
            await Viewer.open(f"{ws}?client_id={a}&user_id=ana", a),
            await Viewer.open(f"{ws}?client_id={b}&user_id=bo", b),
        ]
        for tab in tabs[1:]:
            await tab.send({"type": "set_session", "session_id": "S1"})
        await tabs[0].until(lambda v: v.counts.get("S1") == 2 and v.users.get("S1") == 2)
        record = (await http.get(f"/v1/workspaces/{w}/sessions/S1")).json()
        assert (record["attached_clients"], record["attached_users"]) == (2, 2)
        mine = (await http.get(f"{parent.url}/records/{w}/S1")).json()
        assert (mine["attached_clients"], mine["attached_users"]) == (2, 2)
        rest_presence = (await http.get(f"/v1/workspaces/{w}/presence")).json()
        assert mine["all"] == rest_presence
        assert rest_presence["online"] == 2 and rest_presence["counts"] == {"S1": 2}
        missing = await http.get(f"{parent.url}/records/{'0' * 32}/S1")
        assert missing.status_code == 404
        for tab in tabs:
            await tab.close()


@pytest.mark.parametrize("kind", sorted(PARENTS))
async def test_a_mounted_hub_whose_lifespan_did_not_run_says_so(kind: str) -> None:
    """A parent that forgot the lifespan line gets 503 naming the cause (REST, health
    included), a socket closed with 1013, and Unavailable from the reader: never a 500."""
    from hub.errors import Unavailable

    presence = create_app(Settings.from_env({}, **TEST_SETTINGS))
    server = app_thread(PARENTS[kind](presence, False)).start()
    try:
        async with httpx.AsyncClient(base_url=server.url + PREFIX) as http:
            for answer in (
                await http.get("/v1/health"),
                await http.post("/v1/workspaces", json={"path": "/x"}),
            ):
                assert answer.status_code == 503
                assert answer.json()["error"] == "unavailable"
                assert "lifespan" in answer.json()["message"]
        ws = server.url.replace("http", "ws", 1) + PREFIX + "/v1/workspaces/w/ws"
        assert await close_code(f"{ws}?client_id={new_client_id()}") == 1013
        with pytest.raises(Unavailable):
            await presence_of(presence).snapshot("w")
    finally:
        server.stop()


def test_presence_of_takes_the_hub_s_app() -> None:
    with pytest.raises(TypeError):
        presence_of(Starlette())


async def test_two_mounted_nodes_on_redis_count_as_one(redis_url: str) -> None:
    """Two apps, each mounting a hub on one Redis and one PostgreSQL. Truth: ana's client on
    node 1 and bo's on node 2 view S1: both apps' in-process readers and REST on both nodes say
    2 clients, 2 users; when ana's socket closes, 1 and 1 everywhere (after the grace: none)."""
    async with postgres_database() as database_url:
        await _two_nodes(redis_url, database_url)


async def _two_nodes(redis_url: str, database_url: str) -> None:
    shared = {**TEST_SETTINGS, "redis_url": redis_url, "database_url": database_url}
    hubs = [create_app(Settings.from_env({}, **shared)) for _ in range(2)]
    nodes = [app_thread(_starlette(h, True)).start() for h in hubs]
    try:
        async with httpx.AsyncClient() as http:
            one, two = (n.url + PREFIX for n in nodes)
            w = (await http.post(one + "/v1/workspaces", json={"path": "/m2"})).json()["id"]
            await http.post(two + f"/v1/workspaces/{w}/sessions", json={"id": "S1"})
            a, b = new_client_id(), new_client_id()
            tabs = []
            for base, client, user in ((one, a, "ana"), (two, b, "bo")):
                ws = base.replace("http", "ws", 1) + f"/v1/workspaces/{w}/ws"
                tab = await Viewer.open(f"{ws}?client_id={client}&user_id={user}", client)
                await tab.send({"type": "set_session", "session_id": "S1"})
                tabs.append(tab)
            for tab in tabs:
                await tab.until(lambda v: (v.counts.get("S1"), v.users.get("S1")) == (2, 2))

            async def everywhere() -> set[tuple[int, int]]:
                seen = set()
                for node in nodes:
                    mine = (await http.get(f"{node.url}/records/{w}/S1")).json()
                    seen.add((mine["attached_clients"], mine["attached_users"]))
                    rec = await http.get(f"{node.url}{PREFIX}/v1/workspaces/{w}/sessions/S1")
                    seen.add((rec.json()["attached_clients"], rec.json()["attached_users"]))
                return seen

            assert await everywhere() == {(2, 2)}
            await tabs[0].close()
            await tabs[1].until(lambda v: (v.counts.get("S1"), v.users.get("S1")) == (1, 1))
            assert await everywhere() == {(1, 1)}
            await tabs[1].close()
    finally:
        for node in nodes:
            node.stop()


# -- the app's own sign-in -------------------------------------------------------------------

SIGNED_IN = {"c00k1e-ana": "ana", "c00k1e-bo": "bo", "c00k1e-eve": "eve"}


def _cookie_grant(conn: HTTPConnection) -> Grant:
    """A user's authenticate: its own session cookie says who; eve may not see presence."""
    user = SIGNED_IN.get(conn.cookies.get("session", ""))
    if user is None:
        raise Unauthorized("sign in first")
    if user == "eve":
        raise Forbidden("eve may not see presence")
    return Grant(
        workspaces=None, client=None, admin=False, viewers=True, user=user, profile={"name": user}
    )


async def _async_cookie_grant(conn: HTTPConnection) -> Grant:
    await asyncio.sleep(0)
    return _cookie_grant(conn)


@pytest.mark.parametrize("authenticate", [_cookie_grant, _async_cookie_grant])
async def test_the_app_s_own_sign_in_decides_with_the_contract_s_codes(
    authenticate: Callable[[HTTPConnection], Any],
) -> None:
    """Truth: a signed-in cookie is the stream's user (the query's user_id is ignored); no
    cookie is 401 / 4401, a refused user 403 / 4403, and a non-admin grant cannot retire."""
    presence = create_app(Settings.from_env({}, **TEST_SETTINGS), authenticate=authenticate)
    server = app_thread(_starlette(presence, True)).start()
    base = server.url + PREFIX
    ws = base.replace("http", "ws", 1)
    try:
        async with (
            httpx.AsyncClient(base_url=base, cookies={"session": "c00k1e-ana"}) as http,
            httpx.AsyncClient(base_url=base) as stranger,
        ):
            w = (await http.post("/v1/workspaces", json={"path": "/own"})).json()["id"]
            anonymous = await stranger.get(f"/v1/workspaces/{w}")
            assert anonymous.status_code == 401 and anonymous.json()["error"] == "unauthorized"
            eve = await stranger.get(
                f"/v1/workspaces/{w}", headers={"cookie": "session=c00k1e-eve"}
            )
            assert eve.status_code == 403 and eve.json()["error"] == "forbidden"
            assert (await http.delete(f"/v1/clients/{new_client_id()}")).status_code == 403
            url = f"{ws}/v1/workspaces/{w}/ws?client_id={new_client_id()}"
            assert await close_code(url) == 4401
            assert await close_code(url, {"cookie": "session=c00k1e-eve"}) == 4403
            a = new_client_id()
            sock = await connect(
                f"{ws}/v1/workspaces/{w}/ws?client_id={a}&user_id=mallory",
                additional_headers={"cookie": "session=c00k1e-ana"},
            )
            tab = Viewer(sock, a)
            Viewer.opened.append(tab)
            await tab.expect("snapshot")
            await tab.send({"type": "set_session", "session_id": "S1"})
            await tab.until(lambda v: v.users.get("S1") == 1)
            viewers = (await http.get(f"/v1/workspaces/{w}/viewers?session_id=S1")).json()
            assert [v["user_id"] for v in viewers["viewers"]] == ["ana"]  # not the query's
            assert viewers["viewers"][0]["profile"] == {"name": "ana"}
            claims = await stranger.get(f"/v1/workspaces/{w}/presence")
            assert claims.status_code == 401
            record = (await http.get(f"/v1/workspaces/{w}/presence")).json()
            assert (record["online_users"], record["users"]) == (1, {"S1": 1})
            await tab.close()
    finally:
        server.stop()


async def test_a_mounted_hub_sends_its_webhooks() -> None:
    """Webhooks work from inside a user's app: a socket that views S1 through the mount makes
    the receiver get workspace_occupied and session_occupied, signed (checked by it)."""
    receiver = Receiver().start()
    hooks = {"webhook_url": receiver.url, "webhook_secret": SECRET, "webhook_vacated_delay": 0.2}
    presence = create_app(Settings.from_env({}, **TEST_SETTINGS, **hooks))
    server = app_thread(_starlette(presence, True)).start()
    base = server.url + PREFIX
    try:
        async with httpx.AsyncClient(base_url=base) as http:
            w = (await http.post("/v1/workspaces", json={"path": "/hooked"})).json()["id"]
        client = new_client_id()
        ws = base.replace("http", "ws", 1) + f"/v1/workspaces/{w}/ws?client_id={client}"
        tab = await Viewer.open(ws, client)
        await tab.send({"type": "set_session", "session_id": "S1"})
        want = [("workspace_occupied", None), ("session_occupied", "S1")]
        await eventually(lambda: receiver.names(w) == want, within=10)
        await tab.close()
        assert receiver.bad_signatures == 0
    finally:
        server.stop()
        receiver.stop()
