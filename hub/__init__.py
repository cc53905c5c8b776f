"""Presence hub: a WebSocket hub that tells every viewer of a workspace how many clients are
looking at each of its sessions, live.

The public API is what this module exports; everything else is internal.
"""

from hub.app import create_app
from hub.client import HubClient, StreamClosed
from hub.errors import HubError, PeerError
from hub.presence import ClaimState, ClaimView, Diff, Presence, Snapshot
from hub.protocol import CloseCode
from hub.settings import Settings

__version__ = "0.1.0"

__all__ = [
    "ClaimState",
    "ClaimView",
    "CloseCode",
    "Diff",
    "HubClient",
    "HubError",
    "PeerError",
    "Presence",
    "Settings",
    "Snapshot",
    "StreamClosed",
    "__version__",
    "create_app",
]
