"""Tokens of an identity provider (docs/protocol.md section 13): JWKS and PEM keys, rotation, the
authorization hook, and expiry on live streams; against a JWKS server of the tests' own
(tests/provider.py) and real hubs on loopback."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from hub.auth import Auth, TokenRefused
from hub.cli import main
from hub.client import HubClient
from hub.errors import ConfigError, Forbidden, Unauthorized, Unavailable
from hub.keys import JwksSource, keys_from_jwks
from hub.settings import Settings
from tests.clusters import InProcessCluster, env_of
from tests.conftest import FAST
from tests.harness import ClusterThread, ServerThread, Viewer, close_code, eventually, new_client_id
from tests.provider import HOOK_SECRET, Hook, Provider, ec_signer, rsa_signer

MakeServer = Callable[..., ServerThread]
SECRET_A = "a" * 40
SECRET_B = "b" * 40


@pytest.fixture
def provider() -> Iterator[Provider]:
    p = Provider().start()
    yield p
    p.stop()


@pytest.fixture
def hook() -> Iterator[Hook]:
    h = Hook().start()
    yield h
    h.stop()


def provider_auth(provider: Provider, **options: object) -> Auth:
    return Auth(
        options.pop("secret", None),  # type: ignore[arg-type]
        jwks=[JwksSource(provider.url, provider.issuer)],
        issuers=[provider.issuer],
        audiences=["hub"],
        leeway=1.0,
        **options,  # type: ignore[arg-type]
    )


def hs256_by_hand(claims: dict[str, object], key: bytes, kid: str) -> str:
    """An HS256 JWT made without PyJWT (which will not use a public key as a secret)."""

    def part(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    head = part(json.dumps({"alg": "HS256", "typ": "JWT", "kid": kid}).encode())
    body = part(json.dumps(claims).encode())
    mac = hmac.new(key, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{part(mac)}"


async def refused(auth: Auth, token: str | None) -> str:
    """The cause of a token's 401."""
    with pytest.raises(TokenRefused) as caught:
        await auth.authenticate(token)
    return caught.value.cause


# -- keys and claims ------------------------------------------------------------------------


async def test_rsa_ec_and_ed25519_tokens_verify_with_sub_as_the_user(provider: Provider) -> None:
    auth = provider_auth(provider)
    await auth.start()
    try:
        for kid in ("rsa-1", "ec-1", "ed-1"):
            grant = await auth.authenticate(
                provider.token(kid, ws=["w1"], scope="viewers", profile={"name": "Ana"})
            )
            assert grant.user == "user-1" and grant.client is None
            assert grant.workspaces == frozenset({"w1"}) and grant.may_view and not grant.admin
            assert grant.profile == {"name": "Ana"} and grant.expires is not None
        listed = await auth.authenticate(provider.token(ws="*", scope=["admin"]))
        assert listed.workspaces is None and listed.admin  # a scope claim may be a list
        assert provider.fetches == 1  # fetched once at start, then cached
    finally:
        await auth.close()


