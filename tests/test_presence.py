"""The presence core, driven synchronously with fake ``now`` values."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hub.errors import ClientRetired, Forbidden, NotAttached, WorkspaceNotFound
from hub.presence import ClaimState, Presence, Recalled, Viewer

W = "w1"
A, B, C = "client-a", "client-b", "client-c"


@pytest.fixture
def p() -> Presence:
    presence = Presence(create_grace=30, detach_grace=10, retire_ttl=100)
    presence.add_workspace(W)
    return presence


@pytest.fixture
def pt() -> Presence:
    """The core as several nodes use it: ended claims leave tombstones (for 600)."""
    presence = Presence(create_grace=30, detach_grace=10, retire_ttl=100, tomb_ttl=600)
    presence.add_workspace(W)
    return presence


def state(p: Presence, client: str, workspace: str = W) -> ClaimState | None:
    for claim in p.claims(workspace):
        if claim.client_id == client:
            return claim.state
    return None


# -- the reference implementation's scenarios ------------------------------------------------


def test_attach_then_set_session_counts_one(p: Presence) -> None:
    p.attach(W, A, 0)
    p.set_session(W, A, "S1", 0)
    assert p.attached_clients(W, "S1") == 1
    assert p.attached_clients(W, "S2") == 0


def test_second_client_joins_then_switches(p: Presence) -> None:
    p.attach(W, A, 0)
    p.set_session(W, A, "S1", 0)
    p.attach(W, B, 0)
    p.set_session(W, B, "S1", 0)
    assert p.attached_clients(W, "S1") == 2
    diff = p.set_session(W, B, "S2", 0)
    assert diff.counts == {"S1": 1, "S2": 1}
    assert p.attached_clients(W, "S1") == 1
    assert p.attached_clients(W, "S2") == 1


def test_hold_only_client_never_counts_and_cannot_set(p: Presence) -> None:
    diff = p.hold(W, A, 0)
    assert not diff.changed
    assert p.online(W) == 0
    with pytest.raises(NotAttached):
        p.set_session(W, A, "S1", 0)
    assert p.snapshot(W).counts == {}


def test_stream_without_session_counts_only_for_empty_id(p: Presence) -> None:
    diff = p.attach(W, A, 0)
    assert diff.online == 1 and diff.counts == {}
    assert p.attached_clients(W, "") == 1
    assert p.attached_clients(W, "S1") == 0
    assert p.snapshot(W).counts == {}
    assert p.online(W) == 1


def test_detach_drops_the_count(p: Presence) -> None:
    p.attach(W, A, 0)
    p.set_session(W, A, "S1", 0)
    diff = p.detach(W, A, 1)
    assert diff.counts == {"S1": 0}
    assert diff.online == 0
    assert p.attached_clients(W, "S1") == 0
    assert state(p, A) is ClaimState.GRACE


def test_unknown_workspace_is_an_error(p: Presence) -> None:
    calls: list[Callable[[], object]] = [
        lambda: p.hold("nope", A, 0),
        lambda: p.attach("nope", A, 0),
        lambda: p.set_session("nope", A, "S1", 0),
        lambda: p.release("nope", A, 0),
        lambda: p.snapshot("nope"),
        lambda: p.claims("nope"),
    ]
    for call in calls:
        with pytest.raises(WorkspaceNotFound):
            call()


# -- lifecycle table, row by row -------------------------------------------------------------


def test_hold_creates_a_hold_that_expires_after_create_grace(p: Presence) -> None:
    p.hold(W, A, 0)
    assert state(p, A) is ClaimState.HELD
    assert p.next_deadline() == 30
    p.expire(29.9)
    assert state(p, A) is ClaimState.HELD
    p.expire(30)
    assert state(p, A) is None
    assert p.next_deadline() is None


def test_hold_turns_grace_into_a_fresh_hold_keeping_the_session(p: Presence) -> None:
    p.attach(W, A, 0)
    p.set_session(W, A, "S1", 0)
    p.detach(W, A, 1)  # grace until 11
    p.hold(W, A, 5)  # hold until 35
    assert state(p, A) is ClaimState.HELD
    p.expire(20)
    assert state(p, A) is ClaimState.HELD
    p.attach(W, A, 21)
    assert p.attached_clients(W, "S1") == 1


def test_hold_leaves_an_attached_claim_unchanged_but_clears_released(p: Presence) -> None:
    p.attach(W, A, 0)
    p.set_session(W, A, "S1", 0)
    p.release(W, A, 0)
    assert p.claims(W)[0].released
    diff = p.hold(W, A, 1)
    assert not diff.changed
    claim = p.claims(W)[0]
    assert claim.state is ClaimState.ATTACHED and not claim.released and claim.streams == 1
    p.detach(W, A, 2)  # no longer released: grace, not removal
    assert state(p, A) is ClaimState.GRACE


def test_attach_without_prior_hold_creates_the_claim(p: Presence) -> None:
    diff = p.attach(W, A, 0)
    assert diff.online == 1
    claim = p.claims(W)[0]
    assert (claim.streams, claim.session_id, claim.state) == (1, "", ClaimState.ATTACHED)


def test_attach_cancels_the_hold_timer(p: Presence) -> None:
    p.hold(W, A, 0)
    p.attach(W, A, 1)
    assert p.next_deadline() is None
    p.expire(1000)
    assert state(p, A) is ClaimState.ATTACHED


def test_attach_keeps_the_released_mark(p: Presence) -> None:
    p.attach(W, A, 0)
    p.release(W, A, 0)
    p.attach(W, A, 1)
    assert p.claims(W)[0].released
    p.detach(W, A, 2)
    p.detach(W, A, 3)
    assert state(p, A) is None


def test_one_client_with_two_streams_counts_once(p: Presence) -> None:
    p.attach(W, A, 0)
    diff = p.attach(W, A, 0)
    assert not diff.changed
    p.set_session(W, A, "S1", 0)
    assert p.attached_clients(W, "S1") == 1
    assert p.online(W) == 1
    assert not p.detach(W, A, 1).changed  # one stream left: still counts
    assert p.attached_clients(W, "S1") == 1
    assert p.detach(W, A, 2).counts == {"S1": 0}


def test_set_session_applies_to_every_stream_and_same_value_changes_nothing(p: Presence) -> None:
    p.attach(W, A, 0)
    p.attach(W, A, 0)
    first = p.set_session(W, A, "S1", 0)
    again = p.set_session(W, A, "S1", 0)
    assert again.seq == first.seq and not again.changed
    assert p.set_session(W, A, "", 0).counts == {"S1": 0}
    assert p.attached_clients(W, "") == 1


def test_grace_keeps_the_session_and_a_reconnect_resumes_counting(p: Presence) -> None:
    p.attach(W, A, 0)
    p.set_session(W, A, "S1", 0)
    p.detach(W, A, 1)
    assert p.attached_clients(W, "S1") == 0
    assert p.online(W) == 0
    diff = p.attach(W, A, 5)  # inside the 10 s grace
    assert diff.counts == {"S1": 1}
    assert p.next_deadline() is None


def test_grace_expires_after_detach_grace(p: Presence) -> None:
    p.attach(W, A, 0)
    p.set_session(W, A, "S1", 0)
    p.detach(W, A, 1)
    assert p.next_deadline() == 11
    p.expire(10.99)
    assert state(p, A) is ClaimState.GRACE
    p.expire(11)
    assert state(p, A) is None
    p.attach(W, A, 12)  # a fresh claim: no session any more
    assert p.attached_clients(W, "S1") == 0
    assert p.attached_clients(W, "") == 1


def test_release_without_streams_removes_now(p: Presence) -> None:
    p.hold(W, A, 0)
    p.release(W, A, 1)
    assert state(p, A) is None
    assert p.next_deadline() is None
    p.release(W, A, 2)  # idempotent


def test_release_with_streams_skips_grace_at_the_last_close(p: Presence) -> None:
    p.attach(W, A, 0)
    p.set_session(W, A, "S1", 0)
    p.release(W, A, 1)
    assert p.attached_clients(W, "S1") == 1  # still counts while attached
    diff = p.detach(W, A, 2)
    assert diff.counts == {"S1": 0}
    assert state(p, A) is None
    assert p.next_deadline() is None


def test_retire_removes_everywhere_and_refuses_later(p: Presence) -> None:
    p.add_workspace("w2")
    p.attach(W, A, 0)
    p.set_session(W, A, "S1", 0)
    p.hold("w2", A, 0)
    p.attach(W, B, 0)
    diffs = p.retire(A, 1)
    assert [(d.workspace_id, d.counts, d.online) for d in diffs] == [
        (W, {"S1": 0}, 1),
        ("w2", {}, None),
    ]
    assert state(p, A) is None and state(p, A, "w2") is None
    assert state(p, B) is ClaimState.ATTACHED
    refused: list[Callable[[], object]] = [
        lambda: p.hold(W, A, 2),
        lambda: p.attach(W, A, 2),
        lambda: p.set_session(W, A, "S1", 2),
    ]
    for call in refused:
        with pytest.raises(ClientRetired):
            call()
    assert p.is_retired(A, 100.9)
    p.expire(101)
    assert not p.is_retired(A, 101)
    p.attach(W, A, 101)  # accepted again after retire_ttl
    assert p.retire(A, 200) and p.retire(A, 200) == []  # idempotent


def test_detach_of_a_removed_claim_moves_nothing(p: Presence) -> None:
    p.attach(W, A, 0)
    p.retire(A, 1)
    diff = p.detach(W, A, 2)
    assert not diff.changed
    p.remove_workspace(W)
    assert not p.detach(W, B, 3).changed


def test_remove_workspace_forgets_its_claims(p: Presence) -> None:
    p.attach(W, A, 0)
    p.hold(W, B, 0)
    p.remove_workspace(W)
    assert not p.has_workspace(W)
    assert p.claim_count() == 0
    assert p.next_deadline() is None
    assert p.retire(A, 1) == []


def test_timers_fire_exactly_once(p: Presence) -> None:
    p.hold(W, A, 0)  # 30
    p.attach(W, B, 0)
    p.detach(W, B, 5)  # 15
    p.attach(W, B, 6)
    p.detach(W, B, 7)  # 17; the 15 entry is stale
    assert p.next_deadline() == 17
    p.expire(16)
    assert state(p, B) is ClaimState.GRACE  # the stale 15 did not fire
    p.expire(17)
    assert state(p, B) is None
    p.expire(17)
    p.attach(W, B, 18)  # a fresh claim must not be hit by an old timer
    p.expire(40)
    assert state(p, B) is ClaimState.ATTACHED
    assert state(p, A) is None


def test_seq_grows_by_one_per_count_change_only(p: Presence) -> None:
    seqs = [
        p.hold(W, A, 0).seq,
        p.attach(W, A, 0).seq,
        p.set_session(W, A, "S1", 0).seq,
        p.set_session(W, A, "S1", 0).seq,
        p.attach(W, A, 0).seq,
        p.detach(W, A, 1).seq,
        p.detach(W, A, 1).seq,
    ]
    assert seqs == [0, 1, 2, 2, 2, 2, 3]


def test_snapshot_lists_only_sessions_with_viewers(p: Presence) -> None:
    p.attach(W, A, 0)
    p.set_session(W, A, "S1", 0)
    p.attach(W, B, 0)
    p.set_session(W, B, "S2", 0)
    p.set_session(W, B, "S1", 0)
    snap = p.snapshot(W)
    assert (snap.seq, snap.online, snap.counts) == (5, 2, {"S1": 2})


# -- random sequences against a brute-force recount -------------------------------------------


@dataclass
class ModelClaim:
    streams: int = 0
    session: str = ""
    released: bool = False
    deadline: float | None = None
    user: str | None = None
    bound: bool = False


class Model:
    """The rules of docs/protocol.md section 2, written the slow and obvious way."""

    def __init__(self, cg: float, dg: float, ttl: float) -> None:
        self.cg, self.dg, self.ttl = cg, dg, ttl
        self.claims: dict[tuple[str, str], ModelClaim] = {}
        self.retired: dict[str, float] = {}

    def expire(self, now: float) -> None:
        for key, c in list(self.claims.items()):
            if c.streams == 0 and c.deadline is not None and c.deadline <= now:
                del self.claims[key]
        self.retired = {k: v for k, v in self.retired.items() if v > now}

    def refused(self, client: str, now: float) -> bool:
        return client in self.retired and now < self.retired[client]

    def counts(self, w: str) -> tuple[dict[str, int], int]:
        live = [c for (ws, _), c in self.claims.items() if ws == w and c.streams > 0]
        counts = Counter(c.session for c in live if c.session)
        return dict(counts), len(live)

    def people(self, w: str) -> dict[str, set[str]]:
        """session -> the distinct users viewing it (an anonymous claim: a user of its own)."""
        out: dict[str, set[str]] = {}
        for (ws, client), c in self.claims.items():
            if ws == w and c.streams > 0:
                out.setdefault(c.session, set()).add(c.user or f"anonymous:{client}")
        return out

    def users(self, w: str) -> tuple[dict[str, int], int]:
        people = self.people(w)
        everyone = set().union(*people.values()) if people else set()
        return {s: len(u) for s, u in people.items() if s}, len(everyone)

    def listed(self, w: str, session: str) -> dict[str, int]:
        """The identified users viewing ``session`` and their attached claims there."""
        return Counter(
            c.user
            for (ws, _), c in self.claims.items()
            if ws == w and c.streams > 0 and c.session == session and c.user is not None
        )

    def next_deadline(self) -> float | None:
        times = [c.deadline for c in self.claims.values() if c.streams == 0 and c.deadline]
        times += list(self.retired.values())
        return min(times) if times else None


OPS = ["hold", "attach", "detach", "set", "release", "retire", "profile"]


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(OPS),
            st.sampled_from(["w1", "w2"]),
            st.sampled_from([A, B, C]),
            st.sampled_from(["", "S1", "S2"]),
            st.sampled_from([0, 0, 0.5, 3, 11]),
            st.sampled_from(["ana", "ana", "bo", None]),
        ),
        max_size=60,
    )
)
def test_random_sequences_match_a_brute_force_recount(
    ops: list[tuple[str, str, str, str, float, str | None]],
) -> None:
    p = Presence(create_grace=5, detach_grace=2, retire_ttl=20)
    m = Model(5, 2, 20)
    for w in ("w1", "w2"):
        p.add_workspace(w)
    now = 0.0
    seqs = {"w1": 0, "w2": 0}
    # (workspace, session) -> user -> the step it arrived at (the viewers' order), and the
    # profiles the model expects (the last set, for as long as the user has a claim).
    arrival: dict[tuple[str, str], dict[str, int]] = {}
    profiles: dict[tuple[str, str], dict[str, Any]] = {}

    def forget_profiles() -> None:
        """A profile goes with its user's last claim in the workspace."""
        members = {(x, c.user) for (x, _), c in m.claims.items() if c.user}
        for gone in [k for k in profiles if k not in members]:
            del profiles[gone]

    for step, (op, w, client, session, dt, user) in enumerate(ops):
        now += dt
        p.expire(now)
        m.expire(now)
        forget_profiles()
        key = (w, client)
        claim = m.claims.get(key)
        before = {ws: (m.counts(ws), m.users(ws)) for ws in seqs}
        if op == "hold":
            if m.refused(client, now):
                with pytest.raises(ClientRetired):
                    p.hold(w, client, now)
                continue
            p.hold(w, client, now)
            claim = m.claims.setdefault(key, ModelClaim())
            claim.released = False
            if claim.streams == 0:
                claim.deadline = now + m.cg
        elif op == "attach":
            if m.refused(client, now):
                with pytest.raises(ClientRetired):
                    p.attach(w, client, now)
                continue
            if claim is not None and claim.bound and claim.user != user:
                with pytest.raises(Forbidden):
                    p.attach(w, client, now, user=user)
                continue
            profile = {"name": f"{user}@{step}"} if step % 3 == 0 else None
            p.attach(w, client, now, user=user, profile=profile)
            claim = m.claims.setdefault(key, ModelClaim())
            claim.streams += 1
            claim.deadline = None
            claim.user, claim.bound = user, True
            if user is not None and profile is not None:
                profiles[w, user] = profile
        elif op == "profile":
            if m.refused(client, now):
                with pytest.raises(ClientRetired):
                    p.set_profile(w, client, {"n": step}, now)
            elif claim is None or claim.streams == 0:
                with pytest.raises(NotAttached):
                    p.set_profile(w, client, {"n": step}, now)
            else:
                diff = p.set_profile(w, client, {"n": step}, now)
                assert not diff.changed
                if claim.user is not None:
                    profiles[w, claim.user] = {"n": step}
                    sessions = {s for s, us in m.people(w).items() if claim.user in us}
                    assert diff.touched == sessions
        elif op == "detach":
            p.detach(w, client, now)
            if claim is not None and claim.streams > 0:
                claim.streams -= 1
                if claim.streams == 0:
                    if claim.released:
                        del m.claims[key]
                    else:
                        claim.deadline = now + m.dg
        elif op == "set":
            if m.refused(client, now):
                with pytest.raises(ClientRetired):
                    p.set_session(w, client, session, now)
            elif claim is None or claim.streams == 0:
                with pytest.raises(NotAttached):
                    p.set_session(w, client, session, now)
            else:
                p.set_session(w, client, session, now)
                claim.session = session
        elif op == "release":
            p.release(w, client, now)
            if claim is not None:
                if claim.streams:
                    claim.released = True
                else:
                    del m.claims[key]
        elif op == "retire":
            p.retire(client, now)
            m.retired[client] = now + m.ttl
            for k in [k for k in m.claims if k[1] == client]:
                del m.claims[k]
        forget_profiles()
        for ws in seqs:
            counts, online = m.counts(ws)
            users, online_users = m.users(ws)
            snap = p.snapshot(ws)
            assert (snap.counts, snap.online) == (counts, online)
            assert (snap.users, snap.online_users) == (users, online_users)
            assert p.attached_clients(ws, "") == sum(
                1 for (x, _), c in m.claims.items() if x == ws and c.streams and not c.session
            )
            assert p.attached_users(ws, "") == len(m.people(ws).get("", ()))
            moved = before[ws][0] != (counts, online)
            assert snap.seq == seqs[ws] + (1 if moved else 0)
            seqs[ws] = snap.seq
            for s in ("", "S1", "S2"):
                listed = m.listed(ws, s)
                order = arrival.setdefault((ws, s), {})
                for u in [u for u in order if u not in listed]:
                    del order[u]
                for u in listed:
                    order.setdefault(u, step)
                want = [
                    Viewer(u, profiles.get((ws, u)), listed[u])
                    for u in sorted(order, key=order.__getitem__)
                ]
                got = p.viewers(ws, s, 100)
                assert got.viewers == want
                assert got.total == len(m.people(ws).get(s, ()))
                assert got.anonymous == got.total - len(want)
                assert p.viewers(ws, s, 1).viewers == want[:1]
        assert p.next_deadline() == m.next_deadline()
        assert p.claim_count() == len(m.claims)


