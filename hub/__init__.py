"""Presence hub: a WebSocket hub that tells every viewer of a workspace how many clients are
looking at each of its sessions, live.

The public API is what this module exports; everything else is internal. The names load on
first use (PEP 562), so ``import hub.presence`` or ``import hub.client`` pulls in none of the
server's dependencies (uvicorn, Starlette, prometheus-client, PyJWT).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# The one place the version lives (pyproject.toml reads it from here).
__version__ = "0.1.0"

# Public name -> the module that defines it.
_EXPORTS = {
    "ClaimState": "hub.presence",
    "ClaimView": "hub.presence",
    "CloseCode": "hub.protocol",
    "Diff": "hub.presence",
    "Grant": "hub.auth",
    "HubClient": "hub.client",
    "HubError": "hub.errors",
    "PeerError": "hub.errors",
    "Presence": "hub.presence",
    "PresenceReader": "hub.reader",
    "Settings": "hub.settings",
    "Snapshot": "hub.presence",
    "StreamClosed": "hub.client",
    "create_app": "hub.app",
    "presence_of": "hub.reader",
}

__all__ = [
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

if TYPE_CHECKING:
    from hub.app import create_app
    from hub.auth import Grant
    from hub.client import HubClient, StreamClosed
    from hub.errors import HubError, PeerError
    from hub.presence import ClaimState, ClaimView, Diff, Presence, Snapshot
    from hub.protocol import CloseCode
    from hub.reader import PresenceReader, presence_of
    from hub.settings import Settings


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'hub' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
