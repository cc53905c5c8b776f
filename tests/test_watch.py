"""hub.watch on its own: groups of watchers by session and limit, and the diffs between reads.

Plain asserts on the pure state machine (no hub, no loop, no backend): a read is a
:class:`~hub.presence.Viewers` built by hand, a socket any hashable value. The rules under test
are the ones in hub/watch.py's docstring.
"""

from __future__ import annotations

from typing import Any

from hub.presence import Viewer, Viewers
from hub.protocol import ViewersDiff
from hub.watch import Watches, diff

W, S, S2 = "w", "S1", "S2"


def v(user: str, clients: int = 1, **profile: Any) -> Viewer:
    return Viewer(user, profile or None, clients)


def read(seq: int, *viewers: Viewer, anonymous: int = 0, session: str = S) -> Viewers:
    """A backend read of ``session``: ``viewers`` by arrival, plus ``anonymous`` unnamed ones."""
    return Viewers(W, session, seq, len(viewers) + anonymous, anonymous, list(viewers))


def users(frame_part: list[dict[str, Any]]) -> list[str]:
    return [entry["user_id"] for entry in frame_part]


def only(frames: list[tuple[set[str], ViewersDiff]]) -> tuple[set[str], ViewersDiff]:
    assert len(frames) == 1, frames
    return frames[0]


# -- diff -------------------------------------------------------------------------------------


def test_diff_names_who_joined_changed_and_left_in_list_order() -> None:
    before = [v("a"), v("b"), v("c", name="C")]
    after = [v("b", clients=2), v("c", name="Cee"), v("d"), v("e")]
    joined, updated, left = diff(before, after)
    assert [x.user_id for x in joined] == ["d", "e"]  # the new list's order (arrival)
    assert [x.user_id for x in updated] == ["b", "c"]  # clients moved; profile moved
    assert left == ["a"]  # the order they were shown


def test_diff_of_the_same_list_is_empty() -> None:
    same = [v("a"), v("b", name="B")]
    assert diff(same, list(same)) == ([], [], [])


# -- groups -----------------------------------------------------------------------------------


def test_a_first_watch_gets_the_full_list_up_to_its_limit() -> None:
    watches: Watches[str] = Watches()
    assert watches.empty and watches.limit(S) is None
    frame = watches.add(read(7, v("a"), v("b"), v("c"), anonymous=2), 2, "x")
    assert (frame.workspace_id, frame.session_id, frame.seq) == (W, S, 7)
    assert (frame.total, frame.anonymous) == (5, 2)  # the totals count past the limit
    assert users(frame.viewers) == ["a", "b"]
    assert frame.viewers[0] == {"user_id": "a", "profile": None, "clients": 1}
    assert not watches.empty and watches.limit(S) == 2


def test_the_read_limit_is_the_largest_watched_and_falls_back_when_it_goes() -> None:
    watches: Watches[str] = Watches()
    first = read(1, v("a"), v("b"), v("c"))
    watches.add(first, 1, "x")
    watches.add(first, 3, "y")
    assert watches.limit(S) == 3
    watches.remove(S, 3, "y")
    assert watches.limit(S) == 1
    watches.remove(S, 1, "x")
    assert watches.limit(S) is None and watches.empty


def test_sockets_of_one_limit_share_one_group_and_one_diff() -> None:
    watches: Watches[str] = Watches()
    first = read(1, v("a"))
    watches.add(first, 5, "x")
    watches.add(first, 5, "y")
    conns, frame = only(watches.update(read(2, v("a"), v("b"))))
    assert conns == {"x", "y"}
    assert users(frame.joined) == ["b"] and frame.seq == 2


def test_each_limit_sees_its_own_window_on_the_arrivals() -> None:
    """A group's list is a window on the first ``limit`` viewers: when one of them leaves,
    the next one by arrival joins it; a group whose window did not move gets nothing but a
    diff when the totals moved."""
    watches: Watches[str] = Watches()
    first = read(1, v("a"), v("b"), v("c"))
    watches.add(first, 2, "small")
    watches.add(first, 5, "large")
    frames = dict(
        (next(iter(conns)), frame) for conns, frame in watches.update(read(2, v("b"), v("c")))
    )
    assert (users(frames["small"].joined), frames["small"].left) == (["c"], ["a"])
    assert (users(frames["large"].joined), frames["large"].left) == ([], ["a"])
    assert frames["small"].total == frames["large"].total == 2


