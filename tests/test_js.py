"""The browser client's unit tests (node's test runner) and how the hub serves it."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.harness import ServerThread

ROOT = Path(__file__).resolve().parent.parent


def test_node_unit_tests_of_hub_js() -> None:
    if shutil.which("node") is None:
        if os.environ.get("HUB_REQUIRE_SERVICES"):
            pytest.fail("node is not installed")
        pytest.skip("node is not installed")
    proc = subprocess.run(
        ["node", "--test", str(ROOT / "tests/js")], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]


async def test_the_module_its_types_and_the_demo_are_served(server: ServerThread) -> None:
    async with httpx.AsyncClient(base_url=server.url) as http:
        js = await http.get("/static/hub.js")
        assert js.status_code == 200 and js.headers["content-type"].startswith("text/javascript")
        assert "export function connect" in js.text
        types = await http.get("/static/hub.d.ts")
        assert "export class HubConnection" in types.text
        demo = await http.get("/demo")
        assert demo.status_code == 200 and 'from "/static/hub.js"' in demo.text
        assert (await http.get("/static/secret.py")).status_code == 404
