"""The presence core: who is looking at which session of a workspace, as a pure state machine.

Theory of operation
-------------------
A **claim** is the presence record of one client in one workspace. It is in one of three states:

    held      created by ``hold`` (a creation hold), no stream yet; expires after create_grace
    attached  streams >= 1; the only state that counts
    grace     the last stream closed without a release; expires after detach_grace

Transitions (docs/protocol.md section 2):

    (none) --hold--> held          held/grace --attach--> attached      grace --hold--> held
    attached --detach(last)--> grace, or removed at once when the claim was released
    held/grace --deadline--> removed          any --retire--> removed, client refused for retire_ttl

Counting rule: ``attached_clients(S)`` is the number of attached claims whose ``session_id`` is
S, and ``online`` the number of attached claims. Both are kept incrementally (a change costs
O(1), a snapshot O(sessions with viewers)); nothing ever rescans the claims.

Every method takes ``now`` (seconds on any monotonic clock the caller chooses) and returns a
:class:`Diff`: the sessions whose count moved (new absolute values, 0 included), ``online`` when
it moved, and the workspace ``seq``, which grows by exactly one per state change that moves a
count. A call that moves nothing returns an empty diff carrying the current ``seq``.

Time never passes by itself here: the shell asks :meth:`Presence.next_deadline` when to wake and
then calls :meth:`Presence.expire` with the time it woke at. No I/O, no asyncio, no clock reads.

The empty session id ``""`` means "no session" (a landing page): such attached claims count in
``online`` and in ``attached_clients("")`` but never appear in ``counts`` maps, which name only
real sessions.

Nodes
-----
With several hub processes ("nodes") on one shared store, each stream belongs to the node whose
socket holds it, and three more rules apply (the Redis backend's scripts follow them; the
random-history tests check them against this definition):

    attach(node) / detach(node)   count the node's streams of the client too; a node only
                                  detaches a stream it holds (else nothing moves)
    set_streams(node, streams)    the node's streams of each client become exactly these
                                  (a node re-asserting its truth); each client moves by the
                                  difference, by the ordinary rules (the first stream counts,
                                  the last one starts grace or ends a released claim); a claim
                                  that is gone comes back with the session the node last knew;
                                  a retired client never comes back
    clear_node(node)              set_streams(node, {}) in every workspace (a survivor
                                  clearing a node taken for dead: its streams enter grace)

In one process (the memory backend) no node is named and streams are counted per claim only.

Versions: state that cannot go back in time
-------------------------------------------
A node's memory of a claim may be older than the claim (it missed a change while paused or cut
off), and the store may lose a claim while a node still holds its streams (a node cleared past
its grace, Redis restarted empty). So the two parts of a claim that a client sets, its session
and its released mark, each carry a **version** (``session_v``, ``released_v``) taken from the
workspace's clock, which only grows: every write of either takes the next tick. What a node
remembers of a claim is a :class:`Recalled` with the versions it saw, and a re-assertion
merges field by field, the higher version winning: a node's memory restores what was lost but
never overwrites a newer state.

    set_session / release / hold    write the field with the next tick
    a claim ends (hold or grace     leaves a tombstone of its last state for ``tomb_ttl``, which
    expiry, a released claim's      a re-assertion that finds the claim gone merges too: an
    last close)                     expiry never drops a change the node did not see
    a release that finds no claim   marks the tombstone released (at the next tick): the claim
                                    may be lost while a node still holds a stream of the
                                    client, and its re-assertion must not forget the release
    a claim made by a join or hold  versions 0, and a **birth** (``born``: the next tick):
                                    a memory of an older state can only exist on a node that
                                    still holds a stream of the client, so the claim never
                                    truly ended, and that memory is the truth (the store was
                                    cleared or lost it). The ended claim's tombstone stays: a
                                    memory born no later than the tombstone's claim is of that
                                    claim (or an older one), and the tombstone is merged before
                                    it, so what that node missed before the end (a session, a
                                    release) comes back too; a memory of a claim made anew
                                    (born later) merges alone
    a merge                         the claim's birth becomes the earliest of the two: a claim
                                    that took a node's memory of an older claim continues it

In the Redis backend the store itself can lose everything (Redis restarted empty), which this
core never does: there the node that answered a release or a hold keeps its versioned mark
and writes it back at its re-assertion, merged by the same two rules (newer wins; only into a
claim born before the mark), so that an acknowledged release survives even when the node
holding the client's stream never heard of it. Births are what tell the claims apart: versions
alone cannot, since a claim made anew and one whose node never saw a change are both at 0.

A re-asserted claim takes its user from the node's memory (recorded with the stream, so it is
never anonymous for a named user), and a retired client never comes back.

People (docs/protocol.md section 9)
------------------------------
A claim may belong to a user, bound at its first stream (``attach(..., user=)``); a later
stream of the same client as another user (or anonymous against named) is refused
(:class:`~hub.errors.Forbidden`). A claim without a user is anonymous: a user of its own,
never listed. Beside the client counts the core keeps, just as incrementally:

    users(S)       distinct users among the attached claims viewing S (anonymous ones each one)
    online_users   distinct users among the attached claims
    viewers(S)     the identified users viewing S, earliest arrival first, with their claims

A user's profile is the one most recently set on any of its claims in the workspace (at
attach, or by :meth:`Presence.set_profile`); it lives as long as the user has a claim there.
A profile change moves no count, so it does not advance ``seq``: its diff names, in
``touched``, the sessions whose viewer lists it changed.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from hub.deadlines import Deadlines
from hub.errors import ClientRetired, Forbidden, NotAttached, WorkspaceNotFound
from hub.multimap import MultiMap

__all__ = [
    "ClaimState", "ClaimView", "Diff", "Presence", "Profile", "Recalled", "Snapshot", "Viewer",
    "Viewers",
]  # fmt: skip

Profile = dict[str, Any]  # a JSON object of at most 1024 bytes encoded (protocol checks it)


class ClaimState(StrEnum):
    HELD = "held"
    ATTACHED = "attached"
    GRACE = "grace"


@dataclass(frozen=True, slots=True)
class Diff:
    """What one state change moved in one workspace: client counts (``counts``, ``online``),
    user counts (``users``, ``online_users``), and, in ``touched``, the sessions whose viewer
    list changed beyond what ``counts`` names (the landing page ``""``, a profile change)."""

    workspace_id: str
    seq: int
    counts: dict[str, int] = field(default_factory=dict)
    online: int | None = None
    users: dict[str, int] = field(default_factory=dict)
    online_users: int | None = None
    touched: frozenset[str] = frozenset()

    @property
    def changed(self) -> bool:
        """Whether counts moved, of clients or of users (then ``seq`` moved with them)."""
        return (
            bool(self.counts)
            or self.online is not None
            or bool(self.users)
            or self.online_users is not None
        )

    @property
    def viewed(self) -> frozenset[str] | set[str]:
        """The sessions whose viewers may have changed (for watchers)."""
        return self.counts.keys() | self.touched if self.counts else self.touched


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The whole presence of a workspace at version ``seq``; ``counts`` and ``users`` list
    only n > 0."""

    workspace_id: str
    seq: int
    online: int
    counts: dict[str, int]
    users: dict[str, int] = field(default_factory=dict)
    online_users: int = 0


