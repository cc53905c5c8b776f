"""Settings: one frozen dataclass, read from ``HUB_*`` environment variables.

The environment is passed in (``Settings.from_env(environ)``) so tests never touch the real
one. Every bad value is a :class:`~hub.errors.ConfigError` that names the setting and the value,
raised before the server starts.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields, replace
from typing import Any
from urllib.parse import urlsplit

from hub.errors import ConfigError

__all__ = ["SETTINGS_HELP", "Settings", "parse_seconds"]


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything ``hub serve`` can be told. Durations are seconds and accept fractions."""

    host: str = "127.0.0.1"
    port: int = 8000
    database_url: str = "sqlite:///hub.db"
    redis_url: str | None = None
    node_ttl: float = 3.0
    redis_timeout: float = 2.0
    create_grace: float = 30.0
    detach_grace: float = 10.0
    retire_ttl: float = 86400.0
    coalesce_window: float = 0.05
    max_outbox_bytes: int = 256 * 1024
    max_frame_bytes: int = 64 * 1024
    max_body_bytes: int = 64 * 1024
    log_level: str = "info"
    log_format: str = "text"
    loop: str = "asyncio"
    fast_paths: bool = True
    ping_interval: float = 20.0
    ping_timeout: float = 20.0
    rate_limit: float = 20.0
    rate_burst: int = 50
    rate_close_after: float = 5.0
    max_streams_per_client: int = 8
    max_sockets: int = 50_000
    handshake_timeout: float = 10.0
    max_pending_connections: int = 0
    auth_secret: str | None = None  # one or more, comma-separated: the first signs
    auth_jwks_url: tuple[str, ...] = ()
    auth_public_key: tuple[str, ...] = ()
    auth_issuer: tuple[str, ...] = ()
    auth_audience: tuple[str, ...] = ()
    auth_leeway: float = 30.0
    auth_user_claim: str | None = None  # None: "sub" for public-key tokens
    auth_workspaces_claim: str = "ws"
    auth_scope_claim: str = "scope"
    auth_check_url: str | None = None
    auth_check_secret: str | None = None
    auth_check_ttl: float = 60.0
    allowed_origins: tuple[str, ...] = ()
    webhook_url: tuple[str, ...] = ()
    webhook_secret: str | None = None
    webhook_vacated_delay: float = 5.0
    webhook_queue: int = 400_000
    webhook_retry_min: float = 0.5
    webhook_retry_max: float = 60.0

    @classmethod
    def from_env(cls, environ: Mapping[str, str], **overrides: Any) -> Settings:
        """Defaults, then ``HUB_<NAME>`` variables, then ``overrides`` (e.g. CLI flags).

        Overrides that are ``None`` are ignored, so an argparse namespace can be passed whole.
        """
        values: dict[str, Any] = {}
        for f in fields(cls):
            env_name = "HUB_" + f.name.upper()
            raw = overrides.get(f.name)
            source = "--" + f.name.replace("_", "-")
            if raw is None and env_name in environ:
                raw, source = environ[env_name], env_name
            if raw is not None:
                values[f.name] = _PARSERS[f.name](source, raw)
        return _checked(replace(cls(), **values))


def _checked(settings: Settings) -> Settings:
    """Settings that only make sense together."""
    if settings.webhook_url and settings.webhook_secret is None:
        raise ConfigError("HUB_WEBHOOK_URL: needs HUB_WEBHOOK_SECRET (32+ characters) to sign with")
    if settings.webhook_secret is not None and not settings.webhook_url:
        raise ConfigError("HUB_WEBHOOK_SECRET: set, but no HUB_WEBHOOK_URL to send to")
    if settings.auth_check_url is not None and settings.auth_check_secret is None:
        raise ConfigError(
            "HUB_AUTH_CHECK_URL: needs HUB_AUTH_CHECK_SECRET (32+ characters) to sign with"
        )
    if settings.auth_check_secret is not None and settings.auth_check_url is None:
        raise ConfigError("HUB_AUTH_CHECK_SECRET: set, but no HUB_AUTH_CHECK_URL to ask")
    public = settings.auth_jwks_url or settings.auth_public_key
    if settings.auth_check_url is not None and not public:
        raise ConfigError(
            "HUB_AUTH_CHECK_URL: only asked for public-key tokens: set HUB_AUTH_JWKS_URL or "
            "HUB_AUTH_PUBLIC_KEY too"
        )
    issuers, urls = settings.auth_issuer, settings.auth_jwks_url
    if len(issuers) > 1 and urls and len(urls) != len(issuers):
        raise ConfigError(
            "HUB_AUTH_ISSUER, HUB_AUTH_JWKS_URL: with several issuers, list one JWKS URL per "
            f"issuer, in the same order (got {len(issuers)} issuers and {len(urls)} URLs)"
        )
    if settings.webhook_retry_min <= 0 or settings.webhook_retry_max < settings.webhook_retry_min:
        raise ConfigError(
            "HUB_WEBHOOK_RETRY_MIN, HUB_WEBHOOK_RETRY_MAX: expected 0 < min <= max, got "
            f"{settings.webhook_retry_min} and {settings.webhook_retry_max}"
        )
    return settings


