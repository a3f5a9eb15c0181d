"""Who is calling: AT Protocol service auth (a JWT signed by the caller's DID) or the server key.

A request carries `Authorization: Bearer TOKEN`. TOKEN equal to PLYR_MEDIA_SERVER_KEY (compared
in constant time) marks a trusted caller, which names the account it acts for in the
`X-Plyr-Did` header. Otherwise TOKEN must be a service-auth JWT whose audience is our service
DID (PLYR_MEDIA_SERVICE_DID) and whose `lxm` is the method being called; its issuer is the
caller. With neither configured nothing is accepted: the service refuses to start (fails closed).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from core.errors import ConfigError
from media.settings import MediaSettings

if TYPE_CHECKING:
    from protocol.identity import IdentityResolving

_DID = re.compile(r"^did:[a-z]+:[a-zA-Z0-9._:%-]{1,2000}$")

SERVICE_FRAGMENT = "#plyr_media"  # our service entry in our DID document
LXM_UPLOAD_AUDIO = "fm.plyr.media.uploadAudio"
LXM_UPLOAD_IMAGE = "fm.plyr.media.uploadImage"
LXM_CREATE_EXPORT = "fm.plyr.media.createExport"
LXM_GET_EXPORT = "fm.plyr.media.getExport"
LXM_GET_JOB = "fm.plyr.media.getJob"
# A job may be read with a token for getJob, or with the token of the call that made it (an
# uploader follows their upload's job with the token they uploaded with).
JOB_READ_LXMS = (LXM_GET_JOB, LXM_UPLOAD_AUDIO, LXM_UPLOAD_IMAGE, LXM_CREATE_EXPORT, LXM_GET_EXPORT)


class Unauthorized(Exception):
    def __init__(self, error: str, message: str) -> None:
        super().__init__(message)
        self.error = error
        self.message = message


@dataclass(frozen=True)
class Caller:
    did: str | None       # the account acted for (None: a trusted caller that named none)
    trusted: bool         # authenticated by the server key


def require_auth_configured(settings: MediaSettings) -> None:
    if not settings.auth_configured:
        raise ConfigError(
            "media uploads need authentication: set PLYR_MEDIA_SERVICE_DID (AT Protocol service "
            "auth) and/or PLYR_MEDIA_SERVER_KEY (trusted callers); refusing to start without either"
        )


def is_did(value: str) -> bool:
    try:
        from protocol.syntax import is_valid

        return bool(is_valid("did", value))
    except ImportError:
        return bool(_DID.fullmatch(value))


def _claimed_lxm(token: str) -> str | None:
    """The `lxm` claim of a JWT, read without verifying anything (only to pick what to verify)."""
    try:
        payload = token.split(".")[1]
        claims = orjson.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError, binascii.Error, orjson.JSONDecodeError):
        return None
    lxm = claims.get("lxm") if isinstance(claims, dict) else None
    return lxm if isinstance(lxm, str) else None


class Authenticator:
    def __init__(
        self, settings: MediaSettings, resolver: IdentityResolving | None = None, *, required: bool = True
    ) -> None:
        # `required=False` (plyr up without auth settings): the service starts but every
        # authenticated endpoint refuses - still closed, never open.
        if required:
            require_auth_configured(settings)
        self.configured = settings.auth_configured
        self.server_key = settings.server_key.encode() if settings.server_key else None
        self.service_did = settings.service_did
        self._resolver = resolver

    def resolver(self) -> IdentityResolving:
        """The identity resolver that checks service-auth tokens (the process's)."""
        if self._resolver is None:
            raise RuntimeError("service-auth tokens need an identity resolver: pass one to Authenticator")
        return self._resolver

    async def authenticate(self, headers: Any, lxm: str | tuple[str, ...]) -> Caller:
        """The caller, for a service-auth token bound to `lxm` (or to any one of several)."""
        if not self.configured:
            raise Unauthorized(
                "AuthNotConfigured",
                "uploads are disabled: this server has no authentication configured",
            )
        header = headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise Unauthorized("AuthenticationRequired", "send Authorization: Bearer <token>")
        if self.server_key is not None and hmac.compare_digest(token.encode(), self.server_key):
            did = headers.get("X-Plyr-Did") or None
            if did is not None and not is_did(did):
                raise Unauthorized("InvalidRequest", "X-Plyr-Did is not a DID")
            return Caller(did=did, trusted=True)
        if self.service_did is None or token.count(".") != 2:
            raise Unauthorized("InvalidToken", "the token is not valid")
        from protocol.service_auth import AuthError, verify_service_jwt

        if isinstance(lxm, tuple):
            # Check against the method the token names when it is one of those allowed; the
            # verifier still checks that binding (and refuses any other) with the signature.
            claimed = _claimed_lxm(token)
            lxm = claimed if claimed in lxm else lxm[0]
        try:
            # `<did>#plyr_media` (the spec's form), or the bare DID: what getServiceAuth can
            # issue, its `aud` being a DID without a fragment.
            audience = self.service_did if "#" in self.service_did else self.service_did + SERVICE_FRAGMENT
            did = await verify_service_jwt(
                token, audience=audience, lxm=lxm, resolver=self.resolver(), accept_bare_audience=True
            )
        except AuthError as exc:
            raise Unauthorized(
                getattr(exc, "error", "InvalidToken") or "InvalidToken",
                getattr(exc, "message", str(exc)) or "the token is not valid",
            ) from None
        return Caller(did=did, trusted=False)