async def test_refusals_name_their_cause(provider: Provider) -> None:
    auth = provider_auth(provider, secret=SECRET_A)
    await auth.start()
    try:
        assert await refused(auth, provider.token(iss="https://other.test/")) == "issuer"
        assert await refused(auth, provider.token(iss=None)) == "issuer"
        assert await refused(auth, provider.token(aud="someone-else")) == "audience"
        assert await refused(auth, provider.token(aud=None)) == "audience"
        assert await refused(auth, provider.token(ttl=-60)) == "expired"
        assert await refused(auth, provider.token(nbf=int(time.time()) + 60)) == "not yet valid"
        assert await refused(auth, provider.token(exp=None)) == "claims"
        assert await refused(auth, provider.token(sub=None)) == "claims"
        # The key's algorithm, not the header's: a key published for RS256 refuses RS384,
        # and an RSA key an ES256 header.
        assert await refused(auth, provider.token("rsa-1", alg="RS384")) == "algorithm"
        ec_header = provider.token("ec-1", headers={"kid": "rsa-1"})
        assert await refused(auth, ec_header) == "algorithm"
        # alg none, and HS256 "signed" with the public key's bytes.
        unsigned = jwt.encode({"sub": "x", "exp": time.time() + 60}, "", algorithm="none")
        assert await refused(auth, unsigned) == "algorithm"
        pem = (
            provider.signers["rsa-1"]
            .private.public_key()
            .public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
        )
        claims = {"iss": provider.issuer, "aud": "hub", "sub": "x", "ws": "*"}
        forged = hs256_by_hand({**claims, "exp": int(time.time()) + 60}, pem, kid="rsa-1")
        assert await refused(auth, forged) == "signature"  # tried against the secrets only
        assert await refused(provider_auth(provider), forged) == "algorithm"  # no secret
        for alg in ("HS384", "HS512"):
            hs = jwt.encode({"exp": time.time() + 60}, SECRET_A * 2, algorithm=alg)
            assert await refused(auth, hs) == "algorithm"
        assert await refused(auth, "not.a.jwt") == "malformed"
        with pytest.raises(Unauthorized, match="the token is not valid yet"):
            await auth.authenticate(provider.token(nbf=int(time.time()) + 60))
    finally:
        await auth.close()


async def test_messages_and_logs_never_show_key_material(
    provider: Provider, caplog: pytest.LogCaptureFixture
) -> None:
    auth = provider_auth(provider, secret=SECRET_A)
    caplog.set_level(logging.WARNING, "hub.auth")
    await auth.start()
    try:
        messages = []
        for _ in range(3):
            with pytest.raises(Unauthorized) as caught:
                await auth.authenticate(provider.token(aud="x"))
            messages.append(caught.value.message)
        assert "audience" in messages[0]
        lines = [r.getMessage() for r in caplog.records if "token refused" in r.getMessage()]
        assert len(lines) == 1 and "audience" in lines[0]  # once per minute per cause
        jwk = provider.signers["rsa-1"].public_jwk()
        for text in [*messages, *lines]:
            assert SECRET_A not in text and jwk["n"][:20] not in text
    finally:
        await auth.close()


async def test_an_unknown_kid_is_fetched_once_then_accepted_when_rotated_in(
    provider: Provider,
) -> None:
    auth = provider_auth(provider)
    await auth.start()
    try:
        provider.add(rsa_signer("rsa-2"), publish=False)
        auth.jwks[0].last_attempt -= 10  # ten seconds after the fetch at start
        assert await refused(auth, provider.token("rsa-2", ws="*")) == "unknown key"
        assert provider.fetches == 2  # the start, and one refetch for the unknown kid
        provider.publish("rsa-2")
        assert await refused(auth, provider.token("rsa-2", ws="*")) == "unknown key"
        assert provider.fetches == 2  # at most once per 10 s per URL
        auth.jwks[0].last_attempt -= 10  # ten seconds later again
        grant = await auth.authenticate(provider.token("rsa-2", ws="*"))
        assert grant.user == "user-1" and provider.fetches == 3
        await auth.authenticate(provider.token("rsa-2", ws="*"))
        assert provider.fetches == 3
    finally:
        await auth.close()


