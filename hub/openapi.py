"""The REST contract as an OpenAPI 3.0 document, served at ``/openapi.json``.

Written as data, next to the routes it describes (``hub.rest``), with the same limits as the
handlers' checks, so that generated clients and schemathesis send what the hub expects. The
session's schemas are made from its one declaration, ``hub.store.SESSION``.
"""

from __future__ import annotations

from typing import Any

from hub import __version__
from hub.protocol import (
    DEFAULT_VIEWERS_LIMIT,
    MAX_SESSION_ID_LENGTH,
    MAX_USER_ID_LENGTH,
    MAX_VIEWERS_LIMIT,
)
from hub.store import SESSION, Field

__all__ = ["document"]

Schema = dict[str, Any]


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


_COUNT = {"type": "integer", "minimum": 0, "maximum": 2**63 - 1}
_SESSION_ID = {"type": "string", "maxLength": MAX_SESSION_ID_LENGTH}
_UUID = {"type": "string", "format": "uuid"}

# The schema of a value of each kind of hub.store.Field.
_KINDS: dict[str, Schema] = {
    "session_id": _SESSION_ID,
    "string": {"type": "string"},
    "count": _COUNT,
    "number": {"type": "number", "minimum": 0},
    "time": {"type": "integer"},
    "boolean": {"type": "boolean"},
}


def _field(field: Field, creating: bool = False) -> Schema:
    """A record field's schema (hub.store.SESSION); in a create body it may be null (its
    default) and, when ``nonempty``, not ""."""
    schema = dict(_KINDS[field.kind])
    if creating and field.nonempty:
        schema["minLength"] = 1
    if field.nullable or creating:
        schema["nullable"] = True
    return schema


SCHEMAS: dict[str, Schema] = {
    "Error": {
        "type": "object",
        "required": ["error", "message"],
        "properties": {"error": {"type": "string"}, "message": {"type": "string"}},
    },
    "Workspace": {
        "type": "object",
        "required": ["id", "path", "created_at", "online", "online_users"],
        "properties": {
            "id": {"type": "string"},
            "path": {"type": "string"},
            "created_at": {"type": "integer"},
            "online": _COUNT,
            "online_users": _COUNT,
        },
    },
    "Session": {
        "type": "object",
        "properties": {
            **{f.name: _field(f) for f in SESSION},
            # presence at read time, not stored (hub.rest.session_json)
            "attached_clients": _COUNT,
            "attached_users": _COUNT,
        },
    },
    "Presence": {
        "type": "object",
        "properties": {
            "workspace_id": {"type": "string"},
            "seq": _COUNT,
            "online": _COUNT,
            "counts": {"type": "object", "additionalProperties": _COUNT},
            "online_users": _COUNT,
            "users": {"type": "object", "additionalProperties": _COUNT},
        },
    },
    "Viewers": {
        "type": "object",
        "required": ["workspace_id", "session_id", "seq", "total", "anonymous", "viewers"],
        "properties": {
            "workspace_id": {"type": "string"},
            "session_id": _SESSION_ID,
            "seq": _COUNT,
            "total": _COUNT,
            "anonymous": _COUNT,
            "viewers": {
                "type": "array",
                "description": "identified users viewing the session, earliest arrival first",
                "items": {
                    "type": "object",
                    "required": ["user_id", "profile", "clients"],
                    "properties": {
                        "user_id": {"type": "string", "maxLength": MAX_USER_ID_LENGTH},
                        "profile": {"type": "object", "nullable": True},
                        "clients": _COUNT,
                    },
                },
            },
        },
    },
    "Claim": {
        "type": "object",
        "properties": {
            "client_id": _UUID,
            "streams": _COUNT,
            "session_id": _SESSION_ID,
            "state": {"type": "string", "enum": ["held", "attached", "grace"]},
            "released": {"type": "boolean"},
        },
    },
    "CreateWorkspace": {
        "type": "object",
        "required": ["path"],
        "additionalProperties": False,
        "properties": {
            "path": {"type": "string", "minLength": 1, "maxLength": 4096},
            "client_id": {**_UUID, "nullable": True},
        },
    },
    "CreateSession": {
        "type": "object",
        "additionalProperties": False,
        "properties": {f.name: _field(f, creating=True) for f in SESSION if f.create},
    },
    "UpdateSession": {
        "type": "object",
        "additionalProperties": False,
        "properties": {f.name: _field(f) for f in SESSION if f.update},
    },
    "CurrentSession": {
        "type": "object",
        "required": ["session_id"],
        "additionalProperties": False,
        "properties": {"session_id": {**_SESSION_ID, "nullable": True}},
    },
    "Profile": {
        "type": "object",
        "description": "a client's user's profile: any JSON object of at most 1024 bytes",
    },
}

