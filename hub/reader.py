"""Counts in-process: what an application that mounts the hub reads without an HTTP call.

An app whose own session list wants the seed's ``attached_clients`` asks the hub it created:

    presence = create_app(settings)
    counts = presence_of(presence)
    n = await counts.attached_clients(workspace_id, session_id)

The reader asks the same backend REST asks (memory, or Redis shared by every node), so its
figures are REST's: the same truth at the same moment, not a cache. A workspace the store does
not have is :class:`~hub.errors.WorkspaceNotFound`, as REST's 404; a hub whose lifespan has not
run is :class:`~hub.errors.Unavailable`, as REST's 503.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hub.errors import Unavailable, WorkspaceNotFound
from hub.presence import Snapshot
from hub.rest import presence_json

if TYPE_CHECKING:
    from starlette.applications import Starlette

    from hub.app import Services

__all__ = ["PresenceReader", "presence_of"]


class PresenceReader:
    """Reads one hub's live counts (see the module docstring)."""

    def __init__(self, app: Starlette) -> None:
        self._app = app
        self._services: Services = app.state.services

    async def _snapshot(self, workspace_id: str) -> Snapshot:
        if not getattr(self._app, "running", False):
            raise Unavailable("the presence hub has not started: its lifespan did not run")
        services = self._services
        if await services.store.get_workspace(workspace_id) is None:
            raise WorkspaceNotFound(f"workspace {workspace_id[:64]!r} not found")
        return await services.backend.snapshot(workspace_id)

    async def snapshot(self, workspace_id: str) -> dict[str, Any]:
        """The workspace's presence, as ``GET /v1/workspaces/{id}/presence`` answers it."""
        return presence_json(await self._snapshot(workspace_id))

    async def attached_clients(self, workspace_id: str, session_id: str) -> int:
        """How many clients view the session now (a session record's ``attached_clients``)."""
        return (await self._snapshot(workspace_id)).counts.get(session_id, 0)

    async def attached_users(self, workspace_id: str, session_id: str) -> int:
        """How many users (people) view the session now (``attached_users``)."""
        return (await self._snapshot(workspace_id)).users.get(session_id, 0)


def presence_of(app: Starlette) -> PresenceReader:
    """The in-process reader of the hub that :func:`hub.create_app` returned as ``app``."""
    if not hasattr(app.state, "services"):
        raise TypeError("presence_of() takes the app that hub.create_app() returned")
    return PresenceReader(app)