async def test_a_jwks_that_is_down_keeps_its_keys_and_is_named_when_none_are_known(
    provider: Provider, caplog: pytest.LogCaptureFixture
) -> None:
    cached = provider_auth(provider)
    await cached.start()
    token = provider.token("ec-1", ws="*")
    provider.stop()
    uncached = provider_auth(provider)
    caplog.set_level(logging.WARNING)
    try:
        assert (await cached.authenticate(token)).user == "user-1"
        cached.jwks[0].last_attempt -= 10
        assert await refused(cached, provider.token("rsa-1", headers={"kid": "gone"})) == (
            "unknown key"
        )
        assert (await cached.authenticate(token)).user == "user-1"  # still kept
        await uncached.start()
        with pytest.raises(Unauthorized) as caught:
            await uncached.authenticate(token)
        assert "could not be fetched" in caught.value.message
        logged = " | ".join(r.getMessage() for r in caplog.records)
        assert f"JWKS {provider.url} could not be fetched" in logged
        assert "no keys from it yet" in logged and "keeping its 3 keys" in logged
    finally:
        await cached.close()
        await uncached.close()


async def test_a_kid_of_one_issuer_never_verifies_another_issuers_token() -> None:
    x = Provider("https://x.test/").start()
    y = Provider("https://y.test/").start()
    y.add(rsa_signer("y-only"))
    auth = Auth(
        jwks=[JwksSource(x.url, x.issuer), JwksSource(y.url, y.issuer)],
        issuers=[x.issuer, y.issuer],
        leeway=1.0,
    )
    await auth.start()
    try:
        assert (await auth.authenticate(y.token("y-only", aud=None, ws="*"))).user == "user-1"
        # Y's key and kid, X's issuer: X has no such kid, and Y's keys are not X's.
        forged = y.token("y-only", aud=None, iss=x.issuer, ws="*")
        assert await refused(auth, forged) == "unknown key"
        # The same kid at both issuers: each verifies its own tokens only.
        same_kid = y.token("rsa-1", aud=None, iss=x.issuer, ws="*")
        assert await refused(auth, same_kid) == "signature"
    finally:
        await auth.close()
        x.stop()
        y.stop()


async def test_two_secrets_during_a_rotation(capsys: pytest.CaptureFixture[str]) -> None:
    both = Auth(f"{SECRET_A},{SECRET_B}")
    assert both.verify(Auth(SECRET_B).mint(["w1"])).workspaces == frozenset({"w1"})
    assert Auth(SECRET_A).verify(both.mint(["w1"])).workspaces == frozenset({"w1"})  # first signs
    with pytest.raises(TokenRefused) as caught:
        both.verify(Auth("c" * 40).mint(["w1"]))
    assert caught.value.cause == "signature"
    settings = Settings.from_env({"HUB_AUTH_SECRET": f" {SECRET_A} , {SECRET_B}"})
    assert Auth.from_settings(settings).secrets == (SECRET_A, SECRET_B)
    for bad in (f"{SECRET_A},short", f"{SECRET_A},,{SECRET_B}"):
        with pytest.raises(ConfigError, match="HUB_AUTH_SECRET"):
            Settings.from_env({"HUB_AUTH_SECRET": bad})
    environ = {"HUB_AUTH_SECRET": f"{SECRET_A},{SECRET_B}"}
    assert main(["token", "--workspace", "w9"], environ=environ) == 0
    assert Auth(SECRET_A).verify(capsys.readouterr().out.strip()).workspaces == frozenset({"w9"})