def _non_negative(unit: str) -> Callable[[str, object], float]:
    def parse(name: str, raw: object) -> float:
        try:
            value = float(str(raw))
        except ValueError:
            value = math.nan
        if not math.isfinite(value) or value < 0:
            raise ConfigError(f"{name}: expected {unit}, a finite number >= 0, got {raw!r}")
        return value

    return parse


_seconds = parse_seconds = _non_negative("seconds")
_per_second = _non_negative("a rate per second")


def _positive_int(name: str, raw: object) -> int:
    try:
        value = int(str(raw))
    except (TypeError, ValueError):
        raise ConfigError(f"{name}: expected a whole number, got {raw!r}") from None
    if value <= 0:
        raise ConfigError(f"{name}: expected a whole number > 0, got {raw!r}")
    return value


def _count(name: str, raw: object) -> int:
    """A whole number >= 0 (0 often means "automatic" or "off": see the setting's help)."""
    try:
        value = int(str(raw))
    except (TypeError, ValueError):
        raise ConfigError(f"{name}: expected a whole number, got {raw!r}") from None
    if value < 0:
        raise ConfigError(f"{name}: expected a whole number >= 0, got {raw!r}")
    return value


def _port(name: str, raw: object) -> int:
    value = _positive_int(name, raw) if raw not in (0, "0") else 0
    if value > 65535:
        raise ConfigError(f"{name}: expected a port number 0..65535, got {raw!r}")
    return value


def _text(name: str, raw: object) -> str:
    value = str(raw).strip()
    if not value:
        raise ConfigError(f"{name}: must not be empty")
    return value


def _database_url(name: str, raw: object) -> str:
    value = _text(name, raw)
    if value.startswith(("postgresql://", "postgres://")):
        _needs(name, "asyncpg", "postgres")
    elif not value.startswith("sqlite:///"):
        raise ConfigError(
            f"{name}: expected sqlite:///PATH, sqlite:///:memory: or postgresql://..., "
            f"got {value!r}"
        )
    return value


def _redis_url(name: str, raw: object) -> str:
    value = _text(name, raw)
    if value.startswith("redis+sentinel://"):
        _needs(name, "redis", "redis")
        from hub.backends.redis import parse_sentinel_url

        try:
            parse_sentinel_url(value)
        except ValueError as exc:
            raise ConfigError(f"{name}: {exc}") from None
        return value
    if not value.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigError(
            f"{name}: expected redis://HOST:PORT/DB (or rediss://, unix://), or "
            "redis+sentinel://HOST:PORT[,HOST:PORT...]/MASTER_NAME[/DB]"
        )
    _needs(name, "redis", "redis")
    return value


def _node_ttl(name: str, raw: object) -> float:
    value = _seconds(name, raw)
    if value < 0.3:
        raise ConfigError(f"{name}: expected at least 0.3 seconds, got {raw!r}")
    return value


def _redis_timeout(name: str, raw: object) -> float:
    value = _seconds(name, raw)
    if value < 0.05:
        raise ConfigError(f"{name}: expected at least 0.05 seconds, got {raw!r}")
    return value


def _needs(name: str, module: str, extra: str) -> None:
    """Refuse a setting whose driver is not installed, naming the extra that brings it."""
    try:
        __import__(module)
    except ImportError:
        raise ConfigError(
            f"{name}: needs the {module} package (pip install 'presence-hub[{extra}]')"
        ) from None


def _choice(*options: str) -> Callable[[str, object], str]:
    """A parser of one of ``options`` (case-insensitive)."""

    def parse(name: str, raw: object) -> str:
        value = _text(name, raw).lower()
        if value not in options:
            raise ConfigError(f"{name}: expected one of {', '.join(options)}, got {raw!r}")
        return value

    return parse


_log_level = _choice("debug", "info", "warning", "error", "critical")
_log_format = _choice("text", "json")


