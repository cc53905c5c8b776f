"""The wire contract in code: identifier rules, client frames in, server frames out.

``parse(text)`` turns one text frame into a :data:`Command` or raises the :class:`PeerError`
whose code the error frame carries. ``encode(frame)`` turns a server frame into the UTF-8 JSON
bytes sent on the socket; a fan-out encodes once and sends the same bytes to every socket.
Optional fields (``ref``, ``online``) are left out of the JSON when they are ``None``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields
from enum import IntEnum
from typing import Any, ClassVar

import orjson

from hub.errors import (
    BadJson,
    BadRequest,
    InvalidClientId,
    InvalidSessionId,
    PeerError,
    UnknownType,
)

__all__ = [
    "MAX_REF_LENGTH",
    "MAX_SESSION_ID_LENGTH",
    "Ack",
    "CloseCode",
    "Command",
    "Counts",
    "Error",
    "Ping",
    "Pong",
    "Ref",
    "ServerFrame",
    "SessionEvent",
    "SetSession",
    "SnapshotFrame",
    "Sync",
    "check_client_id",
    "check_session_id",
    "encode",
    "parse",
]

Ref = str | int
MAX_SESSION_ID_LENGTH = 128
MAX_REF_LENGTH = 256
# Integer refs stay within what a JavaScript client can echo back exactly.
MAX_SAFE_INTEGER = 2**53 - 1

# Unicode category Cc, exactly: C0 controls, DEL and C1 controls.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


class CloseCode(IntEnum):
    """WebSocket close codes of PROTOCOL.md section 4."""

    NORMAL = 1000
    GOING_AWAY = 1001
    POLICY_VIOLATION = 1008
    MESSAGE_TOO_BIG = 1009
    INTERNAL_ERROR = 1011
    SERVICE_RESTART = 1012
    TRY_AGAIN_LATER = 1013
    BAD_REQUEST = 4400
    UNAUTHORIZED = 4401
    FORBIDDEN = 4403
    NOT_FOUND = 4404
    KEEPALIVE_TIMEOUT = 4408
    SLOW_CONSUMER = 4409
    RETIRED = 4410
    RATE_LIMITED = 4429


def check_client_id(value: object) -> str:
    """A client id in canonical UUID text form, lower-cased; else ``InvalidClientId``."""
    if not isinstance(value, str) or not _UUID.fullmatch(value):
        raise InvalidClientId("client_id must be a UUID in canonical text form")
    return value.lower()


def check_session_id(value: object, *, ref: Ref | None = None) -> str:
    """A session id: a string of 0..128 characters without control characters.

    ``None`` stands for ``""`` (no session). A value of another type is ``BadRequest``.
    """
    if value is None:
        return ""
    if not isinstance(value, str):
        raise BadRequest("session_id must be a string or null", ref=ref)
    if len(value) > MAX_SESSION_ID_LENGTH:
        raise InvalidSessionId(
            f"session_id is longer than {MAX_SESSION_ID_LENGTH} characters", ref=ref
        )
    if _CONTROL.search(value):
        raise InvalidSessionId("session_id contains a control character", ref=ref)
    return value


# -- client to server -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SetSession:
    session_id: str
    ref: Ref | None = None


@dataclass(frozen=True, slots=True)
class Sync:
    ref: Ref | None = None


@dataclass(frozen=True, slots=True)
class Ping:
    ref: Ref | None = None


Command = SetSession | Sync | Ping

_ALLOWED = {
    "set_session": frozenset({"type", "session_id", "ref"}),
    "sync": frozenset({"type", "ref"}),
    "ping": frozenset({"type", "ref"}),
}


def parse(text: str | bytes) -> Command:
    """One client text frame to a command; raises the PeerError the error frame names."""
    try:
        data = orjson.loads(text)
    except orjson.JSONDecodeError:
        raise BadJson("frame is not valid JSON") from None
    if not isinstance(data, dict):
        raise BadRequest("frame must be a JSON object")
    ref = _ref(data.get("ref"))
    kind = data.get("type")
    if not isinstance(kind, str):
        raise BadRequest("field 'type' must be a string", ref=ref)
    allowed = _ALLOWED.get(kind)
    if allowed is None:
        raise UnknownType(f"unknown frame type {kind[:64]!r}", ref=ref)
    unknown = data.keys() - allowed
    if unknown:
        raise BadRequest(f"unknown field {min(unknown)[:64]!r} in {kind}", ref=ref)
    if kind == "set_session":
        if "session_id" not in data:
            raise BadRequest("field 'session_id' is required", ref=ref)
        return SetSession(check_session_id(data["session_id"], ref=ref), ref)
    if kind == "sync":
        return Sync(ref)
    return Ping(ref)


def _ref(value: Any) -> Ref | None:
    if value is None:
        return None
    if isinstance(value, str) and len(value) <= MAX_REF_LENGTH:
        return value
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) <= MAX_SAFE_INTEGER:
        return value
    raise BadRequest(
        f"field 'ref' must be a string of at most {MAX_REF_LENGTH} characters "
        f"or an integer of at most {MAX_SAFE_INTEGER} in magnitude"
    )


# -- server to client -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SnapshotFrame:
    TYPE: ClassVar[str] = "snapshot"
    workspace_id: str
    client_id: str
    seq: int
    online: int
    counts: dict[str, int]
    ref: Ref | None = None


@dataclass(frozen=True, slots=True)
class Counts:
    TYPE: ClassVar[str] = "counts"
    seq: int
    counts: dict[str, int] = field(default_factory=dict)
    online: int | None = None


@dataclass(frozen=True, slots=True)
class SessionEvent:
    TYPE: ClassVar[str] = "session"
    op: str  # "created" | "updated" | "deleted"
    session: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Ack:
    TYPE: ClassVar[str] = "ack"
    ref: Ref
    seq: int


@dataclass(frozen=True, slots=True)
class Error:
    TYPE: ClassVar[str] = "error"
    code: str
    message: str
    ref: Ref | None = None

    @classmethod
    def of(cls, exc: PeerError) -> Error:
        return cls(exc.code, exc.message, exc.ref)


@dataclass(frozen=True, slots=True)
class Pong:
    TYPE: ClassVar[str] = "pong"
    ref: Ref | None = None


ServerFrame = SnapshotFrame | Counts | SessionEvent | Ack | Error | Pong


def encode(frame: ServerFrame) -> bytes:
    """The frame as compact UTF-8 JSON, ``type`` first, ``None`` fields left out."""
    body: dict[str, Any] = {"type": frame.TYPE}
    for f in fields(frame):
        value = getattr(frame, f.name)
        if value is not None:
            body[f.name] = value
    return orjson.dumps(body)
