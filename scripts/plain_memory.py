"""Where the plain path's memory per idle socket goes, by owner: the hub in a FastAPI app under
plain uvicorn with ``HUB_FAST_PATHS=off`` (``scripts/mounted_app.py``, as ``scripts/bench.py``'s
server ``mounted`` runs it), N idle sockets opened, the Python heap traced (``tracemalloc``)
before and after, each allocation put down to the package of the line that made it.

    .venv/bin/python scripts/plain_memory.py [--n 500] [--top 40] [--ws wsproto] [--rss]

Prints bytes per socket by owner (the hub, uvicorn, websockets, asyncio, Starlette and
FastAPI, the rest). The Python heap only: RSS (what ``bench.py`` reports) adds the allocator's
own overhead and the kernel's socket memory is in neither.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import os
import subprocess
import sys
import time
import tracemalloc
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OWNERS = (
    ("hub", f"{ROOT}/hub/"),
    ("uvicorn", "/uvicorn/"),
    ("websockets", "/websockets/"),
    ("h11", "/h11/"),
    ("wsproto", "/wsproto/"),
    ("starlette", "/starlette/"),
    ("fastapi", "/fastapi/"),
    ("asyncio", "/asyncio/"),
)


def owner(filename: str) -> str:
    for name, part in OWNERS:
        if part in filename:
            return name
    return "the rest (stdlib, uuid, weakref, sockets)"


def serve(port: int, n: int, top: int, ws: str, rss: bool) -> None:
    """The server side (a child process): the app, and a route that snapshots the heap (with
    ``rss``, nothing traced: tracing costs memory of its own)."""
    if not rss:
        tracemalloc.start()
    import uvicorn

    sys.path.insert(0, str(ROOT / "scripts"))
    import mounted_app

    snapshots: list[tracemalloc.Snapshot] = []

    async def snapshot() -> dict[str, int]:
        gc.collect()
        if rss:
            return {}
        snapshots.append(tracemalloc.take_snapshot())
        if len(snapshots) == 2:
            by: dict[str, int] = {}
            for stat in snapshots[1].compare_to(snapshots[0], "filename"):
                name = owner(stat.traceback[0].filename)
                by[name] = by.get(name, 0) + stat.size_diff
            lines = snapshots[1].compare_to(snapshots[0], "lineno")[:top]
            for stat in lines:
                frame = stat.traceback[0]
                where = frame.filename.split("site-packages/")[-1]
                by[f"line {where}:{frame.lineno}"] = stat.size_diff
            return by
        return {}

    mounted_app.app.add_api_route("/snapshot", snapshot)
    uvicorn.run(mounted_app.app, port=port, loop="asyncio", ws=ws, log_level="warning")


def resident(pid: int) -> int:
    """The process's resident set, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


async def drive(port: int, n: int, pid: int) -> dict[str, int]:
    import httpx
    from websockets.asyncio.client import connect

    base = f"127.0.0.1:{port}"
    async with httpx.AsyncClient(base_url=f"http://{base}", timeout=120) as http:
        for _ in range(100):
            with contextlib.suppress(httpx.ConnectError):
                await http.get("/")
                break
            await asyncio.sleep(0.1)
        ws = (await http.post("/presence/v1/workspaces", json={"path": "/m"})).json()["id"]

        async def open_one() -> object:
            url = f"ws://{base}/presence/v1/workspaces/{ws}/ws?client_id={uuid.uuid4()}"
            return await connect(url, compression=None)  # as bench.py's clients: no deflate

        sockets = [await open_one() for _ in range(20)]  # warm up: first-use caches
        await asyncio.sleep(1)
        await http.get("/snapshot")
        before = resident(pid)
        sockets += [await open_one() for _ in range(n)]
        await asyncio.sleep(2)
        by: dict[str, int] = (await http.get("/snapshot")).json()
        by["rss"] = resident(pid) - before
        return by


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--top", type=int, default=0, help="the K lines that allocated most")
    parser.add_argument("--ws", default="auto", help="uvicorn's --ws (auto: websockets-sansio)")
    parser.add_argument("--rss", action="store_true", help="the RSS only, nothing traced")
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.n, args.top, args.ws, args.rss)
        return
    from tests.harness import free_port

    port = free_port()
    env = {**os.environ, "HUB_FAST_PATHS": "off", "HUB_RATE_LIMIT": "0"}
    argv = [__file__, "--serve", str(port), "--top", str(args.top), "--ws", args.ws]
    argv += ["--rss"] if args.rss else []
    server = subprocess.Popen([sys.executable, *argv], env=env)
    try:
        time.sleep(0.5)
        by = asyncio.run(drive(port, args.n, server.pid))
    finally:
        server.terminate()
        server.wait()
    rss = by.pop("rss")
    if args.rss:
        print(f"RSS per idle socket, N={args.n}, --ws {args.ws}: {rss / args.n:,.0f} bytes")
        return
    lines = {name: size for name, size in by.items() if name.startswith("line ")}
    by = {name: size for name, size in by.items() if name not in lines}
    total = sum(by.values())
    print(f"Python heap per idle socket, N={args.n}: {total / args.n:,.0f} bytes")
    for name, size in sorted(by.items(), key=lambda item: -item[1]):
        print(f"  {name:42} {size / args.n:8,.0f}  {100 * size / total:5.1f}%")
    for name, size in sorted(lines.items(), key=lambda item: -item[1]):
        print(f"  {name[5:]:70} {size / args.n:8,.0f}")


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
