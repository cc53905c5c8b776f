"""The fan-out's lean path (hub.transport.DirectWriter.send_now) on both event loops, as
``hub serve`` runs them, with sockets that stopped reading in the same room: every reader
gets every change in seq order, and the backed-up ones (session records they never read)
take the checked path (their counts merge) without holding anyone back."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from tests.harness import HubProcess, NonReader, Viewer, new_client_id


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
async def test_every_reader_gets_every_change_beside_sockets_that_stopped_reading(
    tmp_path: Path, loop: str
) -> None:
    env = {"HUB_LOOP": loop, "HUB_RATE_LIMIT": "0"}  # the mover sends as fast as it can
    hub = await asyncio.to_thread(HubProcess, tmp_path / "hub.db", **env)
    stuck: list[NonReader] = []
    try:
        async with httpx.AsyncClient(base_url=hub.url, timeout=5) as http:
            w = (await http.post("/v1/workspaces", json={"path": "/f"})).json()["id"]
        url = f"ws://127.0.0.1:{hub.port}/v1/workspaces/{w}/ws?client_id="
        readers = []
        for _ in range(30):
            client = new_client_id()
            readers.append(await Viewer.open(url + client, client))
        stuck += [
            NonReader(hub.port, f"/v1/workspaces/{w}/ws?client_id={new_client_id()}")
            for _ in range(5)
        ]
        mover = readers[0]
        async with httpx.AsyncClient(base_url=hub.url, timeout=5) as http:
            await http.post(f"/v1/workspaces/{w}/sessions", json={"id": "S0"})
            for i in range(150):  # 3 KB records: the stuck sockets back up past 256 KiB
                record = {"title": "t" * 3000, "message_count": i}
                assert (await http.put(f"/v1/workspaces/{w}/sessions/S0", json=record)).is_success
                await mover.send({"type": "set_session", "session_id": f"S{i % 7}", "ref": i})
                await acked(mover, i)
        final = {f"S{149 % 7}": 1}  # the mover's last session
        codes = await asyncio.gather(*(asyncio.to_thread(s.read_close_code) for s in stuck))
        assert codes == [4409] * len(stuck)  # they did back up, and were let go
        for v in readers:
            await v.until(lambda x: x.counts == final and x.online == 30, within=10)
            await v.until(lambda x: sum(f["type"] == "session" for f in x.frames) == 151)
            assert v.seqs_seen == sorted(v.seqs_seen)
        for v in readers:
            await v.close()
    finally:
        for s in stuck:
            s.sock.close()
        await asyncio.to_thread(hub.stop)


async def acked(viewer: Viewer, ref: int) -> None:
    """Read until the ack of ``ref`` (other frames on the way are kept)."""

    def done(v: Viewer) -> bool:
        return bool(v.frames) and v.frames[-1].get("ref") == ref

    await viewer.until(done)
