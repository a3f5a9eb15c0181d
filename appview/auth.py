"""Who is calling: AT Protocol service auth (a Bearer JWT signed by the caller's repo key).

Public reads work anonymously; a request that carries a token must carry a good one (a bad
token is a 401, never silently treated as anonymous). The JWT must name this AppView in `aud`
(our DID with the `#plyr_appview` service fragment, or the bare DID from older PDSes) and the
called method in `lxm`. A few methods also answer to another of our service identities: reports
(`com.atproto.moderation.createReport`) reach us as our labeler's (`#atproto_labeler`), where a
PDS sends them for a client that chose us as its labeler.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable, Mapping

import orjson
from aiohttp import web

from appview.errors import XRPCError
from protocol.identity import IdentityResolving
from protocol.service_auth import (
    AuthError,
    IssuerGate,
    IssuerRateLimited,
    bearer_token,
    verify_service_jwt,
)

SERVICE_FRAGMENT = "#plyr_appview"
# How long a verified token is taken on trust: short, so a key rotation (or a revoked account)
# takes effect within this, whatever the token's own `exp` says.
VERIFIED_TTL = 60.0


class Authenticator:
    """Verifies tokens; a token already verified is remembered (by its exact bytes, signature
    included) for at most VERIFIED_TTL seconds and never past its `exp`, so a client reusing its
    token costs no signature check. Issuer lookups go through one IssuerGate (negative cache,
    budget for unknown issuers); over the budget is a 429."""

    def __init__(
        self,
        service_did: str,
        resolver: IdentityResolving,
        *,
        max_cached: int = 10_000,
        issuers: IssuerGate | None = None,
        clock: Callable[[], float] = time.monotonic,
        other_audiences: Mapping[str, str] | None = None,
    ) -> None:
        """`other_audiences`: method -> a service fragment of our DID it is also reached as."""
        self.audience = service_did + SERVICE_FRAGMENT
        self.other_audiences = {nsid: service_did + fragment for nsid, fragment in (other_audiences or {}).items()}
        self.resolver = resolver
        self.max_cached = max_cached
        self.issuers = issuers or IssuerGate()
        self._clock = clock
        self._verified: dict[tuple[str, str], tuple[str, float]] = {}  # (token, lxm) -> (did, until)

    async def viewer(self, request: web.Request, nsid: str, *, required: bool) -> str | None:
        """The caller's DID, None when anonymous and allowed; raises a 401 XRPCError."""
        header = request.headers.get("Authorization")
        if not header:
            if required:
                raise XRPCError(401, "AuthRequired", "this method needs service authentication (Bearer JWT)")
            return None
        try:
            token = bearer_token(header)
            now = self._clock()
            hit = self._verified.get((token, nsid))
            if hit is not None and hit[1] > now:
                return hit[0]
            did = await verify_service_jwt(
                token,
                audience=self._audience(token, nsid),
                lxm=nsid,
                resolver=self.resolver,
                accept_bare_audience=True,
                issuers=self.issuers,
            )
        except IssuerRateLimited as exc:
            raise XRPCError(429, exc.error, exc.message) from None
        except AuthError as exc:
            raise XRPCError(401, exc.error, exc.message) from None
        if len(self._verified) >= self.max_cached:
            self._verified.clear()
        lifetime = min(VERIFIED_TTL, _expiry(token) - time.time())
        if lifetime > 0:
            self._verified[(token, nsid)] = (did, now + lifetime)
        return did


    def _audience(self, token: str, nsid: str) -> str:
        """The audience to verify `token` against: the method's other identity when the token
        names it (the verification then checks everything, that audience included)."""
        other = self.other_audiences.get(nsid)
        if other is not None:
            try:
                if _claims(token).get("aud") == other:
                    return other
            except (ValueError, IndexError, TypeError, orjson.JSONDecodeError):
                pass  # malformed: the verification says how
        return self.audience


def _claims(token: str) -> dict[str, object]:
    payload = token.split(".")[1]
    claims = orjson.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return claims if isinstance(claims, dict) else {}


def _expiry(token: str) -> float:
    """`exp` of a token that just passed verification (so its payload is well-formed)."""
    return float(_claims(token)["exp"])  # type: ignore[arg-type]
