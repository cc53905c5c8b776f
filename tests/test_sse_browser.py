"""Where a proxy breaks WebSockets: headless Chromium opens the demo through a real nginx whose
location drops the ``Upgrade`` headers, and hub.js falls back to the event stream by itself
(docs/clients.md); through a location that passes them, the same pages use WebSockets."""

from __future__ import annotations

import functools
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from hub.settings import Settings
from hub.testing import ThreadedHub
from tests.conftest import FAST
from tests.harness import free_port
from tests.test_browser import ARGS, CHROMIUM, badge, playwright_api, until
from tests.test_deploy import tool

CONFIG = """
worker_processes 1;
pid nginx.pid;
error_log stderr error;
events {{ worker_connections 256; }}
http {{
    access_log off;
    server {{
        # Broken: a plain reverse proxy, without the two Upgrade lines.
        listen 127.0.0.1:{broken};
        location / {{
            proxy_pass http://127.0.0.1:{hub};
            proxy_http_version 1.1;
            proxy_read_timeout 3600s;
        }}
    }}
    server {{
        listen 127.0.0.1:{good};
        location / {{
            proxy_pass http://127.0.0.1:{hub};
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection "upgrade";
            proxy_read_timeout 3600s;
        }}
    }}
}}
"""


@pytest.fixture
def proxied(tmp_path: Path) -> Iterator[tuple[ThreadedHub, str, str]]:
    nginx = tool("nginx")
    hub_port, broken, good = free_port(), free_port(), free_port()
    settings = Settings.from_env(
        {}, **{**FAST, "database_url": f"sqlite:///{tmp_path / 'hub.db'}", "port": hub_port}
    )
    hub = ThreadedHub(settings).start()
    conf = tmp_path / "nginx.conf"
    conf.write_text(CONFIG.format(broken=broken, good=good, hub=hub_port))
    proc = subprocess.Popen([nginx, "-p", str(tmp_path), "-c", str(conf), "-g", "daemon off;"])
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", good), timeout=1):
                    break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, "nginx did not start"
                time.sleep(0.05)
        yield hub, f"http://127.0.0.1:{broken}", f"http://127.0.0.1:{good}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        hub.stop()


ON_THE_STREAM = "window.hub && window.hub.transport === 'sse' && window.hub.status === 'open'"


async def test_behind_a_proxy_that_drops_upgrade_the_demo_falls_back_to_sse(
    proxied: tuple[ThreadedHub, str, str],
) -> None:
    hub, broken, good = proxied
    async with httpx.AsyncClient(base_url=broken) as http:
        plain = await http.get("/v1/workspaces/x/ws", headers={"Upgrade": "websocket"})
        assert plain.status_code == 426 and "Upgrade" in plain.json()["message"]
    async with playwright_api.async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            one = await browser.new_page(viewport={"width": 640, "height": 360})
            opened = time.monotonic()
            await one.goto(f"{broken}/demo")
            await one.wait_for_function(ON_THE_STREAM, polling=20)
            assert time.monotonic() - opened < 2  # on the event stream within 2 s of opening
            await one.wait_for_selector("li[data-session]")
            workspace = await one.evaluate("window.hub.workspaceId")
            first, second = await one.eval_on_selector_all(
                "li[data-session]", "els => els.slice(0, 2).map(e => e.dataset.session)"
            )
            await one.click(f'li[data-session="{first}"]')
            two = await browser.new_page(viewport={"width": 640, "height": 360})
            opened = time.monotonic()
            await two.goto(f"{broken}/demo?workspace={workspace}")
            await two.wait_for_selector("li[data-session]")
            await two.click(f'li[data-session="{first}"]')
            pages = (one, two)
            for page in pages:
                await until(functools.partial(badge, page, first), "2 viewing", within=5)
            # The two pages show each other within 2 s of the second one's opening.
            assert time.monotonic() - opened < 2
            for page in pages:
                state: dict[str, Any] = await page.evaluate(
                    """() => ({ transport: window.hub.transport, status: window.hub.status,
                        remembered: Number(sessionStorage.getItem("presence-hub.sse-until"))
                            > Date.now() + 3500e3,
                        shown: document.getElementById("status").textContent })"""
                )
                assert state["transport"] == "sse" and state["status"] == "open", state
                assert state["remembered"] and "event stream" in state["shown"], state
            # Sessions switch live over the event stream (commands by REST).
            await two.click(f'li[data-session="{second}"]')
            for page in pages:
                await until(functools.partial(badge, page, first), "1 viewing", within=5)
                await until(functools.partial(badge, page, second), "1 viewing", within=5)
            # Through a location that passes the Upgrade headers: WebSockets.
            three = await browser.new_page(viewport={"width": 640, "height": 360})
            await three.goto(f"{good}/demo?workspace={workspace}")
            await three.wait_for_selector("li[data-session]")
            await three.click(f'li[data-session="{second}"]')
            await until(functools.partial(badge, three, second), "2 viewing", within=5)
            assert await three.evaluate("window.hub.transport") == "websocket"
            for page in pages:
                await until(functools.partial(badge, page, second), "2 viewing", within=5)
        finally:
            await browser.close()
