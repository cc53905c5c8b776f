"""An async Python client for the hub: REST helpers and a live presence stream.

    async with HubClient("http://127.0.0.1:8000") as hub:
        ws = await hub.create_workspace("/my/project")
        async with hub.connect(ws["id"]) as stream:
            await stream.set_session("S1")
            async for update in stream:
                print(update.counts, update.online)

Errors answered by the hub raise the same exceptions the hub raises inside
(:mod:`hub.errors`: ``WorkspaceNotFound``, ``Unauthorized``, ...). The stream applies
``snapshot`` and ``counts`` frames by ``seq`` and follows the reconnect model of
``docs/clients.md`` (shared with the browser client, held to the same test vectors): full-jitter
exponential backoff, the current session said again after every reconnect, a stop for good on
the close codes after which a retry cannot help (:data:`FINAL`), and no call that waits without
a bound.
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
from urllib.parse import quote

import httpx
import orjson
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from hub import errors
from hub.protocol import CloseCode
from hub.sse_client import REFUSED, EventStreamConnection

__all__ = ["FINAL", "ConnectionLost", "HubClient", "Stream", "StreamClosed", "Update", "backoff"]

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


# HTTP statuses at the handshake that a retry may cure (a proxy's 502/503, a 429, a 408); any
# other refused handshake is final.
RETRY_STATUSES = frozenset({408, 429})

BACKOFF_BASE = 0.25  # seconds
BACKOFF_MAX = 15.0


def backoff(attempt: int, base: float = BACKOFF_BASE, cap: float = BACKOFF_MAX) -> float:
    """Full-jitter exponential backoff: a delay in [0, min(cap, base * 2**attempt)) seconds for
    retry number ``attempt`` (1 for the first)."""
    return random.random() * min(cap, base * 2.0**attempt)


class StreamClosed(errors.HubError):
    """The stream stopped for good: the hub closed it with a code after which reconnecting
    cannot help (:data:`FINAL`), or refused the handshake with a final HTTP status (``code``
    is then that status, e.g. 403)."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"stream closed by the hub: {code} {reason}".strip())
        self.code = code
        self.reason = reason


class ConnectionLost(errors.HubError):
    """The socket dropped before the hub answered (the stream reconnects by itself and says
    its current session again), or no connection could be made within ``connect_timeout``."""


class _Retry(Exception):
    """A connection attempt failed in a way a later attempt may not."""


@dataclass(frozen=True, slots=True)
class Update:
    """The presence of the workspace after one frame was applied."""

    seq: int
    online: int
    counts: dict[str, int]
    frame: dict[str, Any] = field(repr=False)
    users: dict[str, int] = field(default_factory=dict)
    online_users: int = 0


