"""The benchmark's baseline: the same workload on the ``websockets`` library alone.

No presence logic, no Starlette: every socket of a URL path is in one room; a ``set_session``
from any socket bumps the room's ``seq``, answers an ``ack`` and schedules a ``counts`` frame
that ``websockets.broadcast()`` sends to the whole room. Frames are coalesced with the same
rule as the hub (the first change after a quiet period goes out on the next loop turn, later
ones wait for the window), so both servers deliver the same number of frames and "server CPU
per delivered frame" compares like with like.

    python scripts/baseline_server.py --port 8100 [--window 0.05]
"""

from __future__ import annotations

import argparse
import asyncio
import signal

import orjson
from websockets.asyncio.server import ServerConnection, broadcast, serve
from websockets.exceptions import ConnectionClosed


class Room:
    def __init__(self) -> None:
        self.sockets: set[ServerConnection] = set()
        self.seq = 0
        self.sessions: dict[str, str] = {}  # socket id -> session
        self.pending: dict[str, int] = {}
        self.handle: asyncio.Handle | None = None
        self.last_flush = float("-inf")


rooms: dict[str, Room] = {}
WINDOW = 0.05


def flush(room: Room) -> None:
    room.handle = None
    room.last_flush = asyncio.get_running_loop().time()
    frame = orjson.dumps({"type": "counts", "seq": room.seq, "counts": room.pending}).decode()
    room.pending = {}
    broadcast(room.sockets, frame)


def changed(room: Room, session: str) -> None:
    room.seq += 1
    room.pending[session] = sum(1 for s in room.sessions.values() if s == session)
    if room.handle is None:
        loop = asyncio.get_running_loop()
        due = room.last_flush + WINDOW
        if loop.time() >= due:
            room.handle = loop.call_soon(flush, room)
        else:
            room.handle = loop.call_at(due, flush, room)


async def handler(ws: ServerConnection) -> None:
    path = ws.request.path.split("?")[0] if ws.request is not None else "/"
    room = rooms.setdefault(path, Room())
    room.sockets.add(ws)
    await ws.send(
        orjson.dumps({"type": "snapshot", "seq": room.seq, "online": len(room.sockets)}).decode()
    )
    key = str(ws.id)
    try:
        async for message in ws:
            data = orjson.loads(message)
            if data.get("type") == "set_session":
                room.sessions[key] = data["session_id"]
                changed(room, data["session_id"])
                if "ref" in data:
                    await ws.send(
                        orjson.dumps({"type": "ack", "ref": data["ref"], "seq": room.seq}).decode()
                    )
    except ConnectionClosed:
        pass  # a viewer that left without a closing handshake
    finally:
        room.sockets.discard(ws)
        room.sessions.pop(key, None)


async def main() -> None:
    global WINDOW
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--window", type=float, default=0.05)
    args = parser.parse_args()
    WINDOW = args.window
    stop = asyncio.get_running_loop().create_future()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set_result, None)
    async with serve(
        handler, "127.0.0.1", args.port, compression=None, max_size=64 * 1024, backlog=4096
    ):
        print("ready", flush=True)
        await stop


if __name__ == "__main__":
    asyncio.run(main())
