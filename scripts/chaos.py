"""Randomized fault schedules on several real ``hub serve`` nodes (tests/chaos.py), from seeds.

    .venv/bin/python scripts/chaos.py                          # one schedule, a random seed
    .venv/bin/python scripts/chaos.py --seed 7 --rounds 12     # that schedule again
    .venv/bin/python scripts/chaos.py --schedules 20 --rounds 12   # seeds seed..seed+19
    .venv/bin/python scripts/chaos.py --seed 7 --logs /tmp/chaos   # each node's whole log

Each schedule starts its own redis-server (free port), a fresh PostgreSQL database, a webhook
receiver and ``--nodes`` hub processes, plays the workload and one or two faults per round,
and checks every node, socket and webhook against the truth within 10 s of each heal. Prints
the seed first, then per round the faults, the seconds from the heal to the truth and any
violation (with the nodes' last log lines); at the end the convergence per fault kind
(rounds, median, max). Exits 1 on the first schedule that breaks a promise.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the tests' fault machinery
from tests.chaos import Round, convergence_figures, run_schedule  # noqa: E402


async def main(args: argparse.Namespace) -> int:
    every: list[Round] = []
    started = time.monotonic()
    for seed in range(args.seed, args.seed + args.schedules):
        print(f"schedule seed {seed}: {args.rounds} rounds on {args.nodes} nodes", flush=True)
        with tempfile.TemporaryDirectory(prefix="hub-chaos-") as tmp:
            logs = args.logs / f"seed-{seed}" if args.logs is not None else None
            chaos = await run_schedule(
                seed,
                args.rounds,
                Path(tmp),
                nodes=args.nodes,
                say=lambda s: print(s, flush=True),
                logs=logs,
            )
        every += chaos.rounds
        if chaos.violations or len(chaos.rounds) < args.rounds:
            print(f"FAILED: seed {seed} (rerun: scripts/chaos.py --seed {seed})", flush=True)
            report(every)
            return 1
        print(f"seed {seed}: passed", flush=True)
    took = time.monotonic() - started
    print(f"all {args.schedules} schedules passed ({len(every)} rounds, {took / 60:.1f} min)")
    report(every)
    return 0


def report(rounds: list[Round]) -> None:
    print("convergence after the heal, per fault kind: rounds, median, max")
    for kind, (n, median, most) in convergence_figures(rounds).items():
        print(f"  {kind:<14} {n:4}  {median:5.2f} s  {most:5.2f} s")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=None, help="first seed (default: random)")
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--schedules", type=int, default=1, help="seeds seed..seed+N-1")
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument(
        "--logs",
        type=Path,
        default=None,
        help="a folder for each seed's node logs (debug level) and timed operations",
    )
    args = parser.parse_args()
    if args.seed is None:
        args.seed = random.randrange(1_000_000)
    print(f"seed {args.seed}", flush=True)
    sys.exit(asyncio.run(main(args)))
