"""The Python client's event-stream transport (``HubClient.connect(..., transport="sse")``).

:class:`EventStreamConnection` stands where a WebSocket connection does in
:class:`hub.client.Stream`: iterating it gives each event's JSON (the frames a socket gives),
``close_code`` and ``close_reason`` are the ``close`` event's (1006 when the response just
ended), and ``send`` takes a client frame and carries it by REST (docs/protocol.md section 12):
``set_session`` and ``set_profile`` answered as an ``ack`` or an ``error`` with the frame's
``ref``; a ``watch`` of a session the stream does not name asks for a new stream that names it
(``restart``), whose ``viewers`` event answers it; ``unwatch`` is acknowledged at once (the
next stream leaves the session out).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import orjson

__all__ = ["REFUSED", "EventStreamConnection"]

# The close code of an event stream refused with an HTTP status (as a socket would be closed).
REFUSED = {400: 4400, 401: 4401, 403: 4403, 404: 4404, 410: 4410}


class EventStreamConnection:
    def __init__(
        self,
        http: httpx.AsyncClient,
        response: httpx.Response,
        base: str,
        client_id: str,
        watches: list[str],
        deliver: Callable[[dict[str, Any]], None],
        watch_refs: dict[str, int],
    ) -> None:
        self._http = http
        self._response = response
        self._base = base  # /v1/workspaces/{id}
        self._client_id = client_id
        self.watches = watches  # the sessions this stream names
        self._deliver = deliver  # where answers to commands go (the stream's _apply)
        self.watch_refs = watch_refs  # the stream's, kept across a restart
        self._iter = self._events()
        self.close_code: int | None = None
        self.close_reason = ""
        self.restart = False  # ended to open a stream with other watches: no backoff
        self._tasks: set[asyncio.Task[None]] = set()

    def __aiter__(self) -> AsyncIterator[str]:
        return self._iter

    async def recv(self) -> str:
        """The next event's JSON; EOFError when the stream ended."""
        async for data in self._iter:
            return data
        raise EOFError("the event stream ended")

    async def _events(self) -> AsyncIterator[str]:
        kind, data = "message", ""
        try:
            async for line in self._response.aiter_lines():
                if line.startswith("event: "):
                    kind = line[7:]
                elif line.startswith("data: "):
                    data = line[6:]
                elif line == "" and data:
                    if kind == "close":
                        end = orjson.loads(data)
                        self.close_code, self.close_reason = end["code"], end.get("reason", "")
                        return
                    if kind == "viewers":
                        frame = orjson.loads(data)
                        ref = self.watch_refs.pop(frame["session_id"], None)
                        if ref is not None and "ref" not in frame:
                            data = orjson.dumps({**frame, "ref": ref}).decode()
                    yield data
                    kind, data = "message", ""
        except (httpx.HTTPError, httpx.StreamError):  # dropped, or closed for a restart
            return

    async def close(self) -> None:
        await self._response.aclose()
        for task in list(self._tasks):
            task.cancel()

    async def send(self, text: str) -> None:
        frame = orjson.loads(text)
        kind, ref = frame.get("type"), frame.get("ref")
        if kind == "watch":
            if ref is not None:
                self.watch_refs[frame["session_id"]] = ref
                if frame["session_id"] not in self.watches:
                    self.restart = True
                    await self._response.aclose()
            return
        if kind == "unwatch":
            if ref is not None:
                self._deliver({"type": "ack", "ref": ref, "seq": -1})
            return
        if kind == "set_session":
            request = ("POST", f"{self._base}/current-session", {"client_id": self._client_id})
            body: Any = {"session_id": frame["session_id"]}
        elif kind == "set_profile":
            request = ("PUT", f"{self._base}/clients/{self._client_id}/profile", {})
            body = frame["profile"]
        else:
            return
        task = asyncio.get_running_loop().create_task(self._command(request, body, ref))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _command(self, request: tuple[str, str, dict[str, str]], body: Any, ref: Any) -> None:
        method, url, params = request
        try:
            response = await self._http.request(method, url, params=params, json=body)
            answer = response.json()
        except (httpx.HTTPError, ValueError):
            answer = {"error": "unavailable", "message": "the hub did not answer the command"}
            response = None
        if ref is None:
            return
        if response is not None and response.status_code < 400:
            self._deliver({"type": "ack", "ref": ref, "seq": answer["seq"]})
        else:
            with contextlib.suppress(KeyError, TypeError):
                self._deliver(
                    {
                        "type": "error",
                        "ref": ref,
                        "code": answer["error"],
                        "message": answer["message"],
                    }
                )
