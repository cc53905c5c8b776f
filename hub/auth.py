"""Who may do what: tokens (PyJWT), browser origins, and keeping tokens out of logs.

With no ``HUB_AUTH_SECRET``, ``HUB_AUTH_JWKS_URL`` or ``HUB_AUTH_PUBLIC_KEY`` the hub is open
and every request gets :data:`OPEN`, a grant for everything. Otherwise every REST call and
WebSocket handshake needs a token of one of two kinds.

The hub's own tokens, HS256, signed with one of the secrets of ``HUB_AUTH_SECRET`` (a
comma-separated list: the first signs, every one verifies), with these claims:

    exp    expiry (required)
    ws     a list of workspace ids, or "*" for all
    sub    optional: the only client id the bearer may act as
    scope  optional, space-separated; "admin" allows the operator routes (list all workspaces,
           delete a workspace, list claims, retire a client) and everything "viewers" allows;
           "viewers" allows listing who views a session (REST viewers, the ``watch`` frame)
    user   optional: the user the bearer's sockets belong to (docs/protocol.md section 9); the
           only source of a user with auth on (``?user_id=`` is then ignored)
    profile optional: a JSON object of at most 1024 bytes, the user's profile on connect

An identity provider's tokens (RS*/PS*/ES*/EdDSA), verified with the keys of
:mod:`hub.keys` looked up by (issuer, ``kid``), the algorithm taken from the key; ``iss`` and
``aud`` checked against the settings; the user, the workspace grant and the scopes read from
the claims the settings name (``sub``, ``ws``, ``scope`` by default). A provider token without
a workspace grant asks the application's authorization hook (:class:`AuthCheck`) per
workspace. Every refusal is a :class:`TokenRefused` naming its cause, logged once a minute per
cause.

Checks run in this order, so an unauthenticated caller learns nothing and nothing changes
before they pass: the token (401 / close 4401), then the ids' syntax (400 / 4400), then the
grant (403 / 4403; the hook: 403, or 503 / 1013 when it does not answer), then existence
(404 / 4404).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import logging
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx
import jwt
import orjson

from hub.errors import Forbidden, OriginNotAllowed, PeerError, Unauthorized, Unavailable
from hub.keys import FETCH_TIMEOUT, PUBLIC_ALGORITHMS, JwksSource, Key, key_from_pem
from hub.presence import Profile
from hub.protocol import check_profile, check_user_id
from hub.webhook import SIGNATURE, sign

if TYPE_CHECKING:
    from hub.settings import Settings

__all__ = [
    "OPEN",
    "Auth",
    "AuthCheck",
    "CheckAnswer",
    "Grant",
    "OriginPolicy",
    "RedactTokens",
    "TokenRefused",
    "token_from",
]

log = logging.getLogger(__name__)

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
    expires: float | None = None  # the token's exp (Unix seconds): its streams close then
    ask: bool = False  # no workspace grant in the token: the authorization hook decides
    claims: Mapping[str, Any] | None = field(default=None, compare=False)  # for the hook

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


class TokenRefused(Unauthorized):
    """A 401 whose ``cause`` says which check refused the token (for the log, once a minute)."""

    def __init__(self, cause: str, message: str) -> None:
        super().__init__(message)
        self.cause = cause


class _UnknownKey(TokenRefused):
    """No key for the token's (issuer, kid): its issuer's JWKS may be fetched again."""

    def __init__(self, issuer: str | None, message: str) -> None:
        super().__init__("unknown key", message)
        self.issuer = issuer


class Throttled:
    """Logs a warning once per ``interval`` per cause, with how many it stood for."""

    def __init__(self, logger: logging.Logger, interval: float = 60.0) -> None:
        self._log = logger
        self._interval = interval
        self._last: dict[str, float] = {}
        self._count: dict[str, int] = {}

    def warn(self, cause: str, message: str) -> None:
        now = time.monotonic()
        count = self._count[cause] = self._count.get(cause, 0) + 1
        last = self._last.get(cause)
        if last is not None and now - last < self._interval:
            return
        self._last[cause] = now
        del self._count[cause]
        self._log.warning("%s: %s (%d in the last minute)", cause, message, count)


# PyJWT's implementations of each algorithm (HMAC, RSA, RSA-PSS, ECDSA, EdDSA): only their
# signature checks are used here. The token is parsed once, by :func:`_parse` (PyJWT's own
# decode parses it again per call, with a per-character check that costs more than an RSA
# signature check), and its registered claims are checked by :func:`_check_times`.
_ALGORITHMS: dict[str, Any] = jwt.algorithms.get_default_algorithms()
_SEGMENT = re.compile(r"[A-Za-z0-9_-]*")


@dataclass(frozen=True, slots=True)
class _Parsed:
    header: dict[str, Any]
    claims: dict[str, Any]
    signing_input: bytes
    signature: bytes


def _segment(text: str) -> bytes:
    if not _SEGMENT.fullmatch(text):
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _parse(token: str) -> _Parsed:
    """A compact JWS with a JSON object as header and as payload, unverified."""
    parts = token.split(".")
    if len(parts) != 3:
        raise TokenRefused("malformed", "the token is not a well-formed JWT")
    try:
        header = orjson.loads(_segment(parts[0]))
        claims = orjson.loads(_segment(parts[1]))
        signature = _segment(parts[2])
    except (ValueError, orjson.JSONDecodeError):
        raise TokenRefused("malformed", "the token is not a well-formed JWT") from None
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise TokenRefused("malformed", "the token is not a well-formed JWT")
    if "crit" in header or "b64" in header:  # extensions this verifier does not implement
        raise TokenRefused("malformed", "the token's header asks for an unsupported extension")
    return _Parsed(header, claims, f"{parts[0]}.{parts[1]}".encode(), signature)


def _signed_by(parsed: _Parsed, alg: str, key: Any) -> bool:
    try:
        return bool(_ALGORITHMS[alg].verify(parsed.signing_input, key, parsed.signature))
    except (ValueError, TypeError, jwt.PyJWTError):
        return False  # e.g. an ECDSA signature of the wrong length


def _number(claims: Mapping[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TokenRefused("claims", f"the token's {name!r} claim must be a number")
    return float(value)


def _check_times(claims: Mapping[str, Any], leeway: float) -> None:
    """``exp`` (required), ``nbf`` and ``iat``, each with ``leeway`` seconds of skew."""
    now = time.time()
    exp = _number(claims, "exp")
    if exp is None:
        raise TokenRefused("claims", "the token has no 'exp' claim")
    if exp <= now - leeway:
        raise TokenRefused("expired", "the token has expired")
    nbf, iat = _number(claims, "nbf"), _number(claims, "iat")
    if nbf is not None and nbf > now + leeway or iat is not None and iat > now + leeway:
        raise TokenRefused("not yet valid", "the token is not valid yet (nbf or iat)")


def _shown(value: object) -> str:
    """A value from a token, fit for a message: its repr, cut short."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