@dataclass(frozen=True, slots=True)
class Viewer:
    """An identified user viewing a session: its profile and its attached claims there."""

    user_id: str
    profile: Profile | None
    clients: int


@dataclass(frozen=True, slots=True)
class Viewers:
    """Who views a session at ``seq``: ``total`` users, ``anonymous`` of them unnamed, and the
    first identified ones by arrival (at most the limit asked)."""

    workspace_id: str
    session_id: str
    seq: int
    total: int
    anonymous: int
    viewers: list[Viewer]


@dataclass(frozen=True, slots=True)
class ClaimView:
    """A claim as operators see it (``GET /v1/workspaces/{id}/clients``)."""

    client_id: str
    streams: int
    session_id: str
    state: ClaimState
    released: bool


@dataclass(frozen=True, slots=True)
class Recalled:
    """What a node remembers of a claim whose streams it holds (see Versions above): the
    session and released mark with the versions it saw them at, and the claim's user (None:
    anonymous) and that user's profile as the node last set them."""

    session_id: str = ""
    session_v: int = 0
    released: bool = False
    released_v: int = 0
    user: str | None = None
    profile: Profile | None = None
    born: int = 0  # the claim's birth (see Versions above); 0: unknown


def _predates(memory: Recalled, tomb: Recalled) -> bool:
    """Whether a node's memory is of the claim a tombstone ended (or an older one): born no
    later. A claim made anew after that end is born later (the clock only grows), so a memory
    of it is never taken for one of the ended claim; a memory with no birth (it never learned
    one) tells nothing."""
    return 0 < memory.born <= tomb.born