def test_stale_timers_do_not_pile_up(p: Presence) -> None:
    """Reconnects within grace leave old deadlines behind; the heap stays bounded."""
    for i in range(10_000):
        p.attach(W, A, i)
        p.detach(W, A, i)  # each detach re-arms the grace: one live timer, many stale
    assert len(p._timers) <= 2 * 1 + 64 + 1  # hub.deadlines compacts
    assert p.next_deadline() == 9_999 + 10


# -- nodes: streams per node, a node cleared, a node re-asserting ------------------------------


def test_a_cleared_node_s_streams_enter_grace_and_a_reassertion_brings_them_back(
    pt: Presence,
) -> None:
    pt.attach(W, A, 0, node="n1")
    pt.attach(W, A, 0, node="n2")  # A on two nodes: one client
    pt.set_session(W, A, "S1", 0)
    pt.attach(W, B, 0, node="n1")
    assert (pt.online(W), pt.snapshot(W).counts) == (2, {"S1": 1})
    pt.clear_node("n1", 1)  # n1 taken for dead
    assert (pt.online(W), pt.snapshot(W).counts) == (1, {"S1": 1})  # A still has n2's stream
    assert {c.client_id: c.state for c in pt.claims(W)} == {
        A: ClaimState.ATTACHED,
        B: ClaimState.GRACE,
    }
    pt.set_streams(W, "n1", {A: 1, B: 1}, {}, 2)  # n1 was alive after all
    assert pt.online(W) == 2
    assert {c.client_id: c.streams for c in pt.claims(W)} == {A: 2, B: 1}


