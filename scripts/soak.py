"""Soak: sockets connecting, switching and disconnecting at random against one hub, for a while.

    .venv/bin/python scripts/soak.py                      # 5,000 sockets, 10 minutes
    .venv/bin/python scripts/soak.py --n 200 --seconds 10  # the suite's short variant
    .venv/bin/python scripts/soak.py --redis               # presence on a redis-server of its own

One ``hub serve`` process (defaults, but for a detach grace of an hour, so that a client keeps
its session across reconnects and the truth below is exact, and no per-socket rate limit).
This process plays ``--n`` clients over 10 workspaces; each holds 0 to 2 sockets and, at
``--rate`` actions a second in all, opens one, closes one, or switches its session (always on
its first socket, so its switches stay in order).

Checked (the run fails, exit 1, when any check fails):

- every ``--sample`` seconds the actions pause until every ack is back, then each workspace's
  REST presence must equal the truth: per session, the clients with a socket open viewing it;
- afterwards, with every socket closed and every claim released: zero claims, sockets and
  rooms, no asyncio task, open file or more than 10% of RSS beyond what the hub had after a
  warm-up round (the same churn for ``--warmup`` seconds, by default as long as the soak up to
  a minute, then everything closed and released): what a started hub that has served such a
  load holds, so that a leak, not the allocator's first high-water mark, is what shows.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench  # noqa: E402  (scripts/ is not a package)
from bench import Driver, Server, _http, _raise_nofile, connect_all, free_port, poll  # noqa: E402

SESSIONS = [f"S{i}" for i in range(10)] + [""]
WORKSPACES = 10


@dataclass
class Client:
    id: str
    workspace: str
    sockets: list[Driver] = field(default_factory=list)
    session: str = ""  # the last session sent; the truth once its ack is back
    ref: int = 0
    last: Driver | None = None  # the socket the last switch went out on
    opening: int = 0  # sockets being opened

    @property
    def settled(self) -> bool:
        return self.last is None or self.ref in self.last.acks


@dataclass
class Report:
    n: int
    seconds: float
    actions: int = 0
    samples: int = 0
    mismatches: int = 0
    baseline: dict[str, Any] = field(default_factory=dict)
    final: dict[str, Any] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)


def fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


class Soak:
    def __init__(self, server: Server, n: int, rate: float, seed: int) -> None:
        self.server = server
        self.rate = rate
        self.rng = random.Random(seed)
        port = server.port
        self.workspaces = [server.workspace(f"/soak/{i}") for i in range(WORKSPACES)]
        self.clients = [
            Client(f"00000000-0000-4000-8000-{i:012d}", self.workspaces[i % WORKSPACES])
            for i in range(n)
        ]
        self.port = port
        self.tasks: set[asyncio.Task[None]] = set()

    def path(self, c: Client) -> str:
        return f"/v1/workspaces/{c.workspace}/ws?client_id={c.id}"

    async def open(self, c: Client) -> None:
        try:
            (sock,) = await connect_all(Driver, self.port, [self.path(c)])
            c.sockets.append(sock)
        finally:
            c.opening -= 1

    async def open_all(self) -> None:
        socks = await connect_all(Driver, self.port, [self.path(c) for c in self.clients])
        for c, s in zip(self.clients, socks, strict=True):
            c.sockets.append(s)

    def close(self, c: Client, index: int) -> None:
        sock = c.sockets.pop(index)
        if sock.transport is not None:
            sock.transport.close()

    def act(self) -> None:
        """One random action; opening runs on in the background."""
        c = self.rng.choice(self.clients)
        roll = self.rng.random()
        if roll < 0.4 and c.sockets:
            c.session = self.rng.choice(SESSIONS)
            c.ref += 1
            c.last = c.sockets[0]
            c.last.set_session(c.ref, c.session)
        elif roll < 0.7 and c.sockets and (len(c.sockets) > 1 or c.settled):
            # Switches go out on the first socket. The hub orders frames per socket, not
            # across sockets, so a socket that carried switches closes only once they are
            # acknowledged: a later switch on a new socket cannot overtake them.
            self.close(c, -1)
        elif len(c.sockets) + c.opening < 2:
            c.opening += 1
            task = asyncio.create_task(self.open(c))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def settle(self) -> None:
        """Wait until every open has finished and every switch sent is acknowledged."""
        await poll(
            lambda: all(not c.opening and c.settled for c in self.clients),
            time.monotonic() + 20,
        )

    def truth(self, workspace: str) -> tuple[dict[str, int], int]:
        counts: dict[str, int] = {}
        online = 0
        for c in self.clients:
            if c.workspace == workspace and c.sockets:
                online += 1
                if c.session:
                    counts[c.session] = counts.get(c.session, 0) + 1
        return counts, online

    async def sample(self) -> int:
        """Compare every workspace with the truth (retrying while closes are in flight)."""
        await self.settle()
        wrong = 0
        for w in self.workspaces:
            want = self.truth(w)
            deadline = time.monotonic() + 5
            while True:
                snap = await asyncio.to_thread(
                    _http, self.port, "GET", f"/v1/workspaces/{w}/presence"
                )
                if (snap["counts"], snap["online"]) == want:
                    break
                if time.monotonic() > deadline:
                    print(f"mismatch in {w}: {snap} != {want}", file=sys.stderr)
                    wrong += 1
                    break
                await asyncio.sleep(0.05)
        return wrong

    async def churn(self, seconds: float, every: float, report: Report) -> None:
        t0 = time.monotonic()
        next_sample = t0 + every
        done = 0
        while time.monotonic() - t0 < seconds:
            due = int((time.monotonic() - t0) * self.rate) + 1
            while done < due:
                self.act()
                done += 1
            if time.monotonic() >= next_sample:
                report.samples += 1
                report.mismatches += await self.sample()
                next_sample = time.monotonic() + every
            await asyncio.sleep(max(0.0, t0 + done / self.rate - time.monotonic()))
        report.actions += done
        report.samples += 1
        report.mismatches += await self.sample()

    async def wind_down(self) -> None:
        """Close every socket and release every claim; then wait for the hub to be idle."""
        await self.settle()
        for c in self.clients:
            while c.sockets:
                self.close(c, 0)
            c.session = ""  # released below: the next socket starts on no session
        await asyncio.sleep(0.5)
        await asyncio.gather(
            *(
                asyncio.to_thread(
                    _http, self.port, "DELETE", f"/v1/workspaces/{c.workspace}/clients/{c.id}"
                )
                for c in self.clients
            )
        )
        await poll(lambda: self.stats()["sockets"] == 0, time.monotonic() + 10)
        await asyncio.sleep(1.0)

    def stats(self) -> dict[str, Any]:
        # Descriptors first: the stats request's own connection must not be counted.
        open_fds = fds(self.server.proc.pid)
        rss_mb = round(self.server.rss() / 2**20, 1)
        stats: dict[str, Any] = _http(self.port, "GET", "/v1/stats")
        return {**stats, "fds": open_fds, "rss_mb": rss_mb}


async def run(
    n: int,
    seconds: float,
    rate: float,
    every: float,
    seed: int,
    warmup: float,
    rss: float,
    redis: bool = False,
) -> Report:
    report = Report(n, seconds)
    with tempfile.TemporaryDirectory() as workdir:
        redis_proc, env = None, {}
        if redis:
            redis_proc, env["HUB_REDIS_URL"] = bench._spawn_redis()
        server = Server("hub", free_port(), workdir, env)
        try:
            server.wait_ready()
            soak = Soak(server, n, rate, seed)
            # Warm-up: the same churn, then everything closed: the baseline.
            await soak.open_all()
            await soak.churn(warmup, every, Report(n, 0))
            await soak.wind_down()
            report.baseline = soak.stats()
            # The soak.
            await soak.open_all()
            await soak.churn(seconds, every, report)
            await soak.wind_down()

            # Sockets still closing hold a descriptor for a moment, and a background step (a
            # heartbeat's, a sweep's) a task; a leak holds either for good. (Descriptors are
            # read without a request, then again once the task polls' requests have closed.)
            pid, base = server.proc.pid, report.baseline
            await poll(lambda: fds(pid) <= base["fds"], time.monotonic() + 10)
            await poll(lambda: soak.stats()["tasks"] <= base["tasks"], time.monotonic() + 10)
            await poll(lambda: fds(pid) <= base["fds"], time.monotonic() + 10)
            report.final = soak.stats()
        finally:
            log = server.stop()
            if redis_proc is not None:
                redis_proc.kill()
                redis_proc.wait()
    base, final = report.baseline, report.final
    if report.mismatches:
        report.failures.append(f"{report.mismatches} samples differed from the truth")
    for key in ("claims", "sockets", "rooms"):
        if final[key]:
            report.failures.append(f"{final[key]} {key} left")
    for key in ("tasks", "fds"):
        if final[key] > base[key]:
            report.failures.append(f"{final[key] - base[key]} {key} beyond the baseline")
    if final["rss_mb"] > base["rss_mb"] * (1 + rss):
        report.failures.append(f"RSS {final['rss_mb']} MB > {1 + rss:.0%} of {base['rss_mb']} MB")
    if "Traceback" in log:
        report.failures.append("the hub logged a traceback")
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=5000, help="clients (one socket each at first)")
    parser.add_argument("--seconds", type=float, default=600, help="length of the soak")
    parser.add_argument("--rate", type=float, default=500, help="actions per second, in all")
    parser.add_argument("--sample", type=float, default=10, help="seconds between checks")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--warmup", type=float, help="warm-up seconds (default: min(T, 60))")
    parser.add_argument(
        "--rss-tolerance",
        type=float,
        default=0.10,
        help="RSS growth allowed over the baseline (0.10: 10%%)",
    )
    parser.add_argument("--redis", action="store_true", help="presence on Redis (spawned)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    bench.HUB_ARGS.extend(["--detach-grace", "3600"])
    warmup = args.warmup if args.warmup is not None else min(args.seconds, 60.0)
    params = (
        args.n, args.seconds, args.rate, args.sample, args.seed, warmup, args.rss_tolerance,
        args.redis,
    )  # fmt: skip
    _raise_nofile()
    try:
        import uvloop

        report = uvloop.run(run(*params))
    except ImportError:
        report = asyncio.run(run(*params))
    print(json.dumps(asdict(report), indent=2))
    if args.json:
        args.json.write_text(json.dumps(asdict(report), indent=2))
    print("soak:", "passed" if not report.failures else "FAILED: " + "; ".join(report.failures))
    return 0 if not report.failures else 1


if __name__ == "__main__":
    sys.exit(main())
