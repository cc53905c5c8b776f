"""Where an idle socket's memory goes: a real hub (in this process, uvicorn as ``hub serve``
runs it) holds N idle sockets opened by a client in another process; tracemalloc compares the
heap before and after and prints the bytes per socket by the line that allocated them.

    .venv/bin/python scripts/socket_memory.py [--n 2000] [--top 25]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx  # noqa: E402

from hub.settings import Settings  # noqa: E402
from hub.testing import ThreadedHub  # noqa: E402

CLIENT = """
import asyncio, sys
from websockets.asyncio.client import connect
async def main(url, n):
    socks = []
    for i in range(n):
        ws = await connect(url + f"{i:012d}", compression=None)
        await ws.recv()
        socks.append(ws)
    print("open", flush=True)
    await asyncio.sleep(3600)
asyncio.run(main(sys.argv[1], int(sys.argv[2])))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    tracemalloc.start(1)
    hub = ThreadedHub(Settings.from_env({}, database_url="sqlite:///:memory:", port=0)).start()
    workspace = httpx.post(hub.url + "/v1/workspaces", json={"path": "/m"}).json()["id"]
    url = (
        f"ws://127.0.0.1:{hub.port}/v1/workspaces/{workspace}/ws?client_id=00000000-0000-4000-8000-"
    )
    time.sleep(0.5)
    gc.collect()
    before = tracemalloc.take_snapshot()
    client = subprocess.Popen(
        [sys.executable, "-c", CLIENT, url, str(args.n)], stdout=subprocess.PIPE, text=True
    )
    try:  # the client goes whatever happens here (a closed output pipe included)
        assert client.stdout is not None and client.stdout.readline().strip() == "open"
        time.sleep(1.0)
        gc.collect()
        after = tracemalloc.take_snapshot()
        stats = after.compare_to(before, "lineno")
        total = sum(s.size_diff for s in stats)
        print(f"{args.n} idle sockets: {total / args.n:,.0f} bytes each on the Python heap")
        for s in stats[: args.top]:
            frame = s.traceback[0]
            where = f"{Path(frame.filename).parent.name}/{Path(frame.filename).name}:{frame.lineno}"
            per = s.size_diff / args.n
            print(f"{per:8,.0f} B  {s.count_diff / args.n:6.2f} blocks  {where}", flush=True)
    finally:
        client.kill()
        client.wait()
        asyncio.run(asyncio.sleep(0))
        hub.stop()


if __name__ == "__main__":
    main()
