"""Service-auth JWTs: made by create_service_jwt or by hand, verified against a local PLC stand-in."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from protocol.crypto import PrivateKey
from protocol.identity import IdentityResolver
from protocol.service_auth import (
    MAX_TOKEN_LIFETIME,
    AuthError,
    IssuerGate,
    IssuerRateLimited,
    bearer_token,
    create_service_jwt,
    verify_service_jwt,
)
from tests.support.identity import local_resolver

from .fake_identity_server import FakeIdentityServer, did_doc, random_plc_did

AUD = "did:web:api.plyr.test#plyr_appview"
LXM = "fm.plyr.feed.like"
N_K256 = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _token(key: PrivateKey, header: dict[str, Any], payload: dict[str, Any]) -> str:
    signing_input = _b64(json.dumps(header).encode()) + "." + _b64(json.dumps(payload).encode())
    return signing_input + "." + _b64(key.sign(signing_input.encode()))


def _claims(iss: str, **overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    claims = {"iss": iss, "aud": AUD, "exp": now + 60, "iat": now, "lxm": LXM, "jti": "x"}
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


@pytest.fixture
async def server() -> AsyncIterator[FakeIdentityServer]:
    srv = FakeIdentityServer()
    await srv.start()
    yield srv
    await srv.stop()


@pytest.fixture
async def resolver(server: FakeIdentityServer) -> AsyncIterator[IdentityResolver]:
    res = local_resolver(server.url, timeout=2.0, refresh_floor=0)
    yield res
    await res.close()


class Account:
    def __init__(self, server: FakeIdentityServer, curve: str = "k256") -> None:
        self.server = server
        self.did = random_plc_did()
        self.key = PrivateKey.generate(curve)  # type: ignore[arg-type]
        self.publish()

    def publish(self) -> None:
        self.server.plc[self.did] = did_doc(self.did, self.key.public_key(), handle=None)


async def _verify(token: str, resolver: IdentityResolver, **kw: Any) -> str:
    kw.setdefault("audience", AUD)
    kw.setdefault("lxm", LXM)
    return await verify_service_jwt(token, resolver=resolver, **kw)


async def _rejected(token: str, resolver: IdentityResolver, error: str, **kw: Any) -> AuthError:
    with pytest.raises(AuthError) as info:
        await _verify(token, resolver, **kw)
    assert info.value.error == error, info.value.message
    assert info.value.message
    return info.value


@pytest.mark.parametrize(("curve", "alg"), [("k256", "ES256K"), ("p256", "ES256")])
async def test_valid_tokens_on_both_curves(
    server: FakeIdentityServer, resolver: IdentityResolver, curve: str, alg: str
) -> None:
    acct = Account(server, curve)
    token = create_service_jwt(acct.key, iss=acct.did, aud=AUD, lxm=LXM)
    header = json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))
    assert header == {"typ": "JWT", "alg": alg}
    assert await _verify(token, resolver) == acct.did


async def test_issuer_with_service_fragment_and_optional_lxm(
    server: FakeIdentityServer, resolver: IdentityResolver
) -> None:
    acct = Account(server)
    token = create_service_jwt(acct.key, iss=acct.did + "#atproto_labeler", aud=AUD, lxm=None)
    assert await _verify(token, resolver, lxm=None) == acct.did
    await _rejected(token, resolver, "BadJwtLexiconMethod")  # the endpoint requires an lxm
    kid_token = _token(acct.key, {"alg": "ES256K", "kid": "#atproto"}, _claims(acct.did))
    assert await _verify(kid_token, resolver) == acct.did


async def test_expiry_with_leeway(server: FakeIdentityServer, resolver: IdentityResolver) -> None:
    acct = Account(server)
    token = create_service_jwt(acct.key, iss=acct.did, aud=AUD, lxm=LXM, exp_in=60, now=1_000_000)
    assert await _verify(token, resolver, now=1_000_060 + 29) == acct.did
    await _rejected(token, resolver, "JwtExpired", now=1_000_060 + 31)
    await _rejected(token, resolver, "JwtExpired", now=1_000_061, leeway=0)


async def test_audience(server: FakeIdentityServer, resolver: IdentityResolver) -> None:
    acct = Account(server)
    other = create_service_jwt(acct.key, iss=acct.did, aud="did:web:elsewhere.test#x", lxm=LXM)
    await _rejected(other, resolver, "BadJwtAudience")
    bare = create_service_jwt(acct.key, iss=acct.did, aud="did:web:api.plyr.test", lxm=LXM)
    await _rejected(bare, resolver, "BadJwtAudience")
    assert await _verify(bare, resolver, accept_bare_audience=True) == acct.did
    no_aud = _token(acct.key, {"alg": "ES256K"}, _claims(acct.did, aud=None))
    await _rejected(no_aud, resolver, "BadJwtAudience")


async def test_lexicon_method(server: FakeIdentityServer, resolver: IdentityResolver) -> None:
    acct = Account(server)
    wrong = create_service_jwt(acct.key, iss=acct.did, aud=AUD, lxm="fm.plyr.feed.comment")
    await _rejected(wrong, resolver, "BadJwtLexiconMethod")
    missing = create_service_jwt(acct.key, iss=acct.did, aud=AUD, lxm=None)
    err = await _rejected(missing, resolver, "BadJwtLexiconMethod")
    assert "missing" in err.message


async def test_forged_and_tampered_signatures(
    server: FakeIdentityServer, resolver: IdentityResolver
) -> None:
    acct = Account(server)
    forger = PrivateKey.generate("k256")
    forged = create_service_jwt(forger, iss=acct.did, aud=AUD, lxm=LXM)
    await _rejected(forged, resolver, "BadJwtSignature")

    good = create_service_jwt(acct.key, iss=acct.did, aud=AUD, lxm=LXM)
    head, _, sig = good.split(".")
    tampered_payload = _b64(json.dumps(_claims("did:plc:" + "a" * 24)).encode())
    await _rejected(f"{head}.{tampered_payload}.{sig}", resolver, "BadJwtSignature")

    # The high-S twin of a valid signature is the same math but forbidden by atproto.
    raw = base64.urlsafe_b64decode(sig + "==")
    twin = raw[:32] + (N_K256 - int.from_bytes(raw[32:], "big")).to_bytes(32, "big")
    await _rejected(f"{head}.{good.split('.')[1]}.{_b64(twin)}", resolver, "BadJwtSignature")
    # A DER signature of the right bytes is not accepted either.
    from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

    der = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
    await _rejected(f"{head}.{good.split('.')[1]}.{_b64(der)}", resolver, "BadJwtSignature")
    assert await _verify(good, resolver) == acct.did


async def test_alg_must_match_key_curve(
    server: FakeIdentityServer, resolver: IdentityResolver
) -> None:
    acct = Account(server, "k256")
    token = _token(acct.key, {"alg": "ES256", "typ": "JWT"}, _claims(acct.did))
    await _rejected(token, resolver, "BadJwtSignature")


@pytest.mark.parametrize(
    "header",
    [
        {"alg": "none", "typ": "JWT"},
        {"alg": "HS256", "typ": "JWT"},
        {"alg": "RS256"},
        {"typ": "JWT"},
        {"alg": "ES256K", "typ": "at+jwt"},
        {"alg": "ES256K", "typ": "refresh+jwt"},
        {"alg": "ES256K", "typ": "DPoP+JWT"},
        {"alg": "ES256K", "kid": "#atproto_label"},
    ],
)
async def test_rejected_headers_cost_no_lookup(
    server: FakeIdentityServer, resolver: IdentityResolver, header: dict[str, Any]
) -> None:
    acct = Account(server)
    await _rejected(_token(acct.key, header, _claims(acct.did)), resolver, "BadJwt")
    assert server.requests[acct.did] == 0


async def test_alg_none_unsigned(server: FakeIdentityServer, resolver: IdentityResolver) -> None:
    acct = Account(server)
    unsigned = _b64(b'{"alg":"none"}') + "." + _b64(json.dumps(_claims(acct.did)).encode()) + "."
    await _rejected(unsigned, resolver, "BadJwt")


@pytest.mark.parametrize(
    "claims",
    [
        {"exp": None},
        {"exp": "tomorrow"},
        {"exp": True},
        {"iat": int(time.time()) + 3600},
        {"iat": "now"},
        {"iss": None},
        {"iss": "alice"},
    ],
    ids=["no-exp", "string-exp", "bool-exp", "future-iat", "string-iat", "no-iss", "bad-iss"],
)
async def test_bad_claims(
    server: FakeIdentityServer, resolver: IdentityResolver, claims: dict[str, Any]
) -> None:
    acct = Account(server)
    payload = _claims(acct.did)
    for name, value in claims.items():
        if value is None:
            payload.pop(name)
        else:
            payload[name] = value
    await _rejected(_token(acct.key, {"alg": "ES256K"}, payload), resolver, "BadJwt")


@pytest.mark.parametrize(
    ("token", "error"),
    [
        ("", "AuthMissing"),
        ("abc", "BadJwt"),
        ("a.b", "BadJwt"),
        ("a.b.c.d", "BadJwt"),
        ("!!!.???.***", "BadJwt"),
        (_b64(b"not json") + "." + _b64(b"{}") + ".c2ln", "BadJwt"),
        (_b64(b"[1,2]") + "." + _b64(b"{}") + ".c2ln", "BadJwt"),
        (_b64(b'{"alg":"ES256K"}') + "=." + _b64(b"{}") + ".c2ln", "BadJwt"),
        ("x" * 10_000, "BadJwt"),
    ],
)
async def test_malformed_tokens(resolver: IdentityResolver, token: str, error: str) -> None:
    await _rejected(token, resolver, error)


async def test_key_rotation_recovers_with_a_fresh_document(
    server: FakeIdentityServer, resolver: IdentityResolver
) -> None:
    acct = Account(server)
    first = create_service_jwt(acct.key, iss=acct.did, aud=AUD, lxm=LXM)
    assert await _verify(first, resolver) == acct.did
    assert server.requests[acct.did] == 1
    old_key = acct.key
    acct.key = PrivateKey.generate("p256")  # rotate (to the other curve, for good measure)
    acct.publish()
    rotated = create_service_jwt(acct.key, iss=acct.did, aud=AUD, lxm=LXM)
    assert await _verify(rotated, resolver) == acct.did
    assert server.requests[acct.did] == 2
    assert await _verify(rotated, resolver) == acct.did  # the fresh document is now cached
    assert server.requests[acct.did] == 2
    stale = create_service_jwt(old_key, iss=acct.did, aud=AUD, lxm=LXM)
    await _rejected(stale, resolver, "BadJwtSignature")


async def test_forged_tokens_cannot_force_endless_refetches(server: FakeIdentityServer) -> None:
    acct = Account(server)
    async with local_resolver(server.url, refresh_floor=60) as res:
        forger = PrivateKey.generate("k256")
        for _ in range(5):
            forged = create_service_jwt(forger, iss=acct.did, aud=AUD, lxm=LXM)
            await _rejected(forged, res, "BadJwtSignature")
        assert server.requests[acct.did] == 1


async def test_unknown_issuer_and_unreachable_directory(
    server: FakeIdentityServer, resolver: IdentityResolver
) -> None:
    key = PrivateKey.generate("k256")
    unknown = create_service_jwt(key, iss=random_plc_did(), aud=AUD, lxm=LXM)
    await _rejected(unknown, resolver, "BadJwtSignature")
    acct = Account(server)
    server.status[acct.did] = 503
    down = create_service_jwt(acct.key, iss=acct.did, aud=AUD, lxm=LXM)
    err = await _rejected(down, resolver, "BadJwt")
    assert "resolve" in err.message


def test_bearer_token() -> None:
    assert bearer_token("Bearer abc.def.ghi") == "abc.def.ghi"
    assert bearer_token("bearer   abc ") == "abc"
    for value in (None, "", "Basic dXNlcjpwdw==", "Bearer ", "Bearer"):
        with pytest.raises(AuthError) as info:
            bearer_token(value)
        assert info.value.error == "AuthMissing"


def test_created_token_claims() -> None:
    key = PrivateKey.generate("k256")
    token = create_service_jwt(
        key, iss="did:plc:" + "a" * 24, aud=AUD, lxm=LXM, exp_in=30, now=1000.7
    )
    payload = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
    assert payload["iat"] == 1000 and payload["exp"] == 1030
    assert payload["aud"] == AUD and payload["lxm"] == LXM and len(payload["jti"]) == 32
    other = create_service_jwt(key, iss="did:plc:" + "a" * 24, aud=AUD, lxm=LXM, now=1000)
    assert json.loads(base64.urlsafe_b64decode(other.split(".")[1] + "=="))["jti"] != payload["jti"]


async def test_token_lifetime_is_capped(server: FakeIdentityServer, resolver: IdentityResolver) -> None:
    acct = Account(server)
    now = time.time()
    # What a PDS mints (up to an hour) passes; more does not, before any lookup.
    hour = create_service_jwt(acct.key, iss=acct.did, aud=AUD, lxm=LXM, exp_in=MAX_TOKEN_LIFETIME)
    assert await _verify(hour, resolver) == acct.did
    lookups = server.requests[acct.did]
    for claims in (
        _claims(acct.did, exp=int(now) + 100 * 365 * 86400),  # a century ahead
        _claims(acct.did, exp=int(now) + 2 * MAX_TOKEN_LIFETIME, iat=None),  # no iat, far exp
        _claims(acct.did, exp=int(now) + 600, iat=int(now) - 7200),  # lived 2h10 already
    ):
        err = await _rejected(_token(acct.key, {"alg": "ES256K"}, claims), resolver, "BadJwt")
        assert "lifetime" in err.message
    assert server.requests[acct.did] == lookups


async def test_issuer_gate_bounds_lookups_of_unknown_issuers(server: FakeIdentityServer) -> None:
    clock = [0.0]
    gate = IssuerGate(rate=1.0, burst=3, negative_ttl=30, clock=lambda: clock[0])
    acct = Account(server)
    async with local_resolver(server.url, negative_ttl=0) as res:
        token = create_service_jwt(acct.key, iss=acct.did, aud=AUD, lxm=LXM)
        assert await _verify(token, res, issuers=gate) == acct.did  # 1 of the budget
        forger = PrivateKey.generate("k256")
        ghosts = [random_plc_did() for _ in range(5)]
        for ghost in ghosts[:2]:  # the rest of the budget: looked up, not found
            await _rejected(create_service_jwt(forger, iss=ghost, aud=AUD, lxm=LXM), res,
                            "BadJwtSignature", issuers=gate)
        for ghost in ghosts[2:]:  # over it: refused without a lookup
            with pytest.raises(IssuerRateLimited):
                await _verify(create_service_jwt(forger, iss=ghost, aud=AUD, lxm=LXM), res, issuers=gate)
        assert [server.requests[g] for g in ghosts] == [1, 1, 0, 0, 0]
        # A known issuer is not charged; a failed one is answered from the negative cache.
        assert await _verify(token, res, issuers=gate) == acct.did
        await _rejected(create_service_jwt(forger, iss=ghosts[0], aud=AUD, lxm=LXM), res,
                        "BadJwtSignature", issuers=gate)
        assert server.requests[ghosts[0]] == 1
        # The bucket refills with time, and the negative cache expires.
        clock[0] += 31
        await _rejected(create_service_jwt(forger, iss=ghosts[0], aud=AUD, lxm=LXM), res,
                        "BadJwtSignature", issuers=gate)
        assert server.requests[ghosts[0]] == 2
