"""The public API is small and explicit: this list changes only on purpose."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import hub

ROOT = Path(__file__).resolve().parent.parent


def test_public_api_is_pinned() -> None:
    assert sorted(hub.__all__) == [
        "ClaimState",
        "ClaimView",
        "CloseCode",
        "Diff",
        "Grant",
        "HubClient",
        "HubError",
        "PeerError",
        "Presence",
        "PresenceReader",
        "Settings",
        "Snapshot",
        "StreamClosed",
        "__version__",
        "create_app",
        "presence_of",
    ]
    for name in hub.__all__:
        assert getattr(hub, name) is not None


@pytest.mark.parametrize("module", ["hub.presence", "hub.protocol", "hub.client", "hub.room"])
def test_the_core_and_the_client_load_without_the_server(module: str) -> None:
    """``import hub.presence`` (or the protocol, the room, the client) loads none of the
    server's dependencies: the package's top level is lazy."""
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", f"import {module}"],
        capture_output=True,
        text=True,
        check=True,
    )
    loaded = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines()[1:]}
    assert module in loaded
    server = {"uvicorn", "starlette", "prometheus_client", "jwt"}
    assert not {name for name in loaded if name.split(".")[0] in server}


def test_the_version_lives_in_one_place() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert "version" not in project and "version" in project["dynamic"]
    assert importlib.metadata.version("presence-hub") == hub.__version__
