"""The WebSocket endpoint ``/v1/workspaces/{workspace_id}/ws?client_id=``: one socket, one stream.

It accepts first (so a browser can read the close code of a refusal), then checks, in this
order: the page's origin (1008), the token (4401), the client id and the user id (4400), the
token's grant (4403; or the authorization hook's answer, 1013 when it does not answer), and
joins the hub (1013 over capacity, 4404 unknown workspace, 4410 retired client, 4403 a client
id bound to another user). The stream's user is the token's
user claim with auth on, else the ``user_id`` query parameter (self-asserted). With auth on
the stream is closed with 4401 "token expired" at the token's ``exp`` plus the leeway, unless
a ``refresh`` frame brought a later one (see :meth:`hub.hub.Hub.join`).
Nothing is touched before every check passed. Then it feeds every text frame to the hub, and
always leaves the hub in ``finally``, however the socket ended.

The route is served by :class:`SocketRoute`, which the app asks before Starlette itself (see
``hub.app``): a socket then holds no Starlette, router, exception-middleware or route wrappers
for its whole life (what that saves: docs/performance.md, "Memory per socket"), and the endpoint
gets the server's own ASGI ``send``, which :func:`~hub.transport.socket_writer` needs.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable

from starlette.requests import HTTPConnection
from starlette.types import Receive, Scope, Send

from hub.access import Access
from hub.auth import OriginPolicy
from hub.connection import Connection
from hub.errors import PeerError
from hub.hub import Hub
from hub.protocol import CloseCode
from hub.transport import Cork, socket_writer

__all__ = ["SocketRoute"]

log = logging.getLogger(__name__)

PATH = re.compile(r"/v1/workspaces/([^/]+)/ws")


def route_path(scope: Scope) -> str:
    """The request's path below where the app is mounted: the path less ``root_path`` (set by
    a parent's ``Mount``, or by the server's ``--root-path``), as Starlette's routing reads it;
    the whole path when it does not start there."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root and path.startswith(root) and path[len(root) : len(root) + 1] in ("/", ""):
        return path[len(root) :]
    return path


class SocketRoute:
    """Serves WebSocket requests to :data:`PATH` (relative to where the app is mounted)."""

    def __init__(
        self, hub: Hub, access: Access, origins: OriginPolicy, max_frame_bytes: int
    ) -> None:
        self.hub = hub
        self.access = access
        self.origins = origins
        self.max_frame_bytes = max_frame_bytes

    def route(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None] | None:
        """The socket's handler (to await) when the path is the presence route, else None."""
        match = PATH.fullmatch(route_path(scope))
        if match is None:
            return None
        return self.presence_socket(match.group(1), scope, receive, send)

    async def presence_socket(
        self, workspace_id: str, scope: Scope, receive: Receive, send: Send
    ) -> None:
        """One socket's life: accept, check, join, read frames until it ends, leave."""
        if (await receive())["type"] != "websocket.connect":
            return
        conn = await self._accept(workspace_id, scope, send)
        if conn is None:
            return
        # Read by the join only, never again: an idle socket keeps neither the headers nor the
        # query string with its token (docs/performance.md, "Memory per socket").
        scope["headers"] = ()  # shared: an empty list would cost 56 bytes a socket
        scope["query_string"] = b""
        # Then feed the socket's frames to the hub until it ends, and always leave the hub
        # (here rather than in a function of its own: one coroutine frame less per socket).
        hub = self.hub
        limit = self.max_frame_bytes
        try:
            while True:
                message = await receive()
                if message["type"] == "websocket.disconnect":
                    break
                text = message.get("text")
                if text is not None:
                    # ``hub serve`` has the server refuse a frame over the limit before it is
                    # read; a server of the user's (mounted under plain uvicorn) may take more,
                    # so the limit is the hub's own too (encoded only when it may be over it).
                    if len(text) * 4 > limit and len(text.encode()) > limit:
                        conn.close(CloseCode.MESSAGE_TOO_BIG)
                        continue
                    await hub.command(conn, text)
                else:
                    hub.refuse_binary(conn)
        finally:
            await hub.leave(conn)

    async def _accept(self, workspace_id: str, scope: Scope, send: Send) -> Connection | None:
        """Accept, check and join: the stream, or None when it was refused (and closed with
        the contract's code). The 101 and the snapshot, or the refusal's close frame, leave
        in one TCP segment (:class:`~hub.transport.Cork`); this frame, and the cork with it,
        is gone before the socket's long wait for frames."""
        cork = Cork(send)
        try:
            await send({"type": "websocket.accept"})
            try:
                return await self._join(workspace_id, scope, send)
            except PeerError as exc:
                reason = exc.message[:100]
                await send({"type": "websocket.close", "code": exc.close_code, "reason": reason})
                return None
        finally:
            cork.release()

    async def _join(self, workspace_id: str, scope: Scope, send: Send) -> Connection:
        """The checks, in the order of hub.auth (origin first), then the join itself."""
        conn = HTTPConnection(scope)
        self.origins.check(conn.headers.get("origin"))
        grant, client_id, user = await self.access.identify(conn)
        grant = await self.access.admit(grant, workspace_id, client_id)
        return await self.hub.join(
            workspace_id,
            client_id,
            socket_writer(send),
            user=user,
            profile=grant.profile,
            may_watch=grant.may_view,
            expires=grant.expires if self.access.enabled else None,
        )
