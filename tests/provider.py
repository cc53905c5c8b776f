"""An identity provider of the tests' own, and an application's authorization hook.

:class:`Provider` generates RSA, EC (P-256) and Ed25519 key pairs, serves the public halves
as a JWKS document over HTTP on a free loopback port (in a thread), and signs tokens with
them. Which keys the document lists can change (a rotation), the server can go down and come
back on the same port, and it counts its fetches.

:class:`Hook` is a signed-POST receiver that answers allow, deny, 500 or nothing (hangs past
the hub's 2 s), and records each question it was asked.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from tests.harness import free_port

HOOK_SECRET = "hook-" + "k" * 32


@dataclass
class Signer:
    """One private key, its kid and the algorithm it signs with."""

    kid: str
    alg: str
    private: Any

    def public_jwk(self, with_alg: bool = True) -> dict[str, Any]:
        public = self.private.public_key()
        if self.alg.startswith(("RS", "PS")):
            jwk = RSAAlgorithm.to_jwk(public, as_dict=True)
        elif self.alg.startswith("ES"):
            jwk = ECAlgorithm.to_jwk(public, as_dict=True)
        else:
            jwk = OKPAlgorithm.to_jwk(public, as_dict=True)
        jwk["kid"] = self.kid
        jwk["use"] = "sig"
        if with_alg:
            jwk["alg"] = self.alg
        return dict(jwk)


def rsa_signer(kid: str, alg: str = "RS256") -> Signer:
    return Signer(kid, alg, rsa.generate_private_key(public_exponent=65537, key_size=2048))


def ec_signer(kid: str) -> Signer:
    return Signer(kid, "ES256", ec.generate_private_key(ec.SECP256R1()))


def ed_signer(kid: str) -> Signer:
    return Signer(kid, "EdDSA", ed25519.Ed25519PrivateKey.generate())


class _Server:
    """A ThreadingHTTPServer on a fixed loopback port that can go down and come back."""

    def __init__(self) -> None:
        self.port = free_port()
        self._server: ThreadingHTTPServer | None = None

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        raise NotImplementedError

    def _serve(self) -> None:
        server = ThreadingHTTPServer(("127.0.0.1", self.port), self._handler())
        server.daemon_threads = True
        self._server = server
        threading.Thread(target=server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        """Down: the port is closed (connections are refused)."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


class Provider(_Server):
    """A JWKS endpoint (``url``) and the keys behind it."""

    def __init__(self, issuer: str = "https://id.example.test/") -> None:
        super().__init__()
        self.issuer = issuer
        self.signers = {
            s.kid: s for s in (rsa_signer("rsa-1"), ec_signer("ec-1"), ed_signer("ed-1"))
        }
        self.published = set(self.signers)  # kids listed in the document
        self.document: bytes | None = None  # served as is instead of the keys, when set
        self.fetches = 0
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/.well-known/jwks.json"

    def start(self) -> Provider:
        self._serve()
        return self

    def add(self, signer: Signer, publish: bool = True) -> Signer:
        with self._lock:
            self.signers[signer.kid] = signer
            if publish:
                self.published.add(signer.kid)
        return signer

    def publish(self, kid: str) -> None:
        with self._lock:
            self.published.add(kid)

    def jwks(self) -> bytes:
        with self._lock:
            if self.document is not None:
                return self.document
            keys = [self.signers[kid].public_jwk() for kid in sorted(self.published)]
        return json.dumps({"keys": keys}).encode()

    def token(
        self,
        kid: str = "rsa-1",
        *,
        ttl: float = 300,
        alg: str | None = None,
        headers: dict[str, Any] | None = None,
        **claims: Any,
    ) -> str:
        """A token of this provider: ``sub`` "user-1", its issuer, audience "hub", ``exp``
        in ``ttl`` seconds, and ``claims`` (a claim set to None is left out)."""
        signer = self.signers[kid]
        now = int(time.time())
        body: dict[str, Any] = {
            "iss": self.issuer,
            "aud": "hub",
            "sub": "user-1",
            "iat": now,
            "exp": now + ttl,
            **claims,
        }
        body = {k: v for k, v in body.items() if v is not None}
        return jwt.encode(
            body,
            signer.private,
            algorithm=alg or signer.alg,
            headers={"kid": kid, **(headers or {})},
        )

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                with provider._lock:
                    provider.fetches += 1
                body = provider.jwks()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler


@dataclass
class Question:
    body: dict[str, Any]
    signed: bool


@dataclass
class Hook(_Server):
    """The application's authorization hook: ``answer`` is "allow", "deny", "500" or "hang"."""

    answer: str = "allow"
    scopes: list[str] = field(default_factory=list)
    profile: dict[str, Any] | None = None
    questions: list[Question] = field(default_factory=list)

    def __post_init__(self) -> None:
        _Server.__init__(self)
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/authorize"

    def start(self) -> Hook:
        self._serve()
        return self

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                expected = (
                    "sha256=" + hmac.new(HOOK_SECRET.encode(), raw, hashlib.sha256).hexdigest()
                )
                signed = hmac.compare_digest(self.headers.get("X-Hub-Signature-256", ""), expected)
                with hook._lock:
                    hook.questions.append(Question(json.loads(raw), signed))
                    answer = hook.answer
                if answer == "hang":
                    time.sleep(3)  # past the hub's 2 s
                if answer in ("500", "hang") or not signed:
                    self.send_response(500 if signed else 401)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                data: dict[str, Any] = {"allow": answer == "allow"}
                if hook.scopes:
                    data["scopes"] = hook.scopes
                if hook.profile is not None:
                    data["profile"] = hook.profile
                body = json.dumps(data).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler
