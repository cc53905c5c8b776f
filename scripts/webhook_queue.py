"""What a receiver that is down for an hour at 100 events/s costs, and how fast the backlog
drains when it returns: the in-process queue and the Redis Stream side by side.

    .venv/bin/python scripts/webhook_queue.py [--events 360000] [--rate 100]

Prints, for each outbox: memory per queued event and for the whole hour, what the bound
(HUB_WEBHOOK_QUEUE, default 400,000) does past it, and the drain rate into a local receiver
(HTTP on loopback, 100 events per POST, signature checked) in events/s. A redis-server of
its own is started on a free port (the shared one on 6379 is never touched).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import hashlib
import hmac
import shutil
import socket
import subprocess
import sys
import threading
import time
import tracemalloc
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx  # noqa: E402
import redis  # noqa: E402

from hub.backends.redis import OUTBOX, OUTBOX_KEYS, RedisBackend, WebhookStream  # noqa: E402
from hub.occupancy import Event  # noqa: E402
from hub.webhook import Deliverer, MemoryOutbox, Outbox, encode_event  # noqa: E402

SECRET = "x" * 40


def events(n: int) -> list[bytes]:
    """``n`` realistic encoded events (uuid workspaces, a few sessions each)."""
    workspaces = [str(uuid.uuid4()) for _ in range(max(1, n // 50))]
    now = int(time.time() * 1000)
    out = []
    for i in range(n):
        workspace = workspaces[i % len(workspaces)]
        e = Event("session_vacated", workspace, f"session-{i % 7}", 10**15 + i)
        out.append(encode_event(e, uuid.uuid4().hex, now))
    return out


class Receiver:
    """Counts the events of signed deliveries (ThreadingHTTPServer on a free port)."""

    def __init__(self) -> None:
        self.received = 0
        lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                mac = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
                assert self.headers["X-Hub-Signature-256"] == f"sha256={mac}"
                with lock:
                    receiver.received += body.count(b'"name":')
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/h"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


async def drain(outbox: Outbox, total: int) -> float:
    """Events per second a deliverer empties ``outbox`` with into a local receiver."""
    receiver = Receiver()
    async with httpx.AsyncClient(timeout=5) as http:
        deliverer = Deliverer(receiver.url, SECRET, outbox, http, retry_min=0.1, retry_max=1)
        started = time.perf_counter()
        task = asyncio.ensure_future(deliverer.run())
        while receiver.received < total:  # noqa: ASYNC110 (a thread counts)
            await asyncio.sleep(0.05)
        took = time.perf_counter() - started
        task.cancel()
    receiver.server.shutdown()
    return total / took


def memory(n: int, limit: int) -> None:
    encoded = events(n)
    gc.collect()
    tracemalloc.start()
    outbox = MemoryOutbox("r", limit)
    before = tracemalloc.get_traced_memory()[0]
    outbox.put(encoded)
    per = (tracemalloc.get_traced_memory()[0] - before) / n  # the deque's share
    tracemalloc.stop()
    size = sum(sys.getsizeof(e) for e in encoded) / n
    print(f"memory outbox: {n} events held, {size + per:.0f} B/event "
          f"({(size + per) * n / 2**20:.0f} MiB for them)")  # fmt: skip
    extra = limit - n + 50_000
    outbox.put(events(extra))
    s = outbox.stats()
    print(f"  {extra} more with bound {limit}: {s.depth} wait, {s.dropped} dropped (counted)")
    rate = asyncio.run(drain(outbox, s.depth))
    print(f"  drain into a local receiver: {rate:,.0f} events/s ({s.depth / rate:.0f} s)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def on_redis(n: int, limit: int) -> None:
    binary = shutil.which("redis-server")
    if binary is None:
        print("redis: no redis-server here")
        return
    port = free_port()
    args = [binary, "--port", str(port), "--save", "", "--appendonly", "no"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL)
    try:
        client = redis.Redis(port=port)
        for _ in range(100):
            try:
                client.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.05)
        url = "http://127.0.0.1:9/h"
        client.xgroup_create(OUTBOX, url, "$", mkstream=True)
        used = int(client.info("memory")["used_memory"])
        pipe = client.pipeline(transaction=False)
        for i, e in enumerate(events(n), start=1):
            pipe.xadd(OUTBOX, {"n": i, "e": e}, maxlen=limit, approximate=False)
            if i % 5000 == 0:
                pipe.execute()
        pipe.set(OUTBOX_KEYS[1], n)
        pipe.execute()
        per = (int(client.info("memory")["used_memory"]) - used) / n
        print(f"redis stream: {n} events held, {per:.0f} B/event ({per * n / 2**20:.0f} MiB)")
        client.close()

        async def run() -> float:
            backend = RedisBackend(
                f"redis://127.0.0.1:{port}/0",
                known=_known,
                webhooks=WebhookStream((url,), 5.0, limit),
            )
            rate = await drain(backend.outbox(url), n)
            await backend.redis.aclose()
            return rate

        rate = asyncio.run(run())
        print(f"  drain into a local receiver: {rate:,.0f} events/s ({n / rate:.0f} s)")
    finally:
        proc.kill()
        proc.wait()


async def _known(workspace_id: str) -> bool:
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, help="events queued (default: an hour at --rate)")
    parser.add_argument("--rate", type=int, default=100, help="events per second (100)")
    parser.add_argument("--limit", type=int, default=400_000, help="HUB_WEBHOOK_QUEUE")
    args = parser.parse_args()
    n = args.events or args.rate * 3600
    print(f"a receiver down for {n / args.rate / 60:.0f} min at {args.rate} events/s: {n} events")
    memory(n, args.limit)
    on_redis(n, args.limit)


if __name__ == "__main__":
    main()