def test_a_node_detaches_only_what_it_holds_and_gone_claims_come_back_with_its_session(
    pt: Presence,
) -> None:
    pt.attach(W, A, 0, node="n1")
    pt.set_session(W, A, "S2", 0)
    pt.release(W, A, 0)
    assert pt.detach(W, A, 0, node="n2").counts == {}  # n2 holds none of A's streams
    pt.clear_node("n1", 0)  # released: gone at once
    assert pt.claims(W) == []
    diff = pt.set_streams(W, "n1", {A: 1}, {}, 0)  # from its tombstone
    assert diff.counts == {"S2": 1} and diff.online == 1
    assert [(c.session_id, c.released) for c in pt.claims(W)] == [("S2", True)]


def test_a_reassertion_never_brings_a_retired_client_back(pt: Presence) -> None:
    pt.attach(W, A, 0, node="n1")
    pt.retire(A, 0)
    assert pt.set_streams(W, "n1", {A: 1}, {A: Recalled("S1", 9)}, 1).online is None
    assert pt.claims(W) == []


# -- people: users, profiles, viewers (docs/protocol.md section 9) ---------------------------------


def test_one_user_with_two_clients_counts_once_and_anonymous_ones_count_each(
    p: Presence,
) -> None:
    p.attach(W, A, 0, user="ana")
    p.attach(W, B, 0, user="ana")  # a second tab: another client id, the same person
    p.attach(W, C, 0)  # anonymous
    for client in (A, B, C):
        p.set_session(W, client, "S1", 0)
    snap = p.snapshot(W)
    assert (snap.counts, snap.users, snap.online, snap.online_users) == (
        {"S1": 3}, {"S1": 2}, 3, 2,
    )  # fmt: skip
    viewers = p.viewers(W, "S1", 100)
    assert (viewers.total, viewers.anonymous) == (2, 1)
    assert viewers.viewers == [Viewer("ana", None, 2)]
    diff = p.detach(W, A, 1)  # one of ana's tabs closes: she is still here
    assert (diff.counts, diff.users, diff.online_users) == ({"S1": 2}, {}, None)