def test_public_key_files_and_their_settings(tmp_path: Path) -> None:
    signer = ec_signer("pem")
    path = tmp_path / "key.pem"
    path.write_bytes(
        signer.private.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    )
    settings = Settings.from_env(
        {
            "HUB_AUTH_PUBLIC_KEY": str(path),
            "HUB_AUTH_ISSUER": "https://pem.test/",
            "HUB_AUTH_LEEWAY": "2",
            "HUB_AUTH_USER_CLAIM": "email",
            "HUB_AUTH_WORKSPACES_CLAIM": "https://app.test/ws",
            "HUB_AUTH_SCOPE_CLAIM": "perms",
        }
    )
    auth = Auth.from_settings(settings)
    token = jwt.encode(
        {
            "iss": "https://pem.test/",
            "email": "ana@example.test",
            "https://app.test/ws": ["w1"],
            "perms": ["viewers"],
            "exp": int(time.time()) + 60,
        },
        signer.private,
        algorithm="ES256",
    )
    grant = auth.verify(token)
    assert grant.user == "ana@example.test" and grant.may_view
    assert grant.workspaces == frozenset({"w1"})
    (tmp_path / "bad.pem").write_text("not a key")
    for env, match in (
        ({"HUB_AUTH_PUBLIC_KEY": str(tmp_path / "bad.pem")}, "no PEM public key"),
        ({"HUB_AUTH_PUBLIC_KEY": str(tmp_path / "missing.pem")}, "cannot read"),
        ({"HUB_AUTH_JWKS_URL": "ftp://x"}, "not an http"),
        ({"HUB_AUTH_CHECK_URL": "http://h.test/a"}, "HUB_AUTH_CHECK_SECRET"),
        (
            {"HUB_AUTH_CHECK_URL": "http://h.test/a", "HUB_AUTH_CHECK_SECRET": HOOK_SECRET},
            "HUB_AUTH_JWKS_URL",
        ),
        (
            {
                "HUB_AUTH_ISSUER": "https://a.test/,https://b.test/",
                "HUB_AUTH_JWKS_URL": "http://a.test/jwks",
            },
            "one JWKS URL per issuer",
        ),
    ):
        with pytest.raises(ConfigError, match=match):
            Settings.from_env(env)


def test_jwks_documents_keep_only_keys_that_verify() -> None:
    good = rsa_signer("r").public_jwk()
    no_alg = ec_signer("e").public_jwk(with_alg=False)
    document = {
        "keys": [
            good,
            no_alg,
            {"kty": "oct", "k": "c2VjcmV0", "kid": "hmac"},  # a shared secret: never
            {**good, "kid": "enc", "use": "enc"},
            {**good, "kid": "private", "d": "AQAB"},
            {**good, "kid": "weird", "alg": "HS256"},
            {"kty": "EC", "crv": "P-521", "x": "AA", "y": "AA", "kid": "p521"},
            {"kty": "RSA", "kid": "broken", "n": "!!", "e": "AQAB"},
            "not a key",
        ]
    }
    keys = keys_from_jwks(json.dumps(document).encode(), "iss", "test")
    assert [(k.kid, sorted(k.algorithms)) for k in keys] == [
        ("r", ["RS256"]),
        ("e", ["ES256"]),
    ]
    for bad in (b"", b"[]", b'{"keys": 1}', b"\xff"):
        with pytest.raises(ValueError):
            keys_from_jwks(bad, None, "test")


# -- end to end -----------------------------------------------------------------------------


def provider_server(make_server: MakeServer, provider: Provider, **more: object) -> ServerThread:
    return make_server(
        auth_jwks_url=provider.url,
        auth_issuer=provider.issuer,
        auth_audience="hub",
        auth_leeway=0.5,
        **more,
    )


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_provider_tokens_through_rest_websocket_and_the_python_client(
    make_server: MakeServer, provider: Provider
) -> None:
    server = provider_server(make_server, provider)
    admin = provider.token("ed-1", ws="*", scope="admin")
    async with httpx.AsyncClient(base_url=server.url, headers=bearer(admin)) as http:
        w = (await http.post("/v1/workspaces", json={"path": "/p"})).json()["id"]
        mine = provider.token("ec-1", ws=[w])
        r = await http.get(f"/v1/workspaces/{w}/presence", headers=bearer(mine))
        assert r.status_code == 200
        wrong = await http.get(
            f"/v1/workspaces/{w}/presence", headers=bearer(provider.token(aud="x", ws=[w]))
        )
        assert wrong.status_code == 401 and "audience" in wrong.json()["message"]
        me = new_client_id()
        v = await Viewer.open(server.ws_url(w, me) + f"&token={mine}", me)
        assert v.online == 1 and v.online_users == 1
        await v.close()
        expired = provider.token(ws=[w], ttl=-60)
        assert await close_code(server.ws_url(w, me) + f"&token={expired}") == 4401
        async with HubClient(server.url, token=mine) as client:
            async with client.connect(w) as stream:
                assert await stream.set_session("S1") >= 1
            assert (await client.presence(w))["workspace_id"] == w