def _loop(name: str, raw: object) -> str:
    value = _choice("asyncio", "uvloop")(name, raw)
    if value == "uvloop":
        try:
            import uvloop  # noqa: F401
        except ImportError:
            raise ConfigError(f"{name}: uvloop is not installed (pip install uvloop)") from None
    return value


def _on_off(name: str, raw: object) -> bool:
    if isinstance(raw, bool):
        return raw
    return _choice("on", "off")(name, raw) == "on"


def _secret(name: str, raw: object) -> str:
    value = str(raw)
    if len(value) < 32:
        raise ConfigError(f"{name}: use at least 32 characters (e.g. `openssl rand -hex 32`)")
    return value


def _secrets(name: str, raw: object) -> str:
    """One or more secrets, comma-separated, each of 32+ characters."""
    parts = [part.strip() for part in str(raw).split(",")]
    if not all(parts):
        raise ConfigError(f"{name}: an empty secret in the list (secrets are comma-separated)")
    for part in parts:
        _secret(name, part)
    return ",".join(parts)


def _list(name: str, raw: object) -> tuple[str, ...]:
    values = tuple(v.strip() for v in str(raw).split(",") if v.strip())
    if not values:
        raise ConfigError(f"{name}: must not be empty")
    if len(set(values)) != len(values):
        raise ConfigError(f"{name}: a value is listed twice")
    return values


def _public_keys(name: str, raw: object) -> tuple[str, ...]:
    """PEM files, each read and parsed now, so that a bad one stops the start."""
    from hub.keys import key_from_pem

    paths = _list(name, raw)
    for path in paths:
        try:
            key_from_pem(path)
        except ValueError as exc:
            raise ConfigError(f"{name}: {exc}") from None
    return paths


def _claim(name: str, raw: object) -> str:
    value = _text(name, raw)
    if len(value) > 256:
        raise ConfigError(f"{name}: a claim name of at most 256 characters")
    return value


def _url(name: str, raw: object) -> str:
    if "," in str(raw):
        raise ConfigError(f"{name}: one URL only")
    return _webhook_urls(name, raw)[0]


def _origins(name: str, raw: object) -> tuple[str, ...]:
    origins = tuple(o.strip() for o in str(raw).split(",") if o.strip())
    for origin in origins:
        if origin != "*" and not re.fullmatch(r"https?://[^/\s]+", origin):
            raise ConfigError(f"{name}: {origin!r} is not an origin like https://app.example.com")
    return origins


def _webhook_urls(name: str, raw: object) -> tuple[str, ...]:
    urls = tuple(u.strip() for u in str(raw).split(",") if u.strip())
    if not urls:
        raise ConfigError(f"{name}: must not be empty")
    for url in urls:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname or " " in url:
            raise ConfigError(f"{name}: {url!r} is not an http:// or https:// URL")
    if len(set(urls)) != len(urls):
        raise ConfigError(f"{name}: a URL is listed twice")
    return urls


_PARSERS: dict[str, Callable[[str, object], Any]] = {
    "host": _text,
    "port": _port,
    "database_url": _database_url,
    "redis_url": _redis_url,
    "node_ttl": _node_ttl,
    "redis_timeout": _redis_timeout,
    "create_grace": _seconds,
    "detach_grace": _seconds,
    "retire_ttl": _seconds,
    "coalesce_window": _seconds,
    "max_outbox_bytes": _positive_int,
    "max_frame_bytes": _positive_int,
    "max_body_bytes": _positive_int,
    "log_level": _log_level,
    "log_format": _log_format,
    "loop": _loop,
    "fast_paths": _on_off,
    "ping_interval": _seconds,
    "ping_timeout": _seconds,
    "rate_limit": _per_second,
    "rate_burst": _positive_int,
    "rate_close_after": _seconds,
    "max_streams_per_client": _positive_int,
    "max_sockets": _positive_int,
    "handshake_timeout": _seconds,
    "max_pending_connections": _count,
    "auth_secret": _secrets,
    "auth_jwks_url": _webhook_urls,
    "auth_public_key": _public_keys,
    "auth_issuer": _list,
    "auth_audience": _list,
    "auth_leeway": _seconds,
    "auth_user_claim": _claim,
    "auth_workspaces_claim": _claim,
    "auth_scope_claim": _claim,
    "auth_check_url": _url,
    "auth_check_secret": _secret,
    "auth_check_ttl": _seconds,
    "allowed_origins": _origins,
    "webhook_url": _webhook_urls,
    "webhook_secret": _secret,
    "webhook_vacated_delay": _seconds,
    "webhook_queue": _positive_int,
    "webhook_retry_min": _seconds,
    "webhook_retry_max": _seconds,
}

