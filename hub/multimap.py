"""An index from a key to a few values that keeps a lone value as itself.

The hub indexes sockets and claims by client (:class:`hub.hub.Hub`, :class:`hub.presence.Presence`).
Nearly every client has one socket and one claim, and a set of one costs 216 bytes on 64-bit
CPython: per idle socket, more than the connection object itself (docs/performance.md, "The
plain path"). So a key maps to its value while it has one, and to a set only from its second
value on. The values must be hashable and never be sets themselves.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from typing import Generic, TypeVar

V = TypeVar("V", bound=Hashable)

__all__ = ["MultiMap"]


class MultiMap(Generic[V]):
    """``key -> {values}``, stored as ``key -> value`` while there is one."""

    __slots__ = ("_map",)

    def __init__(self) -> None:
        self._map: dict[str, V | set[V]] = {}

    def add(self, key: str, value: V) -> None:
        have = self._map.get(key)
        if have is None:
            self._map[key] = value
        elif type(have) is set:
            have.add(value)
        elif have != value:
            self._map[key] = {have, value}  # type: ignore[arg-type]

    def discard(self, key: str, value: V) -> None:
        have = self._map.get(key)
        if have is None:
            return
        if type(have) is set:
            have.discard(value)
            if len(have) == 1:
                self._map[key] = next(iter(have))
            elif not have:
                del self._map[key]
        elif have == value:
            del self._map[key]

    def get(self, key: str) -> Iterable[V]:
        """The key's values (empty when it has none); a copy need not be taken, but the
        caller must not change the index while it iterates a set."""
        have = self._map.get(key)
        if have is None:
            return ()
        if type(have) is set:
            return have
        return (have,)  # type: ignore[return-value]

    def __contains__(self, key: str) -> bool:
        return key in self._map

    def __len__(self) -> int:
        return len(self._map)
