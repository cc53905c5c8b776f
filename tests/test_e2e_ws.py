"""End to end: a real uvicorn server, the ``websockets`` client, and httpx for REST."""

from __future__ import annotations

import asyncio
import json
import random
from typing import Any

import httpx

from hub import fastpaths
from tests.harness import ClusterThread, ServerThread, Viewer, close_code, eventually, new_client_id


async def viewer(server: ServerThread, workspace: str, client_id: str | None = None) -> Viewer:
    client_id = client_id or new_client_id()
    return await Viewer.open(server.ws_url(workspace, client_id), client_id)


async def gone(http: httpx.AsyncClient, workspace: str, client_id: str) -> bool:
    return client_id not in await claims(http, workspace)


async def no_claims(http: httpx.AsyncClient, workspace: str) -> bool:
    return not await claims(http, workspace)


async def presence(http: httpx.AsyncClient, workspace: str) -> dict[str, Any]:
    response = await http.get(f"/v1/workspaces/{workspace}/presence")
    assert response.status_code == 200
    data: dict[str, Any] = response.json()
    return data


async def claims(http: httpx.AsyncClient, workspace: str) -> dict[str, dict[str, Any]]:
    response = await http.get(f"/v1/workspaces/{workspace}/clients")
    assert response.status_code == 200
    return {c["client_id"]: c for c in response.json()}


# -- the lifecycle, seen through pushes and REST ---------------------------------------------


async def test_counts_move_live_and_match_rest(
    server: ServerThread, http: httpx.AsyncClient, workspace: str
) -> None:
    created = await http.post(f"/v1/workspaces/{workspace}/sessions", json={"id": "S1"})
    assert created.status_code == 201
    a = await viewer(server, workspace)
    assert (a.online, a.counts) == (1, {})

    await a.send({"type": "set_session", "session_id": "S1", "ref": "r1"})
    ack = await a.expect("ack")
    assert ack["ref"] == "r1"
    await a.until(lambda v: v.seq >= ack["seq"] and v.counts == {"S1": 1})

    b = await viewer(server, workspace)
    assert (b.online, b.counts) == (2, {"S1": 1})
    await a.until(lambda v: v.online == 2)
    await b.send({"type": "set_session", "session_id": "S1"})
    await a.until(lambda v: v.counts == {"S1": 2})
    await b.send({"type": "set_session", "session_id": "S2"})
    await a.until(lambda v: v.counts == {"S1": 1, "S2": 1})
    await b.until(lambda v: v.counts == {"S1": 1, "S2": 1})

    snap = await presence(http, workspace)
    assert (snap["online"], snap["counts"]) == (2, {"S1": 1, "S2": 1})
    assert snap["seq"] == a.seq
    session = (await http.get(f"/v1/workspaces/{workspace}/sessions/S1")).json()
    assert session["attached_clients"] == 1
    listed = (await http.get(f"/v1/workspaces/{workspace}/sessions")).json()
    assert [(s["id"], s["attached_clients"]) for s in listed] == [("S1", 1)]
    ws_record = (await http.get(f"/v1/workspaces/{workspace}")).json()
    assert ws_record["online"] == 2

    # Detach: the count drops at once; the claim waits in grace, then goes.
    await b.close()
    await a.until(lambda v: v.counts == {"S1": 1} and v.online == 1)
    assert (await claims(http, workspace))[b.client_id]["state"] == "grace"
    await eventually(lambda: gone(http, workspace, b.client_id))  # the grace (0.6 s) fired
    await a.close()


async def test_reconnect_within_grace_resumes_the_session(
    server: ServerThread, http: httpx.AsyncClient, workspace: str
) -> None:
    watcher = await viewer(server, workspace)
    b = await viewer(server, workspace)
    await b.send({"type": "set_session", "session_id": "S9"})
    await watcher.until(lambda v: v.counts == {"S9": 1})
    await b.close()
    await watcher.until(lambda v: v.counts == {})
    again = await viewer(server, workspace, b.client_id)  # no set_session needed
    assert again.counts == {"S9": 1}
    await watcher.until(lambda v: v.counts == {"S9": 1})
    await again.close()
    await watcher.close()


