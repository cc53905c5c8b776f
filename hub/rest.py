"""REST routes of docs/protocol.md section 5: thin handlers over the store, the backend and the hub.

The workspace, client and session API and its OpenAPI document; the operator routes (health,
readiness, metrics, stats) are :mod:`hub.operations`, the files served as they are
:mod:`hub.assets`. Every handler reads and checks its input (raising
:class:`~hub.errors.PeerError`), calls the store and the presence backend, and answers JSON
encoded with orjson. Presence figures (``online``, ``attached_clients``) are read from live
presence at request time.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Awaitable, Callable, Set
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from hub.access import Access
from hub.auth import Grant
from hub.backends import PresenceBackend
from hub.errors import (
    BadRequest,
    ClientRetired,
    Forbidden,
    InvalidParentSession,
    InvalidPath,
    InvalidSessionId,
    PayloadTooLarge,
    PeerError,
    SessionNotFound,
    WorkspaceNotFound,
)
from hub.hub import Hub
from hub.openapi import document
from hub.presence import Snapshot
from hub.protocol import (
    check_client_id,
    check_limit,
    check_profile,
    check_session_id,
    viewer_json,
)
from hub.store import SESSION, SESSION_CREATE, SESSION_FIELDS, Session, Store, Workspace

__all__ = ["Handler", "Rest", "error_response", "json_response", "peer_errors"]

MAX_PATH_LENGTH = 4096
MAX_INT64 = 2**63 - 1


def json_response(data: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status, media_type="application/json")


def error_response(
    status: int, code: str, message: str, retry_after: int | None = None
) -> Response:
    response = json_response({"error": code, "message": message}, status)
    if retry_after is not None:
        response.headers["Retry-After"] = str(retry_after)
    return response


Handler = Callable[[Request], Awaitable[Response]]


def peer_errors(handler: Handler) -> Handler:
    """Turn a PeerError raised by a handler into its JSON error answer."""

    async def wrapped(request: Request) -> Response:
        try:
            return await handler(request)
        except PeerError as exc:
            return error_response(exc.status, exc.code, exc.message, exc.retry_after)

    wrapped.__name__ = handler.__name__
    wrapped.__doc__ = handler.__doc__
    return wrapped


def workspace_json(workspace: Workspace, snapshot: Snapshot) -> dict[str, Any]:
    return {
        "id": workspace.id,
        "path": workspace.path,
        "created_at": workspace.created_at,
        "online": snapshot.online,
        "online_users": snapshot.online_users,
    }


def presence_json(snapshot: Snapshot) -> dict[str, Any]:
    """The body of ``GET .../presence``: the workspace's counts at ``seq``."""
    return {
        "workspace_id": snapshot.workspace_id,
        "seq": snapshot.seq,
        "online": snapshot.online,
        "counts": snapshot.counts,
        "online_users": snapshot.online_users,
        "users": snapshot.users,
    }


def session_json(session: Session, snapshot: Snapshot) -> dict[str, Any]:
    """The record's fields (hub.store.SESSION), then its live presence."""
    data = {name: getattr(session, name) for name in _SESSION_NAMES}
    data["attached_clients"] = snapshot.counts.get(session.id, 0)
    data["attached_users"] = snapshot.users.get(session.id, 0)
    return data


_SESSION_NAMES = tuple(f.name for f in SESSION)


def _check_fields(body: dict[str, Any], allowed: Set[str]) -> None:
    unknown = body.keys() - allowed
    if unknown:
        raise BadRequest(f"unknown field {min(unknown)[:64]!r}")


def _check_type(body: dict[str, Any], name: str, types: tuple[type, ...]) -> None:
    """A present field must have one of ``types`` (a bool is never an int or a number)."""
    value = body[name]
    if isinstance(value, bool) and bool not in types:
        ok = False
    else:
        ok = isinstance(value, types)
    if not ok:
        kinds = " or ".join("boolean" if t is bool else t.__name__ for t in types)
        raise BadRequest(f"field {name!r} must be of type {kinds}")
    if isinstance(value, int) and not isinstance(value, bool) and not 0 <= value <= MAX_INT64:
        raise BadRequest(f"field {name!r} must be between 0 and {MAX_INT64}")
    if isinstance(value, float) and not (math.isfinite(value) and value >= 0):
        raise BadRequest(f"field {name!r} must be a finite number >= 0")


