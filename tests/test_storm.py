"""Storms on a real ``hub serve``, on both event loops: sockets that all connect at once, all
change their session at once, then half of them leave at once.

The fault is the storm itself: joins and leaves arrive faster than a flush, so the room merges
them (``online`` pushes are held back by the room's cost rule while the storm lasts). The bound:
every view settles within 15 s of the storm's end. The truth is the counting rule over the sockets
the test holds open (a client counts once however many sockets it has; a client whose sockets
all closed counts nowhere), checked on every open socket and in the REST snapshot.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import httpx
import pytest

from tests.harness import HubProcess, Viewer, new_client_id

CLIENTS = 240
TWICE = 40  # the first clients hold a second socket each
SETTLE = 15.0


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
async def test_every_view_is_the_truth_after_a_connect_a_switch_and_a_leave_storm(
    tmp_path: Path, loop: str
) -> None:
    hub = await asyncio.to_thread(HubProcess, tmp_path / "hub.db", HUB_LOOP=loop)
    try:
        async with httpx.AsyncClient(base_url=hub.url, timeout=10) as http:
            w = (await http.post("/v1/workspaces", json={"path": "/storm"})).json()["id"]
            url = f"ws://127.0.0.1:{hub.port}/v1/workspaces/{w}/ws?client_id="
            clients = [new_client_id() for _ in range(CLIENTS)]
            owners = clients + clients[:TWICE]
            viewers = await asyncio.gather(*(Viewer.open(url + c, c) for c in owners))

            async def agree(online: int, counts: dict[str, int], open_: list[Viewer]) -> None:
                """Every open socket, and the REST snapshot, show the truth."""
                await asyncio.gather(
                    *(
                        v.until(lambda x: (x.online, x.counts) == (online, counts), SETTLE)
                        for v in open_
                    )
                )
                snapshot = (await http.get(f"/v1/workspaces/{w}/presence")).json()
                assert (snapshot["online"], snapshot["counts"]) == (online, counts)
                for v in open_:
                    assert v.seqs_seen == sorted(v.seqs_seen)  # nothing out of order

            await agree(CLIENTS, {}, viewers)

            # Every socket changes its session at once; a client's sockets go to the same one.
            session = {c: f"S{i % 3}" for i, c in enumerate(clients)}
            switch = [{"type": "set_session", "session_id": session[v.client_id]} for v in viewers]
            await asyncio.gather(*(v.send(f) for v, f in zip(viewers, switch, strict=True)))
            await agree(CLIENTS, _counts(session.values()), viewers)

            # Half the clients leave at once (both sockets of those that have two).
            leaving = set(clients[::2])
            await asyncio.gather(*(v.close() for v in viewers if v.client_id in leaving))
            staying = [v for v in viewers if v.client_id not in leaving]
            left = {c: s for c, s in session.items() if c not in leaving}
            await agree(len(left), _counts(left.values()), staying)
            for v in staying:
                await v.close()
    finally:
        await asyncio.to_thread(hub.stop)


def _counts(sessions: Iterable[str]) -> dict[str, int]:
    """Clients per session (each client on one)."""
    return dict(Counter(sessions))
