"""Durable records: workspaces, sessions and retired clients, behind the :class:`Store` port.

``open_store(url)`` picks the implementation from the URL scheme: SQLite (embedded, the default)
or PostgreSQL (shared by several hub processes). Records are frozen dataclasses; presence figures
(``online``, ``attached_clients``) are not stored: the REST shell adds them at read time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from hub.errors import InvalidParentSession

__all__ = [
    "JSON_TYPES", "SESSION", "SESSION_COLUMNS", "SESSION_CREATE", "SESSION_FIELDS", "Field",
    "Session", "Store", "Workspace", "check_parent", "open_store",
]  # fmt: skip


@dataclass(frozen=True, slots=True)
class Workspace:
    id: str
    path: str
    created_at: int


@dataclass(frozen=True, slots=True)
class Session:
    id: str
    workspace_id: str
    parent_session_id: str | None
    title: str
    message_count: int
    prompt_tokens: int
    completion_tokens: int
    cost: float
    created_at: int
    updated_at: int
    is_busy: bool


@dataclass(frozen=True, slots=True)
class Field:
    """One field of a record as the REST API shows it and the store keeps it.

    ``kind`` says what its values are: "session_id" (a session id, hub.protocol's limits),
    "string", "count" (an integer 0..2**63-1), "number" (a finite number >= 0), "time" (Unix
    seconds), "boolean". ``create``: a POST may give it (null: its default); ``update``: a PUT
    may change it; ``nonempty``: "" is refused where it is given."""

    name: str
    kind: str
    nullable: bool = False
    create: bool = False
    update: bool = False
    nonempty: bool = False


# The session record, declared once: the REST checks (SESSION_FIELDS, SESSION_CREATE), the
# OpenAPI schemas (hub.openapi) and the stores' column lists are made from it, and
# tests/test_store.py holds each store's table, as its database has it, and the Session
# dataclass to it.
SESSION: tuple[Field, ...] = (
    Field("id", "session_id", create=True, nonempty=True),
    Field("workspace_id", "string"),
    Field("parent_session_id", "session_id", nullable=True, create=True),
    Field("title", "string", create=True, update=True),
    Field("message_count", "count", update=True),
    Field("prompt_tokens", "count", update=True),
    Field("completion_tokens", "count", update=True),
    Field("cost", "number", update=True),
    Field("created_at", "time"),
    Field("updated_at", "time"),
    Field("is_busy", "boolean", update=True),
)

# The JSON types a value of each kind may have (a bool is never an int or a number).
JSON_TYPES: dict[str, tuple[type, ...]] = {
    "session_id": (str,), "string": (str,), "count": (int,), "number": (int, float),
    "time": (int,), "boolean": (bool,),
}  # fmt: skip

# Fields a PUT may change, with the JSON types each accepts.
SESSION_FIELDS: dict[str, tuple[type, ...]] = {
    f.name: JSON_TYPES[f.kind] for f in SESSION if f.update
}
# Fields a POST may give, with the JSON types each accepts (or null).
SESSION_CREATE: dict[str, tuple[type, ...]] = {
    f.name: JSON_TYPES[f.kind] for f in SESSION if f.create
}
# The session's columns, in the order of Session's fields (the stores' SELECT lists).
SESSION_COLUMNS = ", ".join(f.name for f in SESSION)


class Store(Protocol):
    """Workspaces and sessions. Every write is durable once its coroutine returns."""

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def ping(self) -> None:
        """Raise if the store cannot answer a query now."""
        ...

    async def create_workspace(self, path: str) -> Workspace:
        """Get or create by path: the first create wins, later ones return the same record."""
        ...

    async def get_workspace(self, workspace_id: str) -> Workspace | None: ...

    async def find_workspace(self, path: str) -> Workspace | None:
        """The workspace of a path, without creating it."""
        ...

    async def list_workspaces(self) -> list[Workspace]: ...

    async def delete_workspace(self, workspace_id: str) -> bool:
        """Delete the workspace and its sessions; False when there was none."""
        ...

    async def create_session(
        self, workspace_id: str, session_id: str, title: str, parent_session_id: str | None
    ) -> Session:
        """Raises Conflict when the id exists, InvalidParentSession for a foreign parent."""
        ...

    async def get_session(self, workspace_id: str, session_id: str) -> Session | None: ...

    async def list_sessions(self, workspace_id: str) -> list[Session]: ...

    async def update_session(
        self, workspace_id: str, session_id: str, changes: dict[str, Any]
    ) -> Session | None:
        """Apply validated ``changes`` (keys of SESSION_FIELDS); None when there is no session."""
        ...

    async def delete_session(self, workspace_id: str, session_id: str) -> Session | None:
        """Delete and return the session, or None when there was none."""
        ...

    async def retire_client(self, client_id: str, until: float) -> None:
        """Refuse the client until ``until`` (wall clock, seconds; a later ``until`` wins).

        Presence keeps retirements too, but presence may forget (a restarted process, a Redis
        restarted empty): the record here is what makes a retire that answered 204 last."""
        ...

    async def retirements(self, now: float) -> dict[str, float]:
        """The clients refused at ``now`` (wall clock), each with when its refusal ends."""
        ...


async def check_parent(store: Store, workspace_id: str, parent_session_id: str | None) -> None:
    """A new session's parent must be a session of the same workspace (or none)."""
    if parent_session_id is not None and (
        await store.get_session(workspace_id, parent_session_id) is None
    ):
        raise InvalidParentSession(
            f"parent_session_id {parent_session_id!r} is not a session of this workspace"
        )


def open_store(url: str) -> Store:
    """The store for a database URL (not yet opened)."""
    if url.startswith("sqlite:///"):
        from hub.store.sqlite import SqliteStore

        return SqliteStore(url.removeprefix("sqlite:///"))
    if url.startswith(("postgresql://", "postgres://")):
        from hub.store.postgres import PostgresStore

        return PostgresStore(url)
    raise ValueError(f"unsupported database URL {url!r}")
