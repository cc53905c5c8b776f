"""Hostile input: the frame parser under hypothesis, and 10,000 random and mutated frames
against a live server. Nothing crashes, nothing is logged as an error, every frame gets the
answer the contract names, and presence still equals the truth afterwards."""

from __future__ import annotations

import asyncio
import base64
import functools
import json
import logging
import random
import struct
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import httpx
import jwt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from hub import protocol
from hub.auth import Auth, TokenRefused
from hub.errors import InvalidProfile, InvalidUserId, PeerError, Unauthorized
from hub.keys import PUBLIC_ALGORITHMS, JwksSource, keys_from_jwks
from hub.protocol import Ping, SetSession, Sync
from tests.harness import NonReader, ServerThread, Viewer, eventually, new_client_id

if TYPE_CHECKING:
    from tests.provider import Provider

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=200),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=20), inner),
    max_leaves=20,
)
FRAMES = st.fixed_dictionaries(
    {"type": st.sampled_from(["set_session", "sync", "ping", "SYNC", ""]) | st.text(max_size=5)},
    optional={"session_id": JSON | st.text(max_size=140), "ref": JSON, "extra": JSON},
)


def verdict(text: str | bytes) -> str:
    """What the contract says a frame gets: an error code, or the command's answer."""
    try:
        command = protocol.parse(text)
    except PeerError as exc:
        return f"error:{exc.code}"
    if isinstance(command, SetSession):
        return "ack" if command.ref is not None else "none"
    return "snapshot" if isinstance(command, Sync) else "pong"


@settings(max_examples=1000, deadline=None)
@given(st.text() | st.binary() | JSON.map(json.dumps) | FRAMES.map(json.dumps))
def test_the_parser_answers_anything_with_a_command_or_a_peer_error(text: str | bytes) -> None:
    try:
        command = protocol.parse(text)
    except PeerError as exc:
        assert exc.code in {"bad_json", "bad_request", "unknown_type", "invalid_session_id"}
        assert exc.message
        return
    assert isinstance(command, SetSession | Sync | Ping)
    # Whatever was accepted can be echoed back: refs and session ids encode again.
    protocol.encode(protocol.Ack(command.ref if command.ref is not None else 0, 1))


# -- the live endpoint ------------------------------------------------------------------------


def mutations(rng: random.Random) -> Iterator[str | bytes]:
    """An endless mix of valid, mutated and hostile frames (all under the 64 KiB limit)."""
    sessions: list[Any] = ["S1", "S2", "", None, "é" * 128, "x" * 129, "a\nb", "\x7f", 5, [], {}]
    refs: list[Any] = [1, "r", -(2**53) + 1, 2**53, 1.5, True, None, "x" * 300, {}, [1]]
    while True:
        kind = rng.random()
        frame: dict[str, Any] = {
            "type": rng.choice(["set_session", "sync", "ping", "pong", "", 7, None, "SET_SESSION"])
        }
        if rng.random() < 0.8:
            frame["session_id"] = rng.choice(sessions)
        if rng.random() < 0.7:
            frame["ref"] = rng.choice(refs)
        if rng.random() < 0.1:
            frame[rng.choice(["extra", "Type", "session"])] = 1
        text = json.dumps(frame)
        if kind < 0.35:
            yield text
        elif kind < 0.6:  # byte-level mutations of a valid frame
            chars = list(text)
            for _ in range(rng.randint(1, 4)):
                i = rng.randrange(len(chars) + 1)
                op = rng.random()
                if op < 0.4 and chars:
                    del chars[min(i, len(chars) - 1)]
                elif op < 0.8:
                    chars.insert(i, rng.choice('{}[]",:0\\ \x00é\U0001f600'))
                elif chars:
                    chars[min(i, len(chars) - 1)] = chr(rng.randrange(0x20, 0x3000))
            yield "".join(chars)
        elif kind < 0.7:
            depth = rng.choice([10, 1000, 1100, 5000])
            yield "[" * depth + "]" * depth
        elif kind < 0.8:
            yield rng.choice(
                [
                    '{"type":"ping","ref":1e400}',
                    '{"type":"ping","ref":' + "9" * 400 + "}",
                    '{"type":"set_session","session_id":"\\ud800"}',
                    '{"type":"ping","ref":-0}',
                    "",
                    " ",
                    "null",
                    '"ping"',
                    '{"type":"ping"}' * 2,
                    '{"type":"set_session","session_id":"' + "y" * 20000 + '"}',
                ]
            )
        elif kind < 0.9:
            yield rng.randbytes(rng.randint(0, 300))  # binary frames, invalid UTF-8 included
        else:
            yield "".join(chr(rng.randrange(1, 0xD7FF)) for _ in range(rng.randint(0, 200)))