# Tokens longer than this are refused unread.
MAX_TOKEN_CHARS = 16 * 1024


class Auth:
    """Verifies tokens: HS256 with the shared secrets, RS/PS/ES/EdDSA with public keys (JWKS
    URLs, PEM files). With none of them configured every request gets OPEN.

    ``verify`` is synchronous and uses the keys already known; ``authenticate`` also fetches
    a JWKS again when a token names a key not known yet. ``authorize`` checks a grant for a
    workspace, asking the authorization hook (``check``) when the token carries no grant.
    """

    ALGORITHM = "HS256"

    def __init__(
        self,
        secret: str | Sequence[str] | None = None,
        *,
        public_keys: Sequence[Key] = (),
        jwks: Sequence[JwksSource] = (),
        issuers: Sequence[str] = (),
        audiences: Sequence[str] = (),
        leeway: float = 0.0,
        user_claim: str | None = None,
        workspaces_claim: str = "ws",
        scope_claim: str = "scope",
        check: AuthCheck | None = None,
    ) -> None:
        if isinstance(secret, str):
            secret = [part.strip() for part in secret.split(",") if part.strip()]
        self.secrets: tuple[str, ...] = tuple(secret or ())
        hmac_ = _ALGORITHMS[self.ALGORITHM]
        self._secret_keys = [hmac_.prepare_key(s) for s in self.secrets]
        self.public_keys = tuple(public_keys)
        self.jwks = tuple(jwks)
        self.issuers = frozenset(issuers)
        self.audiences = frozenset(audiences)
        self.leeway = leeway
        self.user_claim = user_claim or "sub"
        self.workspaces_claim = workspaces_claim
        self.scope_claim = scope_claim
        self.check = check
        self.refusals = Throttled(log)
        self._http: httpx.AsyncClient | None = None
        self._refresher: asyncio.Task[None] | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> Auth:
        issuers = settings.auth_issuer
        urls = settings.auth_jwks_url
        # Several issuers pair in order with the URLs; one issuer owns every key; none: any.
        if len(issuers) > 1 and len(urls) == len(issuers):
            owners: Sequence[str | None] = issuers
        else:
            owners = [issuers[0] if len(issuers) == 1 else None] * len(urls)
        pem_owner = issuers[0] if len(issuers) == 1 else None
        check = None
        if settings.auth_check_url is not None and settings.auth_check_secret is not None:
            check = AuthCheck(
                settings.auth_check_url, settings.auth_check_secret, settings.auth_check_ttl
            )
        return cls(
            settings.auth_secret,
            public_keys=[key_from_pem(path, pem_owner) for path in settings.auth_public_key],
            jwks=[JwksSource(url, owner) for url, owner in zip(urls, owners, strict=True)],
            issuers=issuers,
            audiences=settings.auth_audience,
            leeway=settings.auth_leeway,
            user_claim=settings.auth_user_claim,
            workspaces_claim=settings.auth_workspaces_claim,
            scope_claim=settings.auth_scope_claim,
            check=check,
        )

    @property
    def secret(self) -> str | None:
        """The secret that signs (the first of the list)."""
        return self.secrets[0] if self.secrets else None

    @property
    def enabled(self) -> bool:
        return bool(self.secrets or self.public_keys or self.jwks)

    # -- life -----------------------------------------------------------------------------------

    async def start(self) -> None:
        """Fetch every JWKS once (a URL that is down is tried again on demand), then again
        every :data:`JWKS_MAX_AGE` so that a key removed by its provider goes away."""
        if self.jwks:
            await asyncio.gather(*(s.refresh(self._client(), force=True) for s in self.jwks))
            self._refresher = asyncio.get_running_loop().create_task(
                self._refresh_every(JWKS_MAX_AGE), name="jwks-refresh"
            )

    async def close(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresher
            self._refresher = None
        if self._http is not None:
            await self._http.aclose()
            self._http = None
        if self.check is not None:
            await self.check.close()

    async def _refresh_every(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            for source in self.jwks:
                await source.refresh(self._client(), force=True)

    def _client(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=FETCH_TIMEOUT, follow_redirects=True)
        return self._http

    # -- tokens ---------------------------------------------------------------------------------

    def verify(self, token: str | None) -> Grant:
        """The grant of a token, with the keys known now (401 naming the cause)."""
        if not self.enabled:
            return OPEN
        if not token:
            raise Unauthorized("a token is required (Authorization: Bearer, or ?token=)")
        try:
            return self._verify(token)
        except TokenRefused as exc:
            self.refusals.warn(f"token refused ({exc.cause})", exc.message)
            raise

    async def authenticate(self, token: str | None) -> Grant:
        """Like :meth:`verify`, and a token naming a key not known yet makes its issuer's
        JWKS be fetched again (at most once per 10 s per URL) before it is refused."""
        if not self.enabled or not token or not self.jwks:
            return self.verify(token)
        try:
            return self._verify(token)
        except _UnknownKey as exc:
            if not await self._refetch(exc.issuer):
                down = [s for s in self._sources(exc.issuer) if s.last_error is not None]
                if down:
                    exc.message += "; " + "; ".join(
                        f"JWKS {s.url} could not be fetched ({s.last_error})" for s in down
                    )
                self.refusals.warn(f"token refused ({exc.cause})", exc.message)
                raise
        except TokenRefused as exc:
            self.refusals.warn(f"token refused ({exc.cause})", exc.message)
            raise
        return self.verify(token)

    def _sources(self, issuer: str | None) -> list[JwksSource]:
        return [s for s in self.jwks if s.issuer is None or s.issuer == issuer]

    async def _refetch(self, issuer: str | None) -> bool:
        now = time.monotonic()
        sources = [s for s in self._sources(issuer) if s.may_fetch(now)]
        if not sources:
            return False
        results = await asyncio.gather(*(s.refresh(self._client()) for s in sources))
        return any(results)

    def _verify(self, token: str) -> Grant:
        if len(token) > MAX_TOKEN_CHARS:
            raise TokenRefused("malformed", f"the token is over {MAX_TOKEN_CHARS} characters")
        parsed = _parse(token)
        alg = parsed.header.get("alg")
        if not isinstance(alg, str):
            raise TokenRefused("malformed", "the token's header has no algorithm (alg)")
        if alg == self.ALGORITHM and self.secrets:
            return self._verify_secret(parsed)
        if alg in PUBLIC_ALGORITHMS and (self.public_keys or self.jwks):
            return self._verify_public(parsed, alg)
        accepted = sorted(
            ({self.ALGORITHM} if self.secrets else set())
            | (set(PUBLIC_ALGORITHMS) if self.public_keys or self.jwks else set())
        )
        raise TokenRefused(
            "algorithm",
            f"the token's algorithm {_shown(alg)} is not accepted here "
            f"(accepted: {', '.join(accepted)})",
        )

    def _verify_secret(self, parsed: _Parsed) -> Grant:
        if not any(_signed_by(parsed, self.ALGORITHM, key) for key in self._secret_keys):
            raise TokenRefused("signature", "the token's signature does not verify")
        _check_times(parsed.claims, self.leeway)
        return self._secret_grant(parsed.claims)

    def _secret_grant(self, claims: dict[str, Any]) -> Grant:
        """The grant of a hub token (HS256): the claims of section 4, as in v1."""
        ws = claims.get("ws")
        if ws == "*":
            workspaces = None
        elif isinstance(ws, list) and all(isinstance(w, str) for w in ws):
            workspaces = frozenset(ws)
        else:
            raise TokenRefused("claims", 'the token\'s "ws" claim must be a list of ids or "*"')
        sub = claims.get("sub")
        scope = claims.get("scope", "")
        if sub is not None and not isinstance(sub, str) or not isinstance(scope, str):
            raise TokenRefused("claims", 'the token\'s "sub" and "scope" claims must be strings')
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
            expires=_expiry(claims),
        )

    def _verify_public(self, parsed: _Parsed, alg: str) -> Grant:
        claims = parsed.claims
        issuer = claims.get("iss")
        if issuer is not None and not isinstance(issuer, str):
            raise TokenRefused("issuer", "the token's issuer (iss) must be a string")
        if self.issuers and issuer not in self.issuers:
            raise TokenRefused("issuer", f"the token's issuer {_shown(issuer)} is not accepted")
        kid = parsed.header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise TokenRefused("malformed", "the token's kid must be a string")
        keys = [
            key
            for key in (*self.public_keys, *(k for s in self.jwks for k in s.keys))
            if (key.issuer is None or key.issuer == issuer)
            and (kid is None or key.kid is None or key.kid == kid)
        ]
        if not keys:
            raise _UnknownKey(
                issuer, f"no key with kid {_shown(kid)} is known for issuer {_shown(issuer)}"
            )
        usable = [key for key in keys if alg in key.algorithms]
        if not usable:
            allowed = sorted({a for key in keys for a in key.algorithms})
            raise TokenRefused(
                "algorithm",
                f"the token's algorithm {alg} does not match its key's ({', '.join(allowed)})",
            )
        if not any(_signed_by(parsed, alg, key.key) for key in usable):
            raise TokenRefused("signature", "the token's signature does not verify")
        _check_times(claims, self.leeway)
        if self.audiences:
            aud = claims.get("aud")
            if aud is None:
                raise TokenRefused("audience", "the token has no audience (aud)")
            named = [aud] if isinstance(aud, str) else aud
            if not isinstance(named, list) or not any(
                isinstance(a, str) and a in self.audiences for a in named
            ):
                raise TokenRefused("audience", "the token's audience is not accepted")
        return self._public_grant(claims)

    def _public_grant(self, claims: dict[str, Any]) -> Grant:
        """The grant of an identity provider's token: the claims the settings name."""
        name = self.user_claim
        user = claims.get(name)
        if user is None:
            raise TokenRefused("claims", f"the token has no {_shown(name)} claim (its user)")
        try:
            user = check_user_id(user)
        except PeerError:
            raise TokenRefused(
                "claims", f"the token's {_shown(name)} claim is not a valid user id"
            ) from None
        ws = claims.get(self.workspaces_claim)
        ask = False
        if ws is None:
            workspaces: frozenset[str] | None = frozenset()  # no grant: the hook may give one
            ask = self.check is not None
        elif ws == "*":
            workspaces = None
        elif isinstance(ws, list) and all(isinstance(w, str) for w in ws):
            workspaces = frozenset(ws)
        else:
            raise TokenRefused(
                "claims",
                f'the token\'s {_shown(self.workspaces_claim)} claim must be a list of ids or "*"',
            )
        scopes = _scopes(claims.get(self.scope_claim))
        if scopes is None:
            raise TokenRefused(
                "claims",
                f"the token's {_shown(self.scope_claim)} claim must be a space-separated "
                "string or a list of strings",
            )
        profile = claims.get("profile")
        try:
            profile = check_profile(profile) if profile is not None else None
        except PeerError:
            raise TokenRefused("claims", "the token's profile claim is not valid") from None
        return Grant(
            workspaces,
            None,
            "admin" in scopes,
            "viewers" in scopes,
            user,
            profile,
            expires=_expiry(claims),
            ask=ask,
            claims=claims if ask else None,
        )

    async def authorize(
        self, grant: Grant, workspace_id: str, client_id: str | None = None
    ) -> Grant:
        """The grant for one workspace: unchanged when the token grants it; when the token
        carries no grant, the authorization hook's answer (403 when it denies, 503 when it
        does not answer); else 403."""
        if grant.ask and self.check is not None and grant.user is not None:
            answer = await self.check.ask(grant.user, client_id, workspace_id, grant.claims)
            if not answer.allow:
                raise Forbidden("the application's authorization hook denies this workspace")
            return dataclasses.replace(
                grant,
                workspaces=frozenset({workspace_id}),
                admin=grant.admin or "admin" in answer.scopes,
                viewers=grant.viewers or "viewers" in answer.scopes,
                profile=answer.profile if answer.profile is not None else grant.profile,
                ask=False,
                claims=None,
            )
        grant.check_workspace(workspace_id)
        return grant

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
        """A token for ``hub token`` and for tests, signed with the first secret;
        ``workspaces`` may be ``["*"]``."""
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


def _expiry(claims: Mapping[str, Any]) -> float | None:
    exp = claims.get("exp")
    return float(exp) if isinstance(exp, int | float) and not isinstance(exp, bool) else None


def _scopes(value: object) -> list[str] | None:
    """A scope claim: a space-separated string or a list of strings (None: not valid)."""
    if value is None:
        return []
    if isinstance(value, str):
        return value.split()
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    return None


# -- the authorization hook ---------------------------------------------------------------------

# Seconds the hook has to answer 2xx (docs/protocol.md section 13): else 503 / close 1013.
CHECK_TIMEOUT = 2.0
# Answers cached at most (the oldest go first).
CHECK_CACHE_SIZE = 100_000
# Largest answer read from the hook.
MAX_CHECK_ANSWER = 64 * 1024


@dataclass(frozen=True, slots=True)
class CheckAnswer:
    allow: bool
    scopes: frozenset[str] = frozenset()
    profile: Profile | None = None


class AuthCheck:
    """The application's answer to "may this user use this workspace?": a POST signed like a
    webhook, cached per (user, workspace) for ``ttl`` seconds; concurrent questions of one
    key share one POST. No 2xx with a valid body within 2 s is :class:`Unavailable`."""

    def __init__(self, url: str, secret: str, ttl: float) -> None:
        self.url = url
        self._secret = secret
        self.ttl = ttl
        self._cache: dict[tuple[str, str], tuple[float, CheckAnswer]] = {}
        self._asking: dict[tuple[str, str], asyncio.Future[CheckAnswer]] = {}
        self._http: httpx.AsyncClient | None = None
        self._failures = Throttled(log)

    async def close(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    async def ask(
        self,
        user: str,
        client_id: str | None,
        workspace_id: str,
        claims: Mapping[str, Any] | None,
    ) -> CheckAnswer:
        key = (user, workspace_id)
        cached = self._cache.get(key)
        now = time.monotonic()
        if cached is not None:
            if cached[0] > now:
                return cached[1]
            del self._cache[key]
        asking = self._asking.get(key)
        if asking is not None:
            return await asyncio.shield(asking)
        future: asyncio.Future[CheckAnswer] = asyncio.get_running_loop().create_future()
        self._asking[key] = future
        try:
            answer = await self._post(user, client_id, workspace_id, claims)
        except BaseException as exc:
            future.set_exception(exc if isinstance(exc, Exception) else Unavailable("cancelled"))
            future.exception()  # retrieved: no warning when nobody else waited
            raise
        finally:
            del self._asking[key]
        future.set_result(answer)
        if self.ttl > 0:
            if len(self._cache) >= CHECK_CACHE_SIZE:
                del self._cache[next(iter(self._cache))]
            self._cache[key] = (time.monotonic() + self.ttl, answer)
        return answer

    async def _post(
        self,
        user: str,
        client_id: str | None,
        workspace_id: str,
        claims: Mapping[str, Any] | None,
    ) -> CheckAnswer:
        body = orjson.dumps(
            {
                "user": user,
                "client_id": client_id,
                "workspace_id": workspace_id,
                "claims": dict(claims or {}),
            }
        )
        headers = {"Content-Type": "application/json", SIGNATURE: sign(body, self._secret)}
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=CHECK_TIMEOUT, follow_redirects=False)
        try:
            async with asyncio.timeout(CHECK_TIMEOUT):
                async with self._http.stream(
                    "POST", self.url, content=body, headers=headers
                ) as response:
                    if not 200 <= response.status_code < 300:
                        raise self._failed(f"answered HTTP {response.status_code}")
                    data = bytearray()
                    async for chunk in response.aiter_bytes():
                        data += chunk
                        if len(data) > MAX_CHECK_ANSWER:
                            raise self._failed(f"answered over {MAX_CHECK_ANSWER} bytes")
        except (TimeoutError, httpx.TimeoutException):
            raise self._failed(f"did not answer within {CHECK_TIMEOUT} s") from None
        except httpx.HTTPError as exc:
            raise self._failed(str(exc)[:200] or type(exc).__name__) from None
        return self._answer(bytes(data))

    def _answer(self, data: bytes) -> CheckAnswer:
        try:
            answer = orjson.loads(data)
        except orjson.JSONDecodeError:
            raise self._failed("answered with a body that is not JSON") from None
        if not isinstance(answer, dict) or not isinstance(answer.get("allow"), bool):
            raise self._failed('answered without "allow": true or false')
        scopes = _scopes(answer.get("scopes"))
        if scopes is None:
            raise self._failed('answered "scopes" that are not a list of strings')
        profile = answer.get("profile")
        try:
            profile = check_profile(profile) if profile is not None else None
        except PeerError:
            raise self._failed('answered a "profile" that is not a valid profile') from None
        return CheckAnswer(answer["allow"], frozenset(scopes), profile)

    def _failed(self, why: str) -> Unavailable:
        self._failures.warn("authorization hook failed", f"{self.url} {why}")
        return Unavailable(f"the authorization hook {why}: try again shortly")


# A JWKS is fetched again this often (seconds) even when no token asks for it.
JWKS_MAX_AGE = 600.0


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
