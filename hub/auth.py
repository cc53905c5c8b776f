"""Who may do what: HS256 tokens (PyJWT), browser origins, and keeping tokens out of logs.

With ``HUB_AUTH_SECRET`` unset the hub is open and every request gets :data:`OPEN`, a grant for
everything. With it set, every REST call and WebSocket handshake needs a token, signed with the
secret, with these claims:

    exp    expiry (required)
    ws     a list of workspace ids, or "*" for all
    sub    optional: the only client id the bearer may act as
    scope  optional, space-separated; "admin" allows the operator routes (list all workspaces,
           delete a workspace, list claims, retire a client) and everything "viewers" allows;
           "viewers" allows listing who views a session (REST viewers, the ``watch`` frame)
    user   optional: the user the bearer's sockets belong to (docs/protocol.md section 9); the
           only source of a user with auth on (``?user_id=`` is then ignored)
    profile optional: a JSON object of at most 1024 bytes, the user's profile on connect

Checks run in this order, so an unauthenticated caller learns nothing and nothing changes
before they pass: the token (401 / close 4401), then the ids' syntax (400 / 4400), then the
grant (403 / 4403), then existence (404 / 4404).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

import jwt

from hub.errors import Forbidden, OriginNotAllowed, Unauthorized
from hub.presence import Profile
from hub.protocol import check_profile, check_user_id

__all__ = ["OPEN", "Auth", "Grant", "OriginPolicy", "RedactTokens", "token_from"]

_LOOPBACK_HOSTS = {"localhost", "127.0.0.1", "::1"}


@dataclass(frozen=True, slots=True)
class Grant:
    """What one verified token allows."""

    workspaces: frozenset[str] | None  # None: every workspace
    client: str | None  # None: any client id
    admin: bool
    viewers: bool = False  # may list who views a session (admin may too)
    user: str | None = None  # the user its sockets belong to (None: anonymous)
    profile: Profile | None = None

    def check_workspace(self, workspace_id: str) -> None:
        if self.workspaces is not None and workspace_id not in self.workspaces:
            raise Forbidden("the token does not grant this workspace")

    def check_client(self, client_id: str | None) -> None:
        if self.client is not None and client_id != self.client:
            raise Forbidden("the token is for another client")

    def check_admin(self) -> None:
        if not self.admin:
            raise Forbidden("this route needs a token with the admin scope")

    @property
    def may_view(self) -> bool:
        return self.viewers or self.admin

    def check_viewers(self) -> None:
        if not self.may_view:
            raise Forbidden("listing viewers needs a token with the viewers scope")


OPEN = Grant(workspaces=None, client=None, admin=True, viewers=True)


class Auth:
    """Verifies tokens with the shared secret; with no secret every request gets OPEN."""

    ALGORITHM = "HS256"

    def __init__(self, secret: str | None) -> None:
        self.secret = secret

    @property
    def enabled(self) -> bool:
        return self.secret is not None

    def verify(self, token: str | None) -> Grant:
        if self.secret is None:
            return OPEN
        if not token:
            raise Unauthorized("a token is required (Authorization: Bearer, or ?token=)")
        try:
            claims = jwt.decode(
                token, self.secret, algorithms=[self.ALGORITHM], options={"require": ["exp"]}
            )
        except jwt.ExpiredSignatureError:
            raise Unauthorized("the token has expired") from None
        except jwt.PyJWTError:
            raise Unauthorized("the token is not valid") from None
        ws = claims.get("ws")
        if ws == "*":
            workspaces = None
        elif isinstance(ws, list) and all(isinstance(w, str) for w in ws):
            workspaces = frozenset(ws)
        else:
            raise Unauthorized('the token\'s "ws" claim must be a list of ids or "*"')
        sub = claims.get("sub")
        scope = claims.get("scope", "")
        if sub is not None and not isinstance(sub, str) or not isinstance(scope, str):
            raise Unauthorized('the token\'s "sub" and "scope" claims must be strings')
        user = claims.get("user")
        profile = claims.get("profile")
        scopes = scope.split()
        return Grant(
            workspaces,
            sub.lower() if sub else None,
            "admin" in scopes,
            "viewers" in scopes,
            check_user_id(user) if user is not None else None,
            check_profile(profile) if profile is not None else None,
        )

    def mint(
        self,
        workspaces: Iterable[str],
        *,
        client: str | None = None,
        admin: bool = False,
        scopes: Iterable[str] = (),
        user: str | None = None,
        profile: Profile | None = None,
        ttl: float = 3600,
        now: float | None = None,
    ) -> str:
        """A token for ``hub token`` and for tests; ``workspaces`` may be ``["*"]``."""
        if self.secret is None:
            raise ValueError("no secret: set HUB_AUTH_SECRET")
        ids = list(workspaces)
        claims: dict[str, object] = {
            "exp": int((time.time() if now is None else now) + ttl),
            "ws": "*" if ids == ["*"] else ids,
        }
        if client is not None:
            claims["sub"] = client
        scope = [*(["admin"] if admin else []), *scopes]
        if scope:
            claims["scope"] = " ".join(dict.fromkeys(scope))
        if user is not None:
            claims["user"] = user
        if profile is not None:
            claims["profile"] = profile
        return jwt.encode(claims, self.secret, algorithm=self.ALGORITHM)


def token_from(headers: Mapping[str, str], query: Mapping[str, str]) -> str | None:
    """The bearer token of a request: ``Authorization: Bearer`` first, then ``?token=``."""
    authorization = headers.get("authorization", "")
    if authorization[:7].lower() == "bearer ":
        return authorization[7:].strip()
    return query.get("token")


class OriginPolicy:
    """Which browser pages may open a socket (cross-site WebSocket hijacking).

    ``allowed`` lists exact origins (``https://app.example.com``), or ``*`` for any. Empty: only
    loopback pages (http or https on localhost, 127.0.0.1 or [::1], any port). A handshake
    without ``Origin`` comes from no browser; it passes here (with auth on, it still needs a
    valid token like every other).
    """

    def __init__(self, allowed: Iterable[str]) -> None:
        self.allowed = frozenset(origin.rstrip("/").lower() for origin in allowed)

    def check(self, origin: str | None) -> None:
        if not self.allows(origin):
            raise OriginNotAllowed(f"origin {str(origin)[:100]!r} is not allowed")

    def allows(self, origin: str | None) -> bool:
        if origin is None:
            return True
        origin = origin.rstrip("/").lower()
        if "*" in self.allowed or origin in self.allowed:
            return True
        if self.allowed:
            return False
        try:
            parts = urlsplit(origin)
        except ValueError:
            return False
        return parts.scheme in ("http", "https") and parts.hostname in _LOOPBACK_HOSTS


_TOKEN = re.compile(r"(token=)[^&\s\"']*", re.IGNORECASE)


class RedactTokens(logging.Filter):
    """Rewrites ``token=...`` in log records (uvicorn logs paths with their query strings)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str) and "token=" in record.msg.lower():
            record.msg = _TOKEN.sub(r"\1[redacted]", record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(
                _TOKEN.sub(r"\1[redacted]", a) if isinstance(a, str) else a for a in record.args
            )
        return True

    @classmethod
    def install(cls, names: Iterable[str] = ("uvicorn.access", "uvicorn.error")) -> None:
        """Attach to the loggers that print URLs (idempotent). The hub's own logs name
        workspaces and clients, never URLs."""
        for name in names:
            logger = logging.getLogger(name)
            if not any(isinstance(f, cls) for f in logger.filters):
                logger.addFilter(cls())
