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


async def faces(page: Any, session: str) -> list[str]:
    """The names on a session's facepile, and "+k" when it shows one."""
    shown: list[str] = await page.evaluate(
        """(sid) => {
            const pile = document.querySelector(`li[data-session="${sid}"] presence-facepile`);
            if (!pile || pile.hidden) return [];
            return [...pile.shadowRoot.querySelectorAll(".face")]
                .map((f) => f.classList.contains("more") ? f.textContent : f.title);
        }""",
        session,
    )
    return shown


async def test_two_people_one_with_two_tabs_read_two_on_the_badge_and_the_facepile(
    tmp_path: Path,
) -> None:
    """Ana has two tabs (one browser: one person, two client ids), Bo one: every page's
    people badge reads 2, its facepile shows Ana and Bo, and the hub counts 3 clients."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    hub = start_hub(port, f"sqlite:///{tmp_path / 'hub.db'}")
    async with playwright_api.async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            ana = await browser.new_context(viewport={"width": 640, "height": 360})
            bo = await browser.new_context(viewport={"width": 640, "height": 360})
            tab1 = await ana.new_page()
            await tab1.goto(f"{hub.url}/demo?user=Ana")
            await tab1.wait_for_selector("li[data-session]")
            workspace = await tab1.evaluate("window.hub.workspaceId")
            first = await tab1.eval_on_selector("li[data-session]", "e => e.dataset.session")
            tab2 = await ana.new_page()  # the same browser: the same person, a new tab
            await tab2.goto(f"{hub.url}/demo?workspace={workspace}")
            page3 = await bo.new_page()
            await page3.goto(f"{hub.url}/demo?workspace={workspace}&user=Bo")
            pages = (tab1, tab2, page3)
            for page in pages:
                await page.wait_for_selector("li[data-session]")
                await page.click(f'li[data-session="{first}"]')
            for page in pages:
                await until(functools.partial(badge, page, first), "2 viewing")
                await until(functools.partial(faces, page, first), ["Ana", "Bo"])
            async with httpx.AsyncClient(base_url=hub.url) as http:
                session = (await http.get(f"/v1/workspaces/{workspace}/sessions/{first}")).json()
                assert (session["attached_clients"], session["attached_users"]) == (3, 2)
            ARTIFACTS.mkdir(exist_ok=True)
            await tab1.screenshot(path=str(ARTIFACTS / "people.png"))
            await page3.close()  # Bo leaves: Ana's tabs show her alone
            for page in (tab1, tab2):
                await until(functools.partial(badge, page, first), "1 viewing")
                await until(functools.partial(faces, page, first), ["Ana"])
        finally:
            await browser.close()
            await asyncio.to_thread(hub.stop)
