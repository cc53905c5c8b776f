"""The cluster-wide timer index (``hub:timers``: workspace -> earliest deadline, ms) of the
Redis backend, run as its scripts run (registered by ``scripts.load``, each with its prelude:
``arm.lua``, then ``due.lua`` and ``reindex.lua`` as a sweep calls them) on a redis-server of
the test's own.

The rule under test: an entry never hides a timer. An arm lowers the entry to an earlier
deadline; an entry already due is never moved later (chaos seed 103: every node was cut off
from Redis past a vacated timer's deadline, an arm of an hour-long timer then moved the due
entry an hour on, and the vacated event never left), and a timer armed while a sweep is in
flight survives that sweep's reindex."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import redis

from hub.backends.redis.scripts import load
from tests.services import RedisServer

INDEX = "hub:timers"


class Scripts:
    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        loaded = load(client, cluster=False, vacated_ms=-1, hook_max=0, tomb_ms=600_000)
        self._arm, self._due, self._reindex = loaded["arm"], loaded["due"], loaded["reindex"]

    def now(self) -> int:
        seconds, micros = self.client.time()
        return int(seconds) * 1000 + int(micros) // 1000

    def arm(self, workspace: str, deadline: int) -> None:
        self._arm(keys=[INDEX], args=[workspace, deadline])

    def due(self) -> list[tuple[str, int]]:
        flat: list[Any] = self._due(keys=[INDEX], args=[100])
        return [(flat[i].decode(), int(flat[i + 1])) for i in range(0, len(flat), 2)]

    def reindex(self, workspace: str, swept: int, next_deadline: int) -> None:
        self._reindex(keys=[INDEX], args=[workspace, swept, next_deadline])

    def entry(self, workspace: str) -> float | None:
        score: float | None = self.client.zscore(INDEX, workspace)
        return score


@pytest.fixture(scope="module")
def scripts() -> Iterator[Scripts]:
    server = RedisServer()
    client = redis.Redis.from_url(server.url)
    try:
        yield Scripts(client)
    finally:
        client.close()
        server.kill()


def test_an_arm_lowers_the_entry_and_never_raises_one_not_due(scripts: Scripts) -> None:
    now = scripts.now()
    scripts.arm("w1", now + 60_000)
    scripts.arm("w1", now + 30_000)
    assert scripts.entry("w1") == now + 30_000
    scripts.arm("w1", now + 90_000)  # later, not due: the entry keeps the earlier timer
    assert scripts.entry("w1") == now + 30_000


def test_a_due_entry_is_not_moved_later_by_an_arm(scripts: Scripts) -> None:
    """No node swept the due entry yet; an hour-long timer armed now must not hide it."""
    now = scripts.now()
    scripts.arm("w2", now - 5_000)  # due five seconds ago, never swept
    scripts.arm("w2", now + 3_600_000)
    entry = scripts.entry("w2")
    assert entry is not None and entry <= now - 5_000
    assert "w2" in dict(scripts.due())


def test_a_timer_armed_during_a_sweep_survives_its_reindex(scripts: Scripts) -> None:
    """due.lua read the entry, expire ran (next deadline: none), then a timer was armed and
    only then did reindex.lua run: the entry still covers the new timer (due now, so the
    next sweep indexes its deadline, or at its deadline)."""
    now = scripts.now()
    scripts.arm("w3", now - 1_000)
    swept = dict(scripts.due())["w3"]
    scripts.arm("w3", now + 20_000)  # armed between the sweep's expire and its reindex
    scripts.reindex("w3", swept, -1)  # the sweep's expire saw no timer left
    entry = scripts.entry("w3")
    assert entry is not None and entry <= now + 20_000
    if entry <= now:  # swept again: expire now sees the new timer
        scripts.reindex("w3", dict(scripts.due())["w3"], now + 20_000)
    assert scripts.entry("w3") == now + 20_000
    assert "w3" not in dict(scripts.due())


def test_a_sweep_with_nothing_armed_meanwhile_moves_or_removes_the_entry(
    scripts: Scripts,
) -> None:
    now = scripts.now()
    scripts.arm("w4", now - 1_000)
    scripts.reindex("w4", dict(scripts.due())["w4"], now + 5_000)
    assert scripts.entry("w4") == now + 5_000
    scripts.arm("w5", now - 1_000)
    scripts.reindex("w5", dict(scripts.due())["w5"], -1)
    assert scripts.entry("w5") is None