def _given(body: dict[str, Any], name: str) -> Any:
    """A create body's field (hub.store.SESSION_CREATE) of its JSON type, None when absent or
    null (its default)."""
    if body.get(name) is None:
        return None
    _check_type(body, name, SESSION_CREATE[name])
    return body[name]


class Rest:
    """The REST handlers, bound to one hub, backend and store."""

    def __init__(
        self, hub: Hub, backend: PresenceBackend, store: Store, max_body: int, access: Access
    ) -> None:
        self.hub = hub
        self.backend = backend
        self.store = store
        self.max_body = max_body
        self.access = access

    def routes(self) -> list[BaseRoute]:
        w = "/v1/workspaces/{workspace_id}"
        table: list[tuple[str, Handler, list[str]]] = [
            ("/openapi.json", self.openapi, ["GET"]),
            ("/v1/workspaces", self.create_workspace, ["POST"]),
            ("/v1/workspaces", self.list_workspaces, ["GET"]),
            (w, self.get_workspace, ["GET"]),
            (w, self.delete_workspace, ["DELETE"]),
            (w + "/clients", self.list_claims, ["GET"]),
            (w + "/clients/{client_id}", self.release, ["DELETE"]),
            ("/v1/clients/{client_id}", self.retire, ["DELETE"]),
            (w + "/current-session", self.set_current_session, ["POST"]),
            (w + "/clients/{client_id}/profile", self.set_profile, ["PUT"]),
            (w + "/presence", self.presence, ["GET"]),
            (w + "/viewers", self.viewers, ["GET"]),
            (w + "/sessions", self.list_sessions, ["GET"]),
            (w + "/sessions", self.create_session, ["POST"]),
            (w + "/sessions/{session_id}", self.get_session, ["GET"]),
            (w + "/sessions/{session_id}", self.update_session, ["PUT"]),
            (w + "/sessions/{session_id}", self.delete_session, ["DELETE"]),
        ]
        return [Route(path, peer_errors(h), methods=m) for path, h, m in table]

    # -- helpers ----------------------------------------------------------------------------

    async def _body(self, request: Request) -> dict[str, Any]:
        """The request body as a JSON object, at most ``max_body`` bytes."""
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body:
            raise PayloadTooLarge(f"request body is larger than {self.max_body} bytes")
        chunks = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > self.max_body:
                raise PayloadTooLarge(f"request body is larger than {self.max_body} bytes")
            chunks.append(chunk)
        try:
            body = orjson.loads(b"".join(chunks))
        except orjson.JSONDecodeError:
            raise BadRequest("request body is not valid JSON") from None
        if not isinstance(body, dict):
            raise BadRequest("request body must be a JSON object")
        return body

    async def _grant(self, request: Request) -> Grant:
        """Who is asking (401 when auth is on and the token is missing or not valid, or what
        the app's own ``authenticate`` says: see hub.access)."""
        return await self.access.grant(request)

    async def _workspace(
        self, request: Request, grant: Grant, client_id: str | None = None
    ) -> Workspace:
        """The path's workspace: 403 when the grant does not cover it (or the authorization
        hook denies it; 503 when the hook does not answer), then 404."""
        workspace_id = request.path_params["workspace_id"]
        await self.access.authorize(grant, workspace_id, client_id)
        workspace = await self.store.get_workspace(workspace_id)
        if workspace is None:
            raise WorkspaceNotFound(f"workspace {workspace_id[:64]!r} not found")
        return workspace

    async def _session(self, request: Request, workspace: Workspace) -> Session:
        session_id = self._path_session_id(request)
        session = await self.store.get_session(workspace.id, session_id)
        if session is None:
            raise SessionNotFound(f"session {session_id[:64]!r} not found")
        return session

    @staticmethod
    def _path_session_id(request: Request) -> str:
        session_id = check_session_id(request.path_params["session_id"])
        if session_id == "":
            raise InvalidSessionId("session id must not be empty")
        return session_id

    async def _workspace_json(self, workspace: Workspace) -> dict[str, Any]:
        """The record with its live ``online`` and ``online_users``."""
        return workspace_json(workspace, await self.backend.snapshot(workspace.id))

    async def _session_json(self, session: Session) -> dict[str, Any]:
        """The record with its live ``attached_clients`` and ``attached_users``."""
        return session_json(session, await self.backend.snapshot(session.workspace_id))

    # -- routes -----------------------------------------------------------------------------

    async def openapi(self, request: Request) -> Response:
        """The REST contract as OpenAPI 3.0 (open, like /v1/health)."""
        return json_response(document())

    async def create_workspace(self, request: Request) -> Response:
        """Get or create by path, then a creation hold for ``client_id`` (when given).

        A token limited to some workspaces may only reach an existing one of them by its path:
        it cannot create a workspace whose id it does not know yet.
        """
        grant = await self._grant(request)
        body = await self._body(request)
        _check_fields(body, {"path", "client_id"})
        if "path" not in body:
            raise BadRequest("field 'path' is required")
        _check_type(body, "path", (str,))
        path = body["path"]
        if not path or len(path) > MAX_PATH_LENGTH:
            raise InvalidPath(f"path must be 1..{MAX_PATH_LENGTH} characters")
        client_id = None
        if body.get("client_id") is not None:
            _check_type(body, "client_id", (str,))
            client_id = check_client_id(body["client_id"])
        if client_id is not None:
            grant.check_client(client_id)
        if grant.workspaces is not None:
            existing = await self.store.find_workspace(path)
            if existing is None:
                raise Forbidden("creating a workspace needs a token for every workspace")
            await self.access.authorize(grant, existing.id, client_id)
        if client_id is not None and await self.backend.is_retired(client_id):
            raise ClientRetired(f"client {client_id} is retired")
        workspace = await self.store.create_workspace(path)
        if client_id is not None:
            await self.backend.hold(workspace.id, client_id)  # makes the workspace known too
        else:
            await self.backend.add_workspace(workspace.id)
        return json_response(await self._workspace_json(workspace))

    async def list_workspaces(self, request: Request) -> Response:
        (await self._grant(request)).check_admin()
        workspaces = await self.store.list_workspaces()
        return json_response([await self._workspace_json(w) for w in workspaces])

    async def get_workspace(self, request: Request) -> Response:
        workspace = await self._workspace(request, await self._grant(request))
        return json_response(await self._workspace_json(workspace))

    async def delete_workspace(self, request: Request) -> Response:
        grant = await self._grant(request)
        grant.check_admin()
        workspace = await self._workspace(request, grant)
        # Presence first: with it unreachable (503) nothing is deleted and the call can be
        # retried (the other way round, a shared presence could keep a deleted workspace).
        # Then the record, then presence again: a socket that joined in between is closed too.
        await self.backend.remove_workspace(workspace.id)  # its sockets close with 4404
        await self.store.delete_workspace(workspace.id)
        await self.backend.remove_workspace(workspace.id)
        return Response(status_code=204)

    async def list_claims(self, request: Request) -> Response:
        grant = await self._grant(request)
        grant.check_admin()
        workspace = await self._workspace(request, grant)
        claims = await self.backend.claims(workspace.id)
        return json_response(
            [
                {
                    "client_id": c.client_id,
                    "streams": c.streams,
                    "session_id": c.session_id,
                    "state": c.state.value,
                    "released": c.released,
                }
                for c in claims
            ]
        )

    async def release(self, request: Request) -> Response:
        grant = await self._grant(request)
        client_id = check_client_id(request.path_params["client_id"])
        grant.check_client(client_id)
        workspace = await self._workspace(request, grant, client_id)
        await self.backend.release(workspace.id, client_id)
        return Response(status_code=204)

    async def retire(self, request: Request) -> Response:
        grant = await self._grant(request)
        client_id = check_client_id(request.path_params["client_id"])
        grant.check_admin()
        await self.backend.retire(client_id)  # its sockets close with 4410
        return Response(status_code=204)

    async def set_current_session(self, request: Request) -> Response:
        grant = await self._grant(request)
        client_id = check_client_id(request.query_params.get("client_id"))
        grant.check_client(client_id)
        workspace = await self._workspace(request, grant, client_id)
        body = await self._body(request)
        _check_fields(body, {"session_id"})
        if "session_id" not in body:
            raise BadRequest("field 'session_id' is required")
        session_id = check_session_id(body["session_id"])
        seq = await self.backend.set_session(workspace.id, client_id, session_id)
        return json_response({"seq": seq})

    async def set_profile(self, request: Request) -> Response:
        """A client's user's profile over REST (docs/protocol.md section 12): the body is the
        profile itself, with the rules of ``set_profile``; answered with the seq."""
        grant = await self._grant(request)
        client_id = check_client_id(request.path_params["client_id"])
        grant.check_client(client_id)
        workspace = await self._workspace(request, grant)
        profile = check_profile(await self._body(request))
        seq = await self.backend.set_profile(workspace.id, client_id, profile)
        return json_response({"seq": seq})

    async def presence(self, request: Request) -> Response:
        workspace = await self._workspace(request, await self._grant(request))
        return json_response(presence_json(await self.backend.snapshot(workspace.id)))

    async def viewers(self, request: Request) -> Response:
        """Who views a session (docs/protocol.md section 9): the viewers scope with auth on."""
        grant = await self._grant(request)
        query = request.query_params
        if "session_id" not in query:
            raise BadRequest("query parameter 'session_id' is required ('' for none)")
        session_id = check_session_id(query["session_id"])
        limit = check_limit(query.get("limit"))
        # The hook's scopes count too (answered once, then cached for _workspace).
        grant = await self.access.authorize(grant, request.path_params["workspace_id"])
        grant.check_viewers()
        workspace = await self._workspace(request, grant)
        found = await self.backend.viewers(workspace.id, session_id, limit)
        return json_response(
            {
                "workspace_id": workspace.id,
                "session_id": session_id,
                "seq": found.seq,
                "total": found.total,
                "anonymous": found.anonymous,
                "viewers": [viewer_json(v) for v in found.viewers],
            }
        )

    async def list_sessions(self, request: Request) -> Response:
        workspace = await self._workspace(request, await self._grant(request))
        sessions = await self.store.list_sessions(workspace.id)
        snapshot = await self.backend.snapshot(workspace.id)
        return json_response([session_json(s, snapshot) for s in sessions])

    async def create_session(self, request: Request) -> Response:
        workspace = await self._workspace(request, await self._grant(request))
        body = await self._body(request)
        _check_fields(body, SESSION_CREATE.keys())
        title = _given(body, "title") or ""
        session_id = _given(body, "id")
        if session_id is not None:
            session_id = check_session_id(session_id)
            if session_id == "":
                raise InvalidSessionId("session id must not be empty")
        parent = _given(body, "parent_session_id")
        if parent is not None:
            try:
                check_session_id(parent)
            except PeerError:
                raise InvalidParentSession("parent_session_id is not a valid session id") from None
        session = await self.store.create_session(
            workspace.id, session_id or str(uuid.uuid4()), title, parent
        )
        data = await self._session_json(session)
        await self.backend.publish_session(workspace.id, "created", data)
        return json_response(data, 201)

    async def get_session(self, request: Request) -> Response:
        workspace = await self._workspace(request, await self._grant(request))
        session = await self._session(request, workspace)
        return json_response(await self._session_json(session))

    async def update_session(self, request: Request) -> Response:
        workspace = await self._workspace(request, await self._grant(request))
        session_id = self._path_session_id(request)
        body = await self._body(request)
        _check_fields(body, SESSION_FIELDS.keys())
        for name, types in SESSION_FIELDS.items():
            if name in body:
                _check_type(body, name, types)
        session = await self.store.update_session(workspace.id, session_id, body)
        if session is None:
            raise SessionNotFound(f"session {session_id[:64]!r} not found")
        data = await self._session_json(session)
        await self.backend.publish_session(workspace.id, "updated", data)
        return json_response(data)

    async def delete_session(self, request: Request) -> Response:
        workspace = await self._workspace(request, await self._grant(request))
        session_id = self._path_session_id(request)
        session = await self.store.delete_session(workspace.id, session_id)
        if session is None:
            raise SessionNotFound(f"session {session_id[:64]!r} not found")
        await self.backend.publish_session(
            workspace.id, "deleted", await self._session_json(session)
        )
        return Response(status_code=204)
