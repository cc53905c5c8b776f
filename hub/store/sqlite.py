"""The embedded store: SQLite through aiosqlite, one connection, WAL journal.

Durability: every write commits before its coroutine returns. In WAL mode with
``synchronous=NORMAL`` a committed transaction is in the WAL file when ``commit`` returns, so it
survives the hub process being killed (``kill -9``); only a power loss can take the last few.
"""

from __future__ import annotations

import sqlite3
import time
import uuid
from typing import Any

import aiosqlite

from hub.errors import Conflict
from hub.store import SESSION_COLUMNS, Session, Workspace, check_parent

__all__ = ["SqliteStore"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS workspaces (
    id          TEXT PRIMARY KEY,
    path        TEXT NOT NULL UNIQUE,
    created_at  INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS sessions (
    workspace_id      TEXT NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
    id                TEXT NOT NULL,
    parent_session_id TEXT,
    title             TEXT NOT NULL DEFAULT '',
    message_count     INTEGER NOT NULL DEFAULT 0,
    prompt_tokens     INTEGER NOT NULL DEFAULT 0,
    completion_tokens INTEGER NOT NULL DEFAULT 0,
    cost              REAL NOT NULL DEFAULT 0,
    created_at        INTEGER NOT NULL,
    updated_at        INTEGER NOT NULL,
    is_busy           INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (workspace_id, id)
);
CREATE TABLE IF NOT EXISTS retired_clients (
    client_id   TEXT PRIMARY KEY,
    until_ms    INTEGER NOT NULL
);
"""

_SESSION_COLUMNS = SESSION_COLUMNS  # hub.store.SESSION, in Session's order


def _session(row: sqlite3.Row | tuple[Any, ...]) -> Session:
    values = list(row)
    values[10] = bool(values[10])
    return Session(*values)


class SqliteStore:
    """Store on one SQLite file (or ``:memory:``)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._db: aiosqlite.Connection | None = None

    @property
    def db(self) -> aiosqlite.Connection:
        if self._db is None:
            raise RuntimeError("store is not open")
        return self._db

    async def open(self) -> None:
        self._db = await aiosqlite.connect(self.path)
        await self._db.execute("PRAGMA journal_mode=WAL")
        await self._db.execute("PRAGMA synchronous=NORMAL")
        await self._db.execute("PRAGMA foreign_keys=ON")
        await self._db.executescript(_SCHEMA)
        await self._db.commit()

    async def close(self) -> None:
        if self._db is not None:
            db, self._db = self._db, None
            await db.close()

    async def ping(self) -> None:
        async with self.db.execute("SELECT 1") as cur:
            await cur.fetchone()

    # -- workspaces -------------------------------------------------------------------------

    async def create_workspace(self, path: str) -> Workspace:
        await self.db.execute(
            "INSERT INTO workspaces (id, path, created_at) VALUES (?, ?, ?) "
            "ON CONFLICT (path) DO NOTHING",
            (str(uuid.uuid4()), path, int(time.time())),
        )
        await self.db.commit()
        workspace = await self.find_workspace(path)
        assert workspace is not None
        return workspace

    async def get_workspace(self, workspace_id: str) -> Workspace | None:
        async with self.db.execute(
            "SELECT id, path, created_at FROM workspaces WHERE id = ?", (workspace_id,)
        ) as cur:
            row = await cur.fetchone()
        return Workspace(*row) if row is not None else None

    async def find_workspace(self, path: str) -> Workspace | None:
        async with self.db.execute(
            "SELECT id, path, created_at FROM workspaces WHERE path = ?", (path,)
        ) as cur:
            row = await cur.fetchone()
        return Workspace(*row) if row is not None else None

    async def list_workspaces(self) -> list[Workspace]:
        async with self.db.execute(
            "SELECT id, path, created_at FROM workspaces ORDER BY created_at, rowid"
        ) as cur:
            return [Workspace(*row) for row in await cur.fetchall()]

    async def delete_workspace(self, workspace_id: str) -> bool:
        cur = await self.db.execute("DELETE FROM workspaces WHERE id = ?", (workspace_id,))
        await self.db.commit()
        return cur.rowcount > 0

    # -- sessions ---------------------------------------------------------------------------

    async def create_session(
        self, workspace_id: str, session_id: str, title: str, parent_session_id: str | None
    ) -> Session:
        await check_parent(self, workspace_id, parent_session_id)
        now = int(time.time())
        try:
            await self.db.execute(
                "INSERT INTO sessions (workspace_id, id, parent_session_id, title, created_at, "
                "updated_at) VALUES (?, ?, ?, ?, ?, ?)",
                (workspace_id, session_id, parent_session_id, title, now, now),
            )
        except sqlite3.IntegrityError:
            raise Conflict(f"session {session_id!r} already exists") from None
        await self.db.commit()
        session = await self.get_session(workspace_id, session_id)
        assert session is not None
        return session

    async def get_session(self, workspace_id: str, session_id: str) -> Session | None:
        async with self.db.execute(
            f"SELECT {_SESSION_COLUMNS} FROM sessions WHERE workspace_id = ? AND id = ?",
            (workspace_id, session_id),
        ) as cur:
            row = await cur.fetchone()
        return _session(row) if row is not None else None

    async def list_sessions(self, workspace_id: str) -> list[Session]:
        async with self.db.execute(
            f"SELECT {_SESSION_COLUMNS} FROM sessions WHERE workspace_id = ? "
            "ORDER BY created_at, rowid",
            (workspace_id,),
        ) as cur:
            return [_session(row) for row in await cur.fetchall()]

    async def update_session(
        self, workspace_id: str, session_id: str, changes: dict[str, Any]
    ) -> Session | None:
        # Column names come from SESSION_FIELDS (validated by the caller), never from a peer.
        assignments = "".join(f"{name} = ?, " for name in changes)
        async with self.db.execute(
            f"UPDATE sessions SET {assignments}updated_at = ? WHERE workspace_id = ? AND id = ? "
            f"RETURNING {_SESSION_COLUMNS}",
            (*changes.values(), int(time.time()), workspace_id, session_id),
        ) as cur:
            row = await cur.fetchone()
        await self.db.commit()
        return _session(row) if row is not None else None

    async def delete_session(self, workspace_id: str, session_id: str) -> Session | None:
        async with self.db.execute(
            f"DELETE FROM sessions WHERE workspace_id = ? AND id = ? RETURNING {_SESSION_COLUMNS}",
            (workspace_id, session_id),
        ) as cur:
            row = await cur.fetchone()
        await self.db.commit()
        return _session(row) if row is not None else None

    # -- retired clients --------------------------------------------------------------------

    async def retire_client(self, client_id: str, until: float) -> None:
        until_ms = int(until * 1000)
        await self.db.execute(
            "DELETE FROM retired_clients WHERE until_ms <= ?", (int(time.time() * 1000),)
        )
        await self.db.execute(
            "INSERT INTO retired_clients (client_id, until_ms) VALUES (?, ?) "
            "ON CONFLICT (client_id) DO UPDATE SET until_ms = max(until_ms, excluded.until_ms)",
            (client_id, until_ms),
        )
        await self.db.commit()

    async def retirements(self, now: float) -> dict[str, float]:
        async with self.db.execute(
            "SELECT client_id, until_ms FROM retired_clients WHERE until_ms > ?",
            (int(now * 1000),),
        ) as cur:
            return {client_id: until_ms / 1000 for client_id, until_ms in await cur.fetchall()}