def test_a_client_is_bound_to_the_user_of_its_first_stream(p: Presence) -> None:
    p.hold(W, A, 0)  # a hold names no user: the first stream does
    p.attach(W, A, 0, user="ana")
    with pytest.raises(Forbidden):
        p.attach(W, A, 0, user="bo")
    with pytest.raises(Forbidden):
        p.attach(W, A, 0)  # anonymous against named
    p.detach(W, A, 1)
    with pytest.raises(Forbidden):
        p.attach(W, A, 2, user="bo")  # in grace: still ana's
    assert p.claims(W)[0].streams == 0  # the refusals left nothing behind
    p.expire(20)
    p.attach(W, A, 21, user="bo")  # the claim expired: a new one, a new user


def test_viewers_come_in_arrival_order_and_a_return_goes_last(p: Presence) -> None:
    for client, user in ((A, "ana"), (B, "bo"), (C, "cy")):
        p.attach(W, client, 0, user=user)
        p.set_session(W, client, "S1", 0)
    assert [v.user_id for v in p.viewers(W, "S1", 100).viewers] == ["ana", "bo", "cy"]
    p.set_session(W, A, "S2", 1)
    p.set_session(W, A, "S1", 2)
    assert [v.user_id for v in p.viewers(W, "S1", 100).viewers] == ["bo", "cy", "ana"]
    limited = p.viewers(W, "S1", 2)
    assert [v.user_id for v in limited.viewers] == ["bo", "cy"] and limited.total == 3


