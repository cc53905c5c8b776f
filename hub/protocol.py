"""The wire contract in code: identifier rules, client frames in, server frames out.

``parse(text)`` turns one text frame into a :data:`Command` or raises the :class:`PeerError`
whose code the error frame carries. ``encode(frame)`` turns a server frame into the UTF-8 JSON
bytes sent on the socket; a fan-out encodes once and sends the same bytes to every socket.
Optional fields (``ref``, ``online``, ``online_users``) are left out of the JSON when they
are ``None``.
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
    InvalidProfile,
    InvalidSessionId,
    InvalidUserId,
    PeerError,
    UnknownType,
)
from hub.presence import Profile, Viewer

__all__ = [
    "DEFAULT_VIEWERS_LIMIT",
    "MAX_PROFILE_BYTES",
    "MAX_REF_LENGTH",
    "MAX_SESSION_ID_LENGTH",
    "MAX_USER_ID_LENGTH",
    "MAX_VIEWERS_LIMIT",
    "Ack",
    "CloseCode",
    "Command",
    "Counts",
    "Error",
    "Ping",
    "Pong",
    "Ref",
    "Refresh",
    "ServerFrame",
    "SessionEvent",
    "SetProfile",
    "SetSession",
    "SnapshotFrame",
    "Sync",
    "Unwatch",
    "ViewersDiff",
    "ViewersFrame",
    "Watch",
    "check_client_id",
    "check_limit",
    "check_profile",
    "check_session_id",
    "check_user_id",
    "viewer_json",
    "encode",
    "parse",
]

Ref = str | int
MAX_SESSION_ID_LENGTH = 128
MAX_REF_LENGTH = 256
MAX_USER_ID_LENGTH = 128
MAX_PROFILE_BYTES = 1024
MAX_VIEWERS_LIMIT = 1000
DEFAULT_VIEWERS_LIMIT = 100
# Integer refs stay within what a JavaScript client can echo back exactly.
MAX_SAFE_INTEGER = 2**53 - 1

# Unicode category Cc, exactly: C0 controls, DEL and C1 controls.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


class CloseCode(IntEnum):
    """WebSocket close codes of docs/protocol.md section 7."""

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


def check_user_id(value: object) -> str:
    """A user id: a string of 1..128 characters without control characters."""
    if (
        not isinstance(value, str)
        or not 0 < len(value) <= MAX_USER_ID_LENGTH
        or _CONTROL.search(value)
    ):
        raise InvalidUserId(
            f"user_id must be 1..{MAX_USER_ID_LENGTH} characters without control characters"
        )
    return value


def check_profile(value: object, *, ref: Ref | None = None) -> Profile:
    """A profile: a JSON object of at most 1024 bytes encoded."""
    if not isinstance(value, dict):
        raise InvalidProfile("profile must be a JSON object", ref=ref)
    try:
        size = len(orjson.dumps(value))
    except TypeError:
        raise InvalidProfile("profile must be a JSON object", ref=ref) from None
    if size > MAX_PROFILE_BYTES:
        raise InvalidProfile(
            f"profile is {size} bytes encoded, over the limit of {MAX_PROFILE_BYTES}", ref=ref
        )
    return value


def check_limit(value: object, *, ref: Ref | None = None) -> int:
    """A viewers ``limit``: an integer 1..1000 (None: the default, 100); from a query string
    too (its decimal text)."""
    if value is None:
        return DEFAULT_VIEWERS_LIMIT
    if isinstance(value, str) and value.isdigit() and len(value) < 6:
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool):
        raise BadRequest("limit must be an integer", ref=ref)
    if not 1 <= value <= MAX_VIEWERS_LIMIT:
        raise BadRequest(f"limit must be 1..{MAX_VIEWERS_LIMIT}", ref=ref)
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


@dataclass(frozen=True, slots=True)
class SetProfile:
    profile: Profile
    ref: Ref | None = None


@dataclass(frozen=True, slots=True)
class Watch:
    session_id: str
    limit: int = DEFAULT_VIEWERS_LIMIT
    ref: Ref | None = None


@dataclass(frozen=True, slots=True)
class Unwatch:
    session_id: str
    ref: Ref | None = None


@dataclass(frozen=True, slots=True)
class Refresh:
    """A fresh token for a live stream (docs/protocol.md section 13)."""

    token: str
    ref: Ref | None = None


Command = SetSession | Sync | Ping | SetProfile | Watch | Unwatch | Refresh

_ALLOWED = {
    "set_session": frozenset({"type", "session_id", "ref"}),
    "sync": frozenset({"type", "ref"}),
    "ping": frozenset({"type", "ref"}),
    "set_profile": frozenset({"type", "profile", "ref"}),
    "watch": frozenset({"type", "session_id", "limit", "ref"}),
    "unwatch": frozenset({"type", "session_id", "ref"}),
    "refresh": frozenset({"type", "token", "ref"}),
}
# The longest token a refresh frame may carry (characters).
MAX_TOKEN_LENGTH = 16 * 1024


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
    if not data.keys() <= allowed:
        unknown = min(data.keys() - allowed)
        raise BadRequest(f"unknown field {unknown[:64]!r} in {kind}", ref=ref)
    if kind in ("set_session", "watch", "unwatch"):
        if "session_id" not in data:
            raise BadRequest("field 'session_id' is required", ref=ref)
        session_id = check_session_id(data["session_id"], ref=ref)
        if kind == "watch":
            return Watch(session_id, check_limit(data.get("limit"), ref=ref), ref)
        return SetSession(session_id, ref) if kind == "set_session" else Unwatch(session_id, ref)
    if kind == "set_profile":
        if "profile" not in data:
            raise BadRequest("field 'profile' is required", ref=ref)
        return SetProfile(check_profile(data["profile"], ref=ref), ref)
    if kind == "refresh":
        token = data.get("token")
        if not isinstance(token, str) or not token:
            raise BadRequest("field 'token' must be a non-empty string", ref=ref)
        if len(token) > MAX_TOKEN_LENGTH:
            raise BadRequest(f"field 'token' is over {MAX_TOKEN_LENGTH} characters", ref=ref)
        return Refresh(token, ref)
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
    users: dict[str, int]
    online_users: int
    ref: Ref | None = None


@dataclass(frozen=True, slots=True)
class Counts:
    TYPE: ClassVar[str] = "counts"
    seq: int
    counts: dict[str, int] = field(default_factory=dict)
    online: int | None = None
    users: dict[str, int] = field(default_factory=dict)
    online_users: int | None = None


def viewer_json(viewer: Viewer) -> dict[str, Any]:
    """A viewer as the wire shows it (``profile`` is null when the user has none)."""
    return {"user_id": viewer.user_id, "profile": viewer.profile, "clients": viewer.clients}


@dataclass(frozen=True, slots=True)
class ViewersFrame:
    """The answer to ``watch``: the REST viewers body, with the frame's ``ref``."""

    TYPE: ClassVar[str] = "viewers"
    workspace_id: str
    session_id: str
    seq: int
    total: int
    anonymous: int
    viewers: list[dict[str, Any]]
    ref: Ref | None = None


@dataclass(frozen=True, slots=True)
class ViewersDiff:
    TYPE: ClassVar[str] = "viewers_diff"
    session_id: str
    seq: int
    total: int
    anonymous: int
    joined: list[dict[str, Any]]
    updated: list[dict[str, Any]]
    left: list[str]


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


ServerFrame = (
    SnapshotFrame | Counts | SessionEvent | Ack | Error | Pong | ViewersFrame | ViewersDiff
)


# The field names of each server frame's class, in order (read once: ``fields()`` builds its
# tuple anew on every call).
_FIELDS: dict[type, tuple[str, ...]] = {}


def encode(frame: ServerFrame) -> bytes:
    """The frame as compact UTF-8 JSON, ``type`` first, ``None`` fields left out."""
    names = _FIELDS.get(type(frame))
    if names is None:
        names = _FIELDS[type(frame)] = tuple(f.name for f in fields(frame))
    body: dict[str, Any] = {"type": frame.TYPE}
    for name in names:
        value = getattr(frame, name)
        if value is not None:
            body[name] = value
    return orjson.dumps(body)
