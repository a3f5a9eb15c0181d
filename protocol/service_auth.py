"""Inter-service auth JWTs (XRPC spec): verify tokens signed by an account's #atproto key, and make them.

A PDS proxies a user's request to us with `Authorization: Bearer <jwt>`, where the JWT is
signed (ES256K or ES256) by the user's repo signing key, names us in `aud` and the XRPC method
in `lxm`. Verification checks the cheap claims first and only then resolves the issuer's key,
so garbage tokens cost no network; a bad signature is retried once against a freshly fetched
DID document, because the account may just have rotated its key.

A token may live at most an hour (what the reference PDS's getServiceAuth mints at most), so
one that leaks, or outlives a key rotation, is not good for long. Key lookups go through an
`IssuerGate`: issuers that failed to resolve are remembered for a short while (a forged token
repeated costs no lookup), and lookups of issuers not seen lately draw on a token bucket, so a
flood of tokens naming random DIDs costs a bounded number of directory fetches.
"""

from __future__ import annotations

import base64
import binascii
import secrets
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, TypeGuard

import orjson

from protocol.crypto import PrivateKey, PublicKey, curve_for_jwt_alg
from protocol.errors import ProtocolError
from protocol.identity import IdentityError, IdentityResolving, is_valid_did

MAX_TOKEN_LENGTH = 8192
# Access/refresh/DPoP tokens of PDS sessions and OAuth must never pass as service auth.
_REJECTED_TYPES = frozenset({"at+jwt", "refresh+jwt", "dpop+jwt"})
# How far in the future `iat` may be (clock skew beyond the leeway is a forged or broken token).
MAX_IAT_SKEW = 300
# Longest accepted token life (exp - iat, and exp - now): the reference PDS's getServiceAuth
# refuses to mint tokens expiring more than an hour ahead.
MAX_TOKEN_LIFETIME = 3600


class AuthError(ProtocolError):
    """A rejected request; `error` is the XRPC error name, `message` the explanation."""

    def __init__(self, error: str, message: str) -> None:
        super().__init__(message)
        self.error = error
        self.message = message

    def __repr__(self) -> str:
        return f"AuthError({self.error!r}, {self.message!r})"


class IssuerRateLimited(AuthError):
    """Too many tokens from issuers we do not know right now: refused without a lookup. An
    HTTP server answers 429 with Retry-After (`retry_after` seconds)."""

    def __init__(self, retry_after: float) -> None:
        super().__init__("RateLimitExceeded", "too many tokens from unknown issuers; retry shortly")
        self.retry_after = retry_after


