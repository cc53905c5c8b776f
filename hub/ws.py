"""The WebSocket endpoint ``/v1/workspaces/{workspace_id}/ws?client_id=``: one socket, one stream.

It accepts first (so a browser can read the close code of a refusal), checks the client id
(4400) and joins the hub (4404 unknown workspace, 4410 retired client), then feeds every text
frame to the hub. It always leaves the hub in ``finally``, however the socket ended.

The route is served by :class:`SocketRoute`, an ASGI middleware at the top of the app, rather
than by Starlette's router: a socket then holds no router, exception-middleware or route
wrappers for its whole life (measured: about 3 KB less per idle connection), and the endpoint
gets the server's own ASGI ``send``, which :func:`~hub.transport.direct_writer` needs.
"""

from __future__ import annotations

import logging
import re

from starlette.datastructures import QueryParams
from starlette.types import ASGIApp, Receive, Scope, Send

from hub import protocol
from hub.errors import PeerError, UnsupportedFrame
from hub.hub import Hub, Outgoing
from hub.protocol import check_client_id
from hub.transport import direct_writer

__all__ = ["SocketRoute", "presence_socket"]

log = logging.getLogger(__name__)

PATH = re.compile(r"/v1/workspaces/([^/]+)/ws")

_BINARY_REFUSED = Outgoing(
    protocol.encode(protocol.Error.of(UnsupportedFrame("binary frames are not supported")))
)


class SocketRoute:
    """ASGI middleware: serves WebSocket requests to :data:`PATH`; the rest goes on."""

    def __init__(self, app: ASGIApp, hub: Hub) -> None:
        self.app = app
        self.hub = hub

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            match = PATH.fullmatch(scope["path"])
            if match is not None:
                await presence_socket(self.hub, match.group(1), scope, receive, send)
                return
        await self.app(scope, receive, send)


async def presence_socket(
    hub: Hub, workspace_id: str, scope: Scope, receive: Receive, send: Send
) -> None:
    """One socket's life: accept, check, join, read frames until it ends, leave."""
    if (await receive())["type"] != "websocket.connect":
        return
    await send({"type": "websocket.accept"})
    try:
        client_id = check_client_id(QueryParams(scope["query_string"]).get("client_id"))
        conn = await hub.join(workspace_id, client_id, send, direct_writer(send))
    except PeerError as exc:
        await send({"type": "websocket.close", "code": exc.close_code, "reason": exc.message[:100]})
        return
    try:
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                break
            text = message.get("text")
            if text is not None:
                await hub.command(conn, text)
            else:
                conn.push(_BINARY_REFUSED)
    finally:
        await hub.leave(conn)
