"""The node rules of the Redis backend (hub/backends/redis/nodes.py), with an explicit clock.

No Redis and no sleeps: each test drives the pure module with the observations a heartbeat
makes (was the heartbeat key there, what is the clear count) and the wall clock as a number.
"""

from __future__ import annotations

from hub.backends.redis.nodes import UNFENCED, Marks, Standing, Truth, dead, others
from hub.presence import Recalled

T0 = 1_700_000_000.0  # the wall clock, seconds
W = "w1"
A = "00000000-0000-4000-8000-00000000000a"
B = "00000000-0000-4000-8000-00000000000b"


def settled(now: float = T0) -> Standing:
    """A node that has re-asserted once (clear count unset) and beats normally."""
    node = Standing("n1", now)
    node.reasserting(None)
    return node


# -- the others: alive while their heartbeat key is there ------------------------------------


def test_a_survivor_looks_at_every_other_registered_node_in_order() -> None:
    assert others("b", ["c", "b", "a", "c"]) == ["a", "c"]
    assert others("a", ["a"]) == []


def test_a_node_whose_heartbeat_key_is_gone_is_dead() -> None:
    nodes = others("me", ["x", "y", "z", "me"])
    assert dead(nodes, [1, 0, 1]) == ["y"]
    assert dead(nodes, [0, 0, 0]) == ["x", "y", "z"]
    assert dead(nodes, [1, 1, 1]) == []


# -- this node's standing: when to re-assert ---------------------------------------------------


def test_a_new_node_re_asserts_at_its_first_beat_and_then_only_when_needed() -> None:
    node = Standing("n1", T0)
    assert node.must_reassert(beating=False, cleared=None)  # never written: dirty
    assert node.must_reassert(beating=True, cleared=None)  # dirty even if the key is there
    node.reasserting(None)
    assert not node.must_reassert(beating=True, cleared=None)
    assert not node.must_reassert(beating=True, cleared=None)  # beat after beat


def test_a_lapsed_heartbeat_makes_the_node_re_assert() -> None:
    """Redis forgot the node (restarted empty), or its key expired during a pause."""
    node = settled()
    assert node.must_reassert(beating=False, cleared=None)
    node.reasserting(None)
    assert not node.must_reassert(beating=True, cleared=None)  # back: its key is there again


def test_a_clear_by_a_survivor_makes_the_node_re_assert_even_after_it_came_back() -> None:
    """A survivor's clear ends by counting up the node's clear count: the node re-asserts
    once per move of the count, whatever the interleaving, then stays settled."""
    node = settled()
    assert node.must_reassert(beating=True, cleared="1")  # cleared while its key was back
    node.reasserting("1")
    assert not node.must_reassert(beating=True, cleared="1")
    assert node.must_reassert(beating=True, cleared="2")  # a second clear landed after it
    node.reasserting("2")
    assert not node.must_reassert(beating=True, cleared="2")
    assert node.must_reassert(beating=True, cleared=None)  # the count expired: Redis forgot


def test_a_doubt_re_asserts_under_the_same_generation_a_suspicion_under_a_new_one() -> None:
    node = settled()
    before = node.generation
    node.doubt()  # a step failed: nothing of this node's was left in flight
    assert node.must_reassert(beating=True, cleared=None)
    assert node.generation == before
    node.reasserting(None)
    node.suspect()  # a write's answer was lost: it may still arrive
    assert node.must_reassert(beating=True, cleared=None)
    assert node.generation == before + 1


# -- the generation fence ----------------------------------------------------------------------


def test_the_generation_is_the_wall_clock_in_microseconds() -> None:
    assert Standing("n1", T0).generation == int(T0 * 1_000_000)
    assert Standing("n1", T0 + 0.25).generation == int(T0 * 1_000_000) + 250_000


def test_a_restarted_node_is_newer_than_anything_its_last_run_wrote() -> None:
    """Its last run suspected many times (each a newer generation) within a second; the
    next run, a second later, still writes under a newer one, so no late write of the last
    run is taken for the new run's."""
    last = Standing("n1", T0)
    for _ in range(100_000):
        last.suspect()
    assert Standing("n1", T0 + 1.0).generation > last.generation


def test_own_writes_are_fenced_a_survivor_s_are_not() -> None:
    node = settled()
    assert node.fence("n1") == node.generation
    assert node.fence("n2") == UNFENCED
    node.suspect()
    assert node.fence("n1") == node.generation  # the new one, from now on


def test_a_fenced_answer_makes_the_node_suspect_again() -> None:
    node = settled()
    before = node.generation
    assert not node.fenced(0)
    assert (node.generation, node.must_reassert(True, None)) == (before, False)
    assert node.fenced(-1)  # refused: this node moved on while the write was on its way
    assert node.generation == before + 1 and node.must_reassert(True, None)


# -- this node's truth ------------------------------------------------------------------------


def test_streams_are_counted_per_client_and_the_last_one_takes_the_memory() -> None:
    truth = Truth()
    truth.attach(W, A, "ana", {"n": 1})
    truth.attach(W, A, "ana", None)
    truth.attach(W, B, None, None)
    assert truth.streams(W) == {A: 2, B: 1} and truth.workspaces() == {W}
    truth.detach(W, A)
    assert truth.holds(W, A) and truth.remembered(W, A) == Recalled(user="ana", profile={"n": 1})
    truth.detach(W, A)
    assert not truth.holds(W, A) and truth.remembered(W, A) is None
    truth.detach(W, B)
    assert truth.workspaces() == set() and truth.streams(W) == {}
    truth.detach(W, B)  # nothing left: no error