async def test_one_client_with_two_streams_counts_once(
    server: ServerThread, http: httpx.AsyncClient, workspace: str
) -> None:
    client = new_client_id()
    tab1 = await viewer(server, workspace, client)
    tab2 = await viewer(server, workspace, client)
    assert tab2.online == 1
    await tab1.send({"type": "set_session", "session_id": "S1"})
    await tab2.until(lambda v: v.counts == {"S1": 1})  # the set applies to every stream
    assert (await claims(http, workspace))[client]["streams"] == 2
    await tab1.close()
    snap = await presence(http, workspace)
    assert (snap["online"], snap["counts"]) == (1, {"S1": 1})
    await tab2.close()


async def test_creation_hold_counts_nowhere_and_expires(
    server: ServerThread, http: httpx.AsyncClient
) -> None:
    client = new_client_id()
    response = await http.post("/v1/workspaces", json={"path": "/hold/x", "client_id": client})
    workspace = response.json()["id"]
    assert response.json()["online"] == 0
    assert (await claims(http, workspace))[client]["state"] == "held"
    refused = await http.post(
        f"/v1/workspaces/{workspace}/current-session",
        params={"client_id": client},
        json={"session_id": "S1"},
    )
    assert refused.status_code == 409 and refused.json()["error"] == "not_attached"
    await eventually(lambda: gone(http, workspace, client))  # the hold (0.6 s) expired
    # The second create of the same path returns the same workspace.
    again = await http.post("/v1/workspaces", json={"path": "/hold/x"})
    assert again.json()["id"] == workspace


async def test_hold_then_attach_cancels_the_hold(
    server: ServerThread, http: httpx.AsyncClient
) -> None:
    client = new_client_id()
    response = await http.post("/v1/workspaces", json={"path": "/hold/y", "client_id": client})
    workspace = response.json()["id"]
    v = await viewer(server, workspace, client)
    # Barrier: a later hold in the same workspace expires (0.6 s) after the first one would
    # have, had the attach not cancelled it.
    later = new_client_id()
    await http.post("/v1/workspaces", json={"path": "/hold/y", "client_id": later})
    assert later in await claims(http, workspace)
    await eventually(lambda: gone(http, workspace, later))
    assert (await claims(http, workspace))[client]["state"] == "attached"
    await v.close()


async def test_release_leaves_without_grace(
    server: ServerThread, http: httpx.AsyncClient, workspace: str
) -> None:
    watcher = await viewer(server, workspace)
    leaver = await viewer(server, workspace)
    await leaver.send({"type": "set_session", "session_id": "S1"})
    await watcher.until(lambda v: v.counts == {"S1": 1})
    url = f"/v1/workspaces/{workspace}/clients/{leaver.client_id}"
    assert (await http.delete(url)).status_code == 204
    assert (await http.delete(url)).status_code == 204  # idempotent
    assert (await claims(http, workspace))[leaver.client_id]["released"] is True
    await leaver.close()
    await watcher.until(lambda v: v.counts == {})
    assert leaver.client_id not in await claims(http, workspace)
    await watcher.close()


