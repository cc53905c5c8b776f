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