async def test_the_authorization_hook_allows_denies_and_fails_closed(
    make_server: MakeServer, provider: Provider, hook: Hook
) -> None:
    server = provider_server(
        make_server,
        provider,
        auth_check_url=hook.url,
        auth_check_secret=HOOK_SECRET,
        auth_check_ttl=30,
    )
    admin = provider.token(ws="*", scope="admin")
    async with httpx.AsyncClient(base_url=server.url, headers=bearer(admin), timeout=10) as http:
        w = (await http.post("/v1/workspaces", json={"path": "/hook"})).json()["id"]
        hook.scopes, hook.profile = ["viewers"], {"name": "Ana"}
        ana = provider.token(sub="ana")  # no workspace grant: the hook decides
        r = await http.get(f"/v1/workspaces/{w}/presence", headers=bearer(ana))
        assert r.status_code == 200
        (question,) = hook.questions
        assert question.signed
        assert question.body["user"] == "ana" and question.body["workspace_id"] == w
        assert question.body["claims"]["sub"] == "ana" and question.body["client_id"] is None
        # Cached per (user, workspace): no second question; its scopes apply (viewers).
        me = new_client_id()
        v = await Viewer.open(server.ws_url(w, me) + f"&token={ana}", me)
        viewers = await http.get(
            f"/v1/workspaces/{w}/viewers", params={"session_id": ""}, headers=bearer(ana)
        )
        assert viewers.status_code == 200, viewers.text
        assert viewers.json()["viewers"][0]["profile"] == {"name": "Ana"}  # the hook's profile
        assert len(hook.questions) == 1
        await v.close()
        hook.answer = "deny"
        bob = provider.token(sub="bob")
        r = await http.get(f"/v1/workspaces/{w}/presence", headers=bearer(bob))
        assert r.status_code == 403
        assert await close_code(server.ws_url(w, me) + f"&token={bob}") == 4403
        assert len(hook.questions) == 2  # the denial is cached too
        hook.answer = "500"
        carl = provider.token(sub="carl")
        r = await http.get(f"/v1/workspaces/{w}/presence", headers=bearer(carl))
        assert r.status_code == 503 and r.headers["Retry-After"] == "1"
        hook.answer = "hang"
        dora = provider.token(sub="dora")
        started = time.monotonic()
        r = await http.get(f"/v1/workspaces/{w}/presence", headers=bearer(dora))
        assert r.status_code == 503 and 1.9 < time.monotonic() - started < 3
        assert await close_code(server.ws_url(w, me) + f"&token={dora}") == 1013
        hook.answer = "allow"  # failures are not cached: asked again, and allowed now
        r = await http.get(f"/v1/workspaces/{w}/presence", headers=bearer(carl))
        assert r.status_code == 200


# -- expiry on live streams -----------------------------------------------------------------


