"""REST against the real server: records, and every error code the contract names."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.harness import ServerThread, Viewer, eventually

CLIENT = "3f2504e0-4f89-11d3-9a0c-0305e82c3301"


def error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"] == code, body
    assert isinstance(body["message"], str) and body["message"]


async def test_health(http: httpx.AsyncClient) -> None:
    response = await http.get("/v1/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "store": "ok", "backend": "ok"}
    assert response.headers["content-type"] == "application/json"


async def test_workspaces_are_deduplicated_by_path_and_listed(http: httpx.AsyncClient) -> None:
    path = f"/projects/{uuid.uuid4()}"
    first = await http.post("/v1/workspaces", json={"path": path, "client_id": CLIENT})
    second = await http.post("/v1/workspaces", json={"path": path})
    assert first.status_code == second.status_code == 200
    record = first.json()
    assert second.json() == record
    assert set(record) == {"id", "path", "created_at", "online", "online_users"}
    assert record["path"] == path and record["online"] == 0
    assert abs(record["created_at"] - time.time()) < 60
    listed = (await http.get("/v1/workspaces")).json()
    assert record in listed
    assert (await http.get(f"/v1/workspaces/{record['id']}")).json() == record


async def test_session_crud(http: httpx.AsyncClient, workspace: str) -> None:
    base = f"/v1/workspaces/{workspace}/sessions"
    created = await http.post(base, json={})
    assert created.status_code == 201
    session = created.json()
    uuid.UUID(session["id"])  # a new UUID by default
    assert {k: v for k, v in session.items() if k not in ("id", "created_at", "updated_at")} == {
        "workspace_id": workspace,
        "parent_session_id": None,
        "title": "",
        "message_count": 0,
        "prompt_tokens": 0,
        "completion_tokens": 0,
        "cost": 0,
        "is_busy": False,
        "attached_clients": 0,
        "attached_users": 0,
    }
    child = await http.post(
        base, json={"id": "child", "title": "Child", "parent_session_id": session["id"]}
    )
    assert child.status_code == 201 and child.json()["parent_session_id"] == session["id"]
    changes: dict[str, Any] = {
        "title": "Renamed",
        "message_count": 3,
        "prompt_tokens": 120,
        "completion_tokens": 80,
        "cost": 0.25,
        "is_busy": True,
    }
    updated = await http.put(f"{base}/child", json=changes)
    assert updated.status_code == 200
    assert {k: updated.json()[k] for k in changes} == changes
    assert (await http.put(f"{base}/child", json={"cost": 2})).json()["cost"] == 2
    assert (await http.get(f"{base}/child")).json()["title"] == "Renamed"
    assert [s["id"] for s in (await http.get(base)).json()] == [session["id"], "child"]
    assert (await http.delete(f"{base}/child")).status_code == 204
    error(await http.get(f"{base}/child"), 404, "session_not_found")
    error(await http.delete(f"{base}/child"), 404, "session_not_found")
    error(await http.put(f"{base}/child", json={"title": "x"}), 404, "session_not_found")


async def test_session_conflicts_and_parents(http: httpx.AsyncClient, workspace: str) -> None:
    base = f"/v1/workspaces/{workspace}/sessions"
    assert (await http.post(base, json={"id": "S1"})).status_code == 201
    error(await http.post(base, json={"id": "S1"}), 409, "conflict")
    error(await http.post(base, json={"parent_session_id": "nope"}), 400, "invalid_parent_session")
    other = (await http.post("/v1/workspaces", json={"path": f"/o/{uuid.uuid4()}"})).json()["id"]
    error(
        await http.post(f"/v1/workspaces/{other}/sessions", json={"parent_session_id": "S1"}),
        400,
        "invalid_parent_session",
    )
    # The same id may exist in another workspace.
    assert (
        await http.post(f"/v1/workspaces/{other}/sessions", json={"id": "S1"})
    ).status_code == 201


BAD_BODIES: list[tuple[str, str, Any, int, str]] = [
    ("POST", "/v1/workspaces", b"not json", 400, "bad_request"),
    ("POST", "/v1/workspaces", b"", 400, "bad_request"),
    ("POST", "/v1/workspaces", [], 400, "bad_request"),
    ("POST", "/v1/workspaces", {}, 400, "bad_request"),
    ("POST", "/v1/workspaces", {"path": 5}, 400, "bad_request"),
    ("POST", "/v1/workspaces", {"path": ""}, 400, "invalid_path"),
    ("POST", "/v1/workspaces", {"path": "x" * 4097}, 400, "invalid_path"),
    ("POST", "/v1/workspaces", {"path": "/p", "client_id": "nope"}, 400, "invalid_client_id"),
    ("POST", "/v1/workspaces", {"path": "/p", "client_id": 5}, 400, "bad_request"),
    ("POST", "/v1/workspaces", {"path": "/p", "color": "red"}, 400, "bad_request"),
    ("POST", "/v1/workspaces", {"path": "x" * 70_000}, 413, "payload_too_large"),
    ("POST", "{w}/sessions", {"id": ""}, 400, "invalid_session_id"),
    ("POST", "{w}/sessions", {"id": "x" * 129}, 400, "invalid_session_id"),
    ("POST", "{w}/sessions", {"id": "a\tb"}, 400, "invalid_session_id"),
    ("POST", "{w}/sessions", {"id": 7}, 400, "bad_request"),
    ("POST", "{w}/sessions", {"title": 7}, 400, "bad_request"),
    ("POST", "{w}/sessions", {"name": "x"}, 400, "bad_request"),
    ("PUT", "{w}/sessions/S1", {"owner": "x"}, 400, "bad_request"),
    ("PUT", "{w}/sessions/S1", {"message_count": "3"}, 400, "bad_request"),
    ("PUT", "{w}/sessions/S1", {"message_count": True}, 400, "bad_request"),
    ("PUT", "{w}/sessions/S1", {"message_count": -1}, 400, "bad_request"),
    ("PUT", "{w}/sessions/S1", {"prompt_tokens": 2**63}, 400, "bad_request"),
    ("PUT", "{w}/sessions/S1", {"prompt_tokens": 1.5}, 400, "bad_request"),
    ("PUT", "{w}/sessions/S1", {"cost": "1"}, 400, "bad_request"),
    ("PUT", "{w}/sessions/S1", {"cost": -0.5}, 400, "bad_request"),
    ("PUT", "{w}/sessions/S1", {"is_busy": 1}, 400, "bad_request"),
    ("PUT", "{w}/sessions/S1", {"title": None}, 400, "bad_request"),
    ("POST", "{w}/current-session?client_id=" + CLIENT, {}, 400, "bad_request"),
    ("POST", "{w}/current-session?client_id=" + CLIENT, {"session_id": 1}, 400, "bad_request"),
    (
        "POST",
        "{w}/current-session?client_id=" + CLIENT,
        {"session_id": "x", "y": 1},
        400,
        "bad_request",
    ),
    (
        "POST",
        "{w}/current-session?client_id=" + CLIENT,
        {"session_id": "x" * 129},
        400,
        "invalid_session_id",
    ),
    ("POST", "{w}/current-session", {"session_id": "S1"}, 400, "invalid_client_id"),
    ("POST", "{w}/current-session?client_id=zz", {"session_id": "S1"}, 400, "invalid_client_id"),
    ("DELETE", "{w}/clients/not-a-uuid", None, 400, "invalid_client_id"),
    ("DELETE", "/v1/clients/not-a-uuid", None, 400, "invalid_client_id"),
    ("GET", "{w}/sessions/" + "x" * 129, None, 400, "invalid_session_id"),
    ("GET", "{w}/sessions/missing", None, 404, "session_not_found"),
    ("GET", "/v1/workspaces/missing", None, 404, "workspace_not_found"),
    ("GET", "/v1/workspaces/missing/presence", None, 404, "workspace_not_found"),
    ("GET", "/v1/workspaces/missing/sessions", None, 404, "workspace_not_found"),
    ("GET", "/v1/workspaces/missing/clients", None, 404, "workspace_not_found"),
    ("DELETE", "/v1/workspaces/missing/clients/" + CLIENT, None, 404, "workspace_not_found"),
    ("DELETE", "/v1/workspaces/missing/clients/nope", None, 400, "invalid_client_id"),
    ("POST", "/v1/workspaces/missing/sessions", {}, 404, "workspace_not_found"),
    ("GET", "/v1/nothing-here", None, 404, "not_found"),
    ("PATCH", "/v1/workspaces", None, 405, "method_not_allowed"),
    ("POST", "/v1/health", None, 405, "method_not_allowed"),
]


@pytest.mark.parametrize(("method", "path", "body", "status", "code"), BAD_BODIES)
async def test_bad_requests_get_the_named_error(
    http: httpx.AsyncClient,
    workspace: str,
    method: str,
    path: str,
    body: Any,
    status: int,
    code: str,
) -> None:
    await http.post(f"/v1/workspaces/{workspace}/sessions", json={"id": "S1"})
    url = path.replace("{w}", f"/v1/workspaces/{workspace}")
    if isinstance(body, bytes):
        response = await http.request(method, url, content=body)
    elif body is None:
        response = await http.request(method, url)
    else:
        response = await http.request(method, url, json=body)
    error(response, status, code)


async def test_a_body_over_the_limit_is_refused_without_a_length_header(
    http: httpx.AsyncClient,
) -> None:
    async def chunks() -> Any:
        for _ in range(100):
            yield b"x" * 1024

    response = await http.post("/v1/workspaces", content=chunks())
    error(response, 413, "payload_too_large")


async def test_stats_count_what_the_process_holds(
    make_server: Callable[..., ServerThread],
) -> None:
    """On a hub of its own: the counts are process-wide, and other tests' claims come and go."""
    server = make_server()
    client = str(uuid.uuid4())
    async with httpx.AsyncClient(base_url=server.url) as http:
        before = (await http.get("/v1/stats")).json()
        assert before == {
            "sockets": 0,
            "rooms": 0,
            "claims": 0,
            "tasks": before["tasks"],
            "fast_paths": before["fast_paths"],
            "direct_sockets": 0,
        }
        assert all(before["fast_paths"].values())  # every check holds on the tested versions
        body = {"path": f"/stats/{client}", "client_id": client}
        w = (await http.post("/v1/workspaces", json=body)).json()["id"]
        assert (await http.get("/v1/stats")).json()["claims"] == 1  # the creation hold
        viewer = await Viewer.open(server.ws_url(w, client), client)
        assert (await http.get("/v1/stats")).json() | {"tasks": 0, "fast_paths": {}} == {
            "sockets": 1,
            "rooms": 1,
            "claims": 1,
            "tasks": 0,
            "fast_paths": {},
            "direct_sockets": 1,
        }
        await viewer.close()
        assert (await http.delete(f"/v1/clients/{client}")).status_code == 204  # retire
        await eventually(lambda: server.call(lambda: server.services.hub.sockets == 0))
        assert (await http.get("/v1/stats")).json()["claims"] == 0
