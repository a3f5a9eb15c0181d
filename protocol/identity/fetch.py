"""Bounded HTTP GETs for identity lookups: time-limited, size-limited, redirects checked.

A DID document or a handle decides where we connect, so every answer is hostile: the body is
read only for a 2xx and never past a limit, the whole exchange has one deadline, and a redirect
goes only to https (or http too when private networks are allowed) without credentials.
Which addresses may be connected to at all is the connector's business (see `Fetcher`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from urllib.parse import urljoin, urlsplit

import aiohttp

from protocol.identity.errors import IdentityError

_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_ACCEPT = "application/did+ld+json, application/json, text/plain;q=0.9, */*;q=0.1"

# Why a connection was refused by policy (e.g. a non-public address), or None for other errors.
RefusalReason = Callable[[BaseException], str | None]


def no_refusals(_exc: BaseException) -> str | None:
    return None


class Fetcher:
    """GETs through `session()` with the limits above.

    `refusal_reason` recognises a connector's refusal behind an aiohttp error, so that it is
    reported as "unsupported" (not transient) rather than "unreachable".
    """

    def __init__(
        self,
        session: Callable[[], aiohttp.ClientSession],
        *,
        timeout: float,
        allow_private_network: bool,
        user_agent: str,
        refusal_reason: RefusalReason = no_refusals,
    ) -> None:
        self._session = session
        self.timeout = timeout
        self.allow_private_network = allow_private_network
        self._headers = {"Accept": _ACCEPT, "User-Agent": user_agent}
        self._refusal_reason = refusal_reason

    async def get(self, url: str, *, limit: int, redirects: int, what: str) -> tuple[int, bytes]:
        """GET `url`; returns (status, body). The body is read only for 2xx and capped at `limit`.

        Up to `redirects` redirects are followed, each target checked by `redirect_target`.
        """
        session = self._session()
        try:
            async with asyncio.timeout(self.timeout):
                for _hop in range(redirects + 1):
                    async with session.get(url, allow_redirects=False, headers=self._headers) as resp:
                        if redirects and resp.status in _REDIRECT_STATUSES:
                            url = self.redirect_target(resp, what)
                            continue
                        if not 200 <= resp.status < 300:
                            return resp.status, b""
                        return resp.status, await _read_capped(resp, limit, what, url)
                raise IdentityError(f"{what}: more than {redirects} redirects", kind="unreachable")
        except TimeoutError:
            raise IdentityError(
                f"{what}: {url} did not answer within {self.timeout:g}s", kind="timeout"
            ) from None
        except aiohttp.ClientError as exc:
            refused = self._refusal_reason(exc)
            if refused is not None:
                # Not transient: the document or handle names an address we never fetch from.
                raise IdentityError(f"{what}: {url}: {refused}", kind="unsupported") from None
            raise IdentityError(
                f"{what}: cannot reach {url}: {exc.__class__.__name__}: {exc}", kind="unreachable"
            ) from None

    def redirect_target(self, resp: aiohttp.ClientResponse, what: str) -> str:
        """Where a redirect points; https only unless private networks are allowed (an http hop
        would let anyone on the path answer for the handle)."""
        location = resp.headers.get("Location")
        if not location:
            raise IdentityError(
                f"{what}: redirect from {resp.url} without a Location", kind="unreachable"
            )
        target = urljoin(str(resp.url), location)
        try:
            parts = urlsplit(target)
            parts.port  # noqa: B018 - raises ValueError on a malformed port
        except ValueError:
            parts = None
        allowed = ("http", "https") if self.allow_private_network else ("https",)
        if (
            parts is None
            or parts.scheme not in allowed
            or not parts.hostname
            or parts.username is not None
            or parts.password is not None
        ):
            raise IdentityError(
                f"{what}: redirect from {resp.url} to {target[:200]!r} is refused "
                f"(only {' or '.join(allowed)}, without credentials)",
                kind="unsupported",
            )
        return target


async def _read_capped(resp: aiohttp.ClientResponse, limit: int, what: str, url: str) -> bytes:
    if resp.content_length is not None and resp.content_length > limit:
        raise IdentityError(
            f"{what}: response from {url} is too large ({resp.content_length} bytes)",
            kind="too_large",
        )
    body = bytearray()
    async for chunk in resp.content.iter_chunked(65536):
        body += chunk
        if len(body) > limit:
            raise IdentityError(f"{what}: response from {url} exceeds {limit} bytes", kind="too_large")
    return bytes(body)
