"""Presence backends: where claims live, behind the :class:`PresenceBackend` port.

The hub shell talks only to this port. ``memory`` (the default) wraps the pure core with a
clock and one timer; ``redis`` keeps the claims in Redis so that several hub processes share
them. Every mutating call returns the workspace ``seq`` it committed (all the shell reads);
``attach`` returns the snapshot the new stream starts from, which includes its own change.
Which workspaces exist is the store's to say: a backend is given ``known`` (the store's
answer) and learns a workspace it has not seen on first use. What the hub must fan out
reaches it through the :class:`Events` given to :meth:`PresenceBackend.start`:
count changes, session records, closes (retired client, deleted workspace) and, for a shared
backend, "you may have missed changes here" (``resync``). For a shared backend these events
come from every process, this one included, in the order the backend committed them.
"""

from __future__ import annotations

from typing import Any, Protocol

from hub.presence import ClaimView, Diff, Profile, Snapshot, Viewers
from hub.webhook import Outbox

__all__ = ["Events", "PresenceBackend"]


class Events(Protocol):
    """What a backend tells the hub (implemented by :class:`~hub.hub.Hub`)."""

    def changed(self, diff: Diff) -> None:
        """A committed change that moved counts or touched viewers (diffs of a workspace come
        in ``seq`` order; a profile change leaves ``seq`` where it was)."""

    def resync(self, workspace_id: str) -> None:
        """Changes of the workspace may have been missed: read its snapshot again."""

    def session(self, workspace_id: str, op: str, session: dict[str, Any]) -> None:
        """A session record of the workspace was created, updated or deleted."""

    def closed(self, workspace_id: str, client_id: str | None, code: int) -> None:
        """The claims of a client (or, for None, of everyone) in the workspace are gone:
        close those sockets with ``code``; they have nothing left to detach."""


class RetiredRecords(Protocol):
    """Where retirements outlive presence: the records store (see hub.store.Store). A backend
    writes a retirement there before it acts on it, and reads them back when its own memory
    may be gone (a process start, a Redis restarted empty)."""

    async def retire_client(self, client_id: str, until: float) -> None: ...

    async def retirements(self, now: float) -> dict[str, float]: ...


class PresenceBackend(Protocol):
    async def start(self, events: Events) -> None: ...

    async def close(self) -> None: ...

    async def ping(self) -> None:
        """Raise if the backend cannot answer now."""
        ...

    async def watch(self, workspace_id: str) -> None:
        """This process is about to hold a socket in the workspace: deliver its events here
        from now on. Counted: every ``watch`` is ended by one ``unwatch``."""
        ...

    def unwatch(self, workspace_id: str) -> None: ...

    async def add_workspace(self, workspace_id: str) -> None: ...

    async def remove_workspace(self, workspace_id: str) -> None: ...

    async def hold(self, workspace_id: str, client_id: str) -> int:
        """A creation hold for the client (counting nowhere until its first stream); makes the
        workspace known as ``add_workspace`` does, so a create needs no second call."""
        ...

    async def attach(
        self,
        workspace_id: str,
        client_id: str,
        user: str | None = None,
        profile: Profile | None = None,
    ) -> Snapshot:
        """One more stream (of ``user``; None: anonymous); the workspace's presence as of
        (and including) this change. A client bound to another user: ``Forbidden``."""
        ...

    async def set_session(self, workspace_id: str, client_id: str, session_id: str) -> int: ...

    async def detach(self, workspace_id: str, client_id: str) -> int:
        """Never raises: a backend that cannot reach its store now repairs it later."""
        ...

    async def set_profile(self, workspace_id: str, client_id: str, profile: Profile) -> int:
        """The client's user takes ``profile``; returns the (unmoved) seq."""
        ...

    async def release(self, workspace_id: str, client_id: str) -> int: ...

    async def retire(self, client_id: str) -> None: ...

    async def is_retired(self, client_id: str) -> bool: ...

    async def publish_session(self, workspace_id: str, op: str, session: dict[str, Any]) -> None:
        """Deliver a session record event to every process's sockets of the workspace."""
        ...

    async def snapshot(self, workspace_id: str) -> Snapshot: ...

    async def viewers(self, workspace_id: str, session_id: str, limit: int) -> Viewers: ...

    async def claims(self, workspace_id: str) -> list[ClaimView]: ...

    async def claim_count(self) -> int:
        """Claims in every workspace (for operators and leak checks)."""
        ...

    def claim_states(self) -> dict[str, int]:
        """Claims by state, for the metrics gauges (may be empty where counting is costly)."""
        ...

    def outbox(self, url: str) -> Outbox:
        """The webhook events waiting for the receiver ``url`` (webhooks configured)."""
        ...
