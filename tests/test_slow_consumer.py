"""Slow consumers end to end: sockets that stop reading are closed with 4409, readers go on.

Counts frames of a socket that falls behind merge into one (so a non-reader of counts costs
almost nothing and is never closed for it); what piles up is traffic that cannot merge. Here
that is session records updated many times a second, as a coding agent does with token counts.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import httpx

from tests.harness import NonReader, ServerThread, Viewer, new_client_id


async def test_sockets_that_stop_reading_are_closed_with_4409(
    make_server: Callable[..., ServerThread],
) -> None:
    server: ServerThread = make_server(max_outbox_bytes=64 * 1024)
    async with httpx.AsyncClient(base_url=server.url, timeout=5) as http:
        workspace = (await http.post("/v1/workspaces", json={"path": "/slow"})).json()["id"]
        await http.post(f"/v1/workspaces/{workspace}/sessions", json={"id": "S1"})
        readers = [
            await Viewer.open(server.ws_url(workspace, c), c)
            for c in (new_client_id() for _ in range(20))
        ]
        slow_ids = [new_client_id() for _ in range(10)]
        slow = [
            NonReader(server.port, f"/v1/workspaces/{workspace}/ws?client_id={c}") for c in slow_ids
        ]

        async def keep_reading(v: Viewer) -> None:
            while True:
                await v.next(within=30)

        async def slow_detached() -> float:
            """Seconds from the start of the traffic until no slow client is attached."""
            t0 = asyncio.get_running_loop().time()
            while True:
                claims = (await http.get(f"/v1/workspaces/{workspace}/clients")).json()
                states = {c["client_id"]: c["state"] for c in claims}
                if all(states.get(c) != "attached" for c in slow_ids):
                    return asyncio.get_running_loop().time() - t0
                await asyncio.sleep(0.1)

        reading = [asyncio.create_task(keep_reading(v)) for v in readers]
        detached = asyncio.create_task(slow_detached())
        title = "t" * 2000
        for i in range(400):  # 400 updates of ~2.3 KB each: far past 64 KiB per socket
            r = await http.put(
                f"/v1/workspaces/{workspace}/sessions/S1",
                json={"title": title, "message_count": i},
            )
            assert r.status_code == 200
            await asyncio.sleep(0.005)
            if detached.done():
                break
        assert await asyncio.wait_for(detached, 10) < 10
        # The close frame followed what was already buffered: a late reader still finds 4409.
        codes = await asyncio.gather(*(asyncio.to_thread(s.read_close_code) for s in slow))
        assert codes == [4409] * len(slow)
        metrics = (await http.get("/metrics")).text
        assert f'hub_closes_total{{reason="slow_consumer"}} {len(slow)}.0' in metrics
        # Every reader got every update sent: nobody was held back by the slow ones.
        sent = i + 1
        for task in reading:
            task.cancel()
        for v in readers:
            await v.until(lambda x: sum(f["type"] == "session" for f in x.frames) >= sent)
            assert sum(f["type"] == "session" for f in v.frames) == sent
        for s in slow:
            s.sock.close()
        for v in readers:
            await v.close()
