"""hub.multimap: a key's values, a lone one kept as itself."""

from __future__ import annotations

import sys

from hub.multimap import MultiMap


def test_a_key_holds_its_values_as_a_set_would() -> None:
    index: MultiMap[str] = MultiMap()
    assert list(index.get("a")) == [] and "a" not in index
    index.add("a", "w1")
    index.add("a", "w1")  # again: a set's add
    assert list(index.get("a")) == ["w1"] and len(index) == 1
    index.add("a", "w2")
    index.add("b", "w1")
    assert sorted(index.get("a")) == ["w1", "w2"] and list(index.get("b")) == ["w1"]
    index.discard("a", "w3")  # not there: nothing
    index.discard("a", "w1")
    assert list(index.get("a")) == ["w2"]
    index.add("a", "w3")
    index.discard("a", "w3")
    index.discard("a", "w2")
    assert "a" not in index and list(index.get("a")) == []
    index.discard("a", "w2")  # a key with nothing: nothing
    index.discard("b", "w2")
    assert list(index.get("b")) == ["w1"] and len(index) == 1


def test_a_lone_value_costs_no_set() -> None:
    """What it is for: a set of one is 216 bytes; a lone value costs its dict slot only."""
    index: MultiMap[str] = MultiMap()
    index.add("a", "w1")
    assert type(stored(index, "a")) is str
    index.add("a", "w2")
    assert type(stored(index, "a")) is set and sys.getsizeof(set()) >= 200
    index.discard("a", "w2")
    assert stored(index, "a") == "w1"  # back to the lone value


def stored(index: MultiMap[str], key: str) -> object:
    """What the index stores for ``key`` (the one place its layout is looked at)."""
    return index._map[key]
