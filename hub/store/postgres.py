"""The shared store: PostgreSQL through an asyncpg connection pool.

Several hub processes use one database. The schema is created (or migrated) at start-up under
an advisory lock, so processes starting together do it once; ``schema_version`` records what
is applied. Every write is one statement, committed before its coroutine returns. A database
that cannot be reached answers :class:`~hub.errors.Unavailable` (503 with Retry-After).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg

from hub.errors import Conflict, Unavailable
from hub.store import SESSION_COLUMNS, Session, Workspace, check_parent

__all__ = ["PostgresStore"]

# Migrations in order; the database records how many it has applied.
_MIGRATIONS = (
    """
    CREATE TABLE workspaces (
        id          TEXT PRIMARY KEY,
        path        TEXT NOT NULL UNIQUE,
        created_at  BIGINT NOT NULL,
        seq         BIGSERIAL
    );
    CREATE TABLE sessions (
        workspace_id      TEXT NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
        id                TEXT NOT NULL,
        parent_session_id TEXT,
        title             TEXT NOT NULL DEFAULT '',
        message_count     BIGINT NOT NULL DEFAULT 0,
        prompt_tokens     BIGINT NOT NULL DEFAULT 0,
        completion_tokens BIGINT NOT NULL DEFAULT 0,
        cost              DOUBLE PRECISION NOT NULL DEFAULT 0,
        created_at        BIGINT NOT NULL,
        updated_at        BIGINT NOT NULL,
        is_busy           BOOLEAN NOT NULL DEFAULT FALSE,
        seq               BIGSERIAL,
        PRIMARY KEY (workspace_id, id)
    );
    """,
    """
    CREATE TABLE retired_clients (
        client_id   TEXT PRIMARY KEY,
        until_ms    BIGINT NOT NULL
    );
    """,
)
_LOCK = 0x70726573  # advisory lock id for migrations ("pres")

_SESSION_COLUMNS = SESSION_COLUMNS  # hub.store.SESSION, in Session's order
_UNREACHABLE = (OSError, asyncpg.InterfaceError, asyncpg.CannotConnectNowError,
                asyncpg.ConnectionFailureError, TimeoutError)  # fmt: skip


def _session(row: asyncpg.Record) -> Session:
    return Session(*row)


class PostgresStore:
    """Store on a PostgreSQL database (``postgresql://user@host:port/db``)."""

    def __init__(self, url: str, *, min_size: int = 1, max_size: int = 10) -> None:
        self.url = url
        self._sizes = (min_size, max_size)
        self._pool: asyncpg.Pool | None = None

    async def open(self) -> None:
        try:
            self._pool = await asyncpg.create_pool(
                self.url, min_size=self._sizes[0], max_size=self._sizes[1], timeout=5,
                command_timeout=5,
            )  # fmt: skip
        except _UNREACHABLE as exc:
            raise Unavailable(f"database unavailable: {exc}") from None
        async with self._conn() as db, db.transaction():
            await db.execute("SELECT pg_advisory_xact_lock($1)", _LOCK)
            await db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INT NOT NULL)")
            applied = await db.fetchval("SELECT max(version) FROM schema_version") or 0
            for version, migration in enumerate(_MIGRATIONS[applied:], start=applied + 1):
                await db.execute(migration)
                await db.execute("INSERT INTO schema_version VALUES ($1)", version)

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            try:
                await asyncio.wait_for(pool.close(), 5)
            except TimeoutError:
                pool.terminate()  # a connection still busy: shutdown must not hang on it

    @contextlib.asynccontextmanager
    async def _conn(self) -> AsyncIterator[asyncpg.Connection]:
        if self._pool is None:
            raise RuntimeError("store is not open")
        try:
            async with self._pool.acquire(timeout=1) as db:
                yield db
        except _UNREACHABLE as exc:
            raise Unavailable(f"database unavailable: {type(exc).__name__}") from None

    async def ping(self) -> None:
        async with self._conn() as db:
            await db.fetchval("SELECT 1")

    # -- workspaces -------------------------------------------------------------------------

    async def create_workspace(self, path: str) -> Workspace:
        async with self._conn() as db:
            await db.execute(
                "INSERT INTO workspaces (id, path, created_at) VALUES ($1, $2, $3) "
                "ON CONFLICT (path) DO NOTHING",
                str(uuid.uuid4()), path, int(time.time()),
            )  # fmt: skip
        workspace = await self.find_workspace(path)
        assert workspace is not None
        return workspace

    async def _workspace_where(self, column: str, value: str) -> Workspace | None:
        async with self._conn() as db:
            row = await db.fetchrow(
                f"SELECT id, path, created_at FROM workspaces WHERE {column} = $1", value
            )
        return Workspace(*row) if row is not None else None

    async def get_workspace(self, workspace_id: str) -> Workspace | None:
        return await self._workspace_where("id", workspace_id)

    async def find_workspace(self, path: str) -> Workspace | None:
        return await self._workspace_where("path", path)

    async def list_workspaces(self) -> list[Workspace]:
        async with self._conn() as db:
            rows = await db.fetch("SELECT id, path, created_at FROM workspaces ORDER BY seq")
        return [Workspace(*row) for row in rows]

    async def delete_workspace(self, workspace_id: str) -> bool:
        async with self._conn() as db:
            status = await db.execute("DELETE FROM workspaces WHERE id = $1", workspace_id)
        return bool(status != "DELETE 0")

    # -- sessions ---------------------------------------------------------------------------

    async def create_session(
        self, workspace_id: str, session_id: str, title: str, parent_session_id: str | None
    ) -> Session:
        await check_parent(self, workspace_id, parent_session_id)
        now = int(time.time())
        async with self._conn() as db:
            row = await db.fetchrow(
                "INSERT INTO sessions (workspace_id, id, parent_session_id, title, created_at, "
                "updated_at) VALUES ($1, $2, $3, $4, $5, $5) ON CONFLICT DO NOTHING "
                f"RETURNING {_SESSION_COLUMNS}",
                workspace_id, session_id, parent_session_id, title, now,
            )  # fmt: skip
        if row is None:
            raise Conflict(f"session {session_id!r} already exists")
        return _session(row)

    async def get_session(self, workspace_id: str, session_id: str) -> Session | None:
        async with self._conn() as db:
            row = await db.fetchrow(
                f"SELECT {_SESSION_COLUMNS} FROM sessions WHERE workspace_id = $1 AND id = $2",
                workspace_id, session_id,
            )  # fmt: skip
        return _session(row) if row is not None else None

    async def list_sessions(self, workspace_id: str) -> list[Session]:
        async with self._conn() as db:
            rows = await db.fetch(
                f"SELECT {_SESSION_COLUMNS} FROM sessions WHERE workspace_id = $1 ORDER BY seq",
                workspace_id,
            )
        return [_session(row) for row in rows]

    async def update_session(
        self, workspace_id: str, session_id: str, changes: dict[str, Any]
    ) -> Session | None:
        # Column names come from SESSION_FIELDS (validated by the caller), never from a peer.
        assignments = "".join(f"{name} = ${i}, " for i, name in enumerate(changes, start=4))
        async with self._conn() as db:
            row = await db.fetchrow(
                f"UPDATE sessions SET {assignments}updated_at = $1 WHERE workspace_id = $2 "
                f"AND id = $3 RETURNING {_SESSION_COLUMNS}",
                int(time.time()), workspace_id, session_id, *changes.values(),
            )  # fmt: skip
        return _session(row) if row is not None else None

    async def delete_session(self, workspace_id: str, session_id: str) -> Session | None:
        async with self._conn() as db:
            row = await db.fetchrow(
                f"DELETE FROM sessions WHERE workspace_id = $1 AND id = $2 "
                f"RETURNING {_SESSION_COLUMNS}",
                workspace_id, session_id,
            )  # fmt: skip
        return _session(row) if row is not None else None

    # -- retired clients --------------------------------------------------------------------

    async def retire_client(self, client_id: str, until: float) -> None:
        async with self._conn() as db:
            await db.execute(
                "DELETE FROM retired_clients WHERE until_ms <= $1", int(time.time() * 1000)
            )
            await db.execute(
                "INSERT INTO retired_clients (client_id, until_ms) VALUES ($1, $2) "
                "ON CONFLICT (client_id) DO UPDATE "
                "SET until_ms = greatest(retired_clients.until_ms, excluded.until_ms)",
                client_id, int(until * 1000),
            )  # fmt: skip

    async def retirements(self, now: float) -> dict[str, float]:
        async with self._conn() as db:
            rows = await db.fetch(
                "SELECT client_id, until_ms FROM retired_clients WHERE until_ms > $1",
                int(now * 1000),
            )
        return {row[0]: row[1] / 1000 for row in rows}
