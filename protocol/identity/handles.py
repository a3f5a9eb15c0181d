"""Handle -> DID lookups, one per method: DNS TXT `_atproto.<handle>`, HTTPS
`/.well-known/atproto-did`, or a PDS's `com.atproto.identity.resolveHandle`.

Each answers the DID or None; none of them proves anything about the account on its own (the
resolver's `verified_handle` checks both directions).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import orjson

from protocol.identity.documents import is_valid_did
from protocol.identity.errors import IdentityError
from protocol.identity.fetch import Fetcher

log = logging.getLogger("plyr.identity")

MAX_WELL_KNOWN_BYTES = 4096  # a DID is at most 2048 characters


def did_from_txt_records(values: list[str]) -> str | None:
    """The DID from `_atproto` TXT record values: exactly one distinct `did=` value, else None."""
    dids = {v[len("did=") :].strip() for v in values if v.startswith("did=")}
    if len(dids) != 1:
        return None
    did = dids.pop()
    return did if is_valid_did(did) else None


def did_from_well_known(body: bytes) -> str | None:
    """The DID in a `/.well-known/atproto-did` body (surrounding whitespace tolerated), else None."""
    try:
        text = body.decode("ascii").strip()
    except UnicodeDecodeError:
        return None
    return text if is_valid_did(text) else None


async def via_xrpc(fetcher: Fetcher, resolver_url: str, handle: str) -> str | None:
    """Ask the PDS (or other service) at `resolver_url` to resolve `handle`."""
    url = f"{resolver_url}/xrpc/com.atproto.identity.resolveHandle?handle={handle}"
    try:
        status, body = await fetcher.get(url, limit=MAX_WELL_KNOWN_BYTES * 2, redirects=0, what=handle)
    except IdentityError as exc:
        log.info("handle resolution failed", extra={"handle": handle, "error": str(exc)})
        return None
    if status != 200:
        return None
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    did = data.get("did") if isinstance(data, dict) else None
    return did if isinstance(did, str) and is_valid_did(did) else None


class DnsTxtLookup:
    """`_atproto.<handle>` TXT lookups through dnspython, when it is installed (it is optional:
    the HTTPS method still works without it). The system resolver is configured on first use."""

    def __init__(self, resolver: Any = None, *, timeout: float) -> None:
        self._resolver = resolver
        self.timeout = timeout

    async def __call__(self, handle: str) -> str | None:
        try:
            import dns.asyncresolver
            import dns.exception
        except ImportError:
            return None
        name = f"_atproto.{handle}"
        if len(name) > 253:
            return None
        try:
            if self._resolver is None:
                # Reads /etc/resolv.conf once; reused for every lookup.
                self._resolver = dns.asyncresolver.Resolver()
            answer = await self._resolver.resolve(
                name, "TXT", lifetime=self.timeout, raise_on_no_answer=False
            )
        except dns.exception.DNSException:
            return None
        except OSError:  # e.g. no resolv.conf
            return None
        values = [b"".join(rdata.strings).decode("ascii", "replace") for rdata in answer.rrset or ()]
        return did_from_txt_records(values)


async def via_well_known(fetcher: Fetcher, handle: str) -> str | None:
    url = f"https://{handle}/.well-known/atproto-did"
    try:
        status, body = await fetcher.get(url, limit=MAX_WELL_KNOWN_BYTES, redirects=5, what=handle)
    except IdentityError:
        return None
    if not 200 <= status < 300:
        return None
    return did_from_well_known(body)


async def via_dns_or_well_known(dns_lookup: DnsTxtLookup, fetcher: Fetcher, handle: str) -> str | None:
    """Both methods at once; DNS wins when it answers (the spec prefers it on conflict)."""
    dns_task = asyncio.ensure_future(dns_lookup(handle))
    http_task = asyncio.ensure_future(via_well_known(fetcher, handle))
    try:
        did = await dns_task
        if did is not None:
            return did
        return await http_task
    finally:
        for task in (dns_task, http_task):
            if not task.done():
                task.cancel()
