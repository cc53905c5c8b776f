"""The node: its liveness among the others, its generation, and its own truth. Pure.

Theory of operation. Several hub processes ("nodes") share one Redis. Each holds sockets,
and Redis counts each socket as a stream of ``<node>|<client>``. Redis can lose what a node
wrote (restarted empty, a failover, a reply lost on a dead connection) and other nodes can
take a node for dead (its heartbeat lapsed during a pause). The rules:

Liveness (:func:`others`, :func:`dead`).
    A node is alive while its heartbeat key ``hub:node:<id>`` exists: the node refreshes it
    every ``heartbeat`` with a TTL of ``node_ttl`` (so the clock that decides is Redis's; a
    node shows only that the key was there). A node registered in ``hub:nodes`` whose key is
    gone is dead: any survivor that notices clears it (detaches its streams in each of its
    workspaces, with grace, then leaves the registry and counts up the node's clear count,
    last). Clearing twice does what clearing once does, so survivors never coordinate.

Standing (:class:`Standing`): whether this node's truth is in Redis.
    Redis may differ from this node's truth while the node is *dirty*: at start, after a
    call that may have been lost (:meth:`Standing.suspect`), or a step that failed
    (:meth:`Standing.doubt`). At every heartbeat the node re-asserts (writes its truth
    back) when it is dirty, when its heartbeat key had lapsed (Redis forgot it, or it was
    taken for dead), or when its clear count moved since its last re-assertion (a survivor
    cleared it, even after it came back): :meth:`Standing.must_reassert`. Whatever the
    interleaving of a clear and a re-assertion, the last word is this node's own streams,
    since a clear counts up last and that makes the node re-assert once more.

The generation fence (:meth:`Standing.fence`).
    Every stream write of this node carries its generation; Redis keeps the newest it saw
    from the node and refuses (a negative answer) a write made under an older one: a write
    that arrived after the node gave up on it (a timeout) would count a stream without a
    socket. The generation starts at the wall clock in microseconds (``now``: a restarted
    node, same id, is newer than everything its last run wrote) and moves up by one at every
    suspicion. A survivor clearing another node writes unfenced (:data:`UNFENCED`).

Truth (:class:`Truth`): what this node re-asserts.
    The streams its sockets hold, per workspace and client, and what it remembers of each such
    claim (:class:`~hub.presence.Recalled`: session and released mark with their versions,
    the claim's birth, user and profile). Answers and feed messages may come in any order, so
    memory takes each field only when its version is newer, and the birth when earlier
    (:meth:`Truth.learn`); claims gone for good (a
    retired client, a deleted workspace) are forgotten, never re-asserted.

Marks (:class:`Marks`): what this node acknowledged of claims' states.
    A release (204) or a create's hold answered here, and a session set here (on a socket or
    over REST), each with the version it wrote, kept for the tombstones' lifetime and written
    back with the streams at every re-assertion (``lua/_lib.lua``, ``write_marks``): Redis may
    lose them (restarted empty) while the node holding the client's stream never heard of them
    (its feed was cut). Redis merges each newer-wins, only into a claim born before it, so a
    claim made anew after it keeps its own.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from typing import Any

import orjson

from hub.presence import Profile, Recalled

UNFENCED = -1  # the generation of a survivor's write: not the node's own, not fenced
CLEARED_TTL_MS = 7 * 24 * 3600 * 1000  # a clear count outlives any pause worth noticing


def others(me: str, registered: Iterable[str]) -> list[str]:
    """The registered nodes other than ``me``, in the order a survivor looks at them."""
    return sorted(set(registered) - {me})


def dead(nodes: Sequence[str], beating: Sequence[Any]) -> list[str]:
    """Of ``nodes``, those whose heartbeat key was not found (``beating[i]`` falsy)."""
    return [node for node, up in zip(nodes, beating, strict=True) if not up]


class Standing:
    """This node's standing in Redis: whether to re-assert, and its generation."""

    def __init__(self, node: str, now: float) -> None:
        self.node = node
        self.generation = int(now * 1_000_000)
        self.dirty = True  # Redis may differ from this node's truth
        self.cleared: str | None = None  # the clear count as of the last re-assertion

    def suspect(self) -> None:
        """A write's answer was lost (a timeout, a dead connection): re-assert, under a new
        generation, so that the write, should it arrive late, is refused."""
        self.dirty = True
        self.generation += 1

    def doubt(self) -> None:
        """Redis may have missed something (a step failed): re-assert at the next beat."""
        self.dirty = True

    def must_reassert(self, beating: bool, cleared: str | None) -> bool:
        """At a heartbeat: ``beating``, whether the heartbeat key was still there when
        refreshed; ``cleared``, the node's clear count read with it."""
        return not beating or self.dirty or cleared != self.cleared

    def reasserting(self, cleared: str | None) -> None:
        """A re-assertion starts (``cleared``: the clear count read before it)."""
        self.dirty = False
        self.cleared = cleared

    def fence(self, node: str) -> int:
        """The generation a stream write of ``node``'s streams carries."""
        return self.generation if node == self.node else UNFENCED

    def fenced(self, answer: int) -> bool:
        """Whether a stream write was refused by the fence (a negative answer): then this
        node has given up on something meanwhile, so it suspects again."""
        if answer >= 0:
            return False
        self.suspect()
        return True


