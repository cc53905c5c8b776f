"""The Store contract, run against every store: SQLite on a file and in memory, and a real
PostgreSQL (a fresh database per test)."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from hub.errors import Conflict, InvalidParentSession, Unavailable
from hub.store import SESSION, SESSION_COLUMNS, Session, Store, open_store
from hub.store.postgres import PostgresStore
from hub.store.sqlite import SqliteStore
from tests.harness import free_port
from tests.services import postgres_database


@pytest.fixture(params=["file", "memory", "postgres"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    if request.param == "postgres":
        async with postgres_database() as url:
            s = open_store(url)
            await s.open()
            yield s
            await s.close()
        return
    url = f"sqlite:///{tmp_path / 'hub.db'}" if request.param == "file" else "sqlite:///:memory:"
    s = open_store(url)
    await s.open()
    yield s
    await s.close()


async def test_workspace_get_or_create_by_path(store: Store) -> None:
    first = await store.create_workspace("/a")
    assert await store.create_workspace("/a") == first
    second = await store.create_workspace("/b")
    assert second.id != first.id
    assert await store.get_workspace(first.id) == first
    assert await store.get_workspace("missing") is None
    assert await store.list_workspaces() == [first, second]


async def test_delete_workspace_takes_its_sessions(store: Store) -> None:
    w = await store.create_workspace("/a")
    await store.create_session(w.id, "S1", "t", None)
    assert await store.delete_workspace(w.id)
    assert not await store.delete_workspace(w.id)
    assert await store.get_session(w.id, "S1") is None
    assert await store.list_workspaces() == []
    again = await store.create_workspace("/a")  # the path is free again
    assert again.id != w.id
    assert await store.list_sessions(again.id) == []


async def test_session_crud_and_conflicts(store: Store) -> None:
    w = await store.create_workspace("/a")
    s1 = await store.create_session(w.id, "S1", "one", None)
    assert (s1.id, s1.title, s1.parent_session_id, s1.is_busy) == ("S1", "one", None, False)
    with pytest.raises(Conflict):
        await store.create_session(w.id, "S1", "dup", None)
    child = await store.create_session(w.id, "S2", "", "S1")
    assert child.parent_session_id == "S1"
    with pytest.raises(InvalidParentSession):
        await store.create_session(w.id, "S3", "", "missing")
    updated = await store.update_session(w.id, "S1", {"is_busy": True, "cost": 1.5})
    assert updated is not None and updated.is_busy is True and updated.cost == 1.5
    assert updated.updated_at >= s1.updated_at
    assert await store.update_session(w.id, "nope", {"title": "x"}) is None
    assert [s.id for s in await store.list_sessions(w.id)] == ["S1", "S2"]
    deleted = await store.delete_session(w.id, "S2")
    assert deleted == child
    assert await store.delete_session(w.id, "S2") is None
    assert [s.id for s in await store.list_sessions(w.id)] == ["S1"]


async def test_retirements_are_kept_until_they_end(store: Store) -> None:
    """A retirement is a record: it is listed until its end, a later end wins, an earlier one
    does not shorten it, and an ended one is no longer listed."""
    now = float(int(time.time()))  # retire_client drops the rows that ended before the clock
    await store.retire_client("c1", now + 60)
    await store.retire_client("c1", now + 30)  # a shorter one does not undo the first
    await store.retire_client("c2", now + 5)
    assert await store.retirements(now) == {"c1": now + 60, "c2": now + 5}
    await store.retire_client("c2", now + 90)
    assert await store.retirements(now + 10) == {"c1": now + 60, "c2": now + 90}
    assert await store.retirements(now + 61) == {"c2": now + 90}
    assert await store.retirements(now + 90) == {}


async def test_data_survives_reopening_the_file(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'hub.db'}"
    s = open_store(url)
    await s.open()
    w = await s.create_workspace("/a")
    await s.create_session(w.id, "S1", "kept", None)
    await s.close()
    s = open_store(url)
    await s.open()
    assert await s.get_workspace(w.id) == w
    session = await s.get_session(w.id, "S1")
    assert session is not None and session.title == "kept"
    await s.close()


def test_unsupported_url_is_refused() -> None:
    with pytest.raises(ValueError, match="unsupported"):
        open_store("mysql://x")


async def test_postgres_schema_is_made_once_and_kept() -> None:
    """Two processes starting together migrate once; a restart finds its data."""
    async with postgres_database() as url:
        a, b = open_store(url), open_store(url)
        await asyncio.gather(a.open(), b.open())
        w = await a.create_workspace("/shared")
        assert await b.find_workspace("/shared") == w
        await b.retire_client("c1", 4e9)
        await asyncio.gather(a.close(), b.close())
        again = open_store(url)
        await again.open()
        assert await again.list_workspaces() == [w]
        assert await again.retirements(0.0) == {"c1": 4e9}
        await again.close()


async def test_postgres_unreachable_is_unavailable() -> None:
    """A database that does not answer is Unavailable (a 503 for REST), not a crash."""
    s = open_store(f"postgresql://postgres@127.0.0.1:{free_port()}/nothing")
    with pytest.raises(Unavailable):
        await s.open()


# What each kind of hub.store.Field is kept as, in each store's SQL.
_SQL_TYPES = {
    "sqlite": {"session_id": "TEXT", "string": "TEXT", "count": "INTEGER", "number": "REAL",
               "time": "INTEGER", "boolean": "INTEGER"},
    "postgres": {"session_id": "text", "string": "text", "count": "bigint",
                 "number": "double precision", "time": "bigint", "boolean": "boolean"},
}  # fmt: skip
# Columns a store keeps for itself (not part of the record): PostgreSQL's insertion order.
_INTERNAL = {"sqlite": set(), "postgres": {"seq"}}


async def _session_columns(store: Store) -> tuple[str, dict[str, tuple[str, bool]]]:
    """The sessions table as the database has it: column -> (type, nullable)."""
    if isinstance(store, SqliteStore):
        async with store.db.execute("PRAGMA table_info(sessions)") as cur:
            rows = await cur.fetchall()
        return "sqlite", {r[1]: (r[2], not r[3]) for r in rows}
    assert isinstance(store, PostgresStore) and store._pool is not None
    rows = await store._pool.fetch(
        "SELECT column_name, data_type, is_nullable FROM information_schema.columns "
        "WHERE table_name = 'sessions' AND table_schema = current_schema()"
    )
    return "postgres", {r[0]: (r[1], r[2] == "YES") for r in rows}


async def test_the_sessions_table_is_the_declared_record(store: Store) -> None:
    """The session record is declared once (hub.store.SESSION): the REST checks and the
    OpenAPI schemas are made from it, and each store's table, as the database created it,
    has exactly its fields, of their kinds' types, null only where it may be; the Session
    dataclass has them in the same order (the order of the stores' SELECT lists)."""
    dialect, columns = await _session_columns(store)
    for name in _INTERNAL[dialect]:
        columns.pop(name)
    declared = {f.name: (_SQL_TYPES[dialect][f.kind], f.nullable) for f in SESSION}
    assert columns == declared
    assert tuple(f.name for f in dataclasses.fields(Session)) == tuple(f.name for f in SESSION)
    assert SESSION_COLUMNS.split(", ") == [f.name for f in SESSION]