def test_streams_is_a_copy() -> None:
    truth = Truth()
    truth.attach(W, A, None, None)
    mine = truth.streams(W)
    truth.forget(W, A)
    assert mine == {A: 1}


def test_a_first_stream_remembers_afresh_a_later_one_only_updates_the_profile() -> None:
    truth = Truth()
    truth.attach(W, A, "ana", {"n": 1})
    truth.learn(W, A, "S1", 5, 0, 0)
    truth.attach(W, A, "ana", {"n": 2})
    assert truth.remembered(W, A) == Recalled("S1", 5, user="ana", profile={"n": 2})
    truth.detach(W, A)
    truth.detach(W, A)
    truth.attach(W, A, "bo", None)
    assert truth.remembered(W, A) == Recalled(user="bo")


def test_learning_takes_each_field_only_when_newer_in_any_order() -> None:
    truth = Truth()
    truth.learn(W, A, "S1", 3, 0, 0)  # no stream here: nothing to remember
    assert truth.remembered(W, A) is None
    truth.attach(W, A, None, None)
    truth.learn(W, A, "S2", 7, 0, 0)
    truth.learn(W, A, "S1", 3, 0, 0)  # an older answer arriving late
    truth.learn(W, A, "", 0, 1, 4)  # a release (session version 0: not newer)
    truth.learn(W, A, "", "0", "0", "2")  # an older release mark, as text from Lua
    assert truth.remembered(W, A) == Recalled("S2", 7, True, 4)
    truth.learn(W, A, "", 0, 0, 9)  # a hold cleared the mark later
    assert truth.remembered(W, A) == Recalled("S2", 7, False, 9)


def test_forgotten_claims_are_not_re_asserted() -> None:
    truth = Truth()
    for c in (A, B):
        truth.attach(W, c, None, None)
        truth.attach("w2", c, None, None)
    truth.forget(W, A)  # retired
    assert truth.streams(W) == {B: 1} and truth.remembered(W, A) is None
    truth.forget("w2", None)  # the workspace was deleted
    assert truth.workspaces() == {W}
    truth.forget("w3", A)  # never held: nothing to do
    truth.forget(W, B)
    assert truth.workspaces() == set()


def test_what_a_node_writes_back_is_its_memory_with_versions_as_text() -> None:
    truth = Truth()
    truth.attach(W, A, "ana", {"name": "Ana"})
    truth.learn(W, A, "S1", 12345678901234567, 1, 12345678901234568, 12345678901234566)
    truth.attach(W, B, None, None)
    assert truth.recalled(W, [A, B, "never-held"]) == {
        A: {
            "s": "S1",
            "sv": "12345678901234567",
            "r": 1,
            "rv": "12345678901234568",
            "cb": "12345678901234566",
            "u": "ana",
            "p": '{"name":"Ana"}',
        },
        B: {"s": "", "sv": "0", "r": 0, "rv": "0", "cb": "0"},
        "never-held": {"s": "", "sv": "0", "r": 0, "rv": "0", "cb": "0"},
    }


def test_a_node_remembers_the_earliest_birth_of_a_claim() -> None:
    """A claim re-created from an older memory continues that older claim: the birth a node
    learns only ever goes back (hub.presence, Versions), and an answer with none keeps it."""
    truth = Truth()
    truth.attach(W, A, "ana", None)
    truth.learn(W, A, "", 0, 0, 0, 7)
    truth.learn(W, A, "", 0, 0, 0, 9)  # a claim made anew that took this memory: still 7
    truth.learn(W, A, "S1", 10, 0, 0)  # a feed message: no birth
    assert truth.remembered(W, A) == Recalled("S1", 10, user="ana", born=7)
    truth.learn(W, A, "", 0, 0, 0, 3)
    assert truth.remembered(W, A) == Recalled("S1", 10, user="ana", born=3)


def test_a_profile_is_remembered_only_for_a_claim_held_here() -> None:
    truth = Truth()
    truth.set_profile(W, A, {"n": 1})
    assert truth.remembered(W, A) is None
    truth.attach(W, A, "ana", None)
    truth.set_profile(W, A, {"n": 2})
    assert truth.remembered(W, A) == Recalled(user="ana", profile={"n": 2})


def test_marks_keep_the_newest_release_and_session_of_each_claim_for_their_ttl() -> None:
    marks = Marks(ttl=10)
    marks.keep(W, A, True, 5, now=0)
    marks.keep_session(W, A, "S1", 7, now=1)
    marks.keep(W, A, False, 4, now=2)  # older than the release kept: not taken
    marks.keep_session(W, B, "S2", 3, now=3)
    marks.keep_session(W, A, "S3", 8, now=4)  # the newest answer goes last
    assert marks.kept(now=5) == [
        (W, B, Recalled("S2", 3)),
        (W, A, Recalled("S3", 8, True, 5)),
    ]
    assert marks.kept(now=13) == [(W, A, Recalled("S3", 8, True, 5))]  # B's ran out
    marks.drop(W, A)
    assert marks.kept(now=13) == []
