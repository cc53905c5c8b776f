"""@presence-hub/react as a user gets it: both packages packed (`npm pack`), installed offline in
a scratch folder with the lock's React 19, an app (tests/react_app/app.jsx) bundled by esbuild
in development mode (so StrictMode mounts twice), in headless Chromium against a real hub.

Two tabs of two people show "2 viewing" and each other's faces, the hub holds exactly one
socket per tab, a tab that switches sessions moves the badges live, and unmounting the
provider closes its socket."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import http.server
import json
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from hub.settings import Settings
from tests.conftest import FAST
from tests.harness import ServerThread
from tests.test_browser import ARGS, CHROMIUM, playwright_api, until
from tests.test_js import JS, js_tools, need

APP = Path(__file__).resolve().parent / "react_app"
# Counts the WebSockets a page makes (window.socketsMade), before the app's code runs.
COUNT_SOCKETS = """
window.socketsMade = 0;
window.WebSocket = class extends WebSocket {
  constructor(...args) { super(...args); window.socketsMade += 1; }
};
"""


def run(args: list[str], cwd: Path) -> str:
    proc = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, f"{args}: {proc.stdout[-2000:]}{proc.stderr[-3000:]}"
    return proc.stdout


def build_app(scratch: Path) -> Path:
    """The app built the way a user's project would build it: its folder, ready to serve."""
    tools = js_tools()
    npm = shutil.which("npm")
    if npm is None:
        need("npm")
    assert npm is not None
    tarballs = scratch / "tarballs"
    tarballs.mkdir()
    workspaces = ["-w", "packages/client", "-w", "packages/react"]
    run([npm, "pack", "--silent", "--pack-destination", str(tarballs), *workspaces], JS)
    # React as the lock has it, packed from the installed copy: the install needs no registry.
    for name in ("react", "react-dom", "scheduler"):
        installed = str(JS / "node_modules" / name)
        run(
            [npm, "pack", "--silent", "--offline", "--pack-destination", str(tarballs), installed],
            scratch,
        )
    app = scratch / "app"
    app.mkdir()
    (app / "package.json").write_text(json.dumps({"private": True, "type": "module"}))
    shutil.copy(APP / "app.jsx", app / "app.jsx")
    packed = sorted(str(p) for p in tarballs.glob("*.tgz"))
    run([npm, "install", "--offline", "--ignore-scripts", "--no-audit", "--no-fund", *packed], app)
    installed = json.loads((app / "node_modules/@presence-hub/react/package.json").read_text())
    assert installed["name"] == "@presence-hub/react" and not installed.get("devDependencies")
    # Development mode, as `npm run dev` would: StrictMode mounts every effect twice.
    define = '--define:process.env.NODE_ENV="development"'
    esbuild = [str(tools / "esbuild"), "app.jsx", "--bundle", "--format=esm"]
    run([*esbuild, "--jsx=automatic", define, "--outfile=app.js", "--log-level=warning"], app)
    (app / "index.html").write_text(
        '<!doctype html><div id="root"></div><script type="module" src="/app.js"></script>'
    )
    return app


class Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextlib.contextmanager
def static_server(folder: Path) -> Iterator[str]:
    """The app's folder over HTTP on a loopback port (a page from anywhere else may not open a
    socket to the loopback hub: Chromium's local network access checks)."""
    handler = functools.partial(Quiet, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


async def texts(page: Any, selector: str) -> list[str]:
    """The faces' titles, or the text, of what a selector finds."""
    found: list[str] = await page.eval_on_selector_all(
        selector, "els => els.map((e) => e.title || e.textContent)"
    )
    return found


def badge(page: Any, session: str) -> Any:
    return functools.partial(texts, page, f'li[data-session="{session}"] .presence-badge')


def faces(page: Any, session: str) -> Any:
    return functools.partial(texts, page, f'li[data-session="{session}"] .presence-face')


async def open_tab(browser: Any, url: str) -> Any:
    """A page of its own browser context (a person of its own), once its socket is open."""
    context = await browser.new_context()
    await context.add_init_script(COUNT_SOCKETS)
    page = await context.new_page()
    said: list[str] = []
    page.on("pageerror", lambda error: said.append(str(error)))
    page.on("console", lambda message: said.append(message.text))
    await page.goto(url)
    try:
        await page.wait_for_selector('#status[data-status="open"]', timeout=15000)
    except playwright_api.TimeoutError:
        raise AssertionError(f"the app did not connect: {said}") from None
    return page


async def test_react_app_from_the_packed_packages_in_two_tabs(tmp_path: Path) -> None:
    app = await asyncio.to_thread(build_app, tmp_path)
    hub = ServerThread(Settings.from_env({}, **FAST)).start()
    try:
        async with httpx.AsyncClient(base_url=hub.url) as http:
            workspace = (await http.post("/v1/workspaces", json={"path": "/react"})).json()["id"]

            async def sockets() -> int:
                count: int = (await http.get("/v1/stats")).json()["sockets"]
                return count

            async def streams() -> list[int]:
                claims = (await http.get(f"/v1/workspaces/{workspace}/clients")).json()
                return sorted(c["streams"] for c in claims if c["streams"])

            with static_server(app) as origin:
                async with playwright_api.async_playwright() as pw:
                    browser = await pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
                    try:
                        query = f"hub={hub.url}&workspace={workspace}&session=S1&sessions=S1,S2"
                        one = await open_tab(browser, f"{origin}/?{query}&user=Ana")
                        two = await open_tab(browser, f"{origin}/?{query}&user=Bo")
                        for page in (one, two):
                            await until(badge(page, "S1"), ["2 viewing"])
                            await until(faces(page, "S1"), ["Ana", "Bo"])
                            await until(badge(page, "S2"), [])
                        # StrictMode mounted every effect twice: still one socket per tab.
                        assert await sockets() == 2
                        assert await streams() == [1, 1]
                        for page in (one, two):
                            assert await page.evaluate("window.socketsMade") == 1

                        await two.evaluate("window.viewSession('S2')")
                        for page in (one, two):
                            await until(badge(page, "S1"), ["1 viewing"])
                            await until(faces(page, "S1"), ["Ana"])
                            await until(badge(page, "S2"), ["1 viewing"])
                            await until(faces(page, "S2"), ["Bo"])
                        assert await sockets() == 2

                        await one.evaluate("window.unmountProvider()")
                        await until(sockets, 1)  # after the provider's close delay
                        await until(badge(two, "S1"), [])
                        await until(faces(two, "S2"), ["Bo"])
                    finally:
                        await browser.close()
    finally:
        await asyncio.to_thread(hub.stop)
