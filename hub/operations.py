"""The operator routes: liveness, readiness, Prometheus metrics and the process's stats.

Thin handlers over the hub, the presence backend and the store, beside the REST API of
:mod:`hub.rest` (whose JSON and error answers they share). Liveness and readiness are open
(load balancers ask them); metrics and stats need the admin scope when auth is on.
"""

from __future__ import annotations

import asyncio

from prometheus_client import CONTENT_TYPE_LATEST
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from hub import fastpaths
from hub.access import Access
from hub.backends import PresenceBackend
from hub.hub import Hub
from hub.rest import Handler, json_response, peer_errors
from hub.store import Store

__all__ = ["Operations"]


class Operations:
    """The operator handlers, bound to one hub, backend and store."""

    def __init__(self, hub: Hub, backend: PresenceBackend, store: Store, access: Access) -> None:
        self.hub = hub
        self.backend = backend
        self.store = store
        self.access = access

    def routes(self) -> list[BaseRoute]:
        table: list[tuple[str, Handler]] = [
            ("/v1/health", self.health),
            ("/v1/stats", self.stats),
            ("/v1/ready", self.ready),
            ("/metrics", self.metrics),
        ]
        return [Route(path, peer_errors(h), methods=["GET"]) for path, h in table]

    async def _checks(self) -> dict[str, str]:
        """Each dependency: "ok", or what went wrong."""
        found = {}
        for name, ping in (("store", self.store.ping), ("backend", self.backend.ping)):
            try:
                await asyncio.wait_for(ping(), 1.0)
                found[name] = "ok"
            except Exception as exc:  # a dependency down is a status here, not a crash
                found[name] = f"error: {type(exc).__name__}: {exc}"[:200]
        return found

    async def health(self, request: Request) -> Response:
        """Liveness: 200 while the process answers, with the status of each dependency."""
        return json_response({"status": "ok", **await self._checks()})

    async def ready(self, request: Request) -> Response:
        """Readiness, for load balancers: 503 while a dependency cannot answer."""
        checks = await self._checks()
        ok = all(v == "ok" for v in checks.values())
        return json_response({"ready": ok, **checks}, 200 if ok else 503)

    async def metrics(self, request: Request) -> Response:
        """Prometheus exposition (admin when auth is on)."""
        (await self.access.grant(request)).check_admin()
        return Response(self.hub.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    async def stats(self, request: Request) -> Response:
        """What this process holds, for operators and leak checks (admin)."""
        (await self.access.grant(request)).check_admin()
        return json_response(
            {
                "sockets": self.hub.sockets,
                "rooms": len(self.hub.rooms),
                "claims": await self.backend.claim_count(),
                "tasks": len(asyncio.all_tasks()),
                # Which fast paths this process takes (hub.fastpaths), and how many sockets
                # are on the direct path (the rest: the server's ASGI send, e.g. mounted
                # under a server whose WebSocket protocol is not the one tested).
                "fast_paths": fastpaths.status(),
                "direct_sockets": sum(
                    conn.direct for room in self.hub.rooms.values() for conn in room.conns
                ),
            }
        )
