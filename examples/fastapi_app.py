"""A FastAPI app of its own, with the presence hub inside it: the seed's shape.

The app has its own users (a cookie login), its own records (a list of chat sessions) and its
own session list handler, which adds each session's live ``attached_clients`` and
``attached_users`` from the hub, read in-process. The hub is mounted at ``/presence``: its
REST API and its WebSocket are served there, and it trusts the app's login (``authenticate``)
instead of tokens of its own.

Run it (from the repository, after ``scripts/venv dev``):

    .venv/bin/uvicorn examples.fastapi_app:app --port 8000

then log in (``curl -c jar -X POST 'localhost:8000/login?user=ana'``), and open a socket with
the cookie to ``ws://localhost:8000/presence/v1/workspaces/<id>/ws?client_id=<uuid>``;
``GET /chats`` lists the app's sessions with their live counts.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, HTTPException, Response
from starlette.requests import HTTPConnection, Request

from hub import Grant, Settings, create_app, presence_of
from hub.errors import Unauthorized

# The app's own sign-in: a random session cookie per login (a real app keeps these in its
# database or signs them).
SIGNED_IN: dict[str, str] = {}
COOKIE = "app_session"


def authenticate(conn: HTTPConnection) -> Grant:
    """Who is on a request or a socket handshake, by the app's own cookie."""
    user = SIGNED_IN.get(conn.cookies.get(COOKIE, ""))
    if user is None:
        raise Unauthorized("log in first (POST /login)")
    # Every signed-in user may see every workspace and who views a session; only the app
    # itself (in-process) acts as an operator.
    return Grant(workspaces=None, client=None, admin=False, viewers=True, user=user)


presence = create_app(
    Settings.from_env(
        os.environ, database_url=os.environ.get("HUB_DATABASE_URL", "sqlite:///:memory:")
    ),
    authenticate=authenticate,
)
counts = presence_of(presence)


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    async with presence.router.lifespan_context(presence):  # the hub starts and stops with the app
        yield


app = FastAPI(title="an app with presence", lifespan=lifespan)
app.mount("/presence", presence)

# The app's own records: one workspace (made at first use) and its chats.
CHATS = [{"id": "general", "title": "General"}, {"id": "random", "title": "Random"}]
WORKSPACE: dict[str, str] = {}


async def _workspace_id() -> str:
    """The hub's workspace for this app, created through the hub's store at first use."""
    if "id" not in WORKSPACE:
        services = presence.state.services
        workspace = await services.store.create_workspace("/example")
        await services.backend.add_workspace(workspace.id)
        WORKSPACE["id"] = workspace.id
    return WORKSPACE["id"]


@app.post("/login")
async def login(user: str, response: Response) -> dict[str, str]:
    cookie = secrets.token_urlsafe(16)
    SIGNED_IN[cookie] = user
    response.set_cookie(COOKIE, cookie, httponly=True, samesite="lax")
    return {"user": user, "workspace_id": await _workspace_id()}


@app.get("/chats")
async def chats(request: Request) -> list[dict[str, Any]]:
    """The app's own session list, each record with the hub's live counts (in-process)."""
    if SIGNED_IN.get(request.cookies.get(COOKIE, "")) is None:
        raise HTTPException(401, "log in first")
    workspace_id = await _workspace_id()
    listed = []
    for chat in CHATS:
        listed.append(
            {
                **chat,
                "attached_clients": await counts.attached_clients(workspace_id, chat["id"]),
                "attached_users": await counts.attached_users(workspace_id, chat["id"]),
            }
        )
    return listed
