"""The pure occupied/vacated rules (hub/occupancy.py) with a fake clock, and a random history
against an independent definition: a key's positive runs, merged across gaps shorter than
the delay, each make one occupied event at their start and one vacated event a delay after
their end."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from hub.occupancy import Event, Occupancy
from hub.presence import Diff

W = "w"


def diff(seq: int, online: int | None = None, **counts: int) -> Diff:
    return Diff(W, seq, counts, online)


def names(events: list[Event]) -> list[tuple[str, str | None, int]]:
    return [(e.name, e.session_id, e.seq) for e in events]


def test_occupied_at_once_vacated_after_the_delay_sessions_first() -> None:
    occ = Occupancy(delay=5)
    assert names(occ.apply(diff(1, 1, S1=1), 0)) == [
        ("workspace_occupied", None, 1),
        ("session_occupied", "S1", 1),
    ]
    assert occ.apply(diff(2, 0, S1=0), 10) == []
    assert occ.next_deadline() == 15
    assert occ.expire(14.9) == []
    assert names(occ.expire(15)) == [
        ("session_vacated", "S1", 2),
        ("workspace_vacated", None, 2),
    ]
    assert occ.next_deadline() is None
    assert occ.expire(100) == []


def test_the_workspace_vacates_after_its_sessions_even_when_it_vacated_twice_at_once() -> None:
    """Found by the replay against Redis: the workspace and S1 vacated, occupied again and
    vacated again (with S2) at one instant; the heap's order of their timers says nothing of
    the rule, which is sessions first, the workspace last."""
    occ = Occupancy(delay=5)
    occ.apply(diff(1, 1, S1=1), 0)
    occ.apply(diff(2, 0, S1=0), 0)
    occ.apply(diff(3, 1, S1=1), 0)
    occ.apply(diff(4, None, S1=0, S2=1), 0)
    occ.apply(diff(5, 0, S2=0), 0)
    got = names(occ.expire(5))
    assert got[-1] == ("workspace_vacated", None, 5)
    assert sorted(got[:-1]) == [("session_vacated", "S1", 5), ("session_vacated", "S2", 5)]


def test_a_return_within_the_delay_sends_nothing() -> None:
    occ = Occupancy(delay=5)
    occ.apply(diff(1, 1, S1=1), 0)
    occ.apply(diff(2, 0, S1=0), 1)
    assert occ.apply(diff(3, 1, S1=1), 5.9) == []
    assert occ.expire(20) == []
    occ.apply(diff(4, 0, S1=0), 21)  # the delay counts from the last leave
    assert names(occ.expire(26)) == [("session_vacated", "S1", 4), ("workspace_vacated", None, 4)]


def test_a_tab_switch_is_one_occupied_now_and_one_vacated_later() -> None:
    occ = Occupancy(delay=5)
    occ.apply(diff(1, 1, S1=1), 0)
    assert names(occ.apply(diff(2, None, S1=0, S2=1), 1)) == [("session_occupied", "S2", 2)]
    assert names(occ.expire(6)) == [("session_vacated", "S1", 2)]


def test_vacated_carries_the_seq_when_its_delay_ended() -> None:
    occ = Occupancy(delay=5)
    occ.apply(diff(1, 2, S1=1, S2=1), 0)
    occ.apply(diff(2, 1, S1=0), 1)
    occ.apply(diff(3, None, S2=2), 2)  # another session moved meanwhile
    assert names(occ.expire(6)) == [("session_vacated", "S1", 3)]


def test_a_deleted_workspace_sends_nothing_more() -> None:
    occ = Occupancy(delay=5)
    occ.apply(diff(1, 1, S1=1), 0)
    occ.apply(diff(2, 0, S1=0), 1)
    occ.forget(W)
    assert occ.expire(10) == []


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from([0.0, 0.5, 1.0, 2.0, 3.0]),
            st.sampled_from(["A", "B", "C"]),
            st.integers(0, 2),
        ),
        max_size=30,
    )
)
def test_random_history_against_positive_runs(steps: list[tuple[float, str, int]]) -> None:
    delay = 2.0
    occ = Occupancy(delay)
    counts = {"A": 0, "B": 0, "C": 0}
    seq, now = 0, 0.0
    got: list[Event] = []
    timeline: dict[str | None, list[tuple[float, int, int]]] = {None: [], "A": [], "B": [], "C": []}
    for dt, session, n in steps:
        now += dt
        got += occ.expire(now)
        if counts[session] == n:
            continue
        online_before = sum(counts.values())
        counts[session] = n
        online = sum(counts.values())
        seq += 1
        moved = online if online != online_before else None
        got += occ.apply(diff(seq, moved, **{session: n}), now)
        timeline[session].append((now, n, seq))
        if moved is not None:
            timeline[None].append((now, online, seq))
    got += occ.expire(now + delay + 1)

    for key, changes in timeline.items():
        want: list[tuple[str, int | None]] = []
        positive = False
        zero_since = None
        for t, n, s in changes:
            if n > 0 and not positive:
                positive = True
                if zero_since is None or t - zero_since >= delay:
                    if zero_since is not None:
                        want.append(("vacated", None))
                    want.append(("occupied", s))
            elif n == 0 and positive:
                positive = False
                zero_since = t
        if zero_since is not None and not positive:
            want.append(("vacated", None))
        mine = [e for e in got if e.session_id == key]
        kind = "workspace" if key is None else "session"
        assert [(e.name, e.seq if e.name.endswith("occupied") else None) for e in mine] == [
            (f"{kind}_{what}", s) for what, s in want
        ]
    seqs = [e.seq for e in got]
    assert seqs == sorted(seqs)