@dataclass(slots=True)
class _Claim:
    client_id: str
    session_id: str = ""
    streams: int = 0
    released: bool = False
    session_v: int = 0  # versions of session_id and released (see Versions above)
    released_v: int = 0
    born: int = 0  # a tick: which claim this is (see Versions above)
    user: str | None = None  # None: anonymous
    bound: bool = False  # the user was fixed by the claim's first stream
    # With streams == 0: True for a creation hold, False for a detach grace.
    held: bool = True
    # Expiry of the hold or grace; None while attached.
    deadline: float | None = None

    @property
    def state(self) -> ClaimState:
        if self.streams:
            return ClaimState.ATTACHED
        return ClaimState.HELD if self.held else ClaimState.GRACE


@dataclass(slots=True)
class _Space:
    """Presence of one workspace. Invariant: counts/idle/online equal a recount of claims."""

    claims: dict[str, _Claim] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)  # session -> n, only n > 0, no ""
    idle: int = 0  # attached claims with session ""
    online: int = 0
    seq: int = 0
    # People: session -> distinct users (n > 0, no ""), those of session "", and everywhere.
    users: dict[str, int] = field(default_factory=dict)
    idle_users: int = 0
    online_users: int = 0
    # session -> user -> that user's attached claims viewing it, in arrival order (named only)
    viewers: dict[str, dict[str, int]] = field(default_factory=dict)
    # user -> session -> the same numbers, by user (for online_users and profile changes)
    present: dict[str, dict[str, int]] = field(default_factory=dict)
    members: dict[str, int] = field(default_factory=dict)  # user -> claims in any state
    profiles: dict[str, Profile] = field(default_factory=dict)
    # node -> client -> streams that node holds (only for calls that name a node)
    nodes: dict[str, dict[str, int]] = field(default_factory=dict)
    clock: int = 0  # the last version given to a claim's session or released mark
    # client -> the last state of its claim that ended, and until when it is kept
    gone: dict[str, tuple[Recalled, float]] = field(default_factory=dict)


class _Change:
    """Collects the count moves of one state change and turns them into a Diff."""

    __slots__ = (
        "_counts", "_online_before", "_space", "_touched", "_users", "_users_before", "_wid",
    )  # fmt: skip

    def __init__(self, wid: str, space: _Space) -> None:
        self._wid = wid
        self._space = space
        self._online_before = space.online
        self._users_before = space.online_users
        self._counts: dict[str, int] = {}
        self._users: dict[str, int] = {}
        self._touched: set[str] = set()

    def count(self, session_id: str, delta: int, user: str | None) -> None:
        """One attached claim (of ``user``, None: anonymous) enters (+1) or leaves (-1)
        ``session_id``."""
        space = self._space
        space.online += delta
        if user is None:  # a user of its own
            space.online_users += delta
            entered = True
        else:
            entered = self._person(space, session_id, delta, user)
        if session_id == "":
            space.idle += delta
            if entered:
                space.idle_users += delta
            self._touched.add("")
            return
        self._counts[session_id] = _add(space.counts, session_id, delta)
        if entered:
            self._users[session_id] = _add(space.users, session_id, delta)

    @staticmethod
    def _person(space: _Space, session_id: str, delta: int, user: str) -> bool:
        """Move one claim of a named user; whether the user entered or left the session."""
        present = space.present.get(user)
        if present is None:
            present = space.present[user] = {}
            space.online_users += 1
        k = present.get(session_id, 0) + delta
        viewing = space.viewers.setdefault(session_id, {})
        if k:
            present[session_id] = viewing[user] = k
        else:
            del present[session_id], viewing[user]
            if not viewing:
                del space.viewers[session_id]
            if not present:
                del space.present[user]
                space.online_users -= 1
        return k == (1 if delta > 0 else 0)

    def touch(self, sessions: Iterable[str]) -> None:
        """Viewer lists changed without a count (a profile)."""
        self._touched.update(sessions)

    def diff(self) -> Diff:
        space = self._space
        online = space.online if space.online != self._online_before else None
        users = space.online_users if space.online_users != self._users_before else None
        # online_users may move alone: a re-assertion that swaps an anonymous claim for one of
        # a user who is online elsewhere, all on the landing page ""
        if self._counts or online is not None or users is not None:
            space.seq += 1
        touched = frozenset(self._touched) if self._touched else frozenset()
        return Diff(self._wid, space.seq, self._counts, online, self._users, users, touched)