def test_a_read_that_moved_nothing_sends_nothing() -> None:
    watches: Watches[str] = Watches()
    watches.add(read(1, v("a"), v("b")), 1, "x")
    assert watches.update(read(2, v("a"), v("b"))) == []  # b is past the window of 1


def test_totals_alone_moving_send_a_diff_with_empty_lists() -> None:
    watches: Watches[str] = Watches()
    watches.add(read(1, v("a")), 1, "x")
    _, frame = only(watches.update(read(2, v("a"), anonymous=1)))
    assert (frame.joined, frame.updated, frame.left) == ([], [], [])
    assert (frame.total, frame.anonymous, frame.seq) == (2, 1, 2)


def test_a_diff_is_against_the_last_list_shown_not_the_first() -> None:
    watches: Watches[str] = Watches()
    watches.add(read(1, v("a")), 3, "x")
    only(watches.update(read(2, v("a"), v("b"))))
    _, frame = only(watches.update(read(3, v("a", clients=2), v("b"))))
    assert (frame.joined, users(frame.updated), frame.left) == ([], ["a"], [])
    assert frame.updated[0]["clients"] == 2


def test_a_late_joiner_starts_from_the_group_s_list_after_the_same_read() -> None:
    """The shell hands the read to update (the others' diff) before add: the new member's
    full frame and the others' list agree, and the next diff is against it for both."""
    watches: Watches[str] = Watches()
    watches.add(read(1, v("a")), 4, "x")
    fresh = read(2, v("a"), v("b"))
    conns, _ = only(watches.update(fresh))
    assert conns == {"x"}
    frame = watches.add(fresh, 4, "y")
    assert users(frame.viewers) == ["a", "b"] and frame.seq == 2
    conns, later = only(watches.update(read(3, v("b"))))
    assert conns == {"x", "y"} and later.left == ["a"]


def test_sessions_are_apart() -> None:
    watches: Watches[str] = Watches()
    watches.add(read(1, v("a")), 2, "x")
    watches.add(read(1, v("z"), session=S2), 2, "y")
    assert watches.update(read(2, v("a"), v("b"), session=S2)) != []
    _, frame = only(watches.update(read(3, session=S)))
    assert frame.session_id == S and frame.left == ["a"]


# -- dirty sessions ---------------------------------------------------------------------------


def test_touch_marks_only_watched_sessions_dirty() -> None:
    watches: Watches[str] = Watches()
    assert not watches.touch({S})  # nothing watched: nothing to read
    assert watches.dirty == set()
    watches.add(read(1), 1, "x")
    assert watches.touch(frozenset({S, S2}))
    assert watches.dirty == {S}
    assert not watches.touch(set())


def test_the_last_watcher_gone_forgets_the_session_and_its_dirty_mark() -> None:
    watches: Watches[str] = Watches()
    watches.add(read(1), 1, "x")
    watches.add(read(1), 2, "y")
    watches.touch({S})
    watches.remove(S, 1, "x")
    assert watches.dirty == {S}  # y still watches it
    watches.remove(S, 1, "x")  # (twice: no harm)
    watches.remove(S2, 1, "x")  # (never watched: no harm)
    watches.remove(S, 2, "y")
    assert watches.dirty == set() and watches.empty
    assert watches.update(read(2, v("a"))) == []  # a late read of it goes nowhere


def test_a_member_that_left_gets_no_more_diffs() -> None:
    watches: Watches[str] = Watches()
    first = read(1, v("a"))
    watches.add(first, 1, "x")
    watches.add(first, 1, "y")
    watches.remove(S, 1, "x")
    conns, _ = only(watches.update(read(2)))
    assert conns == {"y"}
