"""Public keys of identity providers: JWKS documents fetched over HTTP, and PEM files.

Every key knows the issuer whose tokens it may verify (``None``: any accepted issuer), its
``kid`` (``None``: a PEM file's key, tried for any ``kid``) and the algorithms it verifies,
taken from the key itself: its ``alg`` when the JWK names one, else its type (an RSA key
verifies RS256/384/512 and PS256/384/512, an EC key the one ES* of its curve, an OKP key
EdDSA). A token's header only chooses among those. Symmetric (``oct``) keys, private keys and
keys for encryption (``use: enc``) are left out of a JWKS: a public-key source never verifies
an HS* token.

A :class:`JwksSource` keeps the last document it fetched while its URL cannot be reached,
fetches at most once per :data:`REFETCH_INTERVAL` (a token with an unknown ``kid`` asks for
it), with a timeout and a size bound, and one fetch at a time (callers share it).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jwt
import orjson
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key

__all__ = [
    "FETCH_TIMEOUT",
    "MAX_JWKS_BYTES",
    "PUBLIC_ALGORITHMS",
    "REFETCH_INTERVAL",
    "JwksSource",
    "Key",
    "key_from_pem",
    "keys_from_jwks",
]

log = logging.getLogger(__name__)

RSA_ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})
_EC_CURVES = {"P-256": "ES256", "P-384": "ES384"}
_EC_NAMES = {"secp256r1": "ES256", "secp384r1": "ES384"}
PUBLIC_ALGORITHMS = RSA_ALGORITHMS | frozenset({"ES256", "ES384", "EdDSA"})
# A token naming an unknown kid fetches its issuer's JWKS again at most this often (seconds).
REFETCH_INTERVAL = 10.0
# Seconds a JWKS fetch may take in all, and how large the document may be.
FETCH_TIMEOUT = 3.0
MAX_JWKS_BYTES = 256 * 1024
# Keys in one document at most (the rest are ignored).
MAX_KEYS = 100


@dataclass(frozen=True, slots=True)
class Key:
    """One public key and what it may verify."""

    issuer: str | None  # None: tokens of any accepted issuer
    kid: str | None  # None: no kid (a PEM file's key)
    algorithms: frozenset[str]
    key: Any  # a cryptography public key object
    source: str  # the URL or file it came from (for logs; never key material)


def _jwk_algorithms(jwk: Mapping[str, Any]) -> frozenset[str]:
    """What a JWK verifies: its ``alg``, else what its ``kty``/``crv`` implies (empty: none)."""
    alg = jwk.get("alg")
    kty = jwk.get("kty")
    crv = jwk.get("crv")
    if kty == "RSA":
        family = RSA_ALGORITHMS
    elif kty == "EC" and isinstance(crv, str) and crv in _EC_CURVES:
        family = frozenset({_EC_CURVES[crv]})
    elif kty == "OKP" and crv in ("Ed25519", "Ed448"):
        family = frozenset({"EdDSA"})
    else:
        family = frozenset()  # oct (a shared secret), unknown types and curves: never
    if alg is None:
        return family
    return frozenset({alg}) & family if isinstance(alg, str) else frozenset()


def keys_from_jwks(document: bytes, issuer: str | None, source: str) -> list[Key]:
    """The usable keys of a JWKS document; ``ValueError`` when it is not one at all. Keys it
    cannot use (symmetric, private, for encryption, of an unknown type) are skipped."""
    try:
        data = orjson.loads(document)
    except orjson.JSONDecodeError:
        raise ValueError("the document is not JSON") from None
    if not isinstance(data, dict) or not isinstance(data.get("keys"), list):
        raise ValueError('the document is not a JWKS (an object with a "keys" list)')
    keys = []
    for jwk in data["keys"][:MAX_KEYS]:
        if not isinstance(jwk, dict) or "d" in jwk or jwk.get("use", "sig") != "sig":
            continue
        kid = jwk.get("kid")
        if kid is not None and not isinstance(kid, str):
            continue
        algorithms = _jwk_algorithms(jwk)
        if not algorithms:
            continue
        try:
            parsed = jwt.PyJWK(jwk, algorithm=min(algorithms))
        except (jwt.PyJWTError, ValueError, TypeError, KeyError):
            continue  # a malformed key: the others still count
        keys.append(Key(issuer, kid, algorithms, parsed.key, source))
    return keys


def _key_algorithms(key: Any) -> frozenset[str]:
    if isinstance(key, rsa.RSAPublicKey):
        return RSA_ALGORITHMS
    if isinstance(key, ec.EllipticCurvePublicKey):
        name = _EC_NAMES.get(key.curve.name)
        return frozenset({name}) if name else frozenset()
    if isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        return frozenset({"EdDSA"})
    return frozenset()


def key_from_pem(path: str, issuer: str | None = None) -> Key:
    """The public key of a PEM file (a public key, or a certificate); ``ValueError`` naming
    what is wrong (never the file's content)."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read {path!r}: {exc.strerror or exc}") from None
    try:
        if b"-----BEGIN CERTIFICATE-----" in data:
            key: Any = x509.load_pem_x509_certificate(data).public_key()
        else:
            key = load_pem_public_key(data)
    except (ValueError, TypeError):
        raise ValueError(f"{path!r} holds no PEM public key or certificate") from None
    algorithms = _key_algorithms(key)
    if not algorithms:
        raise ValueError(f"{path!r}: not an RSA, P-256, P-384, Ed25519 or Ed448 public key")
    return Key(issuer, None, algorithms, key, path)


class JwksSource:
    """One JWKS URL: its keys as last fetched, kept while the URL is down."""

    def __init__(self, url: str, issuer: str | None) -> None:
        self.url = url
        self.issuer = issuer
        self.keys: list[Key] = []
        self.fetched = False  # whether a fetch ever succeeded
        self.last_attempt = -float("inf")  # monotonic time of the last fetch started
        self.last_error: str | None = None
        self._fetching: asyncio.Future[bool] | None = None

    def may_fetch(self, now: float) -> bool:
        return self._fetching is not None or now - self.last_attempt >= REFETCH_INTERVAL

    async def refresh(self, http: httpx.AsyncClient, *, force: bool = False) -> bool:
        """Fetch the document again (at most once per REFETCH_INTERVAL unless ``force``; a
        fetch under way is shared). Whether the keys were (re)loaded."""
        if self._fetching is not None:
            return await asyncio.shield(self._fetching)
        now = time.monotonic()
        if not force and now - self.last_attempt < REFETCH_INTERVAL:
            return False
        self.last_attempt = now
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._fetching = future
        try:
            ok = await self._fetch(http)
        except BaseException:
            future.set_result(False)
            raise
        finally:
            self._fetching = None
        future.set_result(ok)
        return ok

    async def _fetch(self, http: httpx.AsyncClient) -> bool:
        try:
            async with asyncio.timeout(FETCH_TIMEOUT):
                async with http.stream("GET", self.url) as response:
                    if response.status_code != 200:
                        raise ValueError(f"answered HTTP {response.status_code}")
                    body = bytearray()
                    async for chunk in response.aiter_bytes():
                        body += chunk
                        if len(body) > MAX_JWKS_BYTES:
                            raise ValueError(f"the document is over {MAX_JWKS_BYTES} bytes")
            keys = keys_from_jwks(bytes(body), self.issuer, self.url)
        except (TimeoutError, httpx.TimeoutException):
            return self._failed(f"no answer within {FETCH_TIMEOUT} s")
        except httpx.HTTPError as exc:
            return self._failed(str(exc) or type(exc).__name__)
        except ValueError as exc:
            return self._failed(str(exc))
        self.keys = keys
        self.fetched = True
        self.last_error = None
        log.info("JWKS %s: %d usable keys", self.url, len(keys))
        return True

    def _failed(self, why: str) -> bool:
        self.last_error = why[:200]
        kept = f"keeping its {len(self.keys)} keys" if self.fetched else "no keys from it yet"
        log.warning("JWKS %s could not be fetched (%s): %s", self.url, self.last_error, kept)
        return False