async def test_retire_closes_every_socket_and_refuses_the_client(
    server: ServerThread, http: httpx.AsyncClient, workspace: str
) -> None:
    other = (await http.post("/v1/workspaces", json={"path": "/retire/other"})).json()["id"]
    client = new_client_id()
    watcher = await viewer(server, workspace)
    tab1 = await viewer(server, workspace, client)
    tab2 = await viewer(server, other, client)
    await tab1.send({"type": "set_session", "session_id": "S1"})
    await watcher.until(lambda v: v.counts == {"S1": 1})

    assert (await http.delete(f"/v1/clients/{client}")).status_code == 204
    assert await tab1.closed_with() == 4410
    assert await tab2.closed_with() == 4410
    await watcher.until(lambda v: v.counts == {} and v.online == 1)
    assert client not in await claims(http, workspace)

    assert await close_code(server.ws_url(workspace, client)) == 4410
    created = await http.post("/v1/workspaces", json={"path": "/r", "client_id": client})
    assert created.status_code == 410 and created.json()["error"] == "client_retired"
    assert (await http.get("/v1/workspaces")).status_code == 200
    assert "/r" not in [w["path"] for w in (await http.get("/v1/workspaces")).json()]
    current = await http.post(
        f"/v1/workspaces/{workspace}/current-session",
        params={"client_id": client},
        json={"session_id": "S1"},
    )
    assert current.status_code == 410
    assert (await http.delete(f"/v1/clients/{client}")).status_code == 204  # idempotent
    await watcher.close()


async def test_delete_workspace_closes_sockets_with_4404(
    server: ServerThread, http: httpx.AsyncClient, workspace: str
) -> None:
    await http.post(f"/v1/workspaces/{workspace}/sessions", json={"id": "S1"})
    v = await viewer(server, workspace)
    assert (await http.delete(f"/v1/workspaces/{workspace}")).status_code == 204
    assert await v.closed_with() == 4404
    assert (await http.get(f"/v1/workspaces/{workspace}")).status_code == 404
    assert (await http.get(f"/v1/workspaces/{workspace}/sessions/S1")).status_code == 404
    assert (await http.delete(f"/v1/workspaces/{workspace}")).status_code == 404
    assert await close_code(server.ws_url(workspace, new_client_id())) == 4404


async def test_set_session_from_rest_pushes_and_returns_seq(
    server: ServerThread, http: httpx.AsyncClient, workspace: str
) -> None:
    v = await viewer(server, workspace)
    response = await http.post(
        f"/v1/workspaces/{workspace}/current-session",
        params={"client_id": v.client_id.upper()},
        json={"session_id": "S7"},
    )
    assert response.status_code == 200
    seq = response.json()["seq"]
    await v.until(lambda x: x.seq >= seq)
    assert v.counts == {"S7": 1}
    same = await http.post(
        f"/v1/workspaces/{workspace}/current-session",
        params={"client_id": v.client_id},
        json={"session_id": "S7"},
    )
    assert same.json()["seq"] == seq  # same value: nothing changes, seq stays
    await v.close()


async def test_same_session_again_acks_without_a_new_seq(
    server: ServerThread, workspace: str
) -> None:
    v = await viewer(server, workspace)
    await v.send({"type": "set_session", "session_id": "S1", "ref": 1})
    first = await v.expect("ack")
    await v.send({"type": "set_session", "session_id": "S1", "ref": 2})
    second = await v.expect("ack")
    assert (second["ref"], second["seq"]) == (2, first["seq"])
    await v.send({"type": "set_session", "session_id": None, "ref": 3})
    third = await v.expect("ack")
    assert third["seq"] == first["seq"] + 1
    await v.until(lambda x: x.seq >= third["seq"])
    assert v.counts == {} and v.online == 1
    await v.close()


async def test_sync_and_ping_echo_their_ref(server: ServerThread, workspace: str) -> None:
    v = await viewer(server, workspace)
    await v.send({"type": "sync", "ref": "s"})
    snap = await v.expect("snapshot")
    assert snap["ref"] == "s" and snap["client_id"] == v.client_id
    assert snap["workspace_id"] == workspace
    await v.send({"type": "ping", "ref": 42})
    assert await v.expect("pong") == {"type": "pong", "ref": 42}
    await v.send({"type": "ping"})
    assert await v.expect("pong") == {"type": "pong"}
    await v.close()


