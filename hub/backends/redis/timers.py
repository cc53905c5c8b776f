"""Timers: the deadlines in Redis and the node's loops that act on time.

Holds, graces, tombstones and vacated delays are deadlines (ms, Redis's clock) in a
per-workspace sorted set, armed by the script that made them. Every workspace's earliest
deadline is indexed cluster-wide in ``hub:timers`` (``lua/_index.lua``): outside a Cluster by
that same script, on a Cluster by :meth:`Timers.arm` right after it (the index is in another
slot). Every node sweeps the index (:meth:`Timers.sweep`, every ``sweep_interval``):
``due.lua`` takes the workspaces whose deadline passed, ``expire.lua`` fires each one's due
timers, and ``reindex.lua`` moves its entry to its next deadline (an entry a timer armed
meanwhile changed is kept, only lowered). The expiry script removes a claim at most once,
whichever node runs it first.

The node's periodic steps (the heartbeat, the sweep) run at a fixed rate (:func:`every`):
a slow step, over a far link, does not stretch the period.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from redis.exceptions import RedisClusterException, RedisError

from hub.backends.redis.scripts import TIMERS
from hub.errors import Unavailable

log = logging.getLogger(__name__)

SWEEP_BATCH = 100  # workspaces taken from the index per due.lua call


async def pause(stopping: asyncio.Event, seconds: float) -> None:
    """Sleep, or less when ``stopping`` is set."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stopping.wait(), seconds)


async def every(
    interval: float,
    step: Callable[[], Awaitable[None]],
    what: str,
    *,
    quiet: bool,
    stopping: asyncio.Event,
    failed: Callable[[], None],
) -> None:
    """Run ``step`` every ``interval`` (at a fixed rate) until ``stopping``; Redis being down
    is logged (and reported to ``failed``: the node's truth is to be re-asserted), never
    fatal."""
    loop = asyncio.get_running_loop()
    while not stopping.is_set():
        started = loop.time()
        try:
            await step()
        except asyncio.CancelledError:
            raise
        except (RedisError, OSError, Unavailable, RedisClusterException) as exc:
            failed()
            log.log(logging.DEBUG if quiet else logging.WARNING, "%s failed: %s", what, exc)
        except Exception:
            log.exception(what)
        await pause(stopping, max(0.0, started + interval - loop.time()))


class Timers:
    """The deadline index, through the scripts of ``scripts`` (the backend's, kept up to date
    in place); ``expire`` runs a workspace's expiry script the way the backend runs any."""

    def __init__(
        self,
        scripts: Mapping[str, Any],
        expire: Callable[[str], Awaitable[Any]],
        now: Callable[[], list[int]] = list,
    ) -> None:
        self.scripts = scripts
        self.expire = expire
        self.now = now  # the scripts' clock argument (none: Redis's TIME), see scripts.load
        self.cluster = False  # on a Cluster the scripts cannot index their timers themselves

    async def arm(self, workspace_id: str, deadline: int) -> None:
        """Index a timer a script armed (``deadline`` < 0: none); outside a Cluster the script
        did it itself."""
        if deadline >= 0 and self.cluster:
            await self.scripts["arm"](keys=[TIMERS], args=[workspace_id, deadline, *self.now()])

    async def sweep(self) -> None:
        """Fire due holds and graces, whichever node gets there first."""
        due = await self.scripts["due"](keys=[TIMERS], args=[SWEEP_BATCH, *self.now()])
        for i in range(0, len(due), 2):
            workspace_id, swept = due[i], due[i + 1]
            next_deadline = await self.expire(workspace_id)
            await self.scripts["reindex"](keys=[TIMERS], args=[workspace_id, swept, next_deadline])
