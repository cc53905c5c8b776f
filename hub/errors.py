"""The one exception tree of the hub.

Faults of a peer (a browser, a CLI, a REST caller) are data: each carries the wire code, the
HTTP status and the WebSocket close code that docs/protocol.md names for it, and the shells turn it
into an error body, an ``error`` frame or a close. Misuse of the API inside the program is not
in this tree: it raises the ordinary ``ValueError``/``TypeError``/``RuntimeError``.

    HubError
    ├── PeerError                  a request or frame the contract refuses
    │   ├── BadRequest             400 bad_request (wrong JSON type, missing/unknown field)
    │   ├── InvalidClientId        400 invalid_client_id, close 4400
    │   ├── InvalidSessionId       400 invalid_session_id, error frame
    │   ├── InvalidPath            400 invalid_path
    │   ├── InvalidUserId          400 invalid_user_id, close 4400
    │   ├── InvalidProfile         400 invalid_profile, error frame
    │   ├── TooManyWatches         error frame too_many_watches (a ninth watch on a socket)
    │   ├── InvalidParentSession   400 invalid_parent_session
    │   ├── WorkspaceNotFound      404 workspace_not_found, close 4404
    │   ├── SessionNotFound        404 session_not_found
    │   ├── NotAttached            409 not_attached
    │   ├── Conflict               409 conflict
    │   ├── ClientRetired          410 client_retired, close 4410
    │   ├── PayloadTooLarge        413 payload_too_large
    │   ├── Unauthorized           401 unauthorized, close 4401 (no token, or not a valid one)
    │   ├── Forbidden              403 forbidden, close 4403 (the token does not grant it)
    │   ├── OriginNotAllowed       close 1008 (a browser page from an origin not listed)
    │   ├── OverCapacity           close 1013 (too many sockets, or streams of one client)
    │   ├── Unavailable            503 unavailable + Retry-After: 1, error frame, close 1013
    │   │                          (Redis or PostgreSQL cannot answer now)
    │   ├── RateLimited            error frame rate_limited; close 4429 when it goes on
    │   ├── BadJson                error frame bad_json (a text frame that is not JSON)
    │   ├── UnsupportedFrame       error frame unsupported_frame (a binary frame)
    │   └── UnknownType            error frame unknown_type
    └── ConfigError                a setting with a bad value, found at start-up
"""

from __future__ import annotations

__all__ = [
    "BadJson",
    "BadRequest",
    "ClientRetired",
    "ConfigError",
    "Conflict",
    "HubError",
    "Forbidden",
    "InvalidClientId",
    "InvalidParentSession",
    "InvalidPath",
    "InvalidProfile",
    "InvalidSessionId",
    "InvalidUserId",
    "NotAttached",
    "OriginNotAllowed",
    "OverCapacity",
    "PayloadTooLarge",
    "PeerError",
    "RateLimited",
    "SessionNotFound",
    "TooManyWatches",
    "Unauthorized",
    "UnknownType",
    "UnsupportedFrame",
    "Unavailable",
    "WorkspaceNotFound",
]


class HubError(Exception):
    """Base of every error the hub raises on purpose."""


class PeerError(HubError):
    """Input from a peer that the contract refuses; carries its wire code, status and close."""

    code: str = "bad_request"
    status: int = 400
    close_code: int = 4400
    # Seconds a client should wait before retrying (the Retry-After header), when it applies.
    retry_after: int | None = None

    def __init__(self, message: str, *, ref: str | int | None = None) -> None:
        super().__init__(message)
        self.message = message
        # The client's ``ref`` of the frame that was refused, echoed in the error frame.
        self.ref = ref


class BadRequest(PeerError):
    code = "bad_request"


class InvalidClientId(PeerError):
    code = "invalid_client_id"


class InvalidSessionId(PeerError):
    code = "invalid_session_id"


class InvalidPath(PeerError):
    code = "invalid_path"


class InvalidUserId(PeerError):
    code = "invalid_user_id"


class InvalidProfile(PeerError):
    code = "invalid_profile"


class TooManyWatches(PeerError):
    code = "too_many_watches"


class InvalidParentSession(PeerError):
    code = "invalid_parent_session"


class WorkspaceNotFound(PeerError):
    code = "workspace_not_found"
    status = 404
    close_code = 4404


class SessionNotFound(PeerError):
    code = "session_not_found"
    status = 404


class NotAttached(PeerError):
    code = "not_attached"
    status = 409


class Conflict(PeerError):
    code = "conflict"
    status = 409


class ClientRetired(PeerError):
    code = "client_retired"
    status = 410
    close_code = 4410


class PayloadTooLarge(PeerError):
    code = "payload_too_large"
    status = 413


class ConfigError(HubError):
    """A setting has a value the hub cannot run with; the message names the setting."""


class Unauthorized(PeerError):
    code = "unauthorized"
    status = 401
    close_code = 4401


class Forbidden(PeerError):
    code = "forbidden"
    status = 403
    close_code = 4403


class OriginNotAllowed(PeerError):
    code = "origin_not_allowed"
    status = 403
    close_code = 1008


class OverCapacity(PeerError):
    code = "over_capacity"
    status = 503
    close_code = 1013


class Unavailable(PeerError):
    """A shared dependency (Redis, PostgreSQL) cannot answer now: try again shortly."""

    code = "unavailable"
    status = 503
    close_code = 1013
    retry_after = 1


class RateLimited(PeerError):
    code = "rate_limited"
    status = 429
    close_code = 4429


class BadJson(PeerError):
    code = "bad_json"


class UnsupportedFrame(PeerError):
    code = "unsupported_frame"


class UnknownType(PeerError):
    code = "unknown_type"
