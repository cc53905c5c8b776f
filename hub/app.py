"""``create_app(settings)``: the Starlette application with its lifespan.

The lifespan opens the store and starts the hub (presence learns the stored workspaces from the
store on first use); on the way out it stops the hub and closes the store cleanly.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from typing import Any, TypedDict
from urllib.parse import urlsplit, urlunsplit

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from hub import assets, fastpaths
from hub.access import Access, Authenticate
from hub.auth import Auth, OriginPolicy, RedactTokens
from hub.backends import PresenceBackend
from hub.backends.memory import MemoryBackend
from hub.events import EventRoute
from hub.hub import Hub, Limits
from hub.metrics import Metrics
from hub.occupancy import Occupancy
from hub.operations import Operations
from hub.presence import Presence
from hub.rest import Rest, error_response
from hub.settings import Settings
from hub.store import Store, open_store
from hub.webhook import Webhooks
from hub.ws import SocketRoute

__all__ = ["Services", "create_app"]

log = logging.getLogger(__name__)

_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}


@dataclass(frozen=True, slots=True)
class Services:
    """The parts one app runs on; exposed as ``app.state.services`` for operators and tests."""

    settings: Settings
    backend: PresenceBackend
    store: Store
    hub: Hub


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = _HTTP_CODES.get(exc.status_code, "bad_request")
    return error_response(exc.status_code, code, str(exc.detail))


async def _internal_error(request: Request, exc: Exception) -> Response:
    log.exception("internal error on %s %s", request.method, request.url.path, exc_info=exc)
    request.app.state.services.hub.metrics.backend_errors.inc()
    return error_response(500, "internal_error", "internal error")


def _shown(url: str) -> str:
    """A URL fit for a log: without its password."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc))


class _Timers(TypedDict):
    create_grace: float
    detach_grace: float
    retire_ttl: float


def _backend(settings: Settings, store: Store) -> PresenceBackend:
    """In-process presence, or Redis shared by every hub process when ``redis_url`` is set."""
    timers = _Timers(
        create_grace=settings.create_grace,
        detach_grace=settings.detach_grace,
        retire_ttl=settings.retire_ttl,
    )

    async def known(workspace_id: str) -> bool:
        """Which workspaces exist is the store's to say: presence learns them from it."""
        return await store.get_workspace(workspace_id) is not None

    hooks = settings.webhook_url
    if settings.redis_url is None:
        occupancy = Occupancy(settings.webhook_vacated_delay) if hooks else None
        return MemoryBackend(
            Presence(**timers),
            known=known,
            occupancy=occupancy,
            receivers=hooks,
            queue_limit=settings.webhook_queue,
            retired=store,
        )
    from hub.backends.redis import RedisBackend, WebhookStream

    ttl = settings.node_ttl
    return RedisBackend(
        settings.redis_url,
        known=known,
        node_ttl=ttl,
        heartbeat=ttl / 3,
        timeout=settings.redis_timeout,
        webhooks=WebhookStream(hooks, settings.webhook_vacated_delay, settings.webhook_queue)
        if hooks
        else None,
        retired=store,
        **timers,
    )


