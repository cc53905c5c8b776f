"""The in-process presence backend: the pure core, the event loop's clock, and one timer.

All calls run on the event loop thread and never suspend, so each one is atomic with respect to
every other coroutine: that is what lets the hub read a snapshot and register a socket as one
step. The single timer handle always points at the core's earliest deadline.
"""

from __future__ import annotations

import asyncio
from typing import Any

from hub.backends import Events
from hub.presence import ClaimView, Diff, Presence, Snapshot
from hub.protocol import CloseCode

__all__ = ["MemoryBackend"]


class MemoryBackend:
    def __init__(self, presence: Presence) -> None:
        self.presence = presence
        self._events: Events | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None

    async def start(self, events: Events) -> None:
        self._events = events
        self._loop = asyncio.get_running_loop()
        self._reschedule()

    async def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    async def ping(self) -> None:
        """In-process: always answers."""

    async def watch(self, workspace_id: str) -> None:
        """In-process: every change already reaches this process's hub."""

    def unwatch(self, workspace_id: str) -> None:
        pass

    def _now(self) -> float:
        loop = self._loop or asyncio.get_running_loop()
        return loop.time()

    def _commit(self, diff: Diff) -> Diff:
        if diff.changed and self._events is not None:
            self._events.changed(diff)
        self._reschedule()
        return diff

    def _reschedule(self) -> None:
        """Point the one timer at the core's earliest deadline (if it moved)."""
        if self._loop is None:
            return
        deadline = self.presence.next_deadline()
        if self._timer is not None:
            if deadline is not None and self._timer.when() == deadline:
                return
            self._timer.cancel()
            self._timer = None
        if deadline is not None:
            self._timer = self._loop.call_at(deadline, self._fire)

    def _fire(self) -> None:
        self._timer = None
        for diff in self.presence.expire(self._now()):
            self._commit(diff)
        self._reschedule()

    async def add_workspace(self, workspace_id: str) -> None:
        self.presence.add_workspace(workspace_id)

    async def remove_workspace(self, workspace_id: str) -> None:
        self.presence.remove_workspace(workspace_id)
        self._reschedule()
        if self._events is not None:
            self._events.closed(workspace_id, None, CloseCode.NOT_FOUND)

    async def hold(self, workspace_id: str, client_id: str) -> Diff:
        return self._commit(self.presence.hold(workspace_id, client_id, self._now()))

    async def attach(self, workspace_id: str, client_id: str) -> Diff:
        return self._commit(self.presence.attach(workspace_id, client_id, self._now()))

    async def set_session(self, workspace_id: str, client_id: str, session_id: str) -> Diff:
        now = self._now()
        return self._commit(self.presence.set_session(workspace_id, client_id, session_id, now))

    async def detach(self, workspace_id: str, client_id: str) -> Diff:
        return self._commit(self.presence.detach(workspace_id, client_id, self._now()))

    async def release(self, workspace_id: str, client_id: str) -> Diff:
        return self._commit(self.presence.release(workspace_id, client_id, self._now()))

    async def retire(self, client_id: str) -> None:
        for diff in self.presence.retire(client_id, self._now()):
            self._commit(diff)
            if self._events is not None:
                self._events.closed(diff.workspace_id, client_id, CloseCode.RETIRED)
        self._reschedule()

    async def is_retired(self, client_id: str) -> bool:
        return self.presence.is_retired(client_id, self._now())

    async def publish_session(self, workspace_id: str, op: str, session: dict[str, Any]) -> None:
        if self._events is not None:
            self._events.session(workspace_id, op, session)

    async def snapshot(self, workspace_id: str) -> Snapshot:
        return self.presence.snapshot(workspace_id)

    async def claims(self, workspace_id: str) -> list[ClaimView]:
        return self.presence.claims(workspace_id)

    async def claim_count(self) -> int:
        return self.presence.claim_count()

    def claim_states(self) -> dict[str, int]:
        return self.presence.claim_states()