class IssuerGate:
    """What resolving token issuers may cost (see the module docstring).

    `known`: issuers whose key was fetched within `known_ttl` (their lookups are free, and the
    resolver's own cache answers them). `failed`: issuers whose lookup failed within
    `negative_ttl` (the same error again, no lookup). Any other issuer takes a token from a
    bucket of `burst`, refilled at `rate` per second; an empty bucket is IssuerRateLimited.
    """

    def __init__(
        self,
        *,
        rate: float = 5.0,
        burst: int = 50,
        negative_ttl: float = 30.0,
        known_ttl: float = 3600.0,
        max_entries: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate = rate
        self.burst = burst
        self.negative_ttl = negative_ttl
        self.known_ttl = known_ttl
        self.max_entries = max_entries
        self._clock = clock
        self._tokens = float(burst)
        self._refilled = clock()
        self._known: OrderedDict[str, float] = OrderedDict()  # did -> known until
        self._failed: OrderedDict[str, tuple[float, AuthError]] = OrderedDict()  # did -> (until, error)

    async def key(self, resolver: IdentityResolving, did: str, *, fresh: bool) -> PublicKey | None:
        now = self._clock()
        failed = self._failed.get(did)
        if failed is not None:
            if failed[0] > now:
                raise AuthError(failed[1].error, failed[1].message)
            del self._failed[did]
        known_until = self._known.get(did)
        known = known_until is not None and known_until > now
        if not known and not self._take(now):
            raise IssuerRateLimited(retry_after=max(1.0, 1.0 / self.rate) if self.rate > 0 else 60.0)
        try:
            key = await _issuer_key(resolver, did, fresh=fresh)
        except AuthError as exc:
            # Only issuers without a recent good key: a forged token naming a real account
            # must not lock that account out when one refetch fails.
            if not known:
                self._remember(self._failed, did, (now + self.negative_ttl, exc))
            raise
        self._remember(self._known, did, now + self.known_ttl)
        return key

    def _take(self, now: float) -> bool:
        self._tokens = min(float(self.burst), self._tokens + (now - self._refilled) * self.rate)
        self._refilled = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True

    def _remember(self, table: OrderedDict[str, Any], did: str, value: Any) -> None:
        table[did] = value
        table.move_to_end(did)
        while len(table) > self.max_entries:
            table.popitem(last=False)


# Callers that pass no gate share one per resolver: the budget holds for the whole process.
_default_gates: weakref.WeakKeyDictionary[Any, IssuerGate] = weakref.WeakKeyDictionary()


def default_gate(resolver: IdentityResolving) -> IssuerGate:
    try:
        gate = _default_gates.get(resolver)
        if gate is None:
            gate = _default_gates[resolver] = IssuerGate()
    except TypeError:  # a resolver that cannot be weakly referenced: a gate for this call only
        return IssuerGate()
    return gate


def _b64url_decode(part: str) -> bytes:
    if "=" in part:
        raise ValueError("padding is not allowed in JWT segments")
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def _b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _decode_json_part(part: str, what: str) -> dict[str, Any]:
    try:
        value = orjson.loads(_b64url_decode(part))
    except (ValueError, binascii.Error, orjson.JSONDecodeError):
        raise AuthError("BadJwt", f"JWT {what} is not base64url-encoded JSON") from None
    if not isinstance(value, dict):
        raise AuthError("BadJwt", f"JWT {what} is not a JSON object")
    return value


def _number(value: Any) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def bearer_token(authorization: str | None) -> str:
    """The token of an `Authorization: Bearer <token>` header; AuthMissing when absent."""
    if not authorization:
        raise AuthError("AuthMissing", "Authentication required")
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthError("AuthMissing", "Expected a Bearer token in the Authorization header")
    return token.strip()


async def verify_service_jwt(
    token: str,
    *,
    audience: str,
    lxm: str | None,
    resolver: IdentityResolving,
    now: float | None = None,
    leeway: float = 30,
    accept_bare_audience: bool = False,
    max_lifetime: float = MAX_TOKEN_LIFETIME,
    issuers: IssuerGate | None = None,
) -> str:
    """Verify an inter-service JWT and return the issuer's DID; raises AuthError.

    `audience` is our service identity (e.g. "did:web:api.plyr.fm#plyr_appview"); with
    `accept_bare_audience`, a token whose `aud` is just the DID part is accepted too (older
    PDS versions strip the fragment). `lxm` is the XRPC method the token must authorize, or
    None when the endpoint does not require a method binding. A token may expire at most
    `max_lifetime` seconds after it was issued and after now. `issuers` bounds the cost of
    issuer lookups (by default one gate per resolver, shared by every caller).
    """
    if not token:
        raise AuthError("AuthMissing", "Authentication required")
    if not isinstance(token, str) or len(token) > MAX_TOKEN_LENGTH:
        raise AuthError("BadJwt", "JWT is malformed")
    parts = token.split(".")
    if len(parts) != 3 or not all(parts):
        raise AuthError("BadJwt", "JWT must have three non-empty dot-separated parts")
    header = _decode_json_part(parts[0], "header")
    payload = _decode_json_part(parts[1], "payload")

    alg = header.get("alg")
    curve = curve_for_jwt_alg(alg) if isinstance(alg, str) else None
    if curve is None:
        raise AuthError(
            "BadJwt", f"JWT alg {str(alg)[:20]!r} is not allowed (ES256K or ES256 only)"
        )
    typ = header.get("typ")
    if typ is not None and (not isinstance(typ, str) or typ.lower() in _REJECTED_TYPES):
        raise AuthError("BadJwt", "Invalid JWT type: session and DPoP tokens are not service auth")
    kid = header.get("kid")

    iss = payload.get("iss")
    if not isinstance(iss, str):
        raise AuthError("BadJwt", "JWT has no issuer (iss)")
    # `iss` may carry a service fragment ("did:...#atproto_labeler"); the account is the DID.
    iss_did = iss.split("#", 1)[0]
    if not is_valid_did(iss_did):
        raise AuthError("BadJwt", "JWT issuer is not a valid DID")
    if kid is not None and kid not in ("#atproto", iss_did + "#atproto"):
        raise AuthError("BadJwt", "JWT key id must be #atproto")

    current = time.time() if now is None else now
    exp = payload.get("exp")
    if not _number(exp):
        raise AuthError("BadJwt", "JWT has no expiration (exp)")
    if current > exp + leeway:
        raise AuthError("JwtExpired", "JWT has expired")
    iat = payload.get("iat")
    if iat is not None:
        if not _number(iat):
            raise AuthError("BadJwt", "JWT iat is not a number")
        if iat > current + leeway + MAX_IAT_SKEW:
            raise AuthError("BadJwt", "JWT was issued in the future")
        if exp - iat > max_lifetime + leeway:
            raise AuthError("BadJwt", f"JWT lifetime (exp - iat) is over {int(max_lifetime)} seconds")
    # Without this, a token minted to expire in a century would be good (and cached) that long.
    if exp > current + max_lifetime + leeway:
        raise AuthError("BadJwt", f"JWT expires too far in the future (lifetime over {int(max_lifetime)} seconds)")

    aud = payload.get("aud")
    if not isinstance(aud, str):
        raise AuthError("BadJwtAudience", "JWT has no audience (aud)")
    if aud != audience and not (accept_bare_audience and aud == audience.split("#", 1)[0]):
        raise AuthError("BadJwtAudience", f"JWT audience does not match service: {aud[:200]}")

    if lxm is not None:
        claimed = payload.get("lxm")
        if claimed is None:
            raise AuthError("BadJwtLexiconMethod", "missing jwt lexicon method (lxm)")
        if claimed != lxm:
            raise AuthError(
                "BadJwtLexiconMethod", f"bad jwt lexicon method (lxm): {str(claimed)[:200]}"
            )

    try:
        sig = _b64url_decode(parts[2])
    except (ValueError, binascii.Error):
        raise AuthError("BadJwtSignature", "JWT signature is not base64url") from None
    signing_input = (parts[0] + "." + parts[1]).encode("ascii")

    gate = issuers if issuers is not None else default_gate(resolver)
    key = await gate.key(resolver, iss_did, fresh=False)
    if _signature_ok(key, curve, signing_input, sig):
        return iss_did
    # The account may have rotated its key since we cached the document: look again, once.
    fresh_key = await gate.key(resolver, iss_did, fresh=True)
    if fresh_key != key and _signature_ok(fresh_key, curve, signing_input, sig):
        return iss_did
    raise AuthError("BadJwtSignature", "JWT signature does not match the issuer's signing key")


def _signature_ok(key: PublicKey | None, curve: str, signing_input: bytes, sig: bytes) -> bool:
    # The header's alg must name the key's curve, or "ES256" could smuggle a K-256 check.
    return key is not None and key.curve == curve and key.verify(signing_input, sig)


async def _issuer_key(resolver: IdentityResolving, did: str, *, fresh: bool) -> PublicKey | None:
    try:
        doc = await resolver.resolve_did(did, fresh=fresh)
    except IdentityError as exc:
        if exc.kind in ("not_found", "invalid", "unsupported", "bad_document"):
            raise AuthError(
                "BadJwtSignature", f"cannot get the issuer's signing key: {exc}"
            ) from None
        raise AuthError("BadJwt", f"cannot resolve the issuer's DID right now: {exc}") from None
    return doc.signing_key


def create_service_jwt(
    key: PrivateKey,
    *,
    iss: str,
    aud: str,
    lxm: str | None,
    exp_in: int = 60,
    now: float | None = None,
) -> str:
    """A signed inter-service JWT from `iss` to `aud` for method `lxm`, valid `exp_in` seconds."""
    issued = int(time.time() if now is None else now)
    header = {"typ": "JWT", "alg": key.jwt_alg}
    payload: dict[str, Any] = {
        "iat": issued,
        "iss": iss,
        "aud": aud,
        "exp": issued + exp_in,
        "jti": secrets.token_hex(16),
    }
    if lxm is not None:
        payload["lxm"] = lxm
    signing_input = (
        _b64url_encode(orjson.dumps(header)) + "." + _b64url_encode(orjson.dumps(payload))
    )
    return signing_input + "." + _b64url_encode(key.sign(signing_input.encode("ascii")))
