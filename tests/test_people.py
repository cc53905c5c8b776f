"""People end to end (docs/protocol.md section 9): users, profiles, viewers and watches, on every
server of the suite (one process on both WebSocket paths, two nodes on Redis, a Redis Cluster).

The truth each test checks is the counting rule over the sockets it holds open: distinct
users per session (an anonymous client is a user of its own), and who is listed, in arrival
order. Every socket's view and the REST answers (of both nodes, with two) must equal it.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import httpx
import pytest

from tests.harness import ServerThread, Viewer, close_code, eventually, new_client_id

MakeServer = Any


async def person(
    server: ServerThread, workspace: str, user: str | None, client_id: str | None = None
) -> Viewer:
    """A socket of a new client (or of ``client_id``) as ``user`` (None: anonymous)."""
    client_id = client_id or new_client_id()
    url = server.ws_url(workspace, client_id)
    if user is not None:
        url += f"&user_id={quote(user)}"
    return await Viewer.open(url, client_id)


async def go(v: Viewer, session_id: str) -> None:
    await v.send({"type": "set_session", "session_id": session_id, "ref": "go"})
    ack = await v.expect("ack")
    await v.until(lambda x: x.seq >= ack["seq"])


async def rest_viewers(
    http: httpx.AsyncClient, workspace: str, session_id: str, **params: Any
) -> dict[str, Any]:
    response = await http.get(
        f"/v1/workspaces/{workspace}/viewers", params={"session_id": session_id, **params}
    )
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()
    return data


async def test_a_person_with_two_tabs_counts_once_everywhere(
    server: ServerThread, http: httpx.AsyncClient, workspace: str
) -> None:
    await http.post(f"/v1/workspaces/{workspace}/sessions", json={"id": "S1"})
    # ana has two tabs (two client ids; with two nodes, one on each), bo one, and one anonymous
    sockets = [
        await person(server, workspace, "ana"),
        await person(server, workspace, "ana"),
        await person(server, workspace, "bo"),
        await person(server, workspace, None),
    ]
    for v in sockets:
        await go(v, "S1")
    truth = {"counts": {"S1": 4}, "users": {"S1": 3}, "online": 4, "online_users": 3}
    for v in sockets:  # every socket converges on the truth
        await v.until(
            lambda x: (
                (x.counts, x.users, x.online, x.online_users)
                == (truth["counts"], truth["users"], truth["online"], truth["online_users"])
            )
        )
    for _ in range(2):  # both nodes answer the same (requests alternate with two)
        presence = (await http.get(f"/v1/workspaces/{workspace}/presence")).json()
        assert {k: presence[k] for k in truth} == truth
        session = (await http.get(f"/v1/workspaces/{workspace}/sessions/S1")).json()
        assert (session["attached_clients"], session["attached_users"]) == (4, 3)
        record = (await http.get(f"/v1/workspaces/{workspace}")).json()
        assert (record["online"], record["online_users"]) == (4, 3)
        listed = await rest_viewers(http, workspace, "S1")
        assert (listed["total"], listed["anonymous"]) == (3, 1)
        assert [(x["user_id"], x["clients"]) for x in listed["viewers"]] == [("ana", 2), ("bo", 1)]
    # One of ana's tabs closes: clients go down, people do not.
    await sockets[0].close()
    for v in sockets[1:]:
        await v.until(lambda x: x.counts == {"S1": 3} and x.users == {"S1": 3})
    await sockets[1].close()  # her last tab: she leaves
    for v in sockets[2:]:
        await v.until(lambda x: x.users == {"S1": 2} and x.online_users == 2)


async def test_a_watch_follows_joins_profiles_tabs_and_leaves(
    server: ServerThread, http: httpx.AsyncClient, workspace: str
) -> None:
    watcher = await person(server, workspace, None)
    await watcher.send({"type": "watch", "session_id": "S1", "ref": 7})
    first = await watcher.expect("viewers")
    assert first == {
        "type": "viewers", "workspace_id": workspace, "session_id": "S1", "seq": first["seq"],
        "total": 0, "anonymous": 0, "viewers": [], "ref": 7,
    }  # fmt: skip
    ana = await person(server, workspace, "ana")
    await ana.send({"type": "set_profile", "profile": {"name": "Ana"}, "ref": "p"})
    assert (await ana.expect("ack"))["ref"] == "p"
    await go(ana, "S1")
    await watcher.until(lambda x: list(x.watched["S1"]) == ["ana"])
    await watcher.until(lambda x: x.watched["S1"]["ana"]["profile"] == {"name": "Ana"})
    bo = await person(server, workspace, "bo")
    await go(bo, "S1")
    ana2 = await person(server, workspace, "ana")  # a second tab
    await go(ana2, "S1")
    await watcher.until(
        lambda x: [(u, v["clients"]) for u, v in x.watched["S1"].items()] == [("ana", 2), ("bo", 1)]
    )
    # A profile change is an update, never a leave and a join.
    frames_before = len(watcher.frames)
    await ana2.send({"type": "set_profile", "profile": {"name": "Ana B."}})
    await watcher.until(lambda x: x.watched["S1"]["ana"]["profile"] == {"name": "Ana B."})
    diffs = [f for f in watcher.frames[frames_before:] if f["type"] == "viewers_diff"]
    assert diffs and all(not d["joined"] and not d["left"] for d in diffs)
    anonymous = await person(server, workspace, None)
    await go(anonymous, "S1")
    await watcher.until(lambda x: x.totals["S1"] == (3, 1))
    # The truth, from REST (both nodes) and from the watcher, is the same list.
    for _ in range(2):
        listed = await rest_viewers(http, workspace, "S1")
        assert listed["viewers"] == list(watcher.watched["S1"].values())
    await go(bo, "S2")
    await watcher.until(lambda x: list(x.watched["S1"]) == ["ana"] and x.totals["S1"] == (2, 1))
    await watcher.send({"type": "unwatch", "session_id": "S1", "ref": "u"})
    assert (await watcher.expect("ack"))["ref"] == "u"
    mark = len(watcher.frames)
    await go(bo, "S1")
    await anonymous.until(lambda x: x.users == {"S1": 3})
    await watcher.until(lambda x: x.users == {"S1": 3})
    assert not [f for f in watcher.frames[mark:] if f["type"].startswith("viewers")]


async def test_a_limited_watch_is_a_window_on_the_earliest_arrivals(
    server: ServerThread, http: httpx.AsyncClient, workspace: str
) -> None:
    people = {}
    for name in ("a", "b", "c"):
        people[name] = await person(server, workspace, name)
        await go(people[name], "S1")
    watcher = await person(server, workspace, None)
    await watcher.send({"type": "watch", "session_id": "S1", "limit": 2})
    first = await watcher.expect("viewers")
    assert [x["user_id"] for x in first["viewers"]] == ["a", "b"] and first["total"] == 3
    await go(people["a"], "S2")  # a leaves the window: c, next by arrival, joins it
    await watcher.until(lambda x: list(x.watched["S1"]) == ["b", "c"])
    await go(people["a"], "S1")  # a returns: the latest arrival, out of the window
    await watcher.until(lambda x: x.totals["S1"] == (3, 0))
    assert list(watcher.watched["S1"]) == ["b", "c"]
    listed = await rest_viewers(http, workspace, "S1", limit=1)
    assert [x["user_id"] for x in listed["viewers"]] == ["b"] and listed["total"] == 3
    landing = await rest_viewers(http, workspace, "")  # the landing page has viewers too
    assert (landing["total"], landing["anonymous"]) == (1, 1)


async def test_bad_people_input_gets_its_answer_and_leaves_nothing(
    server: ServerThread, http: httpx.AsyncClient, workspace: str
) -> None:
    base = server.ws_url(workspace, new_client_id())
    for bad in ("", "x" * 129, "a%01b"):
        assert await close_code(base + f"&user_id={bad}") == 4400
    me = new_client_id()
    ana = await person(server, workspace, "ana", me)
    url = server.ws_url(workspace, me)
    assert await close_code(url + "&user_id=bo") == 4403  # ana's client id, presented by bo
    assert await close_code(url) == 4403  # ... or anonymously
    claims = (await http.get(f"/v1/workspaces/{workspace}/clients")).json()
    assert [(c["client_id"], c["streams"]) for c in claims] == [(me, 1)]
    for profile, ref in (([1], "list"), ("x", "str"), ({"a": "x" * 1100}, "big")):
        await ana.send({"type": "set_profile", "profile": profile, "ref": ref})
        error = await ana.expect("error")
        assert (error["code"], error["ref"]) == ("invalid_profile", ref)
    await ana.send({"type": "watch", "session_id": "x" * 129, "ref": 1})
    assert (await ana.expect("error"))["code"] == "invalid_session_id"
    await ana.send({"type": "watch", "session_id": "S", "limit": 0})
    assert (await ana.expect("error"))["code"] == "bad_request"
    for i in range(8):
        await ana.send({"type": "watch", "session_id": f"S{i}"})
        await ana.expect("viewers")
    await ana.send({"type": "watch", "session_id": "S8", "ref": "ninth"})
    error = await ana.expect("error")
    assert (error["code"], error["ref"]) == ("too_many_watches", "ninth")
    await ana.send({"type": "watch", "session_id": "S0", "limit": 5})  # re-watch: allowed
    assert (await ana.expect("viewers"))["session_id"] == "S0"
    await ana.send({"type": "ping", "ref": "still"})
    assert (await ana.expect("pong"))["ref"] == "still"  # the socket stayed open throughout
    for query, status in (({}, 400), ({"session_id": "x" * 129}, 400),
                          ({"session_id": "S", "limit": "0"}, 400),
                          ({"session_id": "S", "limit": "1001"}, 400),
                          ({"session_id": "S", "limit": "ten"}, 400)):  # fmt: skip
        response = await http.get(f"/v1/workspaces/{workspace}/viewers", params=query)
        assert response.status_code == status, (query, response.text)
    missing = await http.get("/v1/workspaces/nope/viewers", params={"session_id": ""})
    assert missing.status_code == 404
    await ana.close()

    def watches_left() -> bool:
        return all(room.watches is None for room in server.services.hub.rooms.values())

    assert server.call(watches_left)  # the socket's watches went with it


@pytest.mark.parametrize("scoped", [False, True])
async def test_viewers_need_the_scope_and_the_user_comes_from_the_token(
    make_server: MakeServer, scoped: bool
) -> None:
    from hub.auth import Auth

    secret = "s" * 40
    auth = Auth(secret)
    server = make_server(auth_secret=secret)
    admin = {"Authorization": f"Bearer {auth.mint(['*'], admin=True)}"}
    async with httpx.AsyncClient(base_url=server.url, headers=admin) as http:
        w = (await http.post("/v1/workspaces", json={"path": "/people"})).json()["id"]
        scopes = ["viewers"] if scoped else []
        token = auth.mint([w], user="ana", profile={"name": "Ana"}, scopes=scopes)
        me = new_client_id()
        # The query's user_id is ignored with auth on: the token says who this is.
        v = await Viewer.open(server.ws_url(w, me) + f"&user_id=mallory&token={token}", me)
        await v.send({"type": "watch", "session_id": "", "ref": "w"})
        if scoped:
            frame = await v.expect("viewers")
            ana = {"user_id": "ana", "profile": {"name": "Ana"}, "clients": 1}
            assert frame["viewers"] == [ana]
        else:
            error = await v.expect("error")
            assert (error["code"], error["ref"]) == ("forbidden", "w")
        rest = await http.get(
            f"/v1/workspaces/{w}/viewers",
            params={"session_id": ""},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert rest.status_code == (200 if scoped else 403)
        assert (await rest_viewers(http, w, ""))["viewers"][0]["user_id"] == "ana"  # admin may
        await v.close()
        await eventually(lambda: server.call(lambda: not server.services.hub.rooms))
