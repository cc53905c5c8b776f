"""Longer random histories of the backends against the pure core (tests/test_replay.py).

    .venv/bin/python scripts/replay.py                         # 500 histories per backend
    .venv/bin/python scripts/replay.py --examples 5000 --kind redis --seed 7
    .venv/bin/python scripts/replay.py --examples 0            # the scripted histories only

Each history runs on the memory backend and/or two Redis nodes on a redis-server of its own
(free port), and on the core with the occupancy rules; every step is checked. Prints the seed,
then per backend the histories and steps run, what they exercised (operations, refusals,
claims that expired by state, webhook events) and the time taken. The histories written by
hand (SCRIPTED in the test) run first, then the random ones. On the first history where a
backend differs from the core, prints it (a random one shrunk, unless --no-shrink) and exits 1.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
import traceback
from collections import Counter
from pathlib import Path

# The checkout this file is in: its tests, and its hub (scripts/mutate_lua.py runs a copy of
# this file beside a mutated copy of the hub).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hypothesis import HealthCheck, Phase, given, seed, settings  # noqa: E402

from tests.services import RedisServer  # noqa: E402
from tests.test_replay import HISTORIES, KINDS, SCRIPTED, Op, run_history  # noqa: E402


def replay(kind: str, examples: int, at: int, shrink: bool, redis: RedisServer | None) -> bool:
    """Run ``examples`` histories on ``kind`` from seed ``at``; whether all of them held."""
    ran: Counter[str] = Counter()
    histories = 0
    phases = [Phase.generate, Phase.shrink] if shrink else [Phase.generate]

    @seed(at)
    @settings(
        max_examples=max(1, examples),  # (0: not run)
        deadline=None,
        database=None,
        phases=phases,
        suppress_health_check=list(HealthCheck),
    )
    @given(ops=HISTORIES)
    def check(ops: list[Op]) -> None:
        nonlocal histories
        histories += 1
        ran.update(run_history(kind, ops, redis))

    started = time.monotonic()
    held = True
    for name, ops in SCRIPTED.items():
        histories += 1
        try:
            ran.update(run_history(kind, ops, redis))
        except Exception as exc:
            traceback.print_exception(exc, limit=-3, file=sys.stdout)
            print(f"{kind}: FAILED on the scripted history {name!r}: {type(exc).__name__}: {exc}")
            held = False
            break
    try:
        if held and examples > 0:  # 0: the scripted histories only
            check()
    except Exception as exc:  # hypothesis re-raises the (shrunk) failure, the history noted
        traceback.print_exception(exc, limit=-3, file=sys.stdout)
        print(f"{kind}: FAILED after {histories} histories: {type(exc).__name__}: {exc}")
        held = False
    took = time.monotonic() - started
    steps = sum(n for what, n in ran.items() if ":" not in what)
    print(f"{kind}: {histories} histories, {steps} steps in {took:.1f} s")
    for what, n in sorted(ran.items()):
        print(f"  {what:32} {n}")
    return held


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=500, help="histories per backend")
    parser.add_argument("--kind", choices=[*KINDS, "both"], default="both")
    parser.add_argument("--seed", type=int, default=None, help="default: a random one")
    parser.add_argument("--no-shrink", action="store_true", help="report the first failure as is")
    args = parser.parse_args(argv)
    at = args.seed if args.seed is not None else random.randrange(2**32)
    print(f"seed {at} (rerun: scripts/replay.py --seed {at} --examples {args.examples})")
    kinds = KINDS if args.kind == "both" else (args.kind,)
    redis = RedisServer() if "redis" in kinds else None
    try:
        held = [replay(kind, args.examples, at, not args.no_shrink, redis) for kind in kinds]
    finally:
        if redis is not None:
            redis.kill()
    return 0 if all(held) else 1


if __name__ == "__main__":
    raise SystemExit(main())