def test_a_profile_is_the_last_set_and_goes_with_the_user_s_last_claim(p: Presence) -> None:
    p.attach(W, A, 0, user="ana", profile={"name": "Ana"})
    p.attach(W, B, 0, user="ana")
    p.set_session(W, B, "S1", 0)
    seq = p.snapshot(W).seq
    diff = p.set_profile(W, A, {"name": "Ana B."}, 1)  # set on one tab, seen on every one
    assert (diff.seq, diff.changed, set(diff.touched)) == (seq, False, {"", "S1"})
    assert p.viewers(W, "S1", 10).viewers == [Viewer("ana", {"name": "Ana B."}, 1)]
    assert p.set_profile(W, A, {"name": "Ana B."}, 1).touched == set()  # same: no update
    p.release(W, A, 1)
    p.release(W, B, 1)
    p.detach(W, A, 1)
    assert p.viewers(W, "S1", 10).viewers[0].profile == {"name": "Ana B."}  # B still here
    p.detach(W, B, 1)
    p.attach(W, C, 2, user="ana")
    p.set_session(W, C, "S1", 2)
    assert p.viewers(W, "S1", 10).viewers == [Viewer("ana", None, 1)]  # forgotten


def test_an_anonymous_claim_keeps_no_profile_and_is_never_listed(p: Presence) -> None:
    p.attach(W, A, 0, profile={"name": "nobody"})
    assert p.set_profile(W, A, {"name": "still nobody"}, 0).touched == set()
    viewers = p.viewers(W, "", 10)
    assert (viewers.total, viewers.anonymous, viewers.viewers) == (1, 1, [])
    with pytest.raises(NotAttached):
        p.set_profile(W, B, {}, 0)