class HubClient:
    """REST helpers; :meth:`connect` opens a live stream.

    ``user_id`` names the person this client belongs to when the hub runs without auth
    (self-asserted, ``?user_id=``); with auth on, the token's ``user`` claim does."""

    def __init__(
        self,
        base_url: str,
        *,
        token: str | None = None,
        client_id: str | None = None,
        user_id: str | None = None,
        timeout: float = 10.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.client_id = client_id or str(uuid.uuid4())
        self.user_id = user_id
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

    async def viewers(
        self, workspace_id: str, session_id: str, limit: int | None = None
    ) -> dict[str, Any]:
        """Who views a session (``total``, ``anonymous``, ``viewers``); needs the viewers
        scope with auth on."""
        params: dict[str, Any] = {"session_id": session_id}
        if limit is not None:
            params["limit"] = limit
        result: dict[str, Any] = await self.request(
            "GET", f"/v1/workspaces/{workspace_id}/viewers", params=params
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
    """One live stream: the workspace's counts (clients and people), kept current, and the
    viewers of the sessions it watches; reconnects by itself, and says again after each
    reconnect what it views, its profile and what it watches.

    Every wait is bounded: entering waits at most ``connect_timeout`` for the first snapshot,
    :meth:`set_session`, :meth:`set_profile`, :meth:`watch` and :meth:`unwatch` at most
    ``ack_timeout`` for their answer (``TimeoutError``).

    ``transport="sse"``: the event stream instead of a WebSocket (where a proxy breaks
    WebSockets), with the commands over REST (:mod:`hub.sse_client`); the same calls.
    """

    def __init__(
        self,
        client: HubClient,
        workspace_id: str,
        *,
        backoff: float = BACKOFF_BASE,
        max_backoff: float = BACKOFF_MAX,
        ack_timeout: float = 10.0,
        connect_timeout: float = 10.0,
        transport: str = "websocket",
    ) -> None:
        if transport not in ("websocket", "sse"):
            raise ValueError(f"transport must be 'websocket' or 'sse', not {transport!r}")
        self.transport = transport
        self.client = client
        self.workspace_id = workspace_id
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.ack_timeout = ack_timeout
        self.connect_timeout = connect_timeout
        self.seq = -1
        self.online = 0
        self.counts: dict[str, int] = {}
        self.users: dict[str, int] = {}  # distinct people per session
        self.online_users = 0
        self.session: str = ""  # what this client views; re-sent after a reconnect
        self.profile: dict[str, Any] | None = None  # this user's profile; re-sent too
        self.watching: dict[str, int] = {}  # session -> limit; watched again after a reconnect
        # session -> user_id -> {"user_id", "profile", "clients"}, earliest arrival first
        self.viewers: dict[str, dict[str, dict[str, Any]]] = {}
        self.totals: dict[str, tuple[int, int]] = {}  # session -> (total, anonymous)
        self.attempts = 0  # connection attempts made (handshakes tried)
        self._ws: ClientConnection | EventStreamConnection | None = None
        self._watch_refs: dict[str, int] = {}  # over SSE: a watch's ref, until its viewers
        self._updates: asyncio.Queue[Update | BaseException] = asyncio.Queue()
        self._acks: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._refs = 0
        self._waiting = 0  # set_session calls waiting for a connection
        self._runner: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()
        self._stopped = asyncio.Event()
        self._final: BaseException | None = None

    @property
    def url(self) -> str:
        base = self.client.base_url.replace("http", "ws", 1)
        url = f"{base}/v1/workspaces/{self.workspace_id}/ws?client_id={self.client.client_id}"
        if self.client.user_id is not None:
            url += f"&user_id={quote(self.client.user_id, safe='')}"
        return url + (f"&token={self.client.token}" if self.client.token else "")

    @property
    def closed(self) -> BaseException | None:
        """Why the stream stopped for good (a :class:`StreamClosed`, ...), or None."""
        return self._final

    async def __aenter__(self) -> Stream:
        self._runner = asyncio.create_task(self._run())
        try:
            async with asyncio.timeout(self.connect_timeout):
                await self._until_connected()
        except TimeoutError:
            await self.aclose()
            raise ConnectionLost(
                f"no connection to the hub within {self.connect_timeout} s"
            ) from None
        except BaseException:
            await self.aclose()
            raise
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop reconnecting and close the socket; pending calls fail with ConnectionLost."""
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._runner
        if self._ws is not None:
            await self._ws.close()
        self._lost(ConnectionLost("the stream was closed"))

    async def set_session(self, session_id: str | None) -> int:
        """View ``session_id`` (``None``/``""``: none); the ``seq`` that includes it.

        The intent is kept at once and said again after every reconnect, whatever this call
        returns. Raises the hub's refusal (``Unavailable``, ``RateLimited``, ...),
        :class:`ConnectionLost` if the socket dropped before the answer, :class:`StreamClosed`
        once the stream stopped for good, ``TimeoutError`` after ``ack_timeout``.
        """
        self.session = session_id or ""
        answer = await self._ask({"type": "set_session", "session_id": self.session})
        return int(answer["seq"])

    async def set_profile(self, profile: dict[str, Any]) -> int:
        """This user's profile (a JSON object of at most 1024 bytes), shown to everyone who
        watches a session it views; kept and said again after every reconnect. Raises like
        :meth:`set_session` (``InvalidProfile`` for a bad one)."""
        self.profile = profile
        return int((await self._ask({"type": "set_profile", "profile": profile}))["seq"])

    async def watch(self, session_id: str, limit: int = 100) -> list[dict[str, Any]]:
        """Follow who views ``session_id`` (the first ``limit`` identified users by arrival):
        ``viewers[session_id]`` is kept current from now on; returns the list as it is now.
        Raises ``Forbidden`` without the viewers scope, ``TooManyWatches`` past 8."""
        self.watching[session_id] = limit
        try:
            await self._ask({"type": "watch", "session_id": session_id, "limit": limit})
        except errors.PeerError:
            self.watching.pop(session_id, None)
            raise
        return list(self.viewers.get(session_id, {}).values())

    async def unwatch(self, session_id: str) -> None:
        """Stop following ``session_id``'s viewers."""
        self.watching.pop(session_id, None)
        await self._ask({"type": "unwatch", "session_id": session_id})
        self.viewers.pop(session_id, None)
        self.totals.pop(session_id, None)

    async def _ask(self, frame: dict[str, Any]) -> dict[str, Any]:
        """Send ``frame`` with a fresh ``ref`` once connected; the hub's answer to it (its
        ``ack``, or the ``viewers`` frame of a ``watch``), or its refusal raised."""
        ref = 0
        try:
            async with asyncio.timeout(self.ack_timeout):
                self._waiting += 1
                try:
                    await self._until_connected()
                finally:
                    self._waiting -= 1
                self._refs += 1
                ref = self._refs
                future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
                self._acks[ref] = future
                try:
                    await self._send({**frame, "ref": ref})
                except ConnectionClosed:
                    raise ConnectionLost("the socket dropped before the hub answered") from None
                return await future
        except TimeoutError:
            raise TimeoutError(f"no answer from the hub within {self.ack_timeout} s") from None
        finally:
            self._acks.pop(ref, None)

    def __aiter__(self) -> AsyncIterator[Update]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Update]:
        while True:
            item = await self._updates.get()
            if isinstance(item, BaseException):
                self._updates.put_nowait(item)  # every later read raises it too
                raise item
            yield item

    async def _until_connected(self) -> None:
        """Wait for a live socket (its snapshot applied); raise once the stream stopped."""
        while not self._connected.is_set():
            if self._final is not None:
                raise self._final
            waits = [asyncio.ensure_future(e.wait()) for e in (self._connected, self._stopped)]
            try:
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for w in waits:
                    w.cancel()
        if self._final is not None:
            raise self._final

    async def _send(self, frame: dict[str, Any]) -> None:
        assert self._ws is not None
        await self._ws.send(orjson.dumps(frame).decode())

    async def _run(self) -> None:
        """Connect, read until the socket ends, and again with backoff, until a final code.
        Whatever goes wrong ends the stream with that error: never a silent dead reader."""
        attempt = 0
        try:
            while True:
                try:
                    ws = await self._open()
                except _Retry:
                    attempt += 1
                    await asyncio.sleep(backoff(attempt, self.backoff, self.max_backoff))
                    continue
                attempt = 0
                code, reason = await self._read(ws)
                if isinstance(ws, EventStreamConnection) and ws.restart:
                    continue  # a new stream, with other watches
                if code in FINAL:
                    raise StreamClosed(code, reason)
                self._lost(ConnectionLost("the socket dropped before the hub answered"))
                attempt += 1
                await asyncio.sleep(backoff(attempt, self.backoff, self.max_backoff))
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            self._fail(exc)

    async def _open(self) -> ClientConnection | EventStreamConnection:
        """One connection attempt, up to the snapshot; raises _Retry or StreamClosed."""
        self.attempts += 1
        if self.transport == "sse":
            return await self._open_events()
        try:
            ws = await ws_connect(self.url, compression=None, open_timeout=self.connect_timeout)
        except InvalidStatus as exc:
            status = exc.response.status_code
            if status >= 500 or status in RETRY_STATUSES:
                raise _Retry(f"HTTP {status}") from None
            raise StreamClosed(status, f"the handshake was refused: HTTP {status}") from None
        except (OSError, TimeoutError, InvalidHandshake) as exc:
            raise _Retry(str(exc)) from None
        self._ws = ws
        try:
            async with asyncio.timeout(self.connect_timeout):
                first = orjson.loads(await ws.recv())
        except ConnectionClosed as exc:
            code, reason = _close_of(exc)
            if code in FINAL:
                raise StreamClosed(code, reason) from None
            raise _Retry(f"closed {code}") from None
        except TimeoutError:
            await ws.close()
            raise _Retry("no snapshot") from None
        if first.get("type") != "snapshot":  # pragma: no cover - the contract says it is
            raise errors.HubError(f"expected a snapshot first, got {first!r}")
        self._apply(first)
        with contextlib.suppress(ConnectionClosed):  # say again what we view (a no-op in grace)
            if self.session and not self._waiting:
                await self._send({"type": "set_session", "session_id": self.session})
            if self.profile is not None:
                await self._send({"type": "set_profile", "profile": self.profile})
            for session_id, limit in list(self.watching.items()):
                await self._send({"type": "watch", "session_id": session_id, "limit": limit})
        self._connected.set()
        return ws

    async def _open_events(self) -> EventStreamConnection:
        """One event stream, up to its snapshot (docs/protocol.md section 12)."""
        http = self.client._http
        base = f"/v1/workspaces/{self.workspace_id}"
        params: dict[str, Any] = {"client_id": self.client.client_id}
        if self.client.user_id is not None:
            params["user_id"] = self.client.user_id
        watches = list(self.watching)[:8]
        if watches:
            params["watch"] = ",".join(watches)
            params["limit"] = max(self.watching[s] for s in watches)
        request = http.build_request(
            "GET",
            base + "/events",
            params=params,
            headers={"Accept": "text/event-stream"},
            timeout=httpx.Timeout(self.connect_timeout, read=None),
        )
        try:
            response = await http.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise _Retry(str(exc)) from None
        if response.status_code != 200:
            await response.aread()
            status = response.status_code
            if status in REFUSED:
                try:
                    reason = str(response.json()["message"])
                except (ValueError, KeyError, TypeError):
                    reason = f"HTTP {status}"
                raise StreamClosed(REFUSED[status], reason)
            if status >= 500 or status in RETRY_STATUSES:
                raise _Retry(f"HTTP {status}")
            raise StreamClosed(status, f"the event stream was refused: HTTP {status}")
        ws = EventStreamConnection(
            http, response, base, self.client.client_id, watches, self._apply, self._watch_refs
        )
        self._ws = ws
        try:
            async with asyncio.timeout(self.connect_timeout):
                first = orjson.loads(await ws.recv())
        except (EOFError, TimeoutError):
            await ws.close()
            if ws.close_code in FINAL:
                raise StreamClosed(ws.close_code or 1006, ws.close_reason) from None
            raise _Retry("no snapshot") from None
        self._apply(first)
        if self.session and not self._waiting:
            await ws.send(
                orjson.dumps({"type": "set_session", "session_id": self.session}).decode()
            )
        if self.profile is not None:
            await ws.send(orjson.dumps({"type": "set_profile", "profile": self.profile}).decode())
        self._connected.set()
        return ws

    async def _read(self, ws: ClientConnection | EventStreamConnection) -> tuple[int, str]:
        """Apply frames until the socket ends; its close code and reason."""
        try:
            async for raw in ws:
                self._apply(orjson.loads(raw))
        except ConnectionClosed as exc:
            return _close_of(exc)
        return ws.close_code or 1006, ws.close_reason or ""

    def _lost(self, exc: BaseException) -> None:
        """The socket is gone: the calls waiting for its answers fail with ``exc``."""
        self._connected.clear()
        acks, self._acks = self._acks, {}
        for future in acks.values():
            if not future.done():
                future.set_exception(exc)

    def _fail(self, exc: BaseException) -> None:
        """The stream stopped for good."""
        self._final = exc
        self._lost(exc)
        self._stopped.set()
        self._updates.put_nowait(exc)

    def _apply(self, frame: dict[str, Any]) -> None:
        kind = frame.get("type")
        if kind in ("ack", "error"):
            self._answer(frame)
            return
        if kind == "snapshot":
            self.seq, self.online, self.counts = (
                frame["seq"],
                frame["online"],
                dict(frame["counts"]),
            )
            self.users = dict(frame.get("users", {}))
            self.online_users = frame.get("online_users", 0)
        elif kind == "counts" and frame["seq"] > self.seq:
            self.seq = frame["seq"]
            _absolute(self.counts, frame["counts"])
            _absolute(self.users, frame.get("users", {}))
            self.online = frame.get("online", self.online)
            self.online_users = frame.get("online_users", self.online_users)
        elif kind == "viewers" and frame["session_id"] in self.watching:
            session_id = frame["session_id"]
            self.viewers[session_id] = {v["user_id"]: v for v in frame["viewers"]}
            self.totals[session_id] = (frame["total"], frame["anonymous"])
            self._answer(frame)
        elif kind == "viewers_diff" and frame["session_id"] in self.viewers:
            shown = self.viewers[frame["session_id"]]
            for user_id in frame["left"]:
                shown.pop(user_id, None)
            for viewer in (*frame["updated"], *frame["joined"]):  # joined ones go last
                shown[viewer["user_id"]] = viewer
            self.totals[frame["session_id"]] = (frame["total"], frame["anonymous"])
        else:
            return
        update = Update(
            self.seq, self.online, dict(self.counts), frame, dict(self.users), self.online_users
        )
        self._updates.put_nowait(update)

    def _answer(self, frame: dict[str, Any]) -> None:
        """Resolve the call waiting for the answer to its ``ref``."""
        future = self._acks.pop(frame.get("ref", -1), None)
        if future is None or future.done():
            return
        if frame["type"] == "error":
            error = _BY_CODE.get(frame.get("code", ""), errors.PeerError)
            future.set_exception(error(frame.get("message", "")))
        else:
            future.set_result(frame)


def _absolute(values: dict[str, int], changed: dict[str, int]) -> None:
    """Apply a frame's absolute values (0: gone)."""
    for session_id, n in changed.items():
        if n:
            values[session_id] = n
        else:
            values.pop(session_id, None)


def _close_of(exc: ConnectionClosed) -> tuple[int, str]:
    rcvd = exc.rcvd
    return (rcvd.code, rcvd.reason) if rcvd else (1006, "")
