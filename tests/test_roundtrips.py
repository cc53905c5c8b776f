"""Round trips to Redis per operation, counted on the wire (tests/roundtrips.py): a workspace
create at most 3, a join at most 2 (cold or warm), a ``set_session`` and a REST read at most 1.

A standalone Redis through the counting proxy without delay, so the test is quick; counts, not
times, are asserted. The trial's operations run 1.2 s apart: a pooled connection idle that long
must cost no extra round trip (a PING before the command once did). The first use's run 0.2 s
apart (what one operation leaves running is over by then): its bound, three times the target,
is for the scripts loaded on the way, not for idle connections. ``scripts/roundtrips.py`` gives
the same figures through a 100 ms link, with times.
"""

from __future__ import annotations

from pathlib import Path

from tests.roundtrips import TARGETS, RoundTrips, table


async def test_each_operation_costs_at_most_its_target_in_round_trips(tmp_path: Path) -> None:
    async with RoundTrips(tmp_path) as rt:
        first, results = await rt.measure(trials=1, gap=1.2, first_gap=0.2)
    print(table(first, 0) + "\n" + table(results, 0))
    for m in results:
        assert 1 <= m.count <= TARGETS[m.name], (m.name, m.counts, m.what)
    # The first use loads each script once on the way (NOSCRIPT, SCRIPT LOAD, EVALSHA):
    # more round trips, but never more than that.
    for m in first:
        assert m.count <= 3 * TARGETS[m.name], (m.name, m.counts, m.what)
