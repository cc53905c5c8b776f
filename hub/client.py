"""An async Python client for the hub: REST helpers and a live presence stream.

    async with HubClient("http://127.0.0.1:8000") as hub:
        ws = await hub.create_workspace("/my/project")
        async with hub.connect(ws["id"]) as stream:
            await stream.set_session("S1")
            async for update in stream:
                print(update.counts, update.online)

Errors answered by the hub raise the same exceptions the hub raises inside
(:mod:`hub.errors`: ``WorkspaceNotFound``, ``Unauthorized``, ...). The stream applies
``snapshot`` and ``counts`` frames by ``seq`` and reconnects after a drop with full-jitter
exponential backoff, re-sending its current session; it gives up (raising) on the close codes
that say a retry cannot help (4400, 4401, 4403, 4404, 4410, 1008, 1009).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import httpx
import orjson
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed

from hub import errors
from hub.protocol import CloseCode

__all__ = ["HubClient", "Stream", "StreamClosed", "Update"]

# Close codes after which reconnecting cannot help.
FINAL = frozenset(
    {
        CloseCode.NORMAL,
        CloseCode.POLICY_VIOLATION,
        CloseCode.MESSAGE_TOO_BIG,
        CloseCode.BAD_REQUEST,
        CloseCode.UNAUTHORIZED,
        CloseCode.FORBIDDEN,
        CloseCode.NOT_FOUND,
        CloseCode.RETIRED,
    }
)

_BY_CODE: dict[str, type[errors.PeerError]] = {
    cls.code: cls for cls in errors.PeerError.__subclasses__()
}


class StreamClosed(errors.HubError):
    """The hub closed the stream with a code after which reconnecting cannot help."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"stream closed by the hub: {code} {reason}".strip())
        self.code = code
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Update:
    """The presence of the workspace after one frame was applied."""

    seq: int
    online: int
    counts: dict[str, int]
    frame: dict[str, Any] = field(repr=False)