class Truth:
    """This node's truth: its sockets' streams and what it remembers of their claims."""

    def __init__(self) -> None:
        self._local: dict[str, dict[str, int]] = {}  # workspace -> client -> streams
        self._memory: dict[tuple[str, str], Recalled] = {}

    def workspaces(self) -> set[str]:
        """The workspaces this node holds streams in."""
        return set(self._local)

    def streams(self, workspace_id: str) -> dict[str, int]:
        """This node's streams in the workspace (a copy: the feed may change the record
        while a caller waits on Redis)."""
        return dict(self._local.get(workspace_id, {}))

    def holds(self, workspace_id: str, client_id: str) -> bool:
        return bool(self._local.get(workspace_id, {}).get(client_id))

    def remembered(self, workspace_id: str, client_id: str) -> Recalled | None:
        return self._memory.get((workspace_id, client_id))

    def attach(
        self, workspace_id: str, client_id: str, user: str | None, profile: Profile | None
    ) -> Recalled | None:
        """One more stream, recorded before its script runs (so a re-assertion never sees a
        stream without its user). A client's first stream here starts its memory afresh.
        Returns the memory as it was, for :meth:`refused`."""
        mine = self._local.setdefault(workspace_id, {})
        first = not mine.get(client_id)
        mine[client_id] = mine.get(client_id, 0) + 1
        key = (workspace_id, client_id)
        known = before = self._memory.get(key)
        if known is None or first:
            known = Recalled(user=user, profile=profile)
        elif profile is not None:
            known = dataclasses.replace(known, profile=profile)
        self._memory[key] = known
        return before

    def refused(self, workspace_id: str, client_id: str, before: Recalled | None) -> None:
        """An attach whose script refused the stream (another user's client id, a retired
        client): one stream fewer, and the memory as it was before (a refused stream's
        profile is not the user's)."""
        self.detach(workspace_id, client_id)
        key = (workspace_id, client_id)
        if before is not None and key in self._memory:
            self._memory[key] = before

    def detach(self, workspace_id: str, client_id: str) -> None:
        """One stream fewer (a detach, or an attach that failed); the last one takes the
        memory with it."""
        mine = self._local.get(workspace_id)
        if mine is None or client_id not in mine:
            return
        mine[client_id] -= 1
        if mine[client_id] <= 0:
            del mine[client_id]
            self._memory.pop((workspace_id, client_id), None)
            if not mine:
                del self._local[workspace_id]

    def forget(self, workspace_id: str, client_id: str | None) -> None:
        """Claims gone for good (a retired client; None: a deleted workspace)."""
        mine = self._local.get(workspace_id)
        if mine is None:
            return
        for c in [client_id] if client_id is not None else list(mine):
            mine.pop(c, None)
            self._memory.pop((workspace_id, c), None)
        if not mine:
            del self._local[workspace_id]

    def learn(
        self,
        workspace_id: str,
        client_id: str,
        session_id: Any,
        sv: Any,
        r: Any,
        rv: Any,
        born: Any = 0,
    ) -> None:
        """Take each field of a claim's state that is newer than what is remembered, and its
        birth when earlier (only for a claim this node holds streams of; see
        :mod:`hub.presence`, Versions)."""
        known = self._memory.get((workspace_id, client_id))
        if known is None:
            return
        sv, rv, born = int(sv), int(rv), int(born)
        if sv > known.session_v:
            known = dataclasses.replace(known, session_id=str(session_id), session_v=sv)
        if rv > known.released_v:
            known = dataclasses.replace(known, released=bool(int(r)), released_v=rv)
        if born and (not known.born or born < known.born):
            known = dataclasses.replace(known, born=born)
        self._memory[workspace_id, client_id] = known

    def set_profile(self, workspace_id: str, client_id: str, profile: Profile) -> None:
        known = self._memory.get((workspace_id, client_id))
        if known is not None:
            self._memory[workspace_id, client_id] = dataclasses.replace(known, profile=profile)

    def recalled(self, workspace_id: str, clients: Iterable[str]) -> dict[str, dict[str, Any]]:
        """What is remembered of ``clients``' claims, as ``lua/set_streams.lua`` merges it
        (versions as decimal text; user and profile only when known)."""
        claims: dict[str, dict[str, Any]] = {}
        for c in clients:
            known = self._memory.get((workspace_id, c), Recalled())
            claim = claims[c] = {
                "s": known.session_id,
                "sv": str(known.session_v),
                "r": int(known.released),
                "rv": str(known.released_v),
                "cb": str(known.born),
            }
            if known.user is not None:
                claim["u"] = known.user
            if known.profile is not None:
                claim["p"] = orjson.dumps(known.profile).decode()
        return claims


