"""The browser client and the npm packages: node's test runner over the served build
(tests/js) and over the packages (js/test), tsc over the typed JS, and how the hub serves the
client, which must be the package's (scripts/build_static.py).

The packages' tests need `npm ci` in js/ (.ci/run does it); without node or js/node_modules
they skip, and fail where HUB_REQUIRE_SERVICES is set."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.harness import ServerThread

ROOT = Path(__file__).resolve().parent.parent
JS = ROOT / "js"


def need(what: str) -> None:
    """Skip, or fail where every service is required, because `what` is missing."""
    if os.environ.get("HUB_REQUIRE_SERVICES"):
        pytest.fail(f"{what} is missing")
    pytest.skip(f"{what} is missing")


def node() -> str:
    found = shutil.which("node")
    if found is None:
        need("node")
    assert found is not None
    return found


def js_tools() -> Path:
    """js/node_modules/.bin, after `npm ci` in js/."""
    node()
    bin_dir = JS / "node_modules" / ".bin"
    if not (bin_dir / "tsc").exists() or not (JS / "node_modules" / "react").exists():
        need("js/node_modules (run `npm ci` in js/)")
    return bin_dir


def test_the_served_client_is_built_from_the_package() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts/build_static.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr


def test_node_unit_tests_of_hub_js() -> None:
    proc = subprocess.run(
        [node(), "--test", str(ROOT / "tests/js")], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]


def test_node_tests_of_the_packages() -> None:
    js_tools()
    proc = subprocess.run(
        [node(), "--test", "test/"], cwd=JS, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]
    assert "# fail 0" in proc.stdout
    # Only the badges whose value changed render (printed by js/test/react.test.mjs).
    assert "re-renders per counts frame in a list of 100 badges: [1,2,0,3]" in proc.stdout


def test_tsc_checks_the_typed_js_and_a_typed_usage() -> None:
    tools = js_tools()
    proc = subprocess.run(
        [node(), str(tools / "tsc"), "--noEmit", "-p", "tsconfig.json"],
        cwd=JS,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]


async def test_the_module_its_types_and_the_demo_are_served(server: ServerThread) -> None:
    async with httpx.AsyncClient(base_url=server.url) as http:
        js = await http.get("/static/hub.js")
        assert js.status_code == 200 and js.headers["content-type"].startswith("text/javascript")
        assert "export function connect" in js.text
        assert js.content == (ROOT / "hub/static/hub.js").read_bytes()
        types = await http.get("/static/hub.d.ts")
        assert "export class HubConnection" in types.text
        demo = await http.get("/demo")
        assert demo.status_code == 200 and 'from "/static/hub.js"' in demo.text
        assert (await http.get("/static/secret.py")).status_code == 404


def test_bundle_sizes_are_within_their_targets() -> None:
    """scripts/bundle_sizes.mjs: 8 KB gzipped for the client, 3 KB for the React bindings."""
    js_tools()
    proc = subprocess.run(
        [node(), str(ROOT / "scripts/bundle_sizes.mjs")], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "@presence-hub/react (without the client)" in proc.stdout


def test_the_react_example_bundles(tmp_path: Path) -> None:
    """examples/react compiles against the packages (resolved from js/node_modules)."""
    tools = js_tools()
    proc = subprocess.run(
        [str(tools / "esbuild"), str(ROOT / "examples/react/src/main.jsx"), "--bundle",
         "--format=esm", "--jsx=automatic", f"--outfile={tmp_path / 'main.js'}",
         "--log-level=warning"],
        env={**os.environ, "NODE_PATH": str(JS / "node_modules")},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "presence-facepile" in (tmp_path / "main.js").read_text()