def create_app(settings: Settings, authenticate: Authenticate | None = None) -> Starlette:
    """The hub as a Starlette app: served by ``hub serve``, or mounted in an app of yours
    (``Mount("/presence", app=presence)``; enter ``presence.router.lifespan_context(presence)``
    in your app's lifespan). ``authenticate``: your own sign-in instead of the hub's tokens
    (see hub.access)."""
    store = open_store(settings.database_url)
    backend = _backend(settings, store)
    metrics = Metrics()
    hub = Hub(
        backend,
        metrics=metrics,
        coalesce_window=settings.coalesce_window,
        max_outbox_bytes=settings.max_outbox_bytes,
        limits=Limits(
            max_sockets=settings.max_sockets,
            max_streams=settings.max_streams_per_client,
            rate=settings.rate_limit,
            burst=settings.rate_burst,
            rate_close_after=settings.rate_close_after,
        ),
    )
    metrics.watch(lambda: hub.sockets, backend.claim_states)
    webhooks = None
    if settings.webhook_url and settings.webhook_secret is not None:
        webhooks = Webhooks(
            {url: backend.outbox(url) for url in settings.webhook_url},
            settings.webhook_secret,
            retry_min=settings.webhook_retry_min,
            retry_max=settings.webhook_retry_max,
            on_result=metrics.webhook_result,
        )
        metrics.watch_webhooks(webhooks.stats)
    services = Services(settings, backend, store, hub)
    auth = Auth.from_settings(settings)
    hub.auth = auth  # for the refresh frames of live streams
    access = Access(auth, authenticate)
    rest = Rest(hub, backend, store, settings.max_body_bytes, access)
    operations = Operations(hub, backend, store, access)
    RedactTokens.install()

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        # The hub's own app (``app`` below), whoever enters this: a parent may pass its own.
        fastpaths.configure(settings.fast_paths)  # hub serve ran it already: warned once
        await store.open()
        try:
            await auth.start()
            await hub.start()
            log.info(
                "presence: %s; sessions: %s",
                _shown(settings.redis_url) if settings.redis_url else "in this process",
                _shown(settings.database_url),
            )
            if webhooks is not None:
                await webhooks.start()
            app.running = True
            try:
                yield
            finally:
                app.running = False
                if webhooks is not None:
                    await webhooks.close()
                await hub.close()
                await auth.close()
        finally:
            await store.close()

    origins = OriginPolicy(settings.allowed_origins)
    app = _App(
        SocketRoute(hub, access, origins, settings.max_frame_bytes),
        routes=[*operations.routes(), *assets.routes(), *rest.routes()],
        lifespan=lifespan,
        exception_handlers={HTTPException: _http_error, Exception: _internal_error},
    )
    app.events = EventRoute(hub, access, origins, settings.ping_interval)
    app.state.services = services
    return app


_NOT_STARTED = (
    "the presence hub has not started: its lifespan did not run (mounted in another app? enter "
    "`presence.router.lifespan_context(presence)` in that app's lifespan)"
)


class _App(Starlette):
    """Starlette, with the presence sockets served before it: a socket's task then holds no
    Starlette frame for its whole life (docs/performance.md, "Memory per socket").
    ``__call__`` returns the handler's coroutine rather than awaiting it, so it adds no frame
    either (uvicorn is told the interface is ASGI 3).

    Mounted in another app (``Mount("/presence", app=presence)``), every route, the socket's
    included, is matched below the mount. A parent does not run a mounted app's lifespan: until
    it has run (``running``), every request is answered 503 and every socket closed with 1013,
    with a message that says so, rather than failing on a store that is not open."""

    def __init__(self, sockets: SocketRoute, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.sockets = sockets
        self.events: EventRoute | None = None  # the event stream, and 426 for a plain GET
        self.running = False
        self._warned = False

    def __call__(  # type: ignore[override]
        self, scope: Scope, receive: Receive, send: Send
    ) -> Awaitable[None]:
        if not self.running and scope["type"] != "lifespan":
            return self._not_started(scope, receive, send)
        if scope["type"] == "websocket":
            socket = self.sockets.route(scope, receive, send)
            if socket is not None:
                return socket
        elif scope["type"] == "http" and self.events is not None:
            stream = self.events.route(scope, receive, send)
            if stream is not None:
                return stream
        return super().__call__(scope, receive, send)

    async def _not_started(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The answer of a hub whose lifespan has not run: 503, or a socket closed with 1013
        (logged once, not per request)."""
        if not self._warned:
            self._warned = True
            log.warning(_NOT_STARTED)
        if scope["type"] == "websocket":
            if (await receive())["type"] == "websocket.connect":
                await send({"type": "websocket.accept"})
                await send({"type": "websocket.close", "code": 1013, "reason": "hub not started"})
            return
        response = error_response(503, "unavailable", _NOT_STARTED, retry_after=1)
        await response(scope, receive, send)
