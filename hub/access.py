"""Who is asking: the application's own ``authenticate`` function, or else the hub's tokens.

An app that mounts the hub usually has its users signed in already (a session cookie, its own
middleware). ``create_app(settings, authenticate=fn)`` lets it say who they are: ``fn`` gets the
Starlette ``HTTPConnection`` of a REST request or a WebSocket handshake (sync or async) and
returns a :class:`~hub.auth.Grant`, or raises :class:`~hub.errors.Unauthorized` (401 / close
4401) or :class:`~hub.errors.Forbidden` (403 / close 4403). Without it, the grant comes from the
request's token (:class:`~hub.auth.Auth`). Either way the checks keep their order: the origin
(sockets), who is asking, the ids' syntax, the grant, existence.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable

from starlette.requests import HTTPConnection

from hub.auth import Auth, Grant, token_from
from hub.protocol import check_client_id, check_user_id

__all__ = ["Access", "Authenticate"]

Authenticate = Callable[[HTTPConnection], Grant | Awaitable[Grant]]


class Access:
    """Turns a request or a handshake into the :class:`~hub.auth.Grant` it acts with."""

    def __init__(self, auth: Auth, authenticate: Authenticate | None = None) -> None:
        self.auth = auth
        self.authenticate = authenticate

    @property
    def enabled(self) -> bool:
        """Whether anyone is checked: then a stream's user is the grant's, never the query's."""
        return self.authenticate is not None or self.auth.enabled

    async def grant(self, conn: HTTPConnection) -> Grant:
        """Who is asking: 401 (Unauthorized) or 403 (Forbidden) when nobody may."""
        if self.authenticate is None:
            return await self.auth.authenticate(token_from(conn.headers, conn.query_params))
        found = self.authenticate(conn)
        if inspect.isawaitable(found):
            found = await found
        if not isinstance(found, Grant):
            raise TypeError(f"authenticate() must return a hub.Grant, not {type(found).__name__}")
        return found

    async def authorize(
        self, grant: Grant, workspace_id: str, client_id: str | None = None
    ) -> Grant:
        """The grant for one workspace (the token's, or the authorization hook's answer when
        the token carries none: see hub.auth); 403 when it does not reach it."""
        return await self.auth.authorize(grant, workspace_id, client_id)

    async def identify(self, conn: HTTPConnection) -> tuple[Grant, str, str | None]:
        """Who opens a stream (a socket or an event stream), checked up to the ids' syntax:
        its grant (401), its client id (400) and its user: the grant's when anyone is
        checked, else the self-asserted ``user_id`` (400 when malformed)."""
        query = conn.query_params
        grant = await self.grant(conn)
        client_id = check_client_id(query.get("client_id"))
        if self.enabled:
            return grant, client_id, grant.user
        asserted = query.get("user_id")
        return grant, client_id, check_user_id(asserted) if asserted is not None else None

    async def admit(self, grant: Grant, workspace_id: str, client_id: str) -> Grant:
        """The last checks of a stream's start: its grant reaches the workspace and the
        client (403); the grant it runs with."""
        grant = await self.authorize(grant, workspace_id, client_id)
        grant.check_client(client_id)
        return grant
