"""The webhook outbox: one Redis Stream of events, one consumer group per receiver.

The scripts that move counts also decide occupied and vacated (the rules of
:mod:`hub.occupancy`; a vacated delay is one more timer of the workspace) and append the
events to one Redis Stream, ``hub:webhooks``, in the same script. Each receiver is a consumer
group; a node delivers a batch at a time and renews its claim on it while it does; a batch
whose node stopped renewing it for ``node_ttl`` is taken over (``XAUTOCLAIM``) by another
(``lua/_outbox.lua`` has the rules). Not on a Redis Cluster: a workspace's script cannot
append to a stream outside its slot.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from hub.backends.redis.scripts import OUTBOX_KEYS
from hub.webhook import BATCH, Batch, OutboxStats

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class WebhookStream:
    """Webhooks on: the receivers (one consumer group each), the vacated delay in seconds, and
    the stream's bound (events beyond it are trimmed, oldest first)."""

    receivers: tuple[str, ...]
    vacated_delay: float = 5.0
    limit: int = 400_000


class RedisOutbox:
    """One receiver's view of the outbox stream, for ``node``: a batch it took is taken over
    by another node when not renewed for ``takeover_ms``; it renews every ``keep_every``
    seconds (the node's heartbeat: a third of the takeover bound)."""

    def __init__(
        self,
        scripts: Mapping[str, Any],
        group: str,
        node: str,
        *,
        takeover_ms: int,
        keep_every: float,
    ) -> None:
        self._scripts = scripts
        self._group = group
        self._node = node
        self._takeover_ms = takeover_ms
        self.keep_every = keep_every
        self._stats = OutboxStats()
        self._dropped = 0

    async def _run(self, name: str, *args: Any) -> Any:
        script = self._scripts[name]
        return await script(keys=OUTBOX_KEYS, args=[self._group, self._node, *args])

    def _note(self, depth: Any, age_ms: Any) -> None:
        self._stats = OutboxStats(int(depth), int(age_ms) / 1000, self._dropped)

    async def take(self) -> Batch:
        flat, dropped, depth, age = await self._run("outbox_take", BATCH, self._takeover_ms)
        if int(dropped):
            self._dropped += int(dropped)
            log.error(
                "webhook events for %s dropped: the queue bound trimmed %s (%d so far)",
                self._group,
                dropped,
                self._dropped,
            )
        self._note(depth, age)
        ids = flat[0::2]
        return Batch([e.encode() for e in flat[1::2]], ids)

    async def keep(self, batch: Batch) -> bool:
        kept, depth, age = await self._run("outbox_keep", *batch.handle)
        self._note(depth, age)
        return bool(kept)

    async def ack(self, batch: Batch) -> None:
        depth, age = await self._run("outbox_ack", *batch.handle)
        self._note(depth, age)

    def stats(self) -> OutboxStats:
        return self._stats