_W = {"name": "workspace_id", "in": "path", "required": True, "schema": {"type": "string"}}
_S = {"name": "session_id", "in": "path", "required": True, "schema": _SESSION_ID}
_C = {"name": "client_id", "in": "path", "required": True, "schema": _UUID}
_CQ = {"name": "client_id", "in": "query", "required": True, "schema": _UUID}
_SQ = {"name": "session_id", "in": "query", "required": True, "schema": _SESSION_ID}
_LIMIT = {
    "name": "limit",
    "in": "query",
    "required": False,
    "schema": {
        "type": "integer",
        "minimum": 1,
        "maximum": MAX_VIEWERS_LIMIT,
        "default": DEFAULT_VIEWERS_LIMIT,
    },
}


def _op(summary: str, ok: int, body: str | None, result: Schema | None, *params: Schema) -> Schema:
    responses: dict[str, Schema] = {
        str(ok): {"description": "success"}
        if result is None
        else {"description": "success", "content": {"application/json": {"schema": result}}},
        "default": {
            "description": "an error, as {error, message}",
            "content": {"application/json": {"schema": _ref("Error")}},
        },
    }
    op: Schema = {"summary": summary, "parameters": list(params), "responses": responses}
    if body is not None:
        op["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": _ref(body)}},
        }
    return op


def _list(name: str) -> Schema:
    return {"type": "array", "items": _ref(name)}


PATHS: dict[str, dict[str, Schema]] = {
    "/v1/health": {"get": _op("liveness", 200, None, {"type": "object"})},
    "/v1/ready": {"get": _op("readiness: 503 while a dependency is down", 200, None, None)},
    "/metrics": {"get": _op("Prometheus metrics (admin)", 200, None, None)},
    "/v1/stats": {
        "get": _op(
            "what this process holds (admin)",
            200,
            None,
            {
                "type": "object",
                "properties": {
                    **{k: _COUNT for k in ("sockets", "rooms", "claims", "tasks")},
                    "direct_sockets": _COUNT,
                    "fast_paths": {
                        "type": "object",
                        "additionalProperties": {"type": "boolean"},
                        "description": "each fast path and whether it is on (hub.fastpaths)",
                    },
                },
            },
        )
    },
    "/v1/workspaces": {
        "get": _op("list workspaces (admin)", 200, None, _list("Workspace")),
        "post": _op("get or create, then hold", 200, "CreateWorkspace", _ref("Workspace")),
    },
    "/v1/workspaces/{workspace_id}": {
        "get": _op("one workspace", 200, None, _ref("Workspace"), _W),
        "delete": _op("delete a workspace (admin)", 204, None, None, _W),
    },
    "/v1/workspaces/{workspace_id}/clients": {
        "get": _op("claims (admin)", 200, None, _list("Claim"), _W),
    },
    "/v1/workspaces/{workspace_id}/clients/{client_id}": {
        "delete": _op("release a claim", 204, None, None, _W, _C),
    },
    "/v1/clients/{client_id}": {"delete": _op("retire a client (admin)", 204, None, None, _C)},
    "/v1/workspaces/{workspace_id}/current-session": {
        "post": _op(
            "set a client's current session",
            200,
            "CurrentSession",
            {"type": "object", "properties": {"seq": _COUNT}},
            _W,
            _CQ,
        ),
    },
    "/v1/workspaces/{workspace_id}/clients/{client_id}/profile": {
        "put": _op(
            "set a client's user's profile (v1.2)",
            200,
            "Profile",
            {"type": "object", "properties": {"seq": _COUNT}},
            _W,
            _C,
        ),
    },
    "/v1/workspaces/{workspace_id}/presence": {
        "get": _op("presence snapshot", 200, None, _ref("Presence"), _W),
    },
    "/v1/workspaces/{workspace_id}/viewers": {
        "get": _op(
            "who views a session (scope viewers)", 200, None, _ref("Viewers"), _W, _SQ, _LIMIT
        ),
    },
    "/v1/workspaces/{workspace_id}/sessions": {
        "get": _op("list sessions", 200, None, _list("Session"), _W),
        "post": _op("create a session", 201, "CreateSession", _ref("Session"), _W),
    },
    "/v1/workspaces/{workspace_id}/sessions/{session_id}": {
        "get": _op("one session", 200, None, _ref("Session"), _W, _S),
        "put": _op("update a session", 200, "UpdateSession", _ref("Session"), _W, _S),
        "delete": _op("delete a session", 204, None, None, _W, _S),
    },
}


def document() -> Schema:
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "presence hub",
            "version": __version__,
            "description": "Live viewer counts per session. WebSocket: "
            "GET /v1/workspaces/{workspace_id}/ws?client_id=<uuid>; the same as Server-Sent "
            "Events: GET /v1/workspaces/{workspace_id}/events?client_id=<uuid> (see the README).",
        },
        "paths": PATHS,
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{}, {"bearer": []}],
    }