def test_a_reassertion_brings_a_claim_back_with_its_user_and_profile(pt: Presence) -> None:
    pt.attach(W, A, 0, node="n1", user="ana", profile={"name": "Ana"})
    pt.set_session(W, A, "S1", 0)
    pt.clear_node("n1", 0)
    pt.expire(100)
    assert pt.claims(W) == []
    known = {A: Recalled("S1", 1, user="ana", profile={"name": "Ana"})}
    diff = pt.set_streams(W, "n1", {A: 1}, known, 101)
    assert (diff.users, diff.online_users) == ({"S1": 1}, 1)
    assert pt.viewers(W, "S1", 10).viewers == [Viewer("ana", {"name": "Ana"}, 1)]
    with pytest.raises(Forbidden):
        pt.attach(W, A, 102, node="n2", user="bo")


# -- versions: a node's memory restores, never overwrites something newer ----------------------


def _views(p: Presence) -> dict[str, tuple[str, bool, int]]:
    return {c.client_id: (c.session_id, c.released, c.streams) for c in p.claims(W)}


def test_an_acknowledged_set_session_survives_a_stale_memory_after_the_grace_expired(
    pt: Presence,
) -> None:
    """n2 holds A's socket and remembers S2; S4 is set (acked) while n2 misses the news; n2
    is taken for dead and A's grace expires; n2's re-assertion must not bring S2 back."""
    pt.attach(W, A, 0, node="n2")
    pt.set_session(W, A, "S2", 0)
    stale = Recalled("S2", 1)  # what n2 saw
    pt.set_session(W, A, "S4", 1)  # acked through another node
    pt.clear_node("n2", 2)
    pt.expire(2 + 10)  # the grace ran out: A's claim is gone, its tombstone stays
    assert pt.claims(W) == []
    diff = pt.set_streams(W, "n2", {A: 1}, {A: stale}, 13)
    assert (diff.counts, diff.online) == ({"S4": 1}, 1)
    # and while the claim is still there, a stale memory changes nothing either
    pt.set_streams(W, "n2", {A: 2}, {A: stale}, 14)
    assert _views(pt) == {A: ("S4", False, 2)}


