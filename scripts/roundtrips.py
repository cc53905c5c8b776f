"""How many round trips to Redis each operation of a hub node costs, through a far link.

    .venv/bin/python scripts/roundtrips.py                 # 100 ms each way, 5 trials
    .venv/bin/python scripts/roundtrips.py --delay 0 --trials 3

A ``hub serve`` process on a ``redis-server`` of this script's own, through the tests' fault
proxy with ``--delay`` seconds added each way (a 200 ms round trip by default). The proxy
counts the exchanges (a request up to its reply) of each operation, the node's background
traffic left out (tests/roundtrips.py says how): a workspace create (REST, with a client_id:
a creation hold), a WebSocket join up to its snapshot (cold: the first socket of the
workspace on the node; warm: another one while the first is open), a ``set_session`` up to
its ack, and a REST read (GET the workspace). Each is run ``--gap`` seconds after the last
(a node at rest). The elapsed time over the round trip cross-checks the count. The first
table is each operation's first run on a Redis that has not run the hub's scripts yet.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the tests' machinery
from tests.roundtrips import TARGETS, RoundTrips, now, table  # noqa: E402


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--delay", type=float, default=0.1, help="seconds each way (0.1)")
    parser.add_argument("--trials", type=int, default=5, help="runs of each operation (5)")
    parser.add_argument("--gap", type=float, default=1.5, help="seconds between runs (1.5)")
    parser.add_argument("--show", action="store_true", help="print each run's commands")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="hub-roundtrips-") as tmp:
        async with RoundTrips(Path(tmp), args.delay) as rt:
            first, results = await rt.measure(args.trials, args.gap)
    print(f"{now()}, delay {args.delay * 1000:.0f} ms each way, {args.trials} trials\n")
    print("First use (the hub's scripts not loaded in Redis yet):\n")
    print(table(first, args.delay))
    print(f"\nAt rest ({args.gap} s between operations):\n")
    print(table(results, args.delay))
    if args.show:
        for m in first + results:
            print(m.name, m.what)
    over = [m.name for m in results if m.count > TARGETS[m.name]]
    if over:
        print(f"\nover target: {', '.join(over)}")
    return 1 if over else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
