"""The room, the pure view of one workspace (hub/room.py), driven with a fake clock."""

from __future__ import annotations

from hub.presence import Diff, Snapshot
from hub.room import ONLINE_COST_FACTOR, Room

W = "w"
WINDOW = 0.05


def new_room() -> Room[str, int]:
    return Room(W, WINDOW)


def test_diffs_before_the_first_snapshot_wait_for_it() -> None:
    room = new_room()
    assert room.merge(Diff(W, 6, {"S1": 2}))
    assert room.merge(Diff(W, 5, {"S1": 1}))  # included in the snapshot below: dropped
    assert not room.synced and room.seq == -1
    room.rebase(Snapshot(W, 5, 1, {"S1": 1}))
    assert (room.synced, room.seq, room.values) == (True, 6, {"S1": 2})
    assert room.pending  # the early diff moved S1 since the snapshot


def test_diffs_apply_in_order_and_a_gap_asks_for_a_snapshot() -> None:
    room = new_room()
    room.rebase(Snapshot(W, 5, 1, {"S1": 1}))
    assert room.merge(Diff(W, 5, {"S1": 9}))  # seen already: ignored
    assert room.values == {"S1": 1}
    assert room.merge(Diff(W, 6, {"S2": 1}, online=2))
    assert not room.merge(Diff(W, 8, {"S1": 0}))  # 7 is missing
    assert room.missed and room.seq == 6 and room.values == {"S1": 1, "S2": 1}
    room.rebase(Snapshot(W, 8, 1, {"S2": 1}))  # absolute values at the newest seq
    assert not room.missed
    frame = room.take(0.0)
    # online went 1 -> 2 -> 1 since the last frame: unchanged, so not sent.
    assert (frame.seq, frame.counts, frame.online) == (8, {"S1": 0, "S2": 1}, None)


def test_an_older_snapshot_never_takes_the_room_back() -> None:
    room = new_room()
    room.rebase(Snapshot(W, 9, 2, {"S1": 2}))
    room.take(0.0)
    room.rebase(Snapshot(W, 8, 3, {"S3": 3}))
    assert (room.seq, room.online, room.values, room.pending) == (9, 2, {"S1": 2}, False)
    assert room.view() == Snapshot(W, 9, 2, {"S1": 2})


def test_changes_that_cancel_out_still_advance_seq() -> None:
    room = new_room()
    room.rebase(Snapshot(W, 1, 1, {}))
    room.merge(Diff(W, 2, {"S1": 1}))
    room.merge(Diff(W, 3, {"S1": 0}))
    frame = room.take(0.0)
    assert (frame.seq, frame.counts, frame.online) == (3, {}, None)
    assert not room.pending


def test_the_first_change_after_quiet_flushes_now_later_ones_wait_for_the_window() -> None:
    room = new_room()
    room.rebase(Snapshot(W, 1, 1, {}))
    assert room.flush_at(10.0) == 10.0  # never flushed: now
    room.take(10.0)
    assert room.flush_at(10.01) == 10.0 + WINDOW  # within the window of the last flush
    assert room.flush_at(10.2) == 10.2  # a quiet period: now again


def test_only_an_online_only_flush_waits_for_a_multiple_of_the_last_flush_s_cost() -> None:
    room = new_room()
    room.rebase(Snapshot(W, 1, 0, {}))
    room.take(10.0)
    room.cost = 0.5  # the last flush took 0.5 s of CPU (a room of many sockets)
    room.merge(Diff(W, 2, {}, 1))  # a join: only online moved
    assert room.flush_at(10.01) == 10.0 + ONLINE_COST_FACTOR * 0.5
    room.merge(Diff(W, 3, {"S1": 1}, None))  # a session count: the window again
    assert room.flush_at(10.01) == 10.0 + WINDOW
    room.take(11.0)
    room.cost = WINDOW / ONLINE_COST_FACTOR / 2  # a cheap flush: the window rules
    room.merge(Diff(W, 4, {}, 2))
    assert room.flush_at(11.01) == 11.0 + WINDOW


def test_acks_wait_for_their_change_and_keep_their_order() -> None:
    room = new_room()
    room.rebase(Snapshot(W, 4, 1, {}))
    assert not room.park(4, "c1", 1)  # the room has it: the ack may go now
    assert room.park(6, "c1", 2)
    assert room.park(5, "c2", 3)
    room.merge(Diff(W, 5, {"S1": 1}))
    assert room.ready_acks() == [("c2", 3)]
    room.merge(Diff(W, 6, {"S1": 2}))
    assert room.ready_acks() == [("c1", 2)]
    assert room.acks == [] and room.ready_acks() == []


def test_a_joiner_starts_from_the_room_view() -> None:
    room = new_room()
    room.rebase(Snapshot(W, 3, 2, {"S1": 1}))
    room.merge(Diff(W, 4, {"S1": 2}))  # flushed to the others, or about to be
    room.rebase(Snapshot(W, 3, 2, {"S1": 1}))  # a joiner's older snapshot
    assert room.view() == Snapshot(W, 4, 2, {"S1": 2})


def test_a_joiner_hears_of_a_change_that_cancels_out_within_the_window() -> None:
    """Found by scripts/chaos.py (seeds 105 and 109: a socket that joined during a recovery
    kept S3 at 3 at the newest seq while every node and every other socket had 2). The
    others were sent S3 = 2; the join's own change takes S3 to 3 and the joiner starts from
    that view; someone leaves S3 within the window (back to 2). The others need no frame for
    S3; the joiner does, or it keeps 3."""
    room = new_room()
    room.rebase(Snapshot(W, 5, 4, {"S3": 2}))
    room.take(0.0)  # the others were sent S3 = 2 at seq 5
    room.merge(Diff(W, 6, {"S3": 3}, online=5))  # the join's own change
    joiner = room.view()
    assert (joiner.seq, joiner.counts) == (6, {"S3": 3})
    room.merge(Diff(W, 7, {"S3": 2}, online=4))  # someone leaves S3 within the window
    frame = room.take(0.01)
    shown = {**joiner.counts, **frame.counts}
    assert frame.seq == 7 and shown["S3"] == 2
    assert frame.online == 4  # online too: the joiner was shown 5
    assert room.take(0.1).counts == {}  # sent once