class Errors(logging.Handler):
    """Collects every record at ERROR or above, and every one that carries a traceback."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.ERROR or record.exc_info:
            self.records.append(record)


@pytest.fixture
def logged_errors() -> Iterator[Errors]:
    handler = Errors()
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield handler
    root.removeHandler(handler)
    root.setLevel(level)


async def test_10000_hostile_frames_against_a_live_server(
    make_server: Callable[..., ServerThread], logged_errors: Errors
) -> None:
    server = make_server(rate_limit=0)
    async with httpx.AsyncClient(base_url=server.url) as http:
        w = (await http.post("/v1/workspaces", json={"path": "/fuzz"})).json()["id"]
        clients = [new_client_id() for _ in range(2)]
        viewers = [await Viewer.open(server.ws_url(w, c), c) for c in clients]
        current = {c: "" for c in clients}
        rng = random.Random(20261124)
        frames = mutations(rng)
        sent = 0
        while sent < 10_000:
            v = viewers[sent // 100 % 2]
            batch = [next(frames) for _ in range(100)]
            for frame in batch:
                await v.ws.send(frame)
            await v.ws.send(json.dumps({"type": "ping", "ref": f"end-{sent}"}))
            answers: list[str] = []
            while True:
                got = await v.next()
                if got["type"] in ("counts", "session"):
                    continue
                if got == {"type": "pong", "ref": f"end-{sent}"}:
                    break
                answers.append(got["type"] if got["type"] != "error" else f"error:{got['code']}")
            expected = []
            for frame in batch:
                said = "error:unsupported_frame" if isinstance(frame, bytes) else verdict(frame)
                if said != "none":
                    expected.append(said)
                if not isinstance(frame, bytes) and said in ("ack", "none"):
                    command = protocol.parse(frame)
                    assert isinstance(command, SetSession)
                    current[v.client_id] = command.session_id
            assert answers == expected
            sent += len(batch)
        truth: dict[str, int] = {}
        for session in current.values():
            if session:
                truth[session] = truth.get(session, 0) + 1
        snap = (await http.get(f"/v1/workspaces/{w}/presence")).json()
        assert (snap["online"], snap["counts"]) == (2, truth)
        for v in viewers:
            await v.close()
    assert not logged_errors.records, [r.getMessage() for r in logged_errors.records]


async def test_invalid_utf8_in_a_text_frame_fails_the_connection_with_1007(
    make_server: Callable[..., ServerThread], logged_errors: Errors
) -> None:
    server = make_server()
    async with httpx.AsyncClient(base_url=server.url) as http:
        w = (await http.post("/v1/workspaces", json={"path": "/utf8"})).json()["id"]
    raw = NonReader(server.port, f"/v1/workspaces/{w}/ws?client_id={new_client_id()}")
    payload = b"\xff\xfe"
    mask = b"\x01\x02\x03\x04"
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    raw.sock.sendall(struct.pack("!BB", 0x81, 0x80 | len(payload)) + mask + masked)
    assert await asyncio.to_thread(raw.read_close_code) == 1007
    raw.sock.close()
    await eventually(lambda: server.call(lambda: server.services.hub.sockets == 0))  # it left
    assert not logged_errors.records, [r.getMessage() for r in logged_errors.records]


# -- tokens and JWKS documents ----------------------------------------------------------------

_FUZZ_SECRET = "f" * 40


@settings(max_examples=250, deadline=None)
@given(
    st.fixed_dictionaries(
        {"type": st.just("refresh")},
        optional={"token": JSON | st.text(max_size=300), "ref": JSON, "extra": JSON},
    ).map(json.dumps)
)
def test_refresh_frames_parse_into_a_command_or_a_peer_error(text: str) -> None:
    try:
        command = protocol.parse(text)
    except PeerError as exc:
        assert exc.code in ("bad_request", "bad_json") and exc.message  # (lone surrogates)
        return
    assert isinstance(command, protocol.Refresh) and command.token


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


CLAIMS = ["exp", "nbf", "iat", "iss", "aud", "sub", "ws", "scope", "user", "profile"]


@functools.cache
def _fuzz_provider() -> Provider:
    from tests.provider import Provider

    return Provider("https://fuzz.test/")  # never started: its keys only


@functools.cache
def _fuzz_auth() -> tuple[Auth, list[str]]:
    """An Auth with a secret and JWKS keys of every type already loaded (no network), and
    valid tokens to mutate."""
    provider = _fuzz_provider()
    source = JwksSource("http://127.0.0.1:9/jwks", provider.issuer)
    source.keys = keys_from_jwks(provider.jwks(), provider.issuer, "fuzz")
    auth = Auth(_FUZZ_SECRET, jwks=[source], issuers=[provider.issuer], audiences=["hub"])
    valid = [provider.token(kid, ws="*") for kid in provider.signers]
    valid.append(Auth(_FUZZ_SECRET).mint(["*"]))
    return auth, valid


HEADERS = st.fixed_dictionaries(
    {},
    optional={
        "alg": st.sampled_from(["none", "None", "HS256", "RS256", "ES256", "EdDSA", "PS512"])
        | JSON,
        "kid": st.sampled_from(["rsa-1", "ec-1", "ed-1", ""]) | JSON,
        "typ": JSON,
        "crit": JSON,
    },
)


@st.composite
def hostile_tokens(draw: st.DrawFn) -> str:
    auth, valid = _fuzz_auth()
    kind = draw(st.integers(0, 4))
    if kind == 0:
        return draw(st.text(max_size=300))
    if kind == 1:  # JWT-shaped with random parts
        head = _b64(json.dumps(draw(HEADERS)).encode())
        body = _b64(json.dumps(draw(JSON)).encode())
        return f"{head}.{body}.{_b64(draw(st.binary(max_size=80)))}"
    token = draw(st.sampled_from(valid))
    if kind == 2:  # a valid token's header or body swapped for another's
        other = draw(st.sampled_from(valid)).split(".")
        parts = token.split(".")
        i = draw(st.integers(0, 2))
        parts[i] = other[i]
        return ".".join(parts)
    if kind == 3:  # a new header on a valid body and signature
        _, body, sig = token.split(".")
        return f"{_b64(json.dumps(draw(HEADERS)).encode())}.{body}.{sig}"
    chars = list(token)  # character-level mutations
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(chars) - 1))
        chars[i] = draw(st.sampled_from("A_-.=+/\x00é0"))
    return "".join(chars)


@settings(max_examples=250, deadline=None)
@given(
    st.dictionaries(st.sampled_from(CLAIMS) | st.text(max_size=8), JSON, max_size=8), st.booleans()
)
def test_signed_tokens_with_hostile_claims_are_refused_or_granted(
    claims: dict[str, Any], hub_token: bool
) -> None:
    """Claims of every type behind a valid signature: a grant, or a refusal with a cause (a
    hub token's bad user or profile is 400 / 4400, as in v1), never a crash."""
    auth, _ = _fuzz_auth()
    payload = json.dumps(claims).encode()  # signed as it is (PyJWS checks no claim)
    if hub_token:
        token = jwt.PyJWS().encode(payload, _FUZZ_SECRET, algorithm="HS256")
    else:
        signer = _fuzz_provider().signers["ec-1"]
        token = jwt.PyJWS().encode(payload, signer.private, "ES256", headers={"kid": "ec-1"})
    try:
        auth.verify(token)
    except TokenRefused as exc:
        assert exc.cause and exc.message
    except (InvalidUserId, InvalidProfile):
        assert hub_token


@settings(max_examples=750, deadline=None)
@given(hostile_tokens())
def test_hostile_tokens_are_refused_with_a_cause_never_a_crash(token: str) -> None:
    auth, valid = _fuzz_auth()
    try:
        grant = auth.verify(token)
    except TokenRefused as exc:
        assert exc.cause and exc.message and exc.status == 401
        return
    except Unauthorized as exc:  # no token at all
        assert not token and exc.status == 401
        return
    assert grant.expires is not None  # a mutation may leave a token intact


JWK = st.fixed_dictionaries(
    {},
    optional={
        "kty": st.sampled_from(["RSA", "EC", "OKP", "oct", "rsa", ""]) | JSON,
        "crv": st.sampled_from(["P-256", "P-384", "P-521", "Ed25519", "X25519"]) | JSON,
        "alg": st.sampled_from(["RS256", "ES256", "EdDSA", "HS256", "none"]) | JSON,
        "kid": JSON,
        "use": st.sampled_from(["sig", "enc"]) | JSON,
        "n": st.text(max_size=40) | JSON,
        "e": st.sampled_from(["AQAB", "", "!!"]) | JSON,
        "x": st.text(max_size=60) | JSON,
        "y": st.text(max_size=60) | JSON,
        "d": JSON,
        "k": JSON,
    },
)


@settings(max_examples=750, deadline=None)
@given(
    st.binary(max_size=200)
    | JSON.map(lambda d: json.dumps(d).encode())
    | st.fixed_dictionaries({"keys": st.lists(JWK | JSON, max_size=6)}).map(
        lambda d: json.dumps(d).encode()
    )
)
def test_hostile_jwks_documents_give_keys_or_a_value_error(document: bytes) -> None:
    try:
        keys = keys_from_jwks(document, "iss", "fuzz")
    except ValueError:
        return
    for key in keys:
        assert key.algorithms and key.algorithms <= PUBLIC_ALGORITHMS


async def _ws_outcome(url: str) -> int:
    """0 when the socket was accepted (its snapshot came), else its close code."""
    async with connect(url, compression=None) as ws:
        try:
            first = json.loads(await asyncio.wait_for(ws.recv(), 5))
        except ConnectionClosed:
            return ws.close_code or 1006
        assert first["type"] == "snapshot"
        return 0


async def test_hostile_tokens_and_jwks_documents_against_a_live_server(
    make_server: Callable[..., ServerThread], logged_errors: Errors
) -> None:
    from tests.provider import Provider

    provider = Provider().start()
    try:
        server = make_server(
            auth_secret=_FUZZ_SECRET, auth_jwks_url=provider.url, auth_issuer=provider.issuer
        )
        admin = {"Authorization": f"Bearer {Auth(_FUZZ_SECRET).mint(['*'], admin=True)}"}
        async with httpx.AsyncClient(base_url=server.url, headers=admin) as http:
            w = (await http.post("/v1/workspaces", json={"path": "/tokens"})).json()["id"]
            statuses: dict[int, int] = {}
            codes: dict[int | None, int] = {}
            rng = random.Random(20261207)
            tokens: list[str] = []
            documents = [
                b"",
                b"[]",
                b'{"keys": 7}',
                b'{"keys": [{"kty": "RSA", "n": "!!", "e": "AQAB", "kid": "x"}]}',
                b"\xff" * 100,
                b'{"keys": [' + b'{"kty": "oct", "k": "AAAA"},' * 50 + b"{}]}",
                b"{" * 5000,
            ]
            base = provider.token("rsa-1", ws="*")
            head, body, sig = base.split(".")

            def refetch_allowed() -> None:  # as if 10 s had passed since the last fetch
                auth = server.services.hub.auth
                assert auth is not None
                auth.jwks[0].last_attempt = -float("inf")

            for i in range(300):
                provider.document = documents[i % len(documents)] if i % 3 == 0 else None
                server.call(refetch_allowed)
                choice = rng.random()
                if choice < 0.3:
                    kid = rng.choice(["unknown", "rsa-1", "", "x" * 500])
                    hdr = {"alg": rng.choice(["RS256", "ES256", "none", "HS256"]), "kid": kid}
                    token = f"{_b64(json.dumps(hdr).encode())}.{body}.{sig}"
                elif choice < 0.6:
                    chars = list(base)
                    chars[rng.randrange(len(chars))] = rng.choice("A_-.=")
                    token = "".join(chars)
                else:
                    token = ".".join(
                        _b64(rng.randbytes(rng.randint(0, 60))) for _ in range(rng.randint(1, 4))
                    )
                tokens.append(token)
                r = await http.get(
                    f"/v1/workspaces/{w}/presence", headers={"Authorization": f"Bearer {token}"}
                )
                statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
                if i % 10 == 0:
                    url = server.ws_url(w, new_client_id()) + f"&token={token}"
                    code = await _ws_outcome(url)
                    codes[code] = codes.get(code, 0) + 1
            assert set(statuses) <= {200, 401}, statuses  # a mutation may leave a token intact
            assert set(codes) <= {0, 4401}, codes  # 0: a token left intact, accepted
            assert statuses.get(401, 0) > 250
    finally:
        provider.stop()
    assert not logged_errors.records, [r.getMessage() for r in logged_errors.records]