def test_a_memory_newer_than_the_claim_restores_it(p: Presence) -> None:
    """The store lost A's claim (an empty one stands for it here) and another node's join made
    a fresh one at session "": the node that holds A's first socket knows better."""
    fresh = Presence()
    fresh.add_workspace(W)
    fresh.attach(W, A, 0, node="n1")  # the claim made anew, versions 0
    fresh.set_streams(W, "n2", {A: 1}, {A: Recalled("S4", 7, True, 8)}, 0)
    assert _views(fresh) == {A: ("S4", True, 2)}
    assert fresh.snapshot(W).counts == {"S4": 1}
    fresh.set_session(W, A, "S5", 1)  # later writes win over the merged version
    fresh.set_streams(W, "n2", {A: 1}, {A: Recalled("S4", 7, True, 8)}, 1)
    assert _views(fresh)[A][0] == "S5"


def test_a_release_survives_a_clear_and_a_stale_memory(pt: Presence) -> None:
    pt.attach(W, A, 0, node="n2")
    pt.release(W, A, 0)  # through another node: n2 does not know
    pt.clear_node("n2", 1)  # released and no stream: ended at once, tombstone released
    assert pt.claims(W) == []
    pt.set_streams(W, "n2", {A: 1}, {A: Recalled()}, 2)
    assert _views(pt) == {A: ("", True, 1)}
    pt.detach(W, A, 3, node="n2")  # its last close: gone without grace
    assert pt.claims(W) == []


def test_a_claim_made_anew_keeps_the_tombstone_for_a_node_that_missed_the_end(
    pt: Presence,
) -> None:
    """n1 holds A's socket and saw S2; S3 and a release are acked through another node; n1 is
    taken for dead, so A's released claim ends (tombstone: S3, released); A joins on n2 (a
    claim made anew). n1's re-assertion brings back S3 and the release it missed, not S2."""
    pt.attach(W, A, 0, node="n1")
    pt.set_session(W, A, "S2", 0)
    missed = Recalled("S2", 2, born=1)  # what n1 saw (born 1, S2 2)
    pt.set_session(W, A, "S3", 1)
    pt.release(W, A, 1)
    pt.clear_node("n1", 2)
    assert pt.claims(W) == []
    pt.attach(W, A, 3, node="n2")
    assert _views(pt) == {A: ("", False, 1)}  # made anew: it knows nothing of the ended one
    pt.set_streams(W, "n1", {A: 1}, {A: missed}, 4)
    assert _views(pt) == {A: ("S3", True, 2)}
    assert pt.snapshot(W).counts == {"S3": 1}