SETTINGS_HELP: dict[str, str] = {
    "host": "address to listen on",
    "port": "TCP port to listen on (0 picks a free one)",
    "database_url": "where sessions live: sqlite:///PATH (default sqlite:///hub.db), "
    "sqlite:///:memory: or postgresql://USER@HOST/DB",
    "redis_url": "shared presence for several hub processes: redis://HOST:PORT/DB "
    "(unset: in-process presence)",
    "node_ttl": "with Redis: seconds without a heartbeat after which a node is taken for dead "
    "and its sockets detached (heartbeats every third of it)",
    "redis_timeout": "with Redis: seconds a command, a connection or the change feed's ping "
    "may take before Redis counts as unreachable (503); above the worst round trip",
    "create_grace": "seconds a creation hold lasts without a stream",
    "detach_grace": "seconds a claim waits in grace after its last stream drops",
    "retire_ttl": "seconds a retired client id stays refused",
    "coalesce_window": "seconds within which count changes merge into one frame",
    "max_outbox_bytes": "bytes queued for one socket before it is closed with 4409",
    "max_frame_bytes": "largest incoming WebSocket frame; larger closes with 1009",
    "max_body_bytes": "largest REST request body; larger answers 413",
    "log_level": "debug, info, warning, error or critical",
    "log_format": "text, or json for JSON lines",
    "loop": "event loop: asyncio, or uvloop when installed",
    "fast_paths": "on: the fast paths into uvicorn's, websockets' and asyncio's internals whose "
    "start-up checks hold (docs/performance.md, Fast paths); off: the plain path only",
    "ping_interval": "seconds between server pings on each socket (0: no pings)",
    "ping_timeout": "seconds a peer has to answer a ping before it is dropped with 4408",
    "rate_limit": "frames per second one socket may send on average (0: no limit)",
    "rate_burst": "frames one socket may send at once above the average",
    "rate_close_after": "seconds a socket may stay over its rate before it is closed with 4429",
    "max_streams_per_client": "sockets one client may hold in one workspace; more close 1013",
    "max_sockets": "sockets one process holds at most; more close 1013",
    "handshake_timeout": "seconds from accept within which a connection's request head (a "
    "handshake or any HTTP request) must be complete, however slowly it trickles; later is "
    "closed (0: no bound)",
    "max_pending_connections": "connections waiting for their request head at most; past it "
    "the oldest waiting one is closed (0: a quarter of the descriptor limit)",
    "auth_secret": "HS256 secrets, comma-separated (32+ characters each): when set, every "
    "request needs a token; the first signs `hub token`, every one verifies (rotation)",
    "auth_jwks_url": "comma-separated JWKS URLs of identity providers whose RS/PS/ES/EdDSA "
    "tokens are accepted (cached; fetched again on an unknown kid, at most every 10 s)",
    "auth_public_key": "comma-separated PEM files of public keys (or certificates) whose "
    "tokens are accepted, where there is no JWKS URL",
    "auth_issuer": "comma-separated accepted `iss` of public-key tokens (several issuers "
    "pair in order with the JWKS URLs)",
    "auth_audience": "comma-separated `aud` values; a public-key token must name one of them",
    "auth_leeway": "seconds of clock skew allowed on exp, nbf and iat (and after exp on a "
    "live stream)",
    "auth_user_claim": "claim of a public-key token that names the user (default sub)",
    "auth_workspaces_claim": "claim of a public-key token with its workspace grant: a list "
    'of ids or "*" (default ws)',
    "auth_scope_claim": "claim of a public-key token with its scopes, a space-separated "
    "string or a list (default scope)",
    "auth_check_url": "authorization hook: asked (signed POST) whether a public-key token "
    "without a workspace grant may use a workspace",
    "auth_check_secret": "HMAC-SHA256 key of the hook's X-Hub-Signature-256, 32+ characters",
    "auth_check_ttl": "seconds a hook's answer is cached per (user, workspace)",
    "allowed_origins": "comma-separated origins whose pages may open sockets (default: loopback)",
    "webhook_url": "comma-separated http(s) URLs that get occupied/vacated events (webhooks)",
    "webhook_secret": "HMAC-SHA256 key of X-Hub-Signature-256, 32+ characters (needs a URL)",
    "webhook_vacated_delay": "seconds a count stays 0 before a vacated event is sent",
    "webhook_queue": "webhook events waiting per receiver at most; past it the oldest are "
    "dropped (counted in hub_webhook_dropped)",
    "webhook_retry_min": "seconds before the first retry of a failed delivery (then doubling)",
    "webhook_retry_max": "seconds between retries of a failed delivery at most",
}