async def test_a_live_socket_is_closed_at_expiry_unless_refreshed(
    make_server: MakeServer,
) -> None:
    server = make_server(auth_secret=SECRET_A, auth_leeway=0.5)
    auth = Auth(SECRET_A)
    admin = bearer(auth.mint(["*"], admin=True))
    async with httpx.AsyncClient(base_url=server.url, headers=admin) as http:
        w = (await http.post("/v1/workspaces", json={"path": "/expiry"})).json()["id"]
    now = time.time()
    exp = int(now) + 2
    short = auth.mint([w], user="ana", ttl=exp - now)
    idle_id, kept_id = new_client_id(), new_client_id()
    idle = await Viewer.open(server.ws_url(w, idle_id) + f"&token={short}", idle_id)
    kept = await Viewer.open(server.ws_url(w, kept_id) + f"&token={short}", kept_id)
    # A refresh for another user, or not valid, is refused and changes nothing.
    await kept.send({"type": "refresh", "token": auth.mint([w], user="bob"), "ref": 1})
    assert (await kept.expect("error"))["code"] == "forbidden"
    await kept.send({"type": "refresh", "token": "junk", "ref": 2})
    assert (await kept.expect("error"))["code"] == "unauthorized"
    await kept.send({"type": "refresh", "token": auth.mint(["other"], user="ana"), "ref": 3})
    assert (await kept.expect("error"))["code"] == "forbidden"
    await kept.send({"type": "refresh", "token": auth.mint([w], user="ana", ttl=60), "ref": 4})
    ack = await kept.expect("ack")
    assert ack["ref"] == 4
    # The idle one is closed 4401 "token expired" within leeway + 1 s of exp.
    assert await idle.closed_with(within=6) == 4401
    closed_at = time.time()
    assert idle.ws.close_reason == "token expired"
    assert exp + 0.5 - 0.05 <= closed_at <= exp + 1.5, closed_at - exp
    await kept.send({"type": "ping", "ref": "still"})
    assert (await kept.expect("pong"))["ref"] == "still"
    await kept.close()


async def test_provider_tokens_expire_and_refresh_for_the_same_user_only(
    make_server: MakeServer, provider: Provider
) -> None:
    server = provider_server(make_server, provider)
    admin = provider.token(ws="*", scope="admin")
    async with httpx.AsyncClient(base_url=server.url, headers=bearer(admin)) as http:
        w = (await http.post("/v1/workspaces", json={"path": "/refresh"})).json()["id"]
    me = new_client_id()
    v = await Viewer.open(server.ws_url(w, me) + f"&token={provider.token(ws=[w], ttl=1)}", me)
    other = provider.token("ec-1", ws=[w], sub="user-2", ttl=60)
    await v.send({"type": "refresh", "token": other, "ref": "x"})
    assert (await v.expect("error"))["code"] == "forbidden"
    assert await v.closed_with(within=5) == 4401
    v = await Viewer.open(server.ws_url(w, me) + f"&token={provider.token(ws=[w], ttl=1)}", me)
    await v.send({"type": "refresh", "token": provider.token("ed-1", ws=[w], ttl=60), "ref": 9})
    assert (await v.expect("ack"))["ref"] == 9
    await asyncio.sleep(2.2)
    await v.send({"type": "ping"})
    assert (await v.expect("pong")) == {"type": "pong"}
    await v.close()


async def test_the_hub_refuses_with_unavailable_not_allow(hook: Hook, provider: Provider) -> None:
    from hub.auth import AuthCheck

    check = AuthCheck(hook.url, HOOK_SECRET, ttl=10)
    auth = provider_auth(provider, check=check)
    await auth.start()
    try:
        grant = await auth.authenticate(provider.token())
        assert grant.ask and grant.workspaces == frozenset()
        hook.answer = "500"
        with pytest.raises(Unavailable):
            await auth.authorize(grant, "w1", None)
        hook.answer = "deny"
        with pytest.raises(Forbidden):
            await auth.authorize(grant, "w1", None)
        without = provider_auth(provider)
        plain = await without.authenticate(provider.token())
        with pytest.raises(Forbidden):  # no grant and no hook: nothing
            await without.authorize(plain, "w1", None)
        await without.close()
    finally:
        await auth.close()