class HubClient:
    """REST helpers; :meth:`connect` opens a live stream."""

    def __init__(
        self,
        base_url: str,
        *,
        token: str | None = None,
        client_id: str | None = None,
        timeout: float = 10.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.client_id = client_id or str(uuid.uuid4())
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.AsyncClient(base_url=self.base_url, headers=headers, timeout=timeout)

    async def __aenter__(self) -> HubClient:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """One REST call; the JSON answer, or the hub's error raised as its exception."""
        response = await self._http.request(method, path, **kwargs)
        if response.status_code >= 400:
            try:
                body = response.json()
                code, message = body["error"], body["message"]
            except (ValueError, KeyError, TypeError):
                raise errors.HubError(f"{response.status_code}: {response.text[:200]}") from None
            raise _BY_CODE.get(code, errors.PeerError)(message)
        return response.json() if response.content else None

    # -- REST ---------------------------------------------------------------------------------

    async def create_workspace(self, path: str, *, hold: bool = True) -> dict[str, Any]:
        body: dict[str, Any] = {"path": path}
        if hold:
            body["client_id"] = self.client_id
        result: dict[str, Any] = await self.request("POST", "/v1/workspaces", json=body)
        return result

    async def workspace(self, workspace_id: str) -> dict[str, Any]:
        result: dict[str, Any] = await self.request("GET", f"/v1/workspaces/{workspace_id}")
        return result

    async def presence(self, workspace_id: str) -> dict[str, Any]:
        result: dict[str, Any] = await self.request(
            "GET", f"/v1/workspaces/{workspace_id}/presence"
        )
        return result

    async def sessions(self, workspace_id: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = await self.request(
            "GET", f"/v1/workspaces/{workspace_id}/sessions"
        )
        return result

    async def create_session(self, workspace_id: str, **fields: Any) -> dict[str, Any]:
        result: dict[str, Any] = await self.request(
            "POST", f"/v1/workspaces/{workspace_id}/sessions", json=fields
        )
        return result

    async def update_session(
        self, workspace_id: str, session_id: str, **fields: Any
    ) -> dict[str, Any]:
        result: dict[str, Any] = await self.request(
            "PUT", f"/v1/workspaces/{workspace_id}/sessions/{session_id}", json=fields
        )
        return result

    async def release(self, workspace_id: str) -> None:
        await self.request("DELETE", f"/v1/workspaces/{workspace_id}/clients/{self.client_id}")

    # -- live ---------------------------------------------------------------------------------

    def connect(self, workspace_id: str, **options: Any) -> Stream:
        """A live stream of this client in the workspace (use with ``async with``)."""
        return Stream(self, workspace_id, **options)


class Stream:
    """One live stream: the workspace's counts, kept current; reconnects by itself."""

    def __init__(
        self,
        client: HubClient,
        workspace_id: str,
        *,
        backoff: float = 0.2,
        max_backoff: float = 10.0,
    ) -> None:
        self.client = client
        self.workspace_id = workspace_id
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.seq = -1
        self.online = 0
        self.counts: dict[str, int] = {}
        self.session: str = ""  # what this client views; re-sent after a reconnect
        self._ws: ClientConnection | None = None
        self._updates: asyncio.Queue[Update | BaseException] = asyncio.Queue()
        self._acks: dict[int, asyncio.Future[int]] = {}
        self._refs = 0
        self._reader: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()

    @property
    def url(self) -> str:
        base = self.client.base_url.replace("http", "ws", 1)
        url = f"{base}/v1/workspaces/{self.workspace_id}/ws?client_id={self.client.client_id}"
        return url + (f"&token={self.client.token}" if self.client.token else "")

    async def __aenter__(self) -> Stream:
        await self._open()
        self._reader = asyncio.create_task(self._run())
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        if self._ws is not None:
            await self._ws.close()

    async def set_session(self, session_id: str | None) -> int:
        """View ``session_id`` (``None``/``""``: none); the ``seq`` that includes it."""
        self.session = session_id or ""
        await self._connected.wait()
        self._refs += 1
        ref = self._refs
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._acks[ref] = future
        await self._send({"type": "set_session", "session_id": self.session, "ref": ref})
        return await future

    def __aiter__(self) -> AsyncIterator[Update]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Update]:
        while True:
            item = await self._updates.get()
            if isinstance(item, BaseException):
                raise item
            yield item

    async def _send(self, frame: dict[str, Any]) -> None:
        assert self._ws is not None
        await self._ws.send(orjson.dumps(frame).decode())

    async def _open(self) -> None:
        self._ws = await ws_connect(self.url, compression=None)
        first = orjson.loads(await self._ws.recv())
        if first.get("type") != "snapshot":  # pragma: no cover - the contract says it is
            raise errors.HubError(f"expected a snapshot first, got {first!r}")
        self._apply(first)
        self._connected.set()
        if self.session:  # a reconnect: say again what we view (a no-op within grace)
            await self._send({"type": "set_session", "session_id": self.session})

    async def _run(self) -> None:
        attempt = 0
        while True:
            assert self._ws is not None
            try:
                async for raw in self._ws:
                    self._apply(orjson.loads(raw))
                code, reason = self._ws.close_code or 1006, self._ws.close_reason or ""
            except ConnectionClosed as exc:
                rcvd = exc.rcvd
                code, reason = (rcvd.code, rcvd.reason) if rcvd else (1006, "")
            self._connected.clear()
            if code in FINAL:
                self._fail(StreamClosed(code, reason))
                return
            while True:  # full-jitter exponential backoff
                attempt += 1
                delay = random.uniform(0, min(self.max_backoff, self.backoff * 2**attempt))
                await asyncio.sleep(delay)
                try:
                    await self._open()
                    attempt = 0
                    break
                except (TimeoutError, OSError, ConnectionClosed):
                    continue

    def _fail(self, exc: BaseException) -> None:
        for future in self._acks.values():
            if not future.done():
                future.set_exception(exc)
        self._updates.put_nowait(exc)

    def _apply(self, frame: dict[str, Any]) -> None:
        kind = frame.get("type")
        if kind == "ack":
            future = self._acks.pop(frame.get("ref", -1), None)
            if future is not None and not future.done():
                future.set_result(frame["seq"])
            return
        if kind == "snapshot":
            self.seq, self.online, self.counts = (
                frame["seq"],
                frame["online"],
                dict(frame["counts"]),
            )
        elif kind == "counts" and frame["seq"] > self.seq:
            self.seq = frame["seq"]
            for session_id, n in frame["counts"].items():
                if n:
                    self.counts[session_id] = n
                else:
                    self.counts.pop(session_id, None)
            self.online = frame.get("online", self.online)
        else:
            return
        self._updates.put_nowait(Update(self.seq, self.online, dict(self.counts), frame))
