"""hub.js's getToken in headless Chromium against a hub whose tokens live two seconds: a badge
stays live across three expiries (refresh frames, no reconnect)."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from hub.auth import Auth
from hub.settings import Settings
from hub.testing import ThreadedHub
from tests.conftest import FAST
from tests.test_browser import ARGS, CHROMIUM, playwright_api, until

SECRET = "b" * 40


async def test_a_badge_stays_live_across_three_expiries() -> None:
    settings = Settings.from_env({}, **{**FAST, "auth_secret": SECRET, "auth_leeway": 0.5})
    hub = ThreadedHub(settings, port=0).start()
    auth = Auth(SECRET)
    minted: list[str] = []
    try:
        admin = {"Authorization": f"Bearer {auth.mint(['*'], admin=True)}"}
        async with httpx.AsyncClient(base_url=hub.url, headers=admin) as http:
            w = (await http.post("/v1/workspaces", json={"path": "/browser"})).json()["id"]

        def mint() -> str:
            minted.append(auth.mint([w], user="ana", ttl=2))
            return minted[-1]

        async with playwright_api.async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            try:
                page = await browser.new_page()
                await page.expose_function("mintToken", mint)
                await page.goto(f"{hub.url}/v1/health")  # a loopback origin the hub allows
                await page.evaluate(
                    """async ([url, workspaceId]) => {
                        const { connect } = await import(`${url}/static/hub.js`);
                        const getToken = () => window.mintToken();
                        const hub = connect(url, { workspaceId, getToken });
                        window.hub = hub;
                        window.closes = [];
                        hub.addEventListener("closed", (e) => window.closes.push(e.detail.code));
                        document.body.innerHTML = '<presence-badge session="S1"></presence-badge>';
                        await hub.setSession("S1");
                    }""",
                    [hub.url, w],
                )

                async def shown() -> Any:
                    return await page.evaluate(
                        """() => {
                            const b = document.querySelector("presence-badge");
                            return b.hidden ? "" : b.shadowRoot.textContent.trim()
                                .replace(/^[^]*?(\\d+ viewing)$/, "$1");
                        }"""
                    )

                await until(shown, "1 viewing")
                for _ in range(3):  # three token lifetimes, and then some
                    await asyncio.sleep(2.2)
                    assert await shown() == "1 viewing"
                state = await page.evaluate(
                    "() => ({ attempts: window.hub.attempts, closes: window.closes })"
                )
                assert state == {"attempts": 1, "closes": []}  # refreshed, never reconnected
                assert len(minted) >= 4  # the connect's, then one refresh per lifetime at least
            finally:
                await browser.close()
    finally:
        hub.stop()
