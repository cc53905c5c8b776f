"""The WebSocket endpoint ``/v1/workspaces/{workspace_id}/ws?client_id=``: one socket, one stream.

It accepts first (so a browser can read the close code of a refusal), checks the client id
(4400) and joins the hub (4404 unknown workspace, 4410 retired client), then feeds every text
frame to the hub. It always leaves the hub in ``finally``, however the socket ended.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from starlette.websockets import WebSocket

from hub import protocol
from hub.errors import PeerError, UnsupportedFrame
from hub.hub import Hub, Outgoing
from hub.protocol import check_client_id
from hub.transport import SCOPE_KEY, direct_writer

__all__ = ["socket_endpoint"]

log = logging.getLogger(__name__)

_BINARY_REFUSED = Outgoing(
    protocol.encode(protocol.Error.of(UnsupportedFrame("binary frames are not supported")))
)


def socket_endpoint(hub: Hub) -> Callable[[WebSocket], Awaitable[None]]:
    async def presence_socket(websocket: WebSocket) -> None:
        await websocket.accept()

        async def send_text(text: str) -> None:
            await websocket.send({"type": "websocket.send", "text": text})

        async def send_close(code: int) -> None:
            await websocket.close(code)

        try:
            client_id = check_client_id(websocket.query_params.get("client_id"))
            workspace_id = websocket.path_params["workspace_id"]
            direct = direct_writer(websocket.scope.get(SCOPE_KEY))
            conn = await hub.join(workspace_id, client_id, send_text, send_close, direct)
        except PeerError as exc:
            await websocket.close(exc.close_code, exc.message[:100])
            return
        try:
            while True:
                message = await websocket.receive()
                if message["type"] == "websocket.disconnect":
                    break
                text = message.get("text")
                if text is not None:
                    await hub.command(conn, text)
                else:
                    conn.push(_BINARY_REFUSED)
        finally:
            await hub.leave(conn)

    return presence_socket