class Marks:
    """What this node acknowledged of claims: released marks (released: a release; not: a
    create's hold) and sessions (a ``set_session``, on a socket or over REST), each with its
    version, kept for ``ttl`` seconds from the answer (``now`` on any monotonic clock), oldest
    first; per claim the newest of each kind."""

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        # (workspace, client) -> (session, its version, released, its version, kept until),
        # in the order answered; a version of 0: none of that kind
        self._kept: dict[tuple[str, str], tuple[str, int, bool, int, float]] = {}

    def keep(
        self, workspace_id: str, client_id: str, released: bool, version: Any, now: float
    ) -> None:
        """A released mark answered (a release: True; a create's hold: False)."""
        self._keep(workspace_id, client_id, now, released=(released, int(version)))

    def keep_session(
        self, workspace_id: str, client_id: str, session_id: str, version: Any, now: float
    ) -> None:
        """A session answered."""
        self._keep(workspace_id, client_id, now, session=(session_id, int(version)))

    def kept(self, now: float) -> list[tuple[str, str, Recalled]]:
        """The marks still kept: (workspace, client, the marks as a memory of the claim: a
        version of 0 for a kind with none)."""
        self._expire(now)
        return [(w, c, Recalled(s, sv, r, rv)) for (w, c), (s, sv, r, rv, _) in self._kept.items()]

    def drop(self, workspace_id: str, client_id: str) -> None:
        """A mark with nothing left to write back to (its workspace is gone)."""
        self._kept.pop((workspace_id, client_id), None)

    def _keep(
        self,
        workspace_id: str,
        client_id: str,
        now: float,
        session: tuple[str, int] | None = None,
        released: tuple[bool, int] | None = None,
    ) -> None:
        """Take a newer mark of either kind; the claim's marks go last (the newest answer)."""
        self._expire(now)
        key = (workspace_id, client_id)
        s, sv, r, rv, _ = self._kept.pop(key, ("", 0, False, 0, 0.0))
        if session is not None and session[1] > sv:
            s, sv = session
        if released is not None and released[1] > rv:
            r, rv = released
        self._kept[key] = (s, sv, r, rv, now + self.ttl)

    def _expire(self, now: float) -> None:
        kept = self._kept
        while kept and next(iter(kept.values()))[4] <= now:
            del kept[next(iter(kept))]