async def test_session_records_travel_as_session_frames(
    server: ServerThread, http: httpx.AsyncClient, workspace: str
) -> None:
    v = await viewer(server, workspace)
    await v.send({"type": "set_session", "session_id": "S1"})
    created = await http.post(
        f"/v1/workspaces/{workspace}/sessions", json={"id": "S1", "title": "first"}
    )
    assert created.status_code == 201
    frame = await v.expect("session")
    assert frame["op"] == "created" and frame["session"]["title"] == "first"
    assert frame["session"]["attached_clients"] == 1
    await http.put(f"/v1/workspaces/{workspace}/sessions/S1", json={"is_busy": True})
    frame = await v.expect("session")
    assert frame["op"] == "updated" and frame["session"]["is_busy"] is True
    await http.delete(f"/v1/workspaces/{workspace}/sessions/S1")
    frame = await v.expect("session")
    assert frame["op"] == "deleted" and frame["session"]["id"] == "S1"
    await v.close()


# -- bad input ------------------------------------------------------------------------------

BAD_FRAMES: list[tuple[str | bytes, str, Any]] = [
    ("not json", "bad_json", None),
    ("", "bad_json", None),
    ("{", "bad_json", None),
    (b"\x00\x01", "unsupported_frame", None),
    ("[1, 2]", "bad_request", None),
    ('"set_session"', "bad_request", None),
    ("{}", "bad_request", None),
    ('{"type": 5}', "bad_request", None),
    ('{"type": "shout", "ref": 7}', "unknown_type", 7),
    ('{"type": "set_session", "ref": "x"}', "bad_request", "x"),
    ('{"type": "set_session", "session_id": 5, "ref": "x"}', "bad_request", "x"),
    ('{"type": "set_session", "session_id": ["a"]}', "bad_request", None),
    ('{"type": "set_session", "session_id": "a", "extra": 1, "ref": 2}', "bad_request", 2),
    ('{"type": "ping", "ref": 1.5}', "bad_request", None),
    ('{"type": "ping", "ref": true}', "bad_request", None),
    ('{"type": "ping", "ref": 123456789012345678901234567890}', "bad_request", None),
    ('{"type": "ping", "ref": {"a": 1}}', "bad_request", None),
    ('{"type": "sync", "session_id": "x"}', "bad_request", None),
    (
        json.dumps({"type": "set_session", "session_id": "x" * 129, "ref": 1}),
        "invalid_session_id",
        1,
    ),
    ('{"type": "set_session", "session_id": "a\\u0007b", "ref": 1}', "invalid_session_id", 1),
    ('{"type": "set_session", "session_id": "a\\nb"}', "invalid_session_id", None),
    ('{"type": "set_session", "session_id": "\\ud800"}', "bad_json", None),
    ("[" * 10000 + "]" * 10000, "bad_json", None),
    ('{"type": "ping", "ref": 1e999}', "bad_json", None),
]


async def test_every_bad_frame_gets_its_error_and_the_socket_keeps_working(
    server: ServerThread, workspace: str
) -> None:
    v = await viewer(server, workspace)
    for raw, code, ref in BAD_FRAMES:
        await v.send(raw)
        frame = await v.expect("error")
        assert frame["code"] == code, (raw[:80], frame)
        assert frame.get("ref") == ref, (raw[:80], frame)
        assert frame["message"]
    await v.send({"type": "set_session", "session_id": "x" * 128, "ref": "ok"})
    assert (await v.expect("ack"))["ref"] == "ok"
    await v.until(lambda x: x.counts == {"x" * 128: 1})
    await v.close()


async def test_refused_handshakes_get_their_close_codes(
    server: ServerThread, http: httpx.AsyncClient, workspace: str
) -> None:
    assert await close_code(server.ws_url(workspace, None)) == 4400
    assert await close_code(server.ws_url(workspace, "not-a-uuid")) == 4400
    assert await close_code(server.ws_url(workspace, new_client_id()[:-1])) == 4400
    # The client id is checked before the workspace.
    assert await close_code(server.ws_url("no-such-workspace", "bad")) == 4400
    assert await close_code(server.ws_url("no-such-workspace", new_client_id())) == 4404
    # None of these left a claim behind.
    assert await claims(http, workspace) == {}


