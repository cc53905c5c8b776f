"""The demo in headless Chromium (Debian's, driven by Playwright): live badges in two pages,
updates as one page switches, and both pages recovering after the hub restarts."""

from __future__ import annotations

import asyncio
import functools
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from hub.settings import Settings
from hub.testing import ThreadedHub
from tests.conftest import FAST

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

playwright_api = pytest.importorskip("playwright.async_api")
if not Path(CHROMIUM).exists():  # pragma: no cover - CI installs it
    if os.environ.get("HUB_REQUIRE_SERVICES"):
        raise RuntimeError(f"{CHROMIUM} is missing (apt-get install chromium)")
    pytest.skip("Debian's chromium is not installed", allow_module_level=True)


def start_hub(port: int, db: str) -> ThreadedHub:
    settings = Settings.from_env({}, **{**FAST, "database_url": db, "port": port})
    return ThreadedHub(settings).start()


async def badge(page: Any, session: str) -> str:
    """What the badge of a session shows ("" when hidden)."""
    text: str = await page.evaluate(
        """(sid) => {
            const b = document.querySelector(`li[data-session="${sid}"] presence-badge`);
            return !b || b.hidden ? "" : b.shadowRoot.textContent.replace(/\\s+/g, " ")
                .replace(/^.*?(\\d+ viewing).*$/, "$1");
        }""",
        session,
    )
    return text


async def until(check: Callable[[], Any], expected: Any, within: float = 10) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while (got := await check()) != expected:
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{got!r} != {expected!r}")
        await asyncio.sleep(0.1)


async def test_two_pages_see_live_badges_and_survive_a_restart(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    db = f"sqlite:///{tmp_path / 'hub.db'}"
    hub = start_hub(port, db)
    async with playwright_api.async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            one = await browser.new_page(viewport={"width": 640, "height": 360})
            await one.goto(f"{hub.url}/demo")
            await one.wait_for_selector("li[data-session]")
            workspace = await one.evaluate("window.hub.workspaceId")
            ids = await one.eval_on_selector_all(
                "li[data-session]", "els => els.map(e => e.dataset.session)"
            )
            two = await browser.new_page(viewport={"width": 640, "height": 360})
            await two.goto(f"{hub.url}/demo?workspace={workspace}")
            await two.wait_for_selector("li[data-session]")
            first, second = ids[0], ids[1]

            await one.click(f'li[data-session="{first}"]')
            await two.click(f'li[data-session="{first}"]')
            for page in (one, two):
                await until(functools.partial(badge, page, first), "2 viewing")

            await two.click(f'li[data-session="{second}"]')
            for page in (one, two):
                await until(functools.partial(badge, page, first), "1 viewing")
                await until(functools.partial(badge, page, second), "1 viewing")

            # The hub restarts (presence is in memory, so it comes back empty): both pages
            # reconnect and say again which session they view. The new hub's own presence
            # proves it; the badges then agree with it.
            await asyncio.to_thread(hub.stop)
            hub = start_hub(port, db)
            async with httpx.AsyncClient(base_url=hub.url) as http:

                async def presence() -> dict[str, int]:
                    counts: dict[str, int] = (
                        await http.get(f"/v1/workspaces/{workspace}/presence")
                    ).json()["counts"]
                    return counts

                await until(presence, {first: 1, second: 1}, within=20)
            for page in (one, two):
                await until(functools.partial(badge, page, first), "1 viewing")
                await until(functools.partial(badge, page, second), "1 viewing")
            ARTIFACTS.mkdir(exist_ok=True)
            await one.screenshot(path=str(ARTIFACTS / "demo.png"))
        finally:
            await browser.close()
            await asyncio.to_thread(hub.stop)
    assert (await asyncio.to_thread((ARTIFACTS / "demo.png").stat)).st_size > 1000