def _add(values: dict[str, int], session_id: str, delta: int) -> int:
    """Move one session's value by ``delta`` (kept only while > 0); the new value."""
    n = values.get(session_id, 0) + delta
    if n:
        values[session_id] = n
    else:
        del values[session_id]
    return n


# Timer keys: (what it expires: a claim, a retirement or a tombstone; workspace_id; client_id).
_CLAIM, _RETIRED, _TOMB = "claim", "retired", "tomb"
_Timer = tuple[str, str, str]


class Presence:
    """Claims of every known workspace, their counts, and the timers that expire them."""

    def __init__(
        self,
        *,
        create_grace: float = 30.0,
        detach_grace: float = 10.0,
        retire_ttl: float = 86400.0,
        tomb_ttl: float = 0.0,
    ) -> None:
        """``tomb_ttl``: how long an ended claim's tombstone is kept (0: none, as in one
        process, where no node ever re-asserts)."""
        self.create_grace = create_grace
        self.detach_grace = detach_grace
        self.retire_ttl = retire_ttl
        self.tomb_ttl = tomb_ttl
        self._spaces: dict[str, _Space] = {}
        self._by_client: MultiMap[str] = MultiMap()  # client -> workspaces it has claims in
        self._retired: dict[str, float] = {}  # client -> refused until
        self._timers: Deadlines[_Timer] = Deadlines(self._live)

    # -- workspaces -------------------------------------------------------------------------

    def add_workspace(self, workspace_id: str) -> None:
        """Make a workspace known (idempotent); presence calls on unknown ones are refused."""
        self._spaces.setdefault(workspace_id, _Space())

    def remove_workspace(self, workspace_id: str) -> None:
        """Forget a workspace and all its claims (idempotent)."""
        space = self._spaces.pop(workspace_id, None)
        if space is None:
            return
        for client_id in space.claims:
            self._unindex(workspace_id, client_id)

    def has_workspace(self, workspace_id: str) -> bool:
        return workspace_id in self._spaces

    # -- claim lifecycle --------------------------------------------------------------------

    def hold(self, workspace_id: str, client_id: str, now: float) -> Diff:
        """A creation hold: a new claim counting nowhere, or a grace claim turned into one."""
        space = self._space(workspace_id)
        self._refuse_retired(client_id, now)
        claim = space.claims.get(client_id)
        if claim is None:
            claim = self._born(workspace_id, space, client_id)
        claim.released = False
        claim.released_v = self._tick(space)
        if not claim.streams:
            claim.held = True
            self._arm(workspace_id, claim, now + self.create_grace)
        return Diff(workspace_id, space.seq)

    def attach(
        self,
        workspace_id: str,
        client_id: str,
        now: float,
        node: str | None = None,
        *,
        user: str | None = None,
        profile: Profile | None = None,
    ) -> Diff:
        """One more stream of the client (held by ``node``, as ``user``, None: anonymous); the
        first one makes it count. A ``profile`` becomes the user's."""
        space = self._space(workspace_id)
        self._refuse_retired(client_id, now)
        claim = space.claims.get(client_id)
        if claim is not None and claim.bound and claim.user != user:
            raise Forbidden("this client id is in use by another user")
        if claim is None:
            claim = self._born(workspace_id, space, client_id)
        if not claim.bound:
            self._bind(space, claim, user)
        if node is not None:
            mine = space.nodes.setdefault(node, {})
            mine[client_id] = mine.get(client_id, 0) + 1
        change = _Change(workspace_id, space)
        self._move(workspace_id, space, change, claim, +1, now)
        if profile is not None:
            self._profile(space, change, claim, profile)
        return change.diff()

    def set_profile(self, workspace_id: str, client_id: str, profile: Profile, now: float) -> Diff:
        """The client's user gets ``profile`` (an anonymous claim keeps none): an update of
        the user wherever it is listed, never a leave and a join; ``seq`` does not move."""
        space, claim = self._attached(workspace_id, client_id, now)
        change = _Change(workspace_id, space)
        self._profile(space, change, claim, profile)
        return change.diff()

    def set_session(self, workspace_id: str, client_id: str, session_id: str, now: float) -> Diff:
        """Move an attached client to ``session_id`` ("" for none). A claim whose session was
        never set takes a version even when it names the session it has ("" on a claim made
        anew): what the client said then wins over an older node's memory (Versions above)."""
        space, claim = self._attached(workspace_id, client_id, now)
        change = _Change(workspace_id, space)
        if claim.session_id != session_id or not claim.session_v:
            if claim.session_id != session_id:
                self._switch(change, claim, session_id)
            claim.session_v = self._tick(space)
        return change.diff()

    def detach(
        self, workspace_id: str, client_id: str, now: float, node: str | None = None
    ) -> Diff:
        """One stream of the client closed; the last one starts grace, or ends a released claim.

        Tolerant by design: a stream whose claim was already removed (retired client, deleted
        workspace), or that ``node`` does not hold, detaches into nothing and moves nothing.
        """
        space = self._spaces.get(workspace_id)
        claim = space.claims.get(client_id) if space is not None else None
        if space is None or claim is None or not claim.streams:
            return Diff(workspace_id, space.seq if space is not None else 0)
        if node is not None:
            mine = space.nodes.get(node, {})
            if not mine.get(client_id):
                return Diff(workspace_id, space.seq)
            self._set_node_streams(space, node, client_id, mine[client_id] - 1)
        change = _Change(workspace_id, space)
        self._move(workspace_id, space, change, claim, -1, now)
        return change.diff()

    def set_streams(
        self,
        workspace_id: str,
        node: str,
        streams: dict[str, int],
        known: dict[str, Recalled],
        now: float,
    ) -> Diff:
        """Make ``node``'s streams in the workspace exactly ``streams`` (see Nodes above) and
        merge what the node remembers of each claim it names (``known``, see Versions above):
        a claim found gone comes back from its tombstone and the node's memory, the newer of
        the two for each field; a claim still there takes from the memory only what is newer.
        """
        space = self._spaces.get(workspace_id)
        if space is None:
            if not streams:
                return Diff(workspace_id, 0)
            space = self._spaces[workspace_id] = _Space()
        want = {c: n for c, n in streams.items() if not self.is_retired(c, now)}
        have = space.nodes.get(node, {})
        change = _Change(workspace_id, space)
        for client_id in sorted(want.keys() | have.keys()):
            target = want.get(client_id, 0)
            delta = target - have.get(client_id, 0)
            recalled = known.get(client_id, Recalled())
            claim = space.claims.get(client_id)
            if claim is None:
                if target:
                    args = (node, client_id, target, recalled, now)
                    self._bring_back(workspace_id, space, change, *args)
                    back = space.claims[client_id]
                    if recalled.profile is not None and back.user not in space.profiles:
                        self._profile(space, change, back, recalled.profile)
                elif delta:
                    self._set_node_streams(space, node, client_id, 0)
                continue
            if target:
                tomb = space.gone.get(client_id)
                if tomb is not None and _predates(recalled, tomb[0]):
                    self._merge(space, change, claim, tomb[0])
                self._merge(space, change, claim, recalled)
            if delta:
                self._set_node_streams(space, node, client_id, target)
                self._move(workspace_id, space, change, claim, delta, now)
        return change.diff()

    def _bring_back(
        self,
        workspace_id: str,
        space: _Space,
        change: _Change,
        node: str,
        client_id: str,
        streams: int,
        recalled: Recalled,
        now: float,
    ) -> None:
        """Re-create a claim a node holds streams of: its user from the node's memory, its
        state the newer of its tombstone and that memory, field by field."""
        claim = self._new_claim(workspace_id, space, client_id)
        self._bind(space, claim, recalled.user)
        tomb = space.gone.pop(client_id, None)
        if tomb is not None:
            self._merge(space, change, claim, tomb[0])
        self._merge(space, change, claim, recalled)
        self._set_node_streams(space, node, client_id, streams)
        self._move(workspace_id, space, change, claim, streams, now)

    def clear_node(self, node: str, now: float) -> list[Diff]:
        """Detach every stream ``node`` holds, in every workspace (a node taken for dead)."""
        return [
            self.set_streams(workspace_id, node, {}, {}, now)
            for workspace_id, space in sorted(self._spaces.items())
            if space.nodes.get(node)
        ]

    def release(self, workspace_id: str, client_id: str, now: float) -> Diff:
        """The client leaves without grace: now if it has no stream, else at its last close."""
        space = self._space(workspace_id)
        claim = space.claims.get(client_id)
        if claim is not None:
            claim.released = True
            claim.released_v = self._tick(space)
            if not claim.streams:
                self._remove(workspace_id, space, client_id, now)
        elif self.tomb_ttl > 0:
            # No claim here, but a node may still hold a stream of the client (the store lost
            # the claim: Redis restarted empty, and the node has not re-asserted yet). The
            # tombstone keeps the mark at a new version, so that re-assertion merges it: an
            # acknowledged release is never forgotten. A join that makes a new claim drops it,
            # as it drops any tombstone.
            tomb = space.gone.get(client_id)
            last = tomb[0] if tomb is not None else Recalled()
            # Born at the mark: every claim born before it predates it (any of them may be
            # the lost one), every claim made after it does not.
            tick = self._tick(space)
            released = Recalled(last.session_id, last.session_v, True, tick, born=tick)
            until = now + self.tomb_ttl
            space.gone[client_id] = (released, until)
            self._timers.push(until, (_TOMB, workspace_id, client_id))
        return Diff(workspace_id, space.seq)

    def retire(self, client_id: str, now: float, ttl: float | None = None) -> list[Diff]:
        """Remove every claim of the client and refuse it for ``ttl`` (default ``retire_ttl``;
        idempotent, a longer refusal is never shortened)."""
        until = max(
            now + (self.retire_ttl if ttl is None else ttl), self._retired.get(client_id, 0)
        )
        self._retired[client_id] = until
        self._timers.push(until, (_RETIRED, "", client_id))
        diffs = []
        for workspace_id in sorted(self._by_client.get(client_id)):
            space = self._spaces[workspace_id]
            claim = space.claims[client_id]
            change = _Change(workspace_id, space)
            if claim.streams:
                change.count(claim.session_id, -1, claim.user)
            self._remove(workspace_id, space, client_id, None)
            for node in list(space.nodes):
                self._set_node_streams(space, node, client_id, 0)
            diffs.append(change.diff())
        return diffs

    def is_retired(self, client_id: str, now: float) -> bool:
        until = self._retired.get(client_id)
        return until is not None and now < until

    # -- time -------------------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        """When :meth:`expire` next has something to do, or None when no timer is pending."""
        return self._timers.next()

    def expire(self, now: float) -> list[Diff]:
        """Fire every timer due at ``now``; each fires once. Holds and graces count nowhere,
        so expiry never moves a count: the diffs returned are empty, one per workspace touched.
        """
        touched: dict[str, Diff] = {}
        for kind, workspace_id, client_id in self._timers.due(now):
            if kind == _RETIRED:
                del self._retired[client_id]
            elif kind == _TOMB:
                del self._spaces[workspace_id].gone[client_id]
            else:
                space = self._spaces[workspace_id]
                self._remove(workspace_id, space, client_id, now)
                touched[workspace_id] = Diff(workspace_id, space.seq)
        return list(touched.values())

    # -- reads ------------------------------------------------------------------------------

    def snapshot(self, workspace_id: str) -> Snapshot:
        space = self._space(workspace_id)
        return Snapshot(
            workspace_id,
            space.seq,
            space.online,
            dict(space.counts),
            dict(space.users),
            space.online_users,
        )

    def viewers(self, workspace_id: str, session_id: str, limit: int) -> Viewers:
        """Who views ``session_id``: the first ``limit`` identified users by arrival."""
        space = self._space(workspace_id)
        viewing = space.viewers.get(session_id, {})
        total = space.idle_users if session_id == "" else space.users.get(session_id, 0)
        listed = [
            Viewer(user, space.profiles.get(user), clients)
            for user, clients in itertools.islice(viewing.items(), limit)
        ]
        return Viewers(workspace_id, session_id, space.seq, total, total - len(viewing), listed)

    def attached_users(self, workspace_id: str, session_id: str) -> int:
        space = self._space(workspace_id)
        return space.idle_users if session_id == "" else space.users.get(session_id, 0)

    def online_users(self, workspace_id: str) -> int:
        return self._space(workspace_id).online_users

    def attached_clients(self, workspace_id: str, session_id: str) -> int:
        space = self._space(workspace_id)
        return space.idle if session_id == "" else space.counts.get(session_id, 0)

    def online(self, workspace_id: str) -> int:
        return self._space(workspace_id).online

    def claims(self, workspace_id: str) -> list[ClaimView]:
        return [
            ClaimView(c.client_id, c.streams, c.session_id, c.state, c.released)
            for c in self._space(workspace_id).claims.values()
        ]

    def claim_count(self) -> int:
        """Claims held in every workspace (for leak checks and metrics)."""
        return sum(len(space.claims) for space in self._spaces.values())

    def claim_states(self) -> dict[str, int]:
        """Claims in every workspace by state, every state listed (O(claims): for metrics)."""
        states = dict.fromkeys((s.value for s in ClaimState), 0)
        for space in self._spaces.values():
            for claim in space.claims.values():
                states[claim.state.value] += 1
        return states

    # -- internals --------------------------------------------------------------------------

    def _space(self, workspace_id: str) -> _Space:
        space = self._spaces.get(workspace_id)
        if space is None:
            raise WorkspaceNotFound(f"workspace {workspace_id!r} not found")
        return space

    def _attached(self, workspace_id: str, client_id: str, now: float) -> tuple[_Space, _Claim]:
        """The workspace and the client's claim, which must have a live stream."""
        space = self._space(workspace_id)
        self._refuse_retired(client_id, now)
        claim = space.claims.get(client_id)
        if claim is None or not claim.streams:
            raise NotAttached(f"client {client_id} has no live stream in this workspace")
        return space, claim

    def _refuse_retired(self, client_id: str, now: float) -> None:
        if self.is_retired(client_id, now):
            raise ClientRetired(f"client {client_id} is retired")

    def _born(self, workspace_id: str, space: _Space, client_id: str) -> _Claim:
        """A claim made by a join or a hold, at versions 0, born at the next tick (see
        Versions above). The ended claim's tombstone stays: a node that comes back with
        streams of that ended claim brings what it missed back from there (see set_streams)."""
        claim = self._new_claim(workspace_id, space, client_id)
        claim.born = self._tick(space)
        return claim

    @staticmethod
    def _tick(space: _Space) -> int:
        space.clock += 1
        return space.clock

    def _merge(self, space: _Space, change: _Change, claim: _Claim, known: Recalled) -> None:
        """Take from ``known`` each field whose version is newer than the claim's, and its
        birth when earlier."""
        if known.session_v > claim.session_v:
            if known.session_id != claim.session_id:
                self._switch(change, claim, known.session_id)
            claim.session_v = known.session_v
        if known.released_v > claim.released_v:
            claim.released, claim.released_v = known.released, known.released_v
        if known.born and (not claim.born or known.born < claim.born):
            claim.born = known.born  # it continues that older claim
        space.clock = max(space.clock, known.session_v, known.released_v, known.born)

    @staticmethod
    def _switch(change: _Change, claim: _Claim, session_id: str) -> None:
        """Move the claim to another session (its count moves only while it is attached)."""
        if claim.streams:
            change.count(claim.session_id, -1, claim.user)
            change.count(session_id, +1, claim.user)
        claim.session_id = session_id

    def _new_claim(self, workspace_id: str, space: _Space, client_id: str) -> _Claim:
        claim = space.claims[client_id] = _Claim(client_id)
        self._by_client.add(client_id, workspace_id)
        return claim

    def _move(
        self,
        workspace_id: str,
        space: _Space,
        change: _Change,
        claim: _Claim,
        delta: int,
        now: float,
    ) -> None:
        """Change a claim's streams by ``delta``: the first stream makes it count (and cancels
        its timer), the last one ends it (released) or starts its grace."""
        before = claim.streams
        claim.streams = max(0, before + delta)
        if not before and claim.streams:
            claim.deadline = None
            change.count(claim.session_id, +1, claim.user)
        elif before and not claim.streams:
            change.count(claim.session_id, -1, claim.user)
            if claim.released:
                self._remove(workspace_id, space, claim.client_id, now)
            else:
                claim.held = False
                self._arm(workspace_id, claim, now + self.detach_grace)

    @staticmethod
    def _set_node_streams(space: _Space, node: str, client_id: str, n: int) -> None:
        mine = space.nodes.setdefault(node, {})
        if n > 0:
            mine[client_id] = n
        else:
            mine.pop(client_id, None)
            if not mine:
                del space.nodes[node]

    def _remove(self, workspace_id: str, space: _Space, client_id: str, now: float | None) -> None:
        """End a claim; at ``now`` it leaves a tombstone (None: it leaves none, as for a
        retired client, which never comes back)."""
        claim = space.claims.pop(client_id)
        self._unindex(workspace_id, client_id)
        if now is not None and self.tomb_ttl > 0:
            last = Recalled(
                claim.session_id, claim.session_v, claim.released, claim.released_v,
                born=claim.born,
            )  # fmt: skip
            until = now + self.tomb_ttl
            space.gone[client_id] = (last, until)
            self._timers.push(until, (_TOMB, workspace_id, client_id))
        user = claim.user
        if user is not None:
            n = space.members[user] - 1
            if n:
                space.members[user] = n
            else:  # the user's last claim here: its profile goes with it
                del space.members[user]
                space.profiles.pop(user, None)

    @staticmethod
    def _bind(space: _Space, claim: _Claim, user: str | None) -> None:
        """Fix the claim's user (at its first stream)."""
        claim.bound = True
        claim.user = user
        if user is not None:
            space.members[user] = space.members.get(user, 0) + 1

    @staticmethod
    def _profile(space: _Space, change: _Change, claim: _Claim, profile: Profile) -> None:
        """The claim's user takes ``profile``; the sessions listing the user are touched."""
        user = claim.user
        if user is None or space.profiles.get(user) == profile:
            return
        space.profiles[user] = profile
        change.touch(space.present.get(user, ()))

    def _unindex(self, workspace_id: str, client_id: str) -> None:
        self._by_client.discard(client_id, workspace_id)

    def _arm(self, workspace_id: str, claim: _Claim, deadline: float) -> None:
        claim.deadline = deadline
        # A re-armed or cancelled timer leaves its old entry behind (see hub.deadlines).
        self._timers.push(deadline, (_CLAIM, workspace_id, claim.client_id))

    def _live(self, deadline: float, timer: _Timer) -> bool:
        """A timer is live while the thing it would expire still waits for that deadline."""
        kind, workspace_id, client_id = timer
        if kind == _RETIRED:
            return self._retired.get(client_id) == deadline
        space = self._spaces.get(workspace_id)
        if space is None:
            return False
        if kind == _TOMB:
            tomb = space.gone.get(client_id)
            return tomb is not None and tomb[1] == deadline
        claim = space.claims.get(client_id)
        return claim is not None and not claim.streams and claim.deadline == deadline