def test_what_a_claim_made_anew_was_told_wins_over_a_node_that_missed_the_end(
    pt: Presence,
) -> None:
    """As above, but A's new socket says session "" (the claim made anew already has it):
    the no-op still takes a version, so n1's older S3 does not come back over it."""
    pt.attach(W, A, 0, node="n1")
    pt.set_session(W, A, "S3", 0)
    missed = Recalled("S3", 2, born=1)
    pt.release(W, A, 1)
    pt.clear_node("n1", 2)
    pt.attach(W, A, 3, node="n2")
    pt.set_session(W, A, "", 3)  # acknowledged; moves nothing
    pt.set_streams(W, "n1", {A: 1}, {A: missed}, 4)
    assert _views(pt)[A][0] == ""
    assert pt.snapshot(W).counts == {}  # not S3 (a session of "" is counted nowhere)


def test_a_memory_of_the_claim_made_anew_does_not_take_the_tombstone(pt: Presence) -> None:
    """A released and left (tombstone: S3, released); A joins again and sets S5 (newer than
    the tombstone); its node re-asserts its memory: nothing of the ended claim comes back."""
    pt.attach(W, A, 0, node="n1")
    pt.set_session(W, A, "S3", 0)
    pt.release(W, A, 0)
    pt.detach(W, A, 1, node="n1")  # released: gone at once, its tombstone stays
    pt.attach(W, A, 2, node="n2")
    pt.set_session(W, A, "S5", 2)
    (mine,) = pt.claims(W)
    # what n2 saw of the claim made anew (born 1, S3 2, release 3, born 4, S5 5)
    memory = Recalled("S5", 5, born=4)
    assert mine.session_id == "S5"
    pt.set_streams(W, "n2", {A: 1}, {A: memory}, 3)
    assert _views(pt) == {A: ("S5", False, 1)}
    pt.set_streams(W, "n2", {A: 1}, {A: Recalled()}, 3)  # a memory with no birth: the same
    assert _views(pt) == {A: ("S5", False, 1)}


def test_a_hold_clears_the_released_mark_for_good(pt: Presence) -> None:
    pt.attach(W, A, 0, node="n1")
    pt.release(W, A, 0)
    remembered = Recalled(released=True, released_v=2, born=1)
    pt.hold(W, A, 1)  # a create after the release clears it, with a newer version
    pt.set_streams(W, "n1", {A: 1}, {A: remembered}, 2)
    assert _views(pt) == {A: ("", False, 1)}


def test_a_tombstone_lasts_tomb_ttl() -> None:
    p = Presence(detach_grace=1, tomb_ttl=5)
    p.add_workspace(W)
    p.attach(W, A, 0, node="n1")
    p.set_session(W, A, "S1", 0)
    p.detach(W, A, 0, node="n1")
    p.expire(1)  # grace over: tombstone until 6
    assert p.next_deadline() == 6
    p.expire(6)
    assert p.next_deadline() is None
    p.set_streams(W, "n1", {A: 1}, {}, 7)  # nothing left to restore from
    assert _views(p) == {A: ("", False, 1)}


def test_online_users_moving_alone_is_a_change_with_a_seq(pt: Presence) -> None:
    """A re-assertion swaps an anonymous claim for one of a user already online elsewhere,
    all on the landing page: no client count moves, online_users does (2 -> 1)."""
    pt.attach(W, C, 0, node="n2", user="ana")
    pt.attach(W, B, 0, node="n1", user="ana")
    pt.detach(W, B, 0, node="n1")  # B in grace, bound to ana
    pt.attach(W, A, 0, node="n1")  # anonymous
    before = pt.snapshot(W)
    assert (before.online, before.online_users) == (2, 2)
    diff = pt.set_streams(W, "n1", {B: 1}, {B: Recalled(user="ana")}, 1)
    assert (diff.counts, diff.online, diff.online_users) == ({}, None, 1)
    assert diff.changed and diff.seq == before.seq + 1
