"""The in-process presence backend: the pure core, the event loop's clock, and one timer.

With webhooks (docs/protocol.md section 10), every committed diff also goes through the pure
:class:`~hub.occupancy.Occupancy`, whose vacated delays share the one timer; its events wait in a
bounded :class:`~hub.webhook.MemoryOutbox` per receiver.

All calls run on the event loop thread and, but for the first touch of a workspace the core does
not know yet, never suspend, so each one is atomic with respect to every other coroutine. The
single timer handle always points at the core's earliest deadline.

Which workspaces exist is the store's to say (``known``), as for the Redis backend: a workspace
the core has not seen (a restart, another process created it) is learnt on first use.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from hub.backends import Events, RetiredRecords
from hub.errors import WorkspaceNotFound
from hub.occupancy import Event, Occupancy
from hub.presence import ClaimView, Diff, Presence, Profile, Snapshot, Viewers
from hub.protocol import CloseCode
from hub.webhook import MemoryOutbox, encode_event, receiver_name

__all__ = ["MemoryBackend"]

T = TypeVar("T")


async def _nothing_known(workspace_id: str) -> bool:
    return False


class MemoryBackend:
    def __init__(
        self,
        presence: Presence,
        *,
        known: Callable[[str], Awaitable[bool]] = _nothing_known,
        occupancy: Occupancy | None = None,
        receivers: Sequence[str] = (),
        queue_limit: int = 400_000,
        retired: RetiredRecords | None = None,
    ) -> None:
        """``occupancy``: decide webhook events (None: webhooks off); ``receivers``: the URLs
        they are queued for, at most ``queue_limit`` waiting for each; ``retired``: where
        retirements are recorded so that they outlive this process."""
        self.presence = presence
        self.occupancy = occupancy
        self._outboxes = {url: MemoryOutbox(receiver_name(url), queue_limit) for url in receivers}
        self._known = known
        self._retired = retired
        self._events: Events | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None

    async def start(self, events: Events) -> None:
        self._events = events
        self._loop = asyncio.get_running_loop()
        if self._retired is not None:  # the retirements of this process's previous lives
            wall = time.time()
            for client_id, until in (await self._retired.retirements(wall)).items():
                self.presence.retire(client_id, self._now(), until - wall)
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

    async def _add_known(self, workspace_id: str, missing: WorkspaceNotFound) -> None:
        """After a core call raised ``missing``: add the workspace when the store has it (the
        core learns workspaces on first use), else raise ``missing`` again."""
        if self.presence.has_workspace(workspace_id) or not await self._known(workspace_id):
            raise missing
        self.presence.add_workspace(workspace_id)

    async def _learn(self, workspace_id: str, call: Callable[[], T]) -> T:
        """Run a core call; a workspace the core does not know but the store has is added."""
        try:
            return call()
        except WorkspaceNotFound as missing:
            await self._add_known(workspace_id, missing)
        return call()

    async def _apply(self, workspace_id: str, call: Callable[[float], Diff]) -> int:
        # As _learn, inline: a change is the hot path, and this spares it a coroutine and a
        # lambda per call.
        try:
            diff = call(self._now())
        except WorkspaceNotFound as missing:
            await self._add_known(workspace_id, missing)
            diff = call(self._now())
        self._commit(diff)
        return diff.seq

    def outbox(self, url: str) -> MemoryOutbox:
        """The queue of webhook events for the receiver ``url`` (one of ``receivers``)."""
        return self._outboxes[url]

    def _commit(self, diff: Diff) -> None:
        if (diff.changed or diff.touched) and self._events is not None:
            self._events.changed(diff)
        if self.occupancy is not None:
            self._emit(self.occupancy.apply(diff, self._now()))
        self._reschedule()

    def _emit(self, events: list[Event]) -> None:
        if not events:
            return
        time_ms = int(time.time() * 1000)
        encoded = [encode_event(e, uuid.uuid4().hex, time_ms) for e in events]
        for outbox in self._outboxes.values():
            outbox.put(encoded)

    def _reschedule(self) -> None:
        """Point the one timer at the core's earliest deadline (if it moved)."""
        if self._loop is None:
            return
        deadline = self.presence.next_deadline()
        if self.occupancy is not None:
            vacate = self.occupancy.next_deadline()
            if deadline is None or (vacate is not None and vacate < deadline):
                deadline = vacate
        if self._timer is not None:
            if deadline is not None and self._timer.when() == deadline:
                return
            self._timer.cancel()
            self._timer = None
        if deadline is not None:
            self._timer = self._loop.call_at(deadline, self._fire)

    def _fire(self) -> None:
        self._timer = None
        now = self._now()
        for diff in self.presence.expire(now):
            self._commit(diff)
        if self.occupancy is not None:
            self._emit(self.occupancy.expire(now))
        self._reschedule()

    async def add_workspace(self, workspace_id: str) -> None:
        self.presence.add_workspace(workspace_id)

    async def remove_workspace(self, workspace_id: str) -> None:
        self.presence.remove_workspace(workspace_id)
        if self.occupancy is not None:
            self.occupancy.forget(workspace_id)
        self._reschedule()
        if self._events is not None:
            self._events.closed(workspace_id, None, CloseCode.NOT_FOUND)

    async def hold(self, workspace_id: str, client_id: str) -> int:
        return await self._apply(
            workspace_id, lambda now: self.presence.hold(workspace_id, client_id, now)
        )

    async def attach(
        self,
        workspace_id: str,
        client_id: str,
        user: str | None = None,
        profile: Profile | None = None,
    ) -> Snapshot:
        await self._apply(
            workspace_id,
            lambda now: self.presence.attach(
                workspace_id, client_id, now, user=user, profile=profile
            ),
        )
        return self.presence.snapshot(workspace_id)  # no suspension since the attach

    async def set_session(self, workspace_id: str, client_id: str, session_id: str) -> int:
        return await self._apply(
            workspace_id,
            lambda now: self.presence.set_session(workspace_id, client_id, session_id, now),
        )

    async def detach(self, workspace_id: str, client_id: str) -> int:
        diff = self.presence.detach(workspace_id, client_id, self._now())  # tolerant, never raises
        self._commit(diff)
        return diff.seq

    async def set_profile(self, workspace_id: str, client_id: str, profile: Profile) -> int:
        return await self._apply(
            workspace_id,
            lambda now: self.presence.set_profile(workspace_id, client_id, profile, now),
        )

    async def release(self, workspace_id: str, client_id: str) -> int:
        return await self._apply(
            workspace_id, lambda now: self.presence.release(workspace_id, client_id, now)
        )

    async def retire(self, client_id: str) -> None:
        if self._retired is not None:  # recorded first: a retire that answered is never undone
            await self._retired.retire_client(client_id, time.time() + self.presence.retire_ttl)
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
        return await self._learn(workspace_id, lambda: self.presence.snapshot(workspace_id))

    async def viewers(self, workspace_id: str, session_id: str, limit: int) -> Viewers:
        return await self._learn(
            workspace_id, lambda: self.presence.viewers(workspace_id, session_id, limit)
        )

    async def claims(self, workspace_id: str) -> list[ClaimView]:
        return await self._learn(workspace_id, lambda: self.presence.claims(workspace_id))

    async def claim_count(self) -> int:
        return self.presence.claim_count()

    def claim_states(self) -> dict[str, int]:
        return self.presence.claim_states()
