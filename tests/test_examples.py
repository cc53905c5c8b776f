"""The examples run as a user runs them: ``examples/fastapi_app.py`` under plain uvicorn, its
users logged in by its own cookie, the hub mounted inside it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect

from tests.harness import Viewer, app_thread, close_code, new_client_id


async def test_the_fastapi_example_lists_its_chats_with_live_counts() -> None:
    """Truth: ana and bo (one client each) view
    "general": the app's own list says 2 clients, 2 users there and 0 in "random"."""
    from examples.fastapi_app import app

    server = app_thread(app).start()
    ws_base = server.url.replace("http", "ws", 1) + "/presence/v1/workspaces"
    tabs = []
    try:
        async with httpx.AsyncClient(base_url=server.url) as http:
            assert (await http.get("/chats")).status_code == 401
            for user in ("ana", "bo"):
                login = await http.post("/login", params={"user": user})
                workspace = login.json()["workspace_id"]
                cookie = f"app_session={login.cookies['app_session']}"
                client = new_client_id()
                url = f"{ws_base}/{workspace}/ws?client_id={client}"
                tab = Viewer(await connect(url, additional_headers={"cookie": cookie}), client)
                Viewer.opened.append(tab)
                await tab.expect("snapshot")
                await tab.send({"type": "set_session", "session_id": "general"})
                tabs.append(tab)
            await tabs[0].until(
                lambda v: (v.counts.get("general"), v.users.get("general")) == (2, 2)
            )
            listed = {c["id"]: c for c in (await http.get("/chats")).json()}
            assert (listed["general"]["attached_clients"], listed["general"]["attached_users"]) == (
                2,
                2,
            )
            assert listed["random"]["attached_clients"] == 0
            anonymous = f"{ws_base}/{workspace}/ws?client_id={new_client_id()}"
            assert await close_code(anonymous) == 4401
    finally:
        for tab in tabs:
            await tab.close()
        server.stop()


def _readme_snippet(heading: str) -> str:
    """The first Python block below ``heading`` in the README."""
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = readme.split(heading, 1)[1]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


async def test_the_readme_s_mounted_app_runs_as_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The README's "Inside your app" code, run as written: its own route reads the count of
    a socket that joined through the mounted hub."""
    monkeypatch.chdir(tmp_path)  # its database file goes there
    namespace: dict[str, Any] = {}
    exec(compile(_readme_snippet("## Inside your app"), "README.md", "exec"), namespace)  # noqa: S102
    server = app_thread(namespace["app"]).start()
    try:
        async with httpx.AsyncClient(base_url=server.url) as http:
            w = (await http.post("/presence/v1/workspaces", json={"path": "/r"})).json()["id"]
            assert (await http.get(f"/chats/{w}/S1")).json()["attached_clients"] == 0
            client = new_client_id()
            ws = server.url.replace("http", "ws", 1) + f"/presence/v1/workspaces/{w}/ws"
            tab = await Viewer.open(f"{ws}?client_id={client}", client)
            await tab.send({"type": "set_session", "session_id": "S1"})
            await tab.until(lambda v: v.counts.get("S1") == 1)
            assert (await http.get(f"/chats/{w}/S1")).json()["attached_clients"] == 1
            await tab.close()
    finally:
        server.stop()
