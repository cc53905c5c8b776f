"""The public API is small and explicit: this list changes only on purpose."""

from __future__ import annotations

import hub


def test_public_api_is_pinned() -> None:
    assert sorted(hub.__all__) == [
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
    for name in hub.__all__:
        assert getattr(hub, name) is not None
