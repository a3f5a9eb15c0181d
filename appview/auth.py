"""Who is calling: AT Protocol service auth (a Bearer JWT signed by the caller's repo key).

Public reads work anonymously; a request that carries a token must carry a good one (a bad
token is a 401, never silently treated as anonymous). The JWT must name this AppView in `aud`
(our DID with the `#plyr_appview` service fragment, or the bare DID from older PDSes) and the
called method in `lxm`.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable

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
    ) -> None:
        self.audience = service_did + SERVICE_FRAGMENT
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
                audience=self.audience,
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


def _expiry(token: str) -> float:
    """`exp` of a token that just passed verification (so its payload is well-formed)."""
    payload = token.split(".")[1]
    claims = orjson.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return float(claims["exp"])
