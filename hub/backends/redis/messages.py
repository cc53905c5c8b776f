"""The feed message: what travels on a workspace's channel ``hub:{<workspace id>}:ch``.

On the wire one JSON object with short keys, every one optional, published in the same
atomic step as the change it reports (so the feed of a workspace is in commit order). Its
publishers:

- ``commit()`` in ``lua/_lib.lua``, which ends every workspace script that changes a claim
  (attach, detach, hold, release, retire, set_session, set_profile, set_streams): ``q c o u
  ou`` when counts moved, ``t`` when viewer lists changed, ``s`` when a claim switched session;
  the script may pass ``r`` (hold.lua, release.lua) or ``x`` (retire.lua) in with it;
- ``lua/remove_workspace.lua``: ``x`` alone (everyone's claims are gone);
- the Python path :meth:`RedisBackend.publish_session
  <hub.backends.redis.backend.RedisBackend.publish_session>`: ``e`` alone
  (:func:`session_event`).

:func:`parse` reads one into a :class:`FeedMessage`. Pure.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from hub.presence import Diff


@dataclass(frozen=True, slots=True)
class Close:
    """``x``: the claims of ``client_id`` (None: of everyone) are gone; close those sockets
    with ``code`` (4410 retired, from retire.lua; 4404, from remove_workspace.lua)."""

    client_id: str | None
    code: int


@dataclass(frozen=True, slots=True)
class SessionEvent:
    """``e``: a session record of the workspace was created, updated or deleted (``op``),
    published by the Python path ``publish_session`` after the store wrote it."""

    op: str
    session: dict[str, Any]


@dataclass(frozen=True, slots=True)
class FeedMessage:
    """One message of a workspace's change feed. Each field, its wire keys, its publisher:

    ``diff``
        ``q`` the new seq, ``c`` session -> clients viewing it (0: none left), ``o`` online
        (when it moved), ``u`` session -> users viewing it, ``ou`` online users (when it
        moved), ``t`` the sessions whose viewer lists changed beyond ``c``. From ``commit()``
        of any claim script; None when the message moved nothing (neither ``q`` nor ``t``).
    ``sessions``
        ``s``: client -> (session_id, its version), for every claim that switched session
        (``switch()`` in lua/_lib.lua: set_session.lua, set_streams.lua's merge). Nodes that
        hold streams of the client learn it (what they re-assert).
    ``released``
        ``r``: client -> (released 0 or 1, its version): hold.lua clears the mark,
        release.lua sets it. Learnt as ``sessions`` is.
    ``close``
        ``x``: :class:`Close` (retire.lua, remove_workspace.lua).
    ``event``
        ``e``: :class:`SessionEvent` (the Python path ``publish_session``).
    """

    workspace_id: str
    diff: Diff | None = None
    sessions: Mapping[str, tuple[str, int]] = field(default_factory=dict)
    released: Mapping[str, tuple[int, int]] = field(default_factory=dict)
    close: Close | None = None
    event: SessionEvent | None = None


def parse(workspace_id: str, data: str | bytes) -> FeedMessage:
    """The message ``data`` heard on ``workspace_id``'s channel."""
    raw = orjson.loads(data)
    diff = None
    if "q" in raw or "t" in raw:
        diff = Diff(
            workspace_id,
            int(raw.get("q", 0)),
            raw.get("c") or {},
            raw.get("o"),
            raw.get("u") or {},
            raw.get("ou"),
            frozenset(raw.get("t") or ()),
        )
    sessions = {c: (str(s), int(sv)) for c, (s, sv) in (raw.get("s") or {}).items()}
    released = {c: (int(r), int(rv)) for c, (r, rv) in (raw.get("r") or {}).items()}
    x = raw.get("x")
    close = Close(x["k"] or None, int(x["code"])) if x is not None else None
    e = raw.get("e")
    event = SessionEvent(e["op"], e["session"]) if e is not None else None
    return FeedMessage(workspace_id, diff, sessions, released, close, event)


def session_event(op: str, session: dict[str, Any]) -> bytes:
    """The message ``publish_session`` sends: a :class:`SessionEvent` alone."""
    return orjson.dumps({"e": {"op": op, "session": session}})