async def test_the_python_client_refreshes_a_live_stream_from_its_token_provider(
    make_server: MakeServer, provider: Provider
) -> None:
    server = provider_server(make_server, provider)
    admin = provider.token(ws="*", scope="admin")
    async with httpx.AsyncClient(base_url=server.url, headers=bearer(admin)) as http:
        w = (await http.post("/v1/workspaces", json={"path": "/client"})).json()["id"]
    made: list[float] = []

    async def fresh() -> str:  # an async provider, as an app's would be
        made.append(time.time())
        return provider.token("ec-1", ws=[w], ttl=2)

    async with HubClient(server.url, token=fresh) as client:
        async with client.connect(w) as stream:
            await asyncio.sleep(4.5)  # two expiries and more
            assert await stream.set_session("S1") >= 1
            assert stream.attempts == 1  # refreshed, never closed
            assert len(made) >= 3
        assert (await client.presence(w))["workspace_id"] == w  # REST asks the provider too


# -- two nodes on Redis ---------------------------------------------------------------------


@pytest.fixture
def two_nodes(redis_url: str, tmp_path: Path) -> Iterator[ClusterThread]:
    """Two hubs on one Redis and one PostgreSQL database, with two-second-scale expiry."""
    settings = {k: v for k, v in FAST.items() if k != "database_url"}
    env = env_of({**settings, "auth_secret": SECRET_A, "auth_leeway": 0.5})
    cluster = InProcessCluster(tmp_path, None, [redis_url] * 2, **env, HUB_NODE_TTL="3")
    yield cluster.server
    cluster.stop()


async def test_expiry_and_refresh_on_each_of_two_redis_nodes(two_nodes: ClusterThread) -> None:
    auth = Auth(SECRET_A)
    admin = bearer(auth.mint(["*"], admin=True))
    async with httpx.AsyncClient(base_url=two_nodes.url, headers=admin) as http:
        w = (await http.post("/v1/workspaces", json={"path": "/nodes"})).json()["id"]
        short = auth.mint([w], user="ana", ttl=2)
        opened = []
        for node in (two_nodes, two_nodes.other):
            for _ in range(2):  # one left to expire, one refreshed
                me = new_client_id()
                url = ServerThread.ws_url(node, w, me) + f"&token={short}"
                opened.append(await Viewer.open(url, me))
        idle = [opened[0], opened[2]]
        kept = [opened[1], opened[3]]
        for v in kept:
            await v.send({"type": "refresh", "token": auth.mint([w], user="ana"), "ref": "r"})
            assert (await v.expect("ack"))["ref"] == "r"
            other = auth.mint([w], user="bob")
            await v.send({"type": "refresh", "token": other, "ref": "b"})
            assert (await v.expect("error"))["code"] == "forbidden"
        for v in idle:
            assert await v.closed_with(within=6) == 4401
            assert v.ws.close_reason == "token expired"
        for v in kept:
            await v.send({"type": "ping", "ref": "alive"})
            assert (await v.expect("pong"))["ref"] == "alive"

        async def online() -> bool:
            snap = (await http.get(f"/v1/workspaces/{w}/presence")).json()
            return bool(snap["online"] == 2)

        await eventually(online, within=5)  # the expired ones left (after their grace)
        for v in kept:
            await v.close()


def test_expiry_timers_cost_under_200_bytes_per_socket() -> None:
    """15,000 sockets' expiries in the one heap of a hub: the entry per socket (a tuple, its
    deadline, its push number), measured, plus the socket's two slots (user, expires)."""
    import tracemalloc

    from hub.connection import Connection
    from hub.deadlines import Deadlines
    from hub.hub import _expiry_stands

    class Idle:
        __slots__ = ("closing", "expires")

        def __init__(self, expires: float) -> None:
            self.expires = expires
            self.closing = False

    n = 15_000
    sockets = [Idle(1000.0 + i * 0.01) for i in range(n)]
    heap: Deadlines[Any] = Deadlines(_expiry_stands)
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for conn in sockets:
        heap.push(conn.expires, conn)
    per_socket = (tracemalloc.get_traced_memory()[0] - before) / n
    tracemalloc.stop()
    assert {"user", "expires"} <= set(Connection.__slots__)
    assert per_socket + 2 * 8 < 200, per_socket
