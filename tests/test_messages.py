"""The Redis feed message (hub/backends/redis/messages.py): parsed as each publisher sends it.

The texts below are what the publishers put on the wire (cjson from lua/_lib.lua's
``commit()``, remove_workspace.lua, and the Python path ``publish_session``); no Redis.
"""

from __future__ import annotations

from hub.backends.redis.messages import Close, FeedMessage, SessionEvent, parse, session_event
from hub.presence import Diff

W = "w1"
A = "00000000-0000-4000-8000-00000000000a"


def test_a_commit_that_moved_counts_is_a_diff_with_what_the_nodes_learn() -> None:
    text = (
        '{"q":"42","c":{"S1":2,"S2":0},"o":2,"u":{"S1":1},"ou":1,"t":[""],'
        '"s":{"' + A + '":["S1","17"]}}'
    )
    message = parse(W, text)
    assert message == FeedMessage(
        W,
        Diff(W, 42, {"S1": 2, "S2": 0}, 2, {"S1": 1}, 1, frozenset({""})),
        sessions={A: ("S1", 17)},
    )


def test_a_commit_that_moved_nothing_has_no_diff() -> None:
    """A set_session while the claim is in grace: its session moves, no count does."""
    message = parse(W, '{"s":{"' + A + '":["S3",9]}}')
    assert message.diff is None and message.sessions == {A: ("S3", 9)}


def test_a_profile_change_is_a_diff_at_the_same_seq_touching_viewer_lists() -> None:
    message = parse(W, '{"t":["S1"]}')
    assert message.diff == Diff(W, 0, {}, None, {}, None, frozenset({"S1"}))


def test_a_release_carries_its_mark_and_version() -> None:
    message = parse(W, '{"q":"5","c":{},"r":{"' + A + '":[1,"12"]}}')
    assert message.released == {A: (1, 12)} and message.diff is not None


def test_closes_name_the_client_or_everyone() -> None:
    retired = parse(W, '{"q":"6","c":{"S1":0},"x":{"k":"' + A + '","code":4410}}')
    assert retired.close == Close(A, 4410)
    removed = parse(W, '{"x":{"k":"","code":4404}}')
    assert removed == FeedMessage(W, close=Close(None, 4404))


def test_a_session_event_round_trips() -> None:
    session = {"id": "S1", "title": "t"}
    assert parse(W, session_event("created", session)) == FeedMessage(
        W, event=SessionEvent("created", session)
    )
