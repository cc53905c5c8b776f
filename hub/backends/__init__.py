"""Presence backends: where claims live, behind the :class:`PresenceBackend` port.

The hub shell talks only to this port. ``memory`` (the default) wraps the pure core with a
clock and one timer; a shared backend (Redis) implements the same calls for several processes.
Every mutating call returns the :class:`~hub.presence.Diff` it committed and also hands each
diff that moved a count to the ``on_change`` callback given to :meth:`start`, which is how the
hub learns what to fan out (for a shared backend, changes made by other processes arrive there
too).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from hub.presence import ClaimView, Diff, Snapshot

__all__ = ["ChangeSink", "PresenceBackend"]

ChangeSink = Callable[[Diff], None]


class PresenceBackend(Protocol):
    async def start(self, on_change: ChangeSink) -> None: ...

    async def close(self) -> None: ...

    async def ping(self) -> None:
        """Raise if the backend cannot answer now."""
        ...

    async def add_workspace(self, workspace_id: str) -> None: ...

    async def remove_workspace(self, workspace_id: str) -> None: ...

    async def hold(self, workspace_id: str, client_id: str) -> Diff: ...

    async def attach(self, workspace_id: str, client_id: str) -> Diff: ...

    async def set_session(self, workspace_id: str, client_id: str, session_id: str) -> Diff: ...

    async def detach(self, workspace_id: str, client_id: str) -> Diff: ...

    async def release(self, workspace_id: str, client_id: str) -> Diff: ...

    async def retire(self, client_id: str) -> list[Diff]: ...

    async def is_retired(self, client_id: str) -> bool: ...

    async def snapshot(self, workspace_id: str) -> Snapshot: ...

    async def claims(self, workspace_id: str) -> list[ClaimView]: ...

    async def claim_count(self) -> int:
        """Claims in every workspace (for operators and leak checks)."""
        ...
