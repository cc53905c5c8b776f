"""Types of hub._fanout (hub/_fanout.c), the fan-out's send loop compiled."""

from collections.abc import Iterable
from typing import Any, TypeVar

_C = TypeVar("_C")

def setup(
    connection: type,
    writer: type,
    protocol: type,
    watched: type,
    flag: type,
    open: Any,
    state: str,
) -> None: ...
def send_each(conns: Iterable[_C], wire: bytes, seq: int) -> list[_C]: ...