async def test_a_frame_over_64_kib_closes_with_1009(server: ServerThread, workspace: str) -> None:
    v = await viewer(server, workspace)
    await v.send(json.dumps({"type": "ping", "ref": "x" * (64 * 1024)}))
    assert await v.closed_with() == 1009


async def test_upper_case_client_ids_are_the_same_client(
    server: ServerThread, http: httpx.AsyncClient, workspace: str
) -> None:
    client = new_client_id()
    lower = await viewer(server, workspace, client)
    upper = await viewer(server, workspace, client.upper())
    assert upper.online == 1
    assert list(await claims(http, workspace)) == [client]
    await lower.close()
    await upper.close()


# -- many clients at once -------------------------------------------------------------------


async def test_100_clients_switching_concurrently_converge_to_the_truth(
    server: ServerThread, http: httpx.AsyncClient, workspace: str
) -> None:
    sessions = ["S1", "S2", "S3", "S4", ""]
    viewers = await asyncio.gather(*(viewer(server, workspace) for _ in range(100)))
    rng = random.Random(7)
    final: dict[str, str] = {}

    async def switch(v: Viewer) -> None:
        for i in range(5):
            target = rng.choice(sessions)
            final[v.client_id] = target
            await v.send({"type": "set_session", "session_id": target, "ref": i})
            await asyncio.sleep(rng.random() / 100)

    async def read_all(v: Viewer) -> None:
        acks = 0
        while acks < 5:
            if (await v.next())["type"] == "ack":
                acks += 1

    await asyncio.gather(*(switch(v) for v in viewers), *(read_all(v) for v in viewers))
    truth: dict[str, int] = {}
    for target in final.values():
        if target:
            truth[target] = truth.get(target, 0) + 1
    snap = await presence(http, workspace)
    assert (snap["counts"], snap["online"]) == (truth, 100)
    for v in viewers:
        await v.until(lambda x: x.seq >= snap["seq"])
        assert (v.counts, v.online, v.seq) == (truth, 100, snap["seq"])
        assert v.seqs_seen == sorted(v.seqs_seen)  # seq never goes down on one socket
    for v in viewers:
        await v.close()


async def test_state_after_everyone_leaves_is_empty(
    server: ServerThread, http: httpx.AsyncClient, workspace: str
) -> None:
    vs = [await viewer(server, workspace) for _ in range(3)]
    await vs[0].send({"type": "set_session", "session_id": "S1"})
    for v in vs:
        await v.close()
    await eventually(lambda: no_claims(http, workspace))  # every grace fired
    snap = await presence(http, workspace)
    assert (snap["online"], snap["counts"]) == (0, {})
    assert await claims(http, workspace) == {}


async def test_the_send_path_is_the_one_the_implementation_allows(
    server: ServerThread, workspace: str
) -> None:
    await viewer(server, workspace)
    nodes = [server, server.other] if isinstance(server, ClusterThread) else [server]
    # The node that holds the socket (with two nodes, sockets alternate between them).
    (node,) = [n for n in nodes if holds(n, workspace)]
    paths = node.call(lambda: {c.direct for c in node.services.hub.rooms[workspace].conns})
    # Direct on websockets-sansio with its fast path on; the plain path under wsproto, or
    # mounted with the fast paths off.
    direct = node.server.config.ws != "wsproto" and fastpaths.on("direct_writer")
    assert paths == {direct}
    # On asyncio's own transport a steady socket takes the lean path of a flush.
    lean = node.call(
        lambda: {c.send_now is not None for c in node.services.hub.rooms[workspace].conns}
    )
    assert lean == paths


def holds(node: ServerThread, workspace: str) -> bool:
    return bool(node.call(lambda: workspace in node.services.hub.rooms))
